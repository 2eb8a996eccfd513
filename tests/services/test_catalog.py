from sqlmodel import Session, select

from cic.models import CatalogModel, ModelPrice, Region
from cic.services import catalog

SEED_MODELS = {
    "llama-3-8b",
    "llama-3-70b",
    "mistral-7b",
    "mixtral-8x7b",
    "qwen-2.5-7b",
    "qwen-2.5-72b",
    "gemma-7b",
    "phi-3-mini",
    "phi-3-medium",
    "all-minilm-l6-v2",
}


def test_seed_has_regions_models_and_prices(session: Session) -> None:
    assert {r.code for r in session.exec(select(Region))} == {"in-mumbai", "us-east", "eu-west", "ap-singapore"}
    models = {m.id: m for m in session.exec(select(CatalogModel))}
    assert set(models) == SEED_MODELS
    assert models["all-minilm-l6-v2"].kind == "embedding"
    assert all(models[m].kind == "chat" for m in SEED_MODELS - {"all-minilm-l6-v2"})
    assert models["llama-3-70b"].vram_gb > models["llama-3-8b"].vram_gb > 0
    price = catalog.prices_in_force(session, "llama-3-8b")["us-east"]
    assert (price.input_per_1m_micros, price.output_per_1m_micros) == (50_000, 50_000)  # $0.05 / $0.05
    assert len(session.exec(select(ModelPrice)).all()) == 40


def test_seed_is_idempotent_and_keeps_operator_prices(session: Session) -> None:
    p = catalog.prices_in_force(session, "mistral-7b")["eu-west"]
    original = p.input_per_1m_micros
    p.input_per_1m_micros = 123
    session.add(p)
    session.commit()
    try:
        result = catalog.seed(session)
        session.commit()
        assert result.prices_added == 0
        assert catalog.prices_in_force(session, "mistral-7b")["eu-west"].input_per_1m_micros == 123
    finally:
        p.input_per_1m_micros = original
        session.add(p)
        session.commit()


def test_price_in_force_follows_effective_date(session: Session) -> None:
    from datetime import timedelta

    from cic.models.types import utcnow

    future = ModelPrice(
        model_id="gemma-7b",
        region_code="us-east",
        input_per_1m_micros=1,
        output_per_1m_micros=2,
        effective_from=utcnow() + timedelta(days=3),
    )
    session.add(future)
    session.commit()
    try:
        assert catalog.prices_in_force(session, "gemma-7b")["us-east"].input_per_1m_micros == 50_000
        later = catalog.prices_in_force(session, "gemma-7b", utcnow() + timedelta(days=4))
        assert later["us-east"].input_per_1m_micros == 1
    finally:
        session.delete(future)
        session.commit()

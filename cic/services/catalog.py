"""Regions, models and the prices in force."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlmodel import Session, col, select

from cic.catalog_seed import MODELS, REFERENCE_PRICES, REGIONS, micros, reserved_tps_month
from cic.errors import NotFound, ValidationFailed
from cic.models import CatalogModel, ModelPrice, Region
from cic.models.types import utcnow

SEED_EFFECTIVE_FROM = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SeedResult:
    regions: int
    models: int
    prices_added: int


def seed(session: Session) -> SeedResult:
    """Insert or update the launch catalog. Idempotent; prices an operator changed are kept."""
    for r in REGIONS:
        row = session.get(Region, r.code) or Region(code=r.code, name=r.name, country=r.country)
        row.name, row.country, row.residency_note = r.name, r.country, r.residency_note
        session.add(row)
    for m in MODELS:
        row_m = session.get(CatalogModel, m.id) or CatalogModel(
            id=m.id,
            name=m.name,
            family=m.family,
            kind=m.kind,
            context_length=m.context_length,
            vram_gb=m.vram_gb,
        )
        row_m.name, row_m.family, row_m.kind = m.name, m.family, m.kind
        row_m.context_length, row_m.vram_gb, row_m.hf_repo = m.context_length, m.vram_gb, m.hf_repo
        ref_in, ref_out = REFERENCE_PRICES[m.reference]
        row_m.reference_model = m.reference
        row_m.reference_input_per_1m_micros, row_m.reference_output_per_1m_micros = micros(ref_in), micros(ref_out)
        session.add(row_m)
    session.flush()
    added = 0
    for m in MODELS:
        for r in REGIONS:
            reserved = micros(reserved_tps_month(max(m.input_per_1m, m.output_per_1m) * r.price_factor))
            existing = session.exec(
                select(ModelPrice).where(ModelPrice.model_id == m.id, ModelPrice.region_code == r.code)
            ).all()
            if not existing:
                session.add(
                    ModelPrice(
                        model_id=m.id,
                        region_code=r.code,
                        input_per_1m_micros=micros(m.input_per_1m * r.price_factor),
                        output_per_1m_micros=micros(m.output_per_1m * r.price_factor),
                        reserved_tps_month_micros=reserved,
                        effective_from=SEED_EFFECTIVE_FROM,
                    )
                )
                added += 1
            for price in existing:  # rows from before reserved capacity had a price
                if price.reserved_tps_month_micros == 0:
                    price.reserved_tps_month_micros = reserved
                    session.add(price)
    session.flush()
    return SeedResult(regions=len(REGIONS), models=len(MODELS), prices_added=added)


def list_regions(session: Session, *, active_only: bool = True) -> list[Region]:
    q = select(Region)
    if active_only:
        q = q.where(col(Region.active).is_(True))
    return list(session.exec(q.order_by(col(Region.code))))


def list_models(session: Session, *, active_only: bool = True) -> list[CatalogModel]:
    q = select(CatalogModel)
    if active_only:
        q = q.where(col(CatalogModel.active).is_(True))
    return list(session.exec(q.order_by(col(CatalogModel.id))))


def get_model(session: Session, model_id: str) -> CatalogModel:
    m = session.get(CatalogModel, model_id)
    if m is None or not m.active:
        raise NotFound(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
    return m


def require_region(session: Session, code: str) -> Region:
    r = session.get(Region, code)
    if r is None or not r.active:
        known = ", ".join(x.code for x in list_regions(session))
        raise ValidationFailed(
            f"Unknown region '{code}'. Known regions: {known}.", param="region", code="unknown_region"
        )
    return r


def require_models(session: Session, ids: list[str]) -> list[str]:
    """De-duplicated model ids, all of them in the catalog, else 422 naming the unknown ones."""
    wanted = list(dict.fromkeys(i.strip() for i in ids if i.strip()))
    if not wanted:
        raise ValidationFailed("Enable at least one model.", param="models", code="no_models")
    found = set(
        session.exec(
            select(CatalogModel.id).where(col(CatalogModel.id).in_(wanted), col(CatalogModel.active).is_(True))
        )
    )
    unknown = [i for i in wanted if i not in found]
    if unknown:
        raise ValidationFailed(
            f"Unknown model{'s' if len(unknown) > 1 else ''}: {', '.join(repr(u) for u in unknown)}.",
            param="models",
            code="unknown_model",
        )
    return wanted


def prices_in_force(session: Session, model_id: str, at: datetime | None = None) -> dict[str, ModelPrice]:
    """The price per region that applies at ``at`` (now by default)."""
    at = at or utcnow()
    rows = session.exec(
        select(ModelPrice)
        .where(ModelPrice.model_id == model_id, col(ModelPrice.effective_from) <= at)
        .order_by(col(ModelPrice.effective_from))
    )
    latest: dict[str, ModelPrice] = {}
    for p in rows:
        latest[p.region_code] = p
    return latest

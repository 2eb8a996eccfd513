from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from cic.billing import rollup
from cic.errors import NotFound
from cic.models import UsageRecord
from cic.services import usage
from cic.services.authz import Actor
from tests.factories import make_env, make_org, make_user


def _rec(
    org_id: str, env_id: str, model: str, at: datetime, p: int, c: int, cost: int, status: str = "ok"
) -> UsageRecord:
    return UsageRecord(
        request_id=f"req_{model}_{at.timestamp()}_{p}_{c}",
        org_id=org_id,
        environment_id=env_id,
        api_key_id="key_x",
        model_id=model,
        region_code="us-east",
        endpoint="chat.completions",
        status=status,
        prompt_tokens=p,
        completion_tokens=c,
        cost_picousd=cost,
        created_at=at,
    )


def test_report_groups_and_totals(session: Session, engine: Engine) -> None:
    owner = make_user(session)
    org = make_org(session, owner)
    prod = make_env(session, owner, org, "prod", models=["llama-3-8b", "mistral-7b"])
    dev = make_env(session, owner, org, "dev", models=["llama-3-8b"])
    d1 = datetime(2026, 11, 1, 23, 59, 59, tzinfo=UTC)
    d2 = datetime(2026, 11, 2, 0, 0, 1, tzinfo=UTC)
    session.add_all(
        [
            _rec(org.id, prod.id, "llama-3-8b", d1, 100, 50, 7_500_000),
            _rec(org.id, prod.id, "llama-3-8b", d2, 10, 5, 750_000),
            _rec(org.id, dev.id, "llama-3-8b", d2, 1, 1, 100_000, status="error"),
            _rec(org.id, prod.id, "mistral-7b", d2, 1_000_000, 0, 50_000_000_000),
        ]
    )
    session.commit()
    a = Actor.user(owner.id)
    since, until = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)
    # Reports read the roll-ups only: nothing shows until the roll-up has run.
    assert usage.report(session, a, org.slug, since=since, until=until).totals.requests == 0
    rollup.run(engine)

    by_model = usage.report(session, a, org.slug, since=since, until=until, group_by=["model"])
    rows = {r.model: r for r in by_model.rows}
    assert rows["llama-3-8b"].requests == 3 and rows["llama-3-8b"].prompt_tokens == 111
    assert rows["llama-3-8b"].errors == 1
    assert rows["mistral-7b"].cost_usd == "0.050000000000"
    assert by_model.totals.requests == 4
    assert by_model.totals.cost_usd == "0.050008350000"

    by_day = usage.report(session, a, org.slug, since=since, until=until, group_by=["day"])
    assert [(r.day, r.requests) for r in by_day.rows] == [(date(2026, 11, 1), 1), (date(2026, 11, 2), 3)]

    by_env = usage.report(session, a, org.slug, since=since, until=until, group_by=["environment", "model"])
    assert {(r.environment, r.model, r.requests) for r in by_env.rows} == {
        ("prod", "llama-3-8b", 2),
        ("dev", "llama-3-8b", 1),
        ("prod", "mistral-7b", 1),
    }

    only_dev = usage.report(session, a, org.slug, since=since, until=until, env_ref="dev", group_by=["model"])
    assert only_dev.totals.requests == 1

    # Hourly resolution: a bound inside an hour takes in the whole hour.
    later = usage.report(session, a, org.slug, since=d2 - timedelta(minutes=30), until=until, group_by=["model"])
    assert later.totals.requests == 4
    later = usage.report(session, a, org.slug, since=d2, until=until, group_by=["model"])
    assert later.totals.requests == 3
    # A range of whole days (daily roll-ups) and one cut inside days (hourly at the ends) agree.
    whole = usage.report(session, a, org.slug, since=since, until=until, group_by=["model"])
    cut = usage.report(
        session, a, org.slug, since=since + timedelta(hours=5), until=until - timedelta(hours=5), group_by=["model"]
    )
    assert whole.totals == cut.totals


def test_report_refuses_other_orgs(session: Session) -> None:
    a, b = make_user(session), make_user(session)
    org = make_org(session, a)
    with pytest.raises(NotFound):
        usage.report(session, Actor.user(b.id), org.slug)

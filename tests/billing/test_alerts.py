"""Budget alerts at 80 % and 100 % and spend spikes: fired once per period, mailed to owners and admins
through a real SMTP server, retried when the mail server refuses."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from cic.billing import alerts, rollup
from cic.models import BudgetAlert, Org
from cic.models.types import utcnow
from cic.settings import Settings
from tests.billing.helpers import insert_records, record
from tests.factories import make_env, make_org, make_user
from tests.fakes.smtp import SmtpServer

CENT = 10**10  # pico-dollars


def _org_with_budget(session: Session, cents: int) -> tuple[Org, str, str]:
    owner = make_user(session)
    org = make_org(session, owner)
    org.monthly_budget_cents = cents
    session.add(org)
    session.commit()
    env = make_env(session, owner, org)
    return org, env.id, owner.email


def test_budget_alerts_fire_once_at_80_and_100_percent(
    session: Session, engine: Engine, settings: Settings, smtp_server: SmtpServer
) -> None:
    org, env, owner = _org_with_budget(session, cents=100)  # $1.00
    mail = settings.model_copy(update=smtp_server.settings())
    now = utcnow()
    start = max(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0), now - timedelta(hours=2))
    insert_records(engine, [record(org.id, env, start, cost=85 * CENT)])  # 85 %
    rollup.run(engine)

    res = alerts.run(engine, mail, now=now)
    assert [f.split(":")[3] for f in res.fired] == ["budget_80"] and res.notified == 1
    (msg,) = smtp_server.wait_for(1)
    assert owner in msg.rcpt_tos and "80%" in msg.subject and "$0.85" in msg.text
    assert alerts.run(engine, mail, now=now).fired == []  # once per month

    insert_records(engine, [record(org.id, env, start, cost=20 * CENT)])  # 105 %
    rollup.run(engine)
    res = alerts.run(engine, mail, now=now)
    assert [f.split(":")[3] for f in res.fired] == ["budget_100"]
    assert "100%" in smtp_server.wait_for(2)[1].subject
    with Session(engine) as s:
        assert {a.kind for a in s.exec(select(BudgetAlert))} == {"budget_80", "budget_100"}


def test_spike_alert_and_mail_retry(
    session: Session, engine: Engine, settings: Settings, smtp_server: SmtpServer
) -> None:
    org, env, _ = _org_with_budget(session, cents=10**9)  # a budget far away
    mail = settings.model_copy(update=smtp_server.settings())
    now = utcnow()
    # Seven quiet days at 20 cents, then $5 in the last hours: 25× the daily average.
    quiet = [record(org.id, env, now - timedelta(days=d, hours=1), cost=20 * CENT) for d in range(2, 9)]
    insert_records(engine, [*quiet, record(org.id, env, now - timedelta(hours=3), cost=500 * CENT)])
    rollup.run(engine)

    smtp_server.refuse = "451 Try again later"
    res = alerts.run(engine, mail, now=now)
    assert [f.split(":")[3] for f in res.fired] == ["spike"] and res.notify_failed == 1
    with Session(engine) as s:
        (alert,) = s.exec(select(BudgetAlert)).all()
        assert alert.notified_at is None and alert.notify_error
    smtp_server.refuse = None
    res = alerts.run(engine, mail, now=now)
    assert res.fired == [] and res.notified == 1
    (msg,) = smtp_server.wait_for(1)
    assert "Unusual spend" in msg.subject


def test_no_spike_for_steady_or_tiny_spend(session: Session, engine: Engine, settings: Settings) -> None:
    org, env, _ = _org_with_budget(session, cents=10**9)
    now = utcnow()
    steady = [record(org.id, env, now - timedelta(days=d, hours=1), cost=100 * CENT) for d in range(0, 9)]
    insert_records(engine, steady)
    rollup.run(engine)
    assert alerts.run(engine, settings, now=now).fired == []

"""``cic billing …`` (Stripe set-up, statements, reconciliation) and ``cic credits …``."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.engine import Engine

from cic.billing import credits, payments, reconcile, rollup, statements
from cic.billing.pricing import month_of
from cic.cli.common import OPERATOR, db, emit, fail
from cic.models.billing import CreditKind
from cic.models.types import utcnow

billing_app = typer.Typer(help="Billing: Stripe set-up, statements, reconciliation.", no_args_is_help=True)
credits_app = typer.Typer(help="Credit grants of an organization.", no_args_is_help=True)

MonthOpt = Annotated[str | None, typer.Option("--month", help="YYYY-MM (default: this month, UTC)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


@billing_app.command("setup")
def billing_setup() -> None:
    """Create the platform's Stripe meters, products and prices (idempotent); prints their ids."""
    with db() as (session, settings):
        ids = payments.setup(session, payments.gateway(settings))
    emit(ids)


@billing_app.command("statement")
def billing_statement(
    org: Annotated[str, typer.Option(help="org slug or id")], month: MonthOpt = None, as_json: JsonOpt = False
) -> None:
    """An org's statement for a month: usage lines, reserved capacity, allowance, discounts, credits, due."""
    with db() as (session, _):
        st = statements.statement(session, OPERATOR, org, month or month_of(utcnow()))
    if as_json:
        emit(st)
        return
    typer.echo(f"statement of {org} for {st.month} ({st.status})")
    typer.echo(f"{'environment':<16}{'model':<20}{'region':<14}{'requests':>10}{'tokens':>14}{'gross USD':>16}")
    for line in st.lines:
        tokens = line.prompt_tokens + line.completion_tokens
        typer.echo(
            f"{line.environment or '-':<16}{line.model:<20}{line.region:<14}{line.requests:>10}{tokens:>14}"
            f"{_usd(line.gross_usd):>16}"
        )
    for r in st.reserved:
        typer.echo(
            f"{'reserved':<16}{r.model:<20}{r.region:<14}{r.tokens_per_s:>9}/s{r.hours:>12} h{_usd(r.amount_usd):>16}"
        )
    for label, value in (
        ("gross", st.gross_usd),
        ("free allowance", "-" + st.allowance_usd),
        ("volume discount", "-" + st.discount_usd),
        ("credits", "-" + st.credits_usd),
        ("amount due", st.amount_due_usd),
    ):
        typer.echo(f"{label:>74}{_usd(value):>16}")
    if st.pending_usd and float(st.pending_usd):
        typer.echo(f"(not priced yet, at list price: {_usd(st.pending_usd)} USD)")


def _usd(value: str) -> str:
    sign = "-" if value.startswith("-") else ""
    return f"{sign}{float(value.lstrip('-')):,.6f}"


@billing_app.command("reconcile")
def billing_reconcile(
    month: Annotated[str, typer.Option("--month", help="YYYY-MM")],
    as_json: JsonOpt = False,
    stripe_check: Annotated[
        bool, typer.Option("--stripe/--no-stripe", help="also compare with what Stripe holds (billing on)")
    ] = True,
) -> None:
    """Usage records = roll-ups = ledger = exported quantities (= Stripe), per org; exits 1 on any mismatch."""
    with db() as (session, settings):
        engine = session.get_bind()
        assert isinstance(engine, Engine)
        rollup.run(engine)
        results = reconcile.reconcile(engine, settings, month, stripe_check=stripe_check)
    if as_json:
        emit({"month": month, "ok": all(r.ok for r in results), "orgs": [r.as_dict() for r in results]})
    else:
        typer.echo(f"{'org':<24}{'requests':>10}{'tokens':>14}{'cost USD':>16}{'exported µ$':>14}  result")
        for r in results:
            tokens = r.records.prompt_tokens + r.records.completion_tokens
            typer.echo(
                f"{r.org_slug:<24}{r.records.requests:>10}{tokens:>14}{r.records.cost_picousd / 10**12:>16,.6f}"
                f"{r.exported.get('amount_due', 0):>14}  {'ok' if r.ok else 'MISMATCH'}"
            )
            for m in r.mismatches:
                typer.echo(f"    {m}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@credits_app.command("grant")
def credits_grant(
    org: Annotated[str, typer.Option(help="org slug or id")],
    amount: Annotated[str, typer.Option("--amount", help="USD, e.g. 25 or 12.50")],
    kind: Annotated[str, typer.Option(help="promotional or prepaid")] = "promotional",
    expires_in_days: Annotated[int | None, typer.Option(help="days until it expires (default: never)")] = None,
    note: Annotated[str, typer.Option(help="shown on the org's credits list")] = "",
) -> None:
    """Grant credits to an org (prints the grant as JSON)."""
    if kind not in ("promotional", "prepaid"):
        fail("--kind is promotional or prepaid")
    with db() as (session, _):
        g = credits.grant(
            session,
            OPERATOR,
            org,
            amount_usd=amount,
            kind=CreditKind(kind),
            expires_in_days=expires_in_days,
            note=note,
        )
        session.flush()
        out = next(c for c in credits.list_credits(session, OPERATOR, org) if c.id == g.id)
    emit(out)


@credits_app.command("list")
def credits_list(org: Annotated[str, typer.Option(help="org slug or id")]) -> None:
    """An org's credit grants with what is left of each (JSON)."""
    with db() as (session, _):
        emit(credits.list_credits(session, OPERATOR, org))

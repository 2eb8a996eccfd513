"""``cic``: the operator's command line. Create commands print JSON, for scripts."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from agent.cli import agent_command, node_app
from cic import migrations
from cic.billing import credits, rollup
from cic.cli.billing import billing_app, credits_app
from cic.cli.common import db as _db
from cic.cli.common import emit as _emit
from cic.cli.common import fail as _fail
from cic.cli.common import settings as _settings
from cic.cli.jobs import jobs_app
from cic.cli.members import members_app
from cic.cli.up import up_command
from cic.db import make_engine
from cic.errors import CICError
from cic.fleet.launcher import DEFAULT_VLLM_VERSION
from cic.fleet.store import TOKEN_HOURS as FLEET_TOKEN_HOURS
from cic.models import Deployment, Launch, Node, NodeStatus, Plan, Role
from cic.models.environments import EnvironmentCreate, EnvironmentUpdate
from cic.models.keys import ApiKeyCreate, ApiKeyUpdate
from cic.models.nodes import NodeCreate
from cic.models.orgs import OrgUpdate
from cic.models.types import utcnow
from cic.services import catalog, environments, keys, nodes, orgs, reservations, usage, users
from cic.services.authz import Actor
from cic.views import env_public, key_created, key_public, org_public

app = typer.Typer(
    help="CrossLogic Inference Cloud: operate the control plane.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
catalog_app = typer.Typer(help="Regions, models and prices.", no_args_is_help=True)
users_app = typer.Typer(help="Accounts.", no_args_is_help=True)
orgs_app = typer.Typer(help="Organizations.", no_args_is_help=True)
envs_app = typer.Typer(help="Environments of an organization.", no_args_is_help=True)
keys_app = typer.Typer(help="Inference API keys.", no_args_is_help=True)
nodes_app = typer.Typer(help="GPU nodes and other upstreams.", no_args_is_help=True)
fleet_app = typer.Typer(help="Desired capacity (deployments) and the spot-aware reconciler.", no_args_is_help=True)
usage_app = typer.Typer(help="Usage and cost.", no_args_is_help=True)
app.add_typer(node_app, name="node", help="Run node-side processes (the vLLM simulator).")
app.command("agent", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(agent_command)
app.command("up")(up_command)
for sub, name in (
    (db_app, "db"),
    (catalog_app, "catalog"),
    (users_app, "users"),
    (orgs_app, "orgs"),
    (envs_app, "envs"),
    (keys_app, "keys"),
    (usage_app, "usage"),
    (billing_app, "billing"),
    (credits_app, "credits"),
    (nodes_app, "nodes"),
    (fleet_app, "fleet"),
    (jobs_app, "jobs"),
    (members_app, "members"),
):
    app.add_typer(sub, name=name)

T = TypeVar("T")
SYSTEM = Actor.system("cli")


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except CICError as exc:
        _fail(exc.message)


# --- db -----------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    settings = _settings()
    settings.ensure_local_dirs()
    try:
        migrations.upgrade(settings.database_url, revision)
    except OperationalError as exc:
        _fail(f"cannot reach the database: {str(exc.orig).splitlines()[0]}")
    typer.echo(f"database at revision {revision}", err=True)


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="target revision, e.g. -1 or base")]) -> None:
    """Revert migrations down to REVISION."""
    migrations.downgrade(_settings().database_url, revision)


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and the newest one available."""
    engine = make_engine(_settings())
    try:
        _emit({"current": migrations.current(engine), "head": migrations.head()})
    finally:
        engine.dispose()


# --- catalog ------------------------------------------------------------------------------------


@catalog_app.command("seed")
def catalog_seed() -> None:
    """Insert or update the launch regions, models and prices. Safe to run again."""
    with _db() as (session, _):
        result = catalog.seed(session)
    _emit({"regions": result.regions, "models": result.models, "prices_added": result.prices_added})


@catalog_app.command("list")
def catalog_list() -> None:
    """Regions and models, as JSON."""
    with _db() as (session, _):
        out = {
            "regions": [r.code for r in catalog.list_regions(session)],
            "models": [
                {
                    "id": m.id,
                    "kind": m.kind,
                    "context_length": m.context_length,
                    "vram_gb": m.vram_gb,
                    "prices": {
                        r: {"input_per_1m": p.input_per_1m_micros / 1e6, "output_per_1m": p.output_per_1m_micros / 1e6}
                        for r, p in sorted(catalog.prices_in_force(session, m.id).items())
                    },
                }
                for m in catalog.list_models(session)
            ],
        }
    _emit(out)


# --- users --------------------------------------------------------------------------------------


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    env = os.environ.get("CIC_PASSWORD")
    if env:
        return env
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option(help="the account's email")],
    name: Annotated[str, typer.Option(help="display name")] = "",
    admin: Annotated[bool, typer.Option("--admin", help="a platform operator")] = False,
    no_password: Annotated[bool, typer.Option("--no-password", help="no password (OAuth only)")] = False,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
) -> None:
    """Create an account. The password is prompted for, or read from CIC_PASSWORD or stdin."""
    password = None if no_password else _read_password(password_stdin)
    with _db() as (session, _):
        user = users.create_user(
            session, email=email, password=password, name=name, is_platform_admin=admin, actor=SYSTEM
        )
        out = {"id": user.id, "email": user.email, "is_platform_admin": user.is_platform_admin}
    _emit(out)


@users_app.command("set-password")
def users_set_password(
    email: Annotated[str, typer.Option(help="the account's email")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
) -> None:
    """Set an account's password (ends its sessions)."""
    password = _read_password(password_stdin)
    with _db() as (session, _):
        user = users.set_password(session, email, password, SYSTEM)
        out = {"id": user.id, "email": user.email}
    _emit(out)


# --- orgs ---------------------------------------------------------------------------------------


@orgs_app.command("create")
def orgs_create(
    name: Annotated[str, typer.Option(help="display name")],
    owner: Annotated[str, typer.Option(help="owner's email; the account is made if it does not exist")],
    slug: Annotated[str | None, typer.Option(help="URL name (default: from the name)")] = None,
    plan: Annotated[Plan, typer.Option(help="billing plan")] = Plan.free,
) -> None:
    """Create an organization owned by OWNER; prints its id and slug. The owner's first organization gets
    the sign-up credit (CIC_SIGNUP_CREDIT_USD)."""
    with _db() as (session, settings):
        user = users.get_by_email(session, owner) or users.create_user(
            session, email=owner, password=None, actor=SYSTEM
        )
        org = orgs.create_org(session, SYSTEM, name=name, owner=user, slug=slug, plan=plan)
        credits.grant_signup_bonus(session, org, user.id, settings)
        out = org_public(org, Role.owner).model_dump(mode="json")
        out["owner"] = user.email
    _emit(out)


RpmOpt = Annotated[int | None, typer.Option(help="requests per minute")]
TpmOpt = Annotated[int | None, typer.Option(help="tokens per minute")]
TpdOpt = Annotated[int | None, typer.Option(help="tokens per day")]
ConcOpt = Annotated[int | None, typer.Option(help="requests in flight")]
BudgetOpt = Annotated[float | None, typer.Option(help="spend cap for the calendar month, USD (0 clears it)")]


def _cents(usd: float | None) -> int | None:
    return None if usd is None else round(usd * 100)


def _limit_changes(**values: int | None) -> dict[str, object]:
    """Only the limits given on the command line; 0 clears a limit (inherit / no limit)."""
    return {k: (None if v == 0 else v) for k, v in values.items() if v is not None}


@orgs_app.command("update")
def orgs_update(
    org: Annotated[str, typer.Option(help="org slug or id")],
    name: Annotated[str | None, typer.Option(help="new display name")] = None,
    plan: Annotated[Plan | None, typer.Option(help="billing plan")] = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    tpd: TpdOpt = None,
    max_concurrency: ConcOpt = None,
    monthly_budget_usd: BudgetOpt = None,
) -> None:
    """Change an org's name, plan or limits (0 clears a limit back to the plan's)."""
    changes: dict[str, object] = _limit_changes(
        rpm=rpm, tpm=tpm, tpd=tpd, max_concurrency=max_concurrency, monthly_budget_cents=_cents(monthly_budget_usd)
    )
    if name is not None:
        changes["name"] = name
    if plan is not None:
        changes["plan"] = plan
    with _db() as (session, _):
        row = orgs.update_org(session, SYSTEM, org, OrgUpdate.model_validate(changes))
        out = org_public(row).model_dump(mode="json", exclude={"role"})
    _emit(out)


@orgs_app.command("reserve")
def orgs_reserve(
    org: Annotated[str, typer.Option(help="org slug or id")],
    model: Annotated[str, typer.Option(help="catalog model id")],
    region: Annotated[str, typer.Option(help="region code")],
    tokens_per_s: Annotated[int, typer.Option(min=1, help="reserved tokens per second")],
) -> None:
    """Reserve capacity for an org: when the model's nodes are saturated, its traffic is admitted up to
    this rate while shared traffic waits or is shed."""
    with _db() as (session, _):
        out = reservations.public(
            reservations.set_reservation(session, SYSTEM, org, model=model, region=region, tokens_per_s=tokens_per_s)
        )
    _emit(out)


@orgs_app.command("reservations")
def orgs_reservations(org: Annotated[str, typer.Option(help="org slug or id")]) -> None:
    """An org's reserved capacity, as JSON."""
    with _db() as (session, _):
        out = [reservations.public(r) for r in reservations.list_reservations(session, SYSTEM, org)]
    _emit(out)


@orgs_app.command("list")
def orgs_list() -> None:
    """Every organization, as JSON."""
    with _db() as (session, _):
        out = [org_public(o).model_dump(mode="json", exclude={"role"}) for o, _ in orgs.list_orgs(session, SYSTEM)]
    _emit(out)


# --- environments -------------------------------------------------------------------------------


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


@envs_app.command("create")
def envs_create(
    org: Annotated[str, typer.Option(help="org slug or id")],
    name: Annotated[str, typer.Option(help="dev, staging, prod, or your own")],
    region: Annotated[str, typer.Option(help="region code, e.g. us-east")],
    models: Annotated[str, typer.Option(help="comma-separated model ids")],
    allow_cross_region: Annotated[
        bool, typer.Option("--allow-cross-region/--no-cross-region", help="may fail over to other regions")
    ] = False,
    rpm: Annotated[int | None, typer.Option(help="requests per minute")] = None,
    tpm: Annotated[int | None, typer.Option(help="tokens per minute")] = None,
    tpd: Annotated[int | None, typer.Option(help="tokens per day")] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="requests in flight")] = None,
    routing_policy: Annotated[
        str | None, typer.Option(help="round_robin, least_load, latency, cost or prefix_affinity")
    ] = None,
) -> None:
    """Create an environment; prints it as JSON."""
    try:
        data = EnvironmentCreate(
            name=name,
            region=region,
            models=_csv(models) or [],
            allow_cross_region_failover=allow_cross_region,
            rpm=rpm,
            tpm=tpm,
            tpd=tpd,
            max_concurrency=max_concurrency,
            routing_policy=routing_policy,
        )
    except ValidationError as exc:
        _fail(_pydantic_message(exc))
    with _db() as (session, settings):
        env = environments.create_env(session, SYSTEM, org, data)
        row, _ = environments.get_env(session, SYSTEM, org, env.id)
        out = env_public(session, row, env, settings.public_base_url)
    _emit(out)


@envs_app.command("update")
def envs_update(
    org: Annotated[str, typer.Option(help="org slug or id")],
    env: Annotated[str, typer.Option(help="environment name or id")],
    region: Annotated[str | None, typer.Option(help="move to this region")] = None,
    models: Annotated[str | None, typer.Option(help="comma-separated model ids (replaces the list)")] = None,
    routing_policy: Annotated[str | None, typer.Option(help="routing policy override")] = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    tpd: TpdOpt = None,
    max_concurrency: ConcOpt = None,
    monthly_budget_usd: BudgetOpt = None,
) -> None:
    """Change an environment's region, models, routing policy or limits (0 clears a limit)."""
    changes: dict[str, object] = _limit_changes(
        rpm=rpm, tpm=tpm, tpd=tpd, max_concurrency=max_concurrency, monthly_budget_cents=_cents(monthly_budget_usd)
    )
    for k, v in (("region", region), ("models", _csv(models)), ("routing_policy", routing_policy)):
        if v is not None:
            changes[k] = v
    try:
        data = EnvironmentUpdate.model_validate(changes)
    except ValidationError as exc:
        _fail(_pydantic_message(exc))
    with _db() as (session, settings):
        row, e = environments.update_env(session, SYSTEM, org, env, data)
        out = env_public(session, row, e, settings.public_base_url)
    _emit(out)


@envs_app.command("list")
def envs_list(org: Annotated[str, typer.Option(help="org slug or id")]) -> None:
    """An organization's environments, as JSON."""
    with _db() as (session, settings):
        row, envs = environments.list_envs(session, SYSTEM, org)
        out = [env_public(session, row, e, settings.public_base_url) for e in envs]
    _emit(out)


# --- keys ---------------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    org: Annotated[str, typer.Option(help="org slug or id")],
    env: Annotated[str, typer.Option(help="environment name or id")],
    name: Annotated[str, typer.Option(help="what the key is for")],
    rpm: Annotated[int | None, typer.Option(help="requests per minute")] = None,
    tpm: Annotated[int | None, typer.Option(help="tokens per minute")] = None,
    tpd: Annotated[int | None, typer.Option(help="tokens per day")] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="requests in flight")] = None,
    expires_in: Annotated[int | None, typer.Option(help="days until the key expires")] = None,
    models: Annotated[str | None, typer.Option(help="restrict to these comma-separated models")] = None,
) -> None:
    """Create a key. The JSON has the plaintext `key`: the only time it is shown."""
    try:
        data = ApiKeyCreate(
            name=name,
            environment=env,
            rpm=rpm,
            tpm=tpm,
            tpd=tpd,
            max_concurrency=max_concurrency,
            expires_in_days=expires_in,
            allowed_models=_csv(models),
        )
    except ValidationError as exc:
        _fail(_pydantic_message(exc))
    with _db() as (session, settings):
        created = keys.create_key(session, SYSTEM, org, data, pepper=settings.key_pepper.get_secret_value())
        out = key_created(created)
    _emit(out)


@keys_app.command("list")
def keys_list(
    org: Annotated[str, typer.Option(help="org slug or id")],
    env: Annotated[str | None, typer.Option(help="only this environment")] = None,
) -> None:
    """An organization's keys (never the plaintext), as JSON."""
    with _db() as (session, _):
        _, rows = keys.list_keys(session, SYSTEM, org, env)
        out = [key_public(k, e) for k, e in rows]
    _emit(out)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (key_…)")],
    org: Annotated[str, typer.Option(help="org slug or id")],
) -> None:
    """Revoke a key now."""
    with _db() as (session, _):
        out = key_public(*keys.revoke_key(session, SYSTEM, org, key_id))
    _emit(out)


@keys_app.command("update")
def keys_update(
    key_id: Annotated[str, typer.Argument(help="the key's id (key_…)")],
    org: Annotated[str, typer.Option(help="org slug or id")],
    name: Annotated[str | None, typer.Option(help="new name")] = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    tpd: TpdOpt = None,
    max_concurrency: ConcOpt = None,
    monthly_budget_usd: BudgetOpt = None,
) -> None:
    """Change a key's name or limits (0 clears a limit); they can only narrow the environment's."""
    changes: dict[str, object] = _limit_changes(
        rpm=rpm, tpm=tpm, tpd=tpd, max_concurrency=max_concurrency, monthly_budget_cents=_cents(monthly_budget_usd)
    )
    if name is not None:
        changes["name"] = name
    with _db() as (session, _):
        out = key_public(*keys.update_key(session, SYSTEM, org, key_id, ApiKeyUpdate.model_validate(changes)))
    _emit(out)


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[str, typer.Argument(help="the key's id (key_…)")],
    org: Annotated[str, typer.Option(help="org slug or id")],
    grace_hours: Annotated[int | None, typer.Option(min=0, max=168, help="old key stays valid (default 24)")] = None,
) -> None:
    """Issue a replacement key; the old one works for the grace period. Prints the new plaintext key."""
    with _db() as (session, settings):
        created, old = keys.rotate_key(
            session, SYSTEM, org, key_id, pepper=settings.key_pepper.get_secret_value(), grace_hours=grace_hours
        )
        out = key_created(created).model_dump(mode="json")
        out["old_key_valid_until"] = old.revoked_at.isoformat() if old.revoked_at else None
    _emit(out)


# --- usage --------------------------------------------------------------------------------------


def _parse_since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"'{value}' is not a date (YYYY-MM-DD) or ISO timestamp")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@usage_app.command("show")
def usage_show(
    org: Annotated[str, typer.Option(help="org slug or id")],
    env: Annotated[str | None, typer.Option(help="only this environment")] = None,
    since: Annotated[str | None, typer.Option(help="YYYY-MM-DD or ISO timestamp, UTC (default: 30 days ago)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Per-model totals: requests, prompt and completion tokens, cost (USD).

    Read from the roll-ups, which are brought up to date first (the same incremental roll-up the
    ``usage-rollup`` job runs every minute)."""
    with _db() as (session, _):
        engine = session.get_bind()
        assert isinstance(engine, Engine)
        rollup.run(engine)
        rep = usage.report(session, SYSTEM, org, since=_parse_since(since), env_ref=env, group_by=["model"])
    if as_json:
        _emit(
            {
                "org_id": rep.org_id,
                "since": rep.since.isoformat(),
                "until": rep.until.isoformat(),
                "as_of": rep.as_of.isoformat() if rep.as_of else None,
                "models": [
                    {
                        "model": r.model,
                        "requests": r.requests,
                        "prompt_tokens": r.prompt_tokens,
                        "completion_tokens": r.completion_tokens,
                        "cached_tokens": r.cached_tokens,
                        "errors": r.errors,
                        "cost": r.cost,
                        "cost_usd": r.cost_usd,
                    }
                    for r in rep.rows
                ],
                "totals": {
                    "requests": rep.totals.requests,
                    "prompt_tokens": rep.totals.prompt_tokens,
                    "completion_tokens": rep.totals.completion_tokens,
                    "cost": rep.totals.cost,
                    "cost_usd": rep.totals.cost_usd,
                },
            }
        )
        return
    header = f"{'model':<22}{'requests':>10}{'prompt':>14}{'completion':>14}{'cost (USD)':>16}"
    typer.echo(f"usage of {org} since {rep.since:%Y-%m-%d %H:%M} UTC")
    typer.echo(header)
    for r in [*rep.rows, rep.totals]:
        label = r.model if r is not rep.totals else "total"
        typer.echo(
            f"{label or '':<22}{r.requests:>10}{r.prompt_tokens:>14}{r.completion_tokens:>14}"
            f"{r.cost_usd.rstrip('0').rstrip('.') or '0':>16}"
        )


# --- nodes --------------------------------------------------------------------------------------


@nodes_app.command("add")
def nodes_add(
    model: Annotated[str, typer.Option(help="catalog model id the node serves")],
    region: Annotated[str, typer.Option(help="region code")],
    endpoint: Annotated[str, typer.Option(help="base URL of the server, e.g. http://10.0.0.5:8000")],
    engine: Annotated[str, typer.Option(help="vllm, sglang, openai (native) or a LiteLLM provider")] = "vllm",
    served_model: Annotated[str, typer.Option(help="the model's name on that server (default: the id)")] = "",
    api_key_env: Annotated[str, typer.Option(help="env var with the upstream's API key, if it needs one")] = "",
    name: Annotated[str, typer.Option(help="label")] = "",
) -> None:
    """Add a static upstream (an existing server or a hosted provider); it takes traffic at once."""
    with _db() as (session, _):
        node = nodes.add_static_node(
            session,
            SYSTEM,
            NodeCreate(
                model=model,
                region=region,
                endpoint_url=endpoint,
                engine=engine,
                served_model=served_model,
                api_key_env=api_key_env,
                name=name,
            ),
        )
        out = nodes.node_public(node)
    _emit(out)


@nodes_app.command("list")
def nodes_list() -> None:
    """Registered nodes, as JSON."""
    with _db() as (session, _):
        out = [nodes.node_public(n) for n in nodes.list_nodes(session)]
    _emit(out)


@nodes_app.command("token")
def nodes_token(
    region: Annotated[str | None, typer.Option(help="only nodes of this region may use it")] = None,
    expires_in: Annotated[float, typer.Option(help="hours until it expires")] = 24,
    max_uses: Annotated[int | None, typer.Option(help="how many nodes may register with it")] = None,
) -> None:
    """Print a bootstrap token for `cic agent --token` (shown once; it can only register nodes)."""
    with _db() as (session, settings):
        plaintext, row = nodes.create_node_token(
            session,
            SYSTEM,
            region=region,
            expires_in_hours=expires_in,
            max_uses=max_uses,
            pepper=settings.key_pepper.get_secret_value(),
        )
        out = {
            "token": plaintext,
            "id": row.id,
            "region": row.region_code,
            "expires_at": row.expires_at.isoformat(),
            "max_uses": row.max_uses,
        }
    _emit(out)


@nodes_app.command("drain")
def nodes_drain(node_id: Annotated[str, typer.Argument(help="the node's id (node_…)")]) -> None:
    """Send the node no new requests (those in flight finish)."""
    with _db() as (session, _):
        out = nodes.node_public(nodes.admin_drain(session, SYSTEM, node_id))
    _emit(out)


@nodes_app.command("undrain")
def nodes_undrain(node_id: Annotated[str, typer.Argument(help="the node's id (node_…)")]) -> None:
    """Give a drained node traffic again."""
    with _db() as (session, _):
        out = nodes.node_public(nodes.admin_undrain(session, SYSTEM, node_id))
    _emit(out)


@nodes_app.command("remove")
def nodes_remove(node_id: Annotated[str, typer.Argument(help="the node's id (node_…)")]) -> None:
    """Take a node out of service for good."""
    with _db() as (session, _):
        out = nodes.node_public(nodes.set_status(session, SYSTEM, node_id, NodeStatus.offline))
    _emit(out)


# --- nodes launched with SkyPilot ---------------------------------------------------------------

PLACEHOLDER_TOKEN = "<bootstrap token>"  # noqa: S105 - stands in where no real token is needed


@nodes_app.command("launch")
def nodes_launch(
    model: Annotated[str, typer.Option(help="catalog model id the node serves")],
    region: Annotated[str, typer.Option(help="region code (its cloud region: CIC_FLEET_CLOUD, CIC_FLEET_REGIONS)")],
    gpus: Annotated[str, typer.Option(help="SkyPilot accelerators, e.g. A10G:1 or L4:4")] = "A10G:1",
    spot: Annotated[bool, typer.Option("--spot/--on-demand", help="spot (default) or on-demand VMs")] = True,
    control_plane: Annotated[
        str | None, typer.Option(help="URL the node registers with (default: CIC_PUBLIC_BASE_URL)")
    ] = None,
    package_spec: Annotated[
        str | None,
        typer.Option(envvar="CIC_FLEET_PACKAGE_SPEC", help="pip spec of this package for the node (a wheel URL, ...)"),
    ] = None,
    vllm_version: Annotated[str, typer.Option(help="vLLM release on the node")] = DEFAULT_VLLM_VERSION,
    max_model_len: Annotated[int | None, typer.Option(help="context length (default: the model's)")] = None,
    dry_run: Annotated[bool, typer.Option(help="print the SkyPilot task (secrets redacted); launch nothing")] = False,
    wait: Annotated[bool, typer.Option(help="stream SkyPilot's logs until the cluster is up")] = False,
) -> None:
    """Launch a GPU node with SkyPilot: vLLM and the node agent, which registers the node by itself."""
    from cic.fleet.launcher import LaunchSpec, cluster_name_for
    from cic.fleet.skypilot import RegionMap, SkyPilotLauncher, attach_secrets, render_task_yaml

    regions = _guard(RegionMap.from_env)
    launcher = SkyPilotLauncher(regions=regions)
    with _db() as (session, settings):
        weights = catalog.get_model(session, model).hf_repo
        catalog.require_region(session, region)
        fields: dict[str, Any] = dict(
            cluster_name=cluster_name_for(model, region),
            model_id=model,
            hf_repo=weights,
            region=region,
            accelerators=gpus,
            spot=spot,
            control_plane_url=control_plane or settings.public_base_url,
            vllm_version=vllm_version,
            max_model_len=max_model_len,
            package_spec=package_spec,
            hf_token=os.environ.get("HF_TOKEN") or None,
        )
        if dry_run:
            if not package_spec:
                typer.echo("warning: no --package-spec / CIC_FLEET_PACKAGE_SPEC: a launch would stop here", err=True)
                fields["package_spec"] = "<CIC_FLEET_PACKAGE_SPEC>"
            spec = LaunchSpec(**fields, bootstrap_token=PLACEHOLDER_TOKEN, launch_id="lch_<made at launch>")
            typer.echo(render_task_yaml(attach_secrets(launcher.build(spec), spec)), nl=False)
            return
        launcher.build(LaunchSpec(**fields, bootstrap_token=PLACEHOLDER_TOKEN))  # a bad spec fails before any row
        row = Launch(
            cluster_name=fields["cluster_name"],
            model_id=model,
            region_code=region,
            accelerators=gpus,
            spot=spot,
            detail="cic nodes launch",
        )
        session.add(row)
        token, _ = nodes.create_node_token(
            session,
            SYSTEM,
            region=region,
            expires_in_hours=FLEET_TOKEN_HOURS,
            max_uses=2,
            pepper=settings.key_pepper.get_secret_value(),
        )
    # The row is committed before the cluster exists: a launch is never untracked (if this process dies
    # now, the reconciler finds no cluster and marks the launch failed).
    spec = LaunchSpec(**fields, bootstrap_token=token, launch_id=row.id)
    try:
        handle = launcher.launch(spec)
        if wait:
            launcher.wait(handle)
    except CICError as exc:
        with _db() as (session, _):
            failed = session.get(Launch, row.id)
            if failed is not None:
                failed.status, failed.detail, failed.updated_at = "failed", exc.message[:500], utcnow()
                session.add(failed)
        _fail(exc.message)
    _emit(
        {
            "launch_id": row.id,
            "cluster_name": spec.cluster_name,
            "model": model,
            "region": region,
            "infra": regions.infra(region),
            "accelerators": gpus,
            "spot": spot,
            "request_id": handle.request_id,
        }
    )


@nodes_app.command("down")
def nodes_down(
    target: Annotated[str, typer.Argument(help="cluster name, launch id (lch_...) or node id (node_...)")],
) -> None:
    """Tear down a launched node's cluster, mark its launch down and take its node out of service."""
    from cic.fleet.skypilot import SkyPilotLauncher

    with _db() as (session, _):
        launch: Launch | None = None
        if target.startswith("node_"):
            node = session.get(Node, target)
            if node is None or not node.launch_id:
                _fail(f"node {target} was not launched by us (use `cic nodes remove`)")
            launch = session.get(Launch, node.launch_id)
        elif target.startswith("lch_"):
            launch = session.get(Launch, target)
        else:
            launch = session.exec(select(Launch).where(Launch.cluster_name == target)).first()
        if launch is None and not target.startswith(("node_", "lch_")):
            cluster, launch_id, deployment_id = target, None, None  # launched outside cic: down it anyway
        elif launch is None:
            _fail(f"no launch found for {target}")
        else:
            cluster, launch_id, deployment_id = launch.cluster_name, launch.id, launch.deployment_id
    _guard(lambda: SkyPilotLauncher().down(cluster))
    gone: list[str] = []
    with _db() as (session, _):
        if launch_id is not None:
            row = session.get(Launch, launch_id)
            if row is not None:
                row.status, row.detail, row.updated_at = "down", "cic nodes down", utcnow()
                session.add(row)
            live = select(Node).where(Node.launch_id == launch_id, col(Node.deregistered_at).is_(None))
            for node in session.exec(live):
                nodes.set_status(session, SYSTEM, node.id, NodeStatus.offline)
                gone.append(node.id)
    out: dict[str, Any] = {"cluster_name": cluster, "launch_id": launch_id, "nodes_offline": gone}
    if deployment_id:
        out["note"] = f"deployment {deployment_id} keeps its replicas: the reconciler launches a replacement"
    _emit(out)


# --- deployments and the reconciler ---------------------------------------------------------------


@fleet_app.command("set")
def fleet_set(
    model: Annotated[str, typer.Option(help="catalog model id")],
    region: Annotated[str, typer.Option(help="region code")],
    replicas: Annotated[int, typer.Option(min=0, help="nodes to keep running (0 winds it down)")],
    gpus: Annotated[str, typer.Option(help="SkyPilot accelerators, e.g. A10G:1")] = "A10G:1",
    spot: Annotated[bool, typer.Option("--spot/--on-demand", help="spot (default) or on-demand")] = True,
    on_demand_after: Annotated[int, typer.Option(min=1, help="preemptions in an hour before on-demand")] = 3,
) -> None:
    """Desired capacity for a model in a region; `cic fleet reconcile` launches and replaces nodes to match."""
    with _db() as (session, _):
        _require_model_region(session, model, region)
        row = session.exec(
            select(Deployment).where(Deployment.model_id == model, Deployment.region_code == region)
        ).first() or Deployment(model_id=model, region_code=region, replicas=replicas, accelerators=gpus)
        row.replicas, row.accelerators, row.spot, row.on_demand_after_preemptions = (
            replicas,
            gpus,
            spot,
            on_demand_after,
        )
        row.updated_at = utcnow()
        session.add(row)
        session.flush()
        out = row.model_dump(mode="json")
    _emit(out)


@fleet_app.command("list")
def fleet_list() -> None:
    """Deployments and their launches, as JSON."""
    with _db() as (session, _):
        out = {
            "deployments": [d.model_dump(mode="json") for d in session.exec(select(Deployment))],
            "launches": [
                x.model_dump(mode="json") for x in session.exec(select(Launch).order_by(col(Launch.created_at)))
            ],
        }
    _emit(out)


@fleet_app.command("reconcile")
def fleet_reconcile(
    control_plane: Annotated[str | None, typer.Option(help="URL nodes register with")] = None,
    package_spec: Annotated[
        str | None, typer.Option(envvar="CIC_FLEET_PACKAGE_SPEC", help="pip spec for nodes")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="print the decisions; change nothing")] = False,
) -> None:
    """One pass of the orchestrator: keep each deployment's replicas, replace preempted spot nodes."""
    from cic.fleet.reconciler import FleetConfig, evaluate, reconcile_once
    from cic.fleet.skypilot import RegionMap, SkyPilotLauncher
    from cic.fleet.store import DbLaunchStore

    settings = _settings()
    engine = make_engine(settings)
    store = DbLaunchStore(engine, settings.key_pepper.get_secret_value())
    try:
        if dry_run:
            decisions = evaluate(
                store.list_deployments(),
                store.list_launches(utcnow() - timedelta(hours=1)),
                store.list_nodes(),
                utcnow(),
            )
            _emit(
                [
                    {"decision": type(d).__name__, **{k: str(v) for k, v in vars(d).items()}}
                    if hasattr(d, "__dict__")
                    else {"decision": repr(d)}
                    for d in decisions
                ]
            )
            return
        launcher = SkyPilotLauncher(regions=_guard(RegionMap.from_env))
        config = FleetConfig(
            control_plane_url=control_plane or settings.public_base_url,
            package_spec=package_spec,
            hf_token=os.environ.get("HF_TOKEN") or None,
        )
        result = _guard(lambda: reconcile_once(store, launcher, config))
        _emit(
            [
                {"decision": repr(o.decision), "ok": o.ok, "launch_id": o.launch_id, "error": o.error}
                for o in result.outcomes
            ]
        )
        if any(not o.ok for o in result.outcomes):
            raise typer.Exit(1)
    finally:
        engine.dispose()


def _require_model_region(session: Session, model: str, region: str) -> None:
    catalog.get_model(session, model)
    catalog.require_region(session, region)


# --- servers ------------------------------------------------------------------------------------


@app.command("api")
def run_api(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
    reload: Annotated[bool, typer.Option(help="reload on code changes (development)")] = False,
) -> None:
    """Run the API server (management API, health; the data plane joins it)."""
    import uvicorn

    settings = _settings()
    if workers > 1 and not settings.redis_url:
        typer.echo("warning: several workers without CIC_REDIS_URL: limits and caches are per worker", err=True)
    if workers > 1 and settings.is_sqlite:
        typer.echo("warning: several workers on SQLite serialise writes; use PostgreSQL in production", err=True)
    os.environ["CIC_WORKERS"] = str(workers)  # the limiter's Redis-down fallback divides limits by it
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every worker writes its metrics here, so /metrics on any worker shows the whole server.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cic-metrics-")
    from api.server import HTTP_PROTOCOL

    uvicorn.run(
        "api.app:app_factory",
        factory=True,
        http=HTTP_PROTOCOL,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        log_config=None,
        proxy_headers=True,
        access_log=False,
    )


def _pydantic_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

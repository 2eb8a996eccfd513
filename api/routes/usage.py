from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ActorDep, SessionDep
from cic.errors import InvalidRequest
from cic.models.usage import UsageReport
from cic.services import usage

router = APIRouter(prefix="/orgs/{org}/usage", tags=["usage"])


def _as_datetime(value: datetime | date | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(), UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@router.get("", response_model=UsageReport)
def usage_report(
    org: str,
    actor: ActorDep,
    session: SessionDep,
    since: Annotated[datetime | date | None, Query(description="inclusive; date or ISO timestamp (UTC)")] = None,
    until: Annotated[datetime | date | None, Query(description="exclusive; default now")] = None,
    environment: str | None = None,
    group_by: Annotated[list[usage.GroupBy] | None, Query()] = None,
) -> UsageReport:
    """Requests, tokens and cost, grouped by any of ``day``, ``model``, ``environment`` (default: day)."""
    s, u = _as_datetime(since), _as_datetime(until)
    if s and u and s >= u:
        raise InvalidRequest("'since' must be before 'until'.", param="since")
    return usage.report(session, actor, org, since=s, until=u, env_ref=environment, group_by=group_by)

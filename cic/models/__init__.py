"""Every table, imported here so ``SQLModel.metadata`` is complete for Alembic."""

from cic.models import base as _base  # noqa: F401  (naming convention first)
from cic.models.audit import AuditEvent
from cic.models.billing import (
    BillingAccount,
    BillingAccrual,
    BillingStatement,
    BudgetAlert,
    CreditApplication,
    CreditGrant,
    StripeEvent,
    StripeExport,
    StripeObject,
)
from cic.models.catalog import CatalogModel, ModelKind, ModelPrice, Region
from cic.models.environments import Environment, EnvironmentModel
from cic.models.identity import OAuthIdentity, OAuthState
from cic.models.invitations import Invitation
from cic.models.jobs import JobRun, JobRunStatus
from cic.models.keys import ApiKey
from cic.models.nodes import Deployment, Launch, Node, NodeStatus, NodeToken
from cic.models.orgs import Membership, Org, Plan, Reservation, Role
from cic.models.rollups import RollupCursor, UsageDaily, UsageDailyTotals, UsageHourly, UsageHourlyTotals
from cic.models.usage import UsageRecord, UsageStatus
from cic.models.users import User, UserSession

__all__ = [
    "ApiKey",
    "AuditEvent",
    "BillingAccount",
    "BillingAccrual",
    "BillingStatement",
    "BudgetAlert",
    "CatalogModel",
    "CreditApplication",
    "CreditGrant",
    "Deployment",
    "Environment",
    "EnvironmentModel",
    "Invitation",
    "JobRun",
    "JobRunStatus",
    "Launch",
    "Membership",
    "ModelKind",
    "ModelPrice",
    "Node",
    "NodeStatus",
    "NodeToken",
    "OAuthIdentity",
    "OAuthState",
    "Org",
    "Plan",
    "Region",
    "Reservation",
    "Role",
    "RollupCursor",
    "StripeEvent",
    "StripeExport",
    "StripeObject",
    "UsageDaily",
    "UsageDailyTotals",
    "UsageHourly",
    "UsageHourlyTotals",
    "UsageRecord",
    "UsageStatus",
    "User",
    "UserSession",
]

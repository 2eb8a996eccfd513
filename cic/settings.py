"""One settings object for every process, read from ``CIC_*`` environment variables (and ``.env``)."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

# Published defaults: fine on a laptop, refused anywhere else.
DEFAULT_SECRET_KEY = "cic-local-secret-change-me"  # noqa: S105 - refused outside local mode
DEFAULT_KEY_PEPPER = "cic-local-pepper-change-me"
DEFAULT_DATABASE_URL = "sqlite:///./.cic/cic.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CIC_", env_file=".env", extra="ignore")

    env: Literal["local", "staging", "production"] = Field(
        default="local", description="Deployment mode; outside 'local' the default secrets are refused."
    )
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = Field(
        default=None, description="Redis for limits, caches and locks; unset means in-process equivalents."
    )
    redis_max_connections: int = Field(default=256, ge=4, description="Redis connections per API worker")
    upstash_redis_rest_url: str | None = Field(
        default=None, description="Upstash Redis REST URL: the jobs' locks over HTTP when CIC_REDIS_URL is unset"
    )
    upstash_redis_rest_token: SecretStr | None = Field(default=None, description="Upstash Redis REST token")
    job_modules: str = Field(
        default="", description="extra comma-separated modules whose import registers jobs (plug-ins)"
    )
    job_history_days: int = Field(default=7, ge=1, description="how long job_runs rows are kept")
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET_KEY)
    key_pepper: SecretStr = Field(
        default=SecretStr(DEFAULT_KEY_PEPPER),
        description="Server-side pepper for the HMAC of API keys and session tokens. Changing it invalidates both.",
    )
    public_base_url: str = "http://localhost:8000"
    session_ttl_hours: int = Field(default=24 * 7, ge=1, le=24 * 90)
    key_rotation_grace_hours: int = Field(
        default=24, ge=0, le=24 * 7, description="How long a rotated key keeps working by default."
    )
    spool_dir: Path = Field(
        default=Path("./.cic/spool"), description="where usage records wait when the database is down"
    )
    key_cache_ttl_s: float = Field(
        default=60.0, gt=0, description="API-key cache lifetime with Redis (1 s without: no invalidation bus)"
    )
    last_used_flush_s: float = Field(default=5.0, gt=0, description="how often keys' last_used_at is written")
    node_refresh_s: float = Field(default=1.0, gt=0, description="how often workers re-read the node registry")
    heartbeat_interval_s: float = Field(default=5.0, gt=0, description="what agents are told to use")
    heartbeat_timeout_s: float = Field(default=15.0, gt=0, description="silence after which a node gets no traffic")
    node_offline_after_s: float = Field(default=600.0, gt=0, description="silence after which a node is removed")
    routing_policy: str = Field(default="least_load", description="default routing policy (per environment too)")
    limits_fail_mode: Literal["local", "open", "closed"] = Field(
        default="local",
        description="when Redis is down: per-process limits at limit / workers (local), admit all, or refuse all",
    )
    workers: int = Field(default=1, ge=1, description="API worker processes (set by `cic api --workers`)")
    limits_lease_ttl_s: float = Field(
        default=60.0, gt=0, description="a concurrency slot whose holder died frees itself after this long"
    )
    shed_waiting_threshold: float = Field(
        default=16.0, gt=0, description="waiting requests per node at which a model's fleet counts as saturated"
    )
    shed_queue_s: float = Field(default=2.0, ge=0, description="how long shared traffic waits for room before a 503")
    global_rpm: int | None = Field(default=None, ge=1, description="whole-platform requests per minute")
    global_tpm: int | None = Field(default=None, ge=1, description="whole-platform tokens per minute")
    global_tpd: int | None = Field(default=None, ge=1)
    global_max_concurrency: int | None = Field(default=None, ge=1, description="whole-platform requests in flight")
    limits_overlap: bool = Field(
        default=True,
        description="for a key whose last admission left ample room (and no concurrency limit), write the "
        "request to the node while its admission is in flight; the answer waits for the admission",
    )
    upstream_connect_timeout_s: float = Field(default=3.0, gt=0)
    upstream_read_timeout_s: float = Field(default=600.0, gt=0)
    # Billing. Metering, roll-ups, the ledger and statements always run; Stripe only when enabled.
    billing_enabled: bool = Field(default=False, description="send usage to Stripe and take payments")
    stripe_secret_key: SecretStr | None = Field(default=None, description="sk_live_… / sk_test_… (or rk_…)")
    stripe_webhook_secret: SecretStr | None = Field(default=None, description="whsec_… of the webhook endpoint")
    stripe_api_base: str | None = Field(default=None, description="another Stripe API address (tests)")
    billing_currency: str = "usd"
    billing_settle_s: float = Field(default=300, ge=0, description="how long after an hour ends it is priced")
    billing_close_after_h: float = Field(default=24, ge=0, description="a month's statement closes this long after")
    billing_grace_days: float = Field(
        default=7, ge=0, description="after a failed payment, how long keys keep working before insufficient_quota"
    )
    signup_credit_usd: float = Field(default=10.0, ge=0, description="credit given with an owner's first org")
    signup_credit_days: int = Field(default=365, ge=1, description="how long the sign-up credit lasts")
    spike_factor: float = Field(default=10.0, gt=1, description="a day costing this × the daily average alerts")
    spike_min_usd: float = Field(default=1.0, ge=0, description="days cheaper than this never count as a spike")
    smtp_host: str | None = Field(default=None, description="mail server for alerts and invitations; unset = log")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="STARTTLS, implicit TLS (port 465), or plain (a local relay)"
    )
    smtp_from: str = Field(default="CrossLogic <no-reply@localhost>", description="the From: of outgoing mail")
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    dashboard_url: str = Field(
        default="http://localhost:8000", description="where the dashboard is served (links in mail, OAuth returns)"
    )
    dashboard_api_url: str = Field(
        default="http://127.0.0.1:8000",
        description="where the dashboard's server calls the management API (cic up: this process on loopback)",
    )
    dashboard_mount_api: bool = Field(
        default=True, description="serve the API from the dashboard's process (all-in-one); false when separate"
    )
    dashboard_api_timeout_s: float = Field(default=15.0, gt=0, description="dashboard -> API call timeout")
    # Sign-in with Google / Microsoft (OpenID Connect). A provider is enabled when its client id and
    # secret are both set; its discovery document and keys are fetched at run time and cached.
    oauth_google_client_id: str | None = None
    oauth_google_client_secret: SecretStr | None = None
    oauth_google_discovery_url: str = "https://accounts.google.com/.well-known/openid-configuration"
    oauth_microsoft_client_id: str | None = None
    oauth_microsoft_client_secret: SecretStr | None = None
    oauth_microsoft_tenant: str = Field(
        default="common", description="common, organizations, consumers, or a tenant id / domain"
    )
    oauth_microsoft_discovery_url: str | None = Field(
        default=None, description="default: login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"
    )
    oauth_state_ttl_s: int = Field(default=600, ge=60, le=3600, description="how long a sign-in may take")
    oauth_http_timeout_s: float = Field(default=10.0, gt=0, description="calls to the identity providers")
    invitation_ttl_days: int = Field(default=7, ge=1, le=30, description="how long an invitation link is valid")
    log_level: str = "INFO"
    log_json: bool = True
    sql_echo: bool = False

    @field_validator("database_url")
    @classmethod
    def _normalise_db_url(cls, value: str) -> str:
        # psycopg 3 is the only PostgreSQL driver we ship; accept the usual spellings.
        for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @field_validator("redis_url", "upstash_redis_rest_url")
    @classmethod
    def _empty_redis_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("public_base_url", "dashboard_url", "dashboard_api_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.env != "local":
            bad = []
            if self.secret_key.get_secret_value() == DEFAULT_SECRET_KEY:
                bad.append("CIC_SECRET_KEY")
            if self.key_pepper.get_secret_value() == DEFAULT_KEY_PEPPER:
                bad.append("CIC_KEY_PEPPER")
            if bad:
                raise ValueError(
                    f"{' and '.join(bad)} still have their published default values; "
                    f"set them to long random strings when CIC_ENV={self.env}"
                )
            if len(self.secret_key.get_secret_value()) < 32 or len(self.key_pepper.get_secret_value()) < 32:
                raise ValueError("CIC_SECRET_KEY and CIC_KEY_PEPPER must be at least 32 characters")
        if self.billing_enabled and (self.stripe_secret_key is None or self.stripe_webhook_secret is None):
            raise ValueError(
                "CIC_BILLING_ENABLED=true needs CIC_STRIPE_SECRET_KEY and CIC_STRIPE_WEBHOOK_SECRET "
                "(or set CIC_BILLING_ENABLED=false to meter without charging)"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ensure_local_dirs(self) -> None:
        """Create the directory of a SQLite database file (``./.cic/`` by default)."""
        if self.is_sqlite and ":memory:" not in self.database_url:
            path = self.database_url.split(":///", 1)[-1]
            Path(path).parent.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

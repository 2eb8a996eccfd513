import pytest
from pydantic import ValidationError

from cic.settings import Settings


def test_local_defaults_are_sqlite_without_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CIC_DATABASE_URL", "CIC_REDIS_URL", "CIC_ENV"):
        monkeypatch.delenv(var, raising=False)
    s = Settings(_env_file=None)
    assert s.database_url == "sqlite:///./.cic/cic.db"
    assert s.redis_url is None


@pytest.mark.parametrize("env", ["staging", "production"])
def test_default_secrets_refused_outside_local(env: str) -> None:
    with pytest.raises(ValidationError, match="CIC_SECRET_KEY and CIC_KEY_PEPPER"):
        Settings(_env_file=None, env=env)
    with pytest.raises(ValidationError, match="CIC_KEY_PEPPER"):
        Settings(_env_file=None, env=env, secret_key="x" * 40)
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(_env_file=None, env=env, secret_key="short-secret", key_pepper="short-pepper")
    ok = Settings(_env_file=None, env=env, secret_key="s" * 40, key_pepper="p" * 40)
    assert ok.env == env


def test_postgres_urls_use_psycopg3() -> None:
    s = Settings(_env_file=None, database_url="postgresql://u:p@h/db")
    assert s.database_url == "postgresql+psycopg://u:p@h/db"
    s = Settings(_env_file=None, database_url="postgres://u@h/db", redis_url="")
    assert s.database_url == "postgresql+psycopg://u@h/db"
    assert s.redis_url is None

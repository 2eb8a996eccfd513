"""A plaintext API key or password never reaches the database or the logs."""

import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from tests.factories import PASSWORD, api_env, api_key, api_org, signup


def _dump(engine: Engine) -> str:
    out: list[str] = []
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            out.extend(repr(tuple(row)) for row in conn.execute(text(f"SELECT * FROM {table.name}")))
    return "\n".join(out)


def test_plaintexts_never_stored_or_logged(
    client: TestClient, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)  # log every statement and its parameters
    try:
        h = signup(client)
        api_org(client, h, "Secrets")
        api_env(client, h, "secrets")
        created = api_key(client, h, "secrets")
        rotated = client.post(f"/api/v1/orgs/secrets/keys/{created['id']}/rotate", headers=h).json()
    finally:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    dump = _dump(engine)
    logs = caplog.text
    assert "INSERT INTO api_keys" in logs  # statements really were logged
    token = h["Authorization"].split()[1]
    for secret in (created["key"], rotated["key"], PASSWORD, token):
        assert secret not in dump
        assert secret not in logs
    assert created["key"][:16] in dump  # the displayable prefix is stored

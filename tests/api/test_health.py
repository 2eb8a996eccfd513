from fastapi.testclient import TestClient

from api.app import create_app
from cic.settings import Settings


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok", "redis": "ok"}


def test_ready_names_redis_when_down(settings: Settings) -> None:
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken)) as c:
        assert c.get("/health").status_code == 200
        r = c.get("/ready")
    assert r.status_code == 503
    assert r.json()["failed"] == ["redis"] and r.json()["checks"]["database"] == "ok"


def test_ready_names_database_when_down(settings: Settings) -> None:
    broken = settings.model_copy(update={"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/nope"})
    with TestClient(create_app(broken)) as c:
        r = c.get("/ready")
    assert r.status_code == 503 and r.json()["failed"] == ["database"]


def test_without_redis_ready_says_in_process(settings: Settings) -> None:
    local = settings.model_copy(update={"redis_url": None})
    with TestClient(create_app(local)) as c:
        r = c.get("/ready")
    assert r.status_code == 200 and "in-process" in r.json()["checks"]["redis"]


def test_docs_are_served_locally(client: TestClient) -> None:
    html = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in html and "/docs-assets/swagger-ui.css" in html
    assert "cdn" not in html.lower() and "https://" not in html.replace("https://fastapi", "")
    js = client.get("/docs-assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/api/v1/orgs/{org}/keys" in spec["paths"]

"""The dashboard's pure pieces: path routing on the shared port, safe redirects, parsing and formatting."""

from __future__ import annotations

import pytest

from web.mount import is_platform_path
from web.state.environments import parse_quotas
from web.state.format import count, usd, when
from web.state.session import safe_next
from web.state.usage import pivot


@pytest.mark.parametrize(
    ("path", "platform"),
    [
        ("/api/v1/orgs", True),
        ("/v1/chat/completions", True),
        ("/acme/prod/v1/chat/completions", True),
        ("/internal/nodes/register", True),
        ("/health", True),
        ("/metrics", True),
        ("/docs", True),
        ("/docs-assets/swagger-ui.css", True),
        ("/openapi.json", True),
        ("/login", False),
        ("/orgs/acme/keys", False),
        ("/orgs/acme/usage/v1", False),
        ("/_event", False),
        ("/healthz", False),
        ("/apiary", False),
    ],
)
def test_one_port_routing(path: str, platform: bool) -> None:
    assert is_platform_path(path) is platform


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/orgs/acme/keys", "/orgs/acme/keys"),
        ("/orgs/acme/usage?range=7d", "/orgs/acme/usage?range=7d"),
        ("https://evil.example/", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_only_local_paths_are_followed_after_log_in(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_quotas_blank_inherits_and_bad_values_are_named() -> None:
    values, errors = parse_quotas({"rpm": "1,200", "tpm": "", "tpd": "0", "max_concurrency": "ten"})
    assert values == {"rpm": 1200, "tpm": None}
    assert set(errors) == {"tpd", "max_concurrency"}


def test_money_counts_and_dates_read_well() -> None:
    assert usd("12.345600000000") == "$12.35"
    assert usd("1234567.5") == "$1,234,567.50"
    assert usd("0.004") == "$0.0040"
    assert usd("0.0000008") == "<$0.0001"
    assert usd("0") == "$0.00"
    assert usd(None) == "—"
    assert count(950) == "950"
    assert count(12_300) == "12.3K"
    assert count(4_560_000) == "4.56M"
    assert when("2026-11-28T14:05:09Z") == "Nov 28, 2026 14:05"
    assert when(None, "never") == "never"


def test_pivot_makes_one_row_per_day_with_a_key_per_series() -> None:
    rows = [
        {"day": "2026-11-02", "model": "llama-3.1-8b", "requests": 3},
        {"day": "2026-11-02", "model": "mistral-7b", "requests": 1},
        {"day": "2026-11-03", "model": "llama-3.1-8b", "requests": 2},
    ]
    data, names = pivot(rows, ["2026-11-01", "2026-11-02", "2026-11-03"], "model", "requests")
    assert names == ["llama-3.1-8b", "mistral-7b"]  # dots in names never reach recharts' data keys
    assert data == [
        {"day": "2026-11-01", "s0": 0, "s1": 0},
        {"day": "2026-11-02", "s0": 3, "s1": 1},
        {"day": "2026-11-03", "s0": 2, "s1": 0},
    ]

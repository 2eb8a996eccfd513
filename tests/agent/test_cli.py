"""``node sim``: flags become a `SimConfig` handed to `run`."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from agent import cli
from agent.simulator import SimConfig


def test_sim_command_builds_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[SimConfig, str, int]] = []
    monkeypatch.setattr(cli, "run", lambda config, host, port: calls.append((config, host, port)))
    args = ["sim", "--model", "m", "--region", "us-east", "--port", "9100", "--ttft-ms", "5", "--itl-ms", "2"]
    args += ["--speed", "3", "--max-num-seqs", "4", "--error-rate", "0.1", "--hang-rate", "0.2", "--crash-after", "9"]
    args += ["--slow-start", "1.5", "--kind", "embedding", "--seed", "7", "--max-model-len", "2048"]
    result = CliRunner().invoke(cli.node_app, args)
    assert result.exit_code == 0, result.output
    ((config, host, port),) = calls
    assert (host, port) == ("127.0.0.1", 9100)
    assert config == SimConfig(
        model="m",
        region="us-east",
        max_model_len=2048,
        ttft_ms=5,
        itl_ms=2,
        speed=3,
        max_num_seqs=4,
        error_rate=0.1,
        hang_rate=0.2,
        crash_after=9,
        slow_start_s=1.5,
        kind="embedding",
        seed=7,
    )


def test_sim_command_refuses_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "run", lambda *_: pytest.fail("must not start"))
    result = CliRunner().invoke(cli.node_app, ["sim", "--error-rate", "2"])
    assert result.exit_code == 1
    assert "error_rate must be between 0 and 1" in result.output

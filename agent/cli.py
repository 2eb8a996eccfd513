"""``node_app``: the GPU-node commands, mounted by the ``cic`` command line as ``cic node``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from agent.sim_config import ConfigError, SimConfig
from agent.simulator import run

node_app = typer.Typer(help="Run on a GPU node: the vLLM simulator.", no_args_is_help=True, add_completion=False)


@node_app.callback()
def node() -> None:
    """Run on a GPU node: the vLLM simulator."""


class Kind(StrEnum):
    chat = "chat"
    embedding = "embedding"


@node_app.command("sim")
def sim(
    model: Annotated[str, typer.Option(help="Served model name.")] = "llama-3-8b",
    region: Annotated[str | None, typer.Option(help="Region the node reports (stored).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9000,
    max_model_len: Annotated[int, typer.Option(help="Context length, in tokens.")] = 8192,
    ttft_ms: Annotated[float, typer.Option(help="Time to first token, ms.")] = 0,
    itl_ms: Annotated[float, typer.Option(help="Inter-token latency, ms.")] = 0,
    speed: Annotated[float, typer.Option(help="Latency multiplier (3.0 = three times slower).")] = 1.0,
    max_num_seqs: Annotated[int, typer.Option(help="Requests generating at once; the rest queue.")] = 256,
    default_max_tokens: Annotated[int, typer.Option(help="Tokens generated when max_tokens is absent.")] = 16,
    kv_capacity_tokens: Annotated[int, typer.Option(help="KV-cache capacity, in tokens.")] = 100_000,
    error_rate: Annotated[float, typer.Option(help="Fraction of requests answered 500.")] = 0,
    hang_rate: Annotated[float, typer.Option(help="Fraction of requests never answered.")] = 0,
    crash_after: Annotated[int | None, typer.Option(help="Exit abruptly after this many answers.")] = None,
    slow_start: Annotated[float, typer.Option(help="Seconds of 503 after start.")] = 0,
    fail_stream_after: Annotated[int | None, typer.Option(help="Cut streams after this many events.")] = None,
    kind: Annotated[Kind, typer.Option(help="chat (chat + completions) or embedding.")] = Kind.chat,
    seed: Annotated[int, typer.Option(help="Seed of the fault dice.")] = 0,
    prefix_cache: Annotated[bool, typer.Option(help="Simulate prefix caching.")] = True,
    legacy_cache_metric: Annotated[
        bool, typer.Option(help="Expose vllm:gpu_cache_usage_perc (vLLM < 0.9) instead of kv_cache_usage_perc.")
    ] = False,
) -> None:
    """Serve a vLLM simulator: vLLM's OpenAI-compatible API with a latency model and fault injection."""
    try:
        config = SimConfig(
            model=model,
            region=region,
            max_model_len=max_model_len,
            ttft_ms=ttft_ms,
            itl_ms=itl_ms,
            speed=speed,
            max_num_seqs=max_num_seqs,
            default_max_tokens=default_max_tokens,
            kv_capacity_tokens=kv_capacity_tokens,
            error_rate=error_rate,
            hang_rate=hang_rate,
            crash_after=crash_after,
            slow_start_s=slow_start,
            fail_stream_after=fail_stream_after,
            kind=kind.value,
            seed=seed,
            prefix_cache=prefix_cache,
            legacy_cache_metric=legacy_cache_metric,
        )
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    run(config, host, port)

"""``node_app``: the GPU-node commands, mounted by the ``cic`` command line as ``cic node``."""

from __future__ import annotations

import asyncio
import signal
import socket
from enum import StrEnum
from typing import Annotated

import typer

from agent.agent import AgentConfig, NodeAgent
from agent.control_plane import ControlPlaneError
from agent.engine import Engine, VllmProcess
from agent.sim_config import ConfigError, SimConfig
from agent.simulator import run, start_simulator

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
    control_plane: Annotated[
        str | None, typer.Option(help="Register with this control plane, like a real node (through the agent).")
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="CIC_NODE_TOKEN", help="Bootstrap token (cic nodes token).")
    ] = None,
    gpu: Annotated[str, typer.Option(help="GPU type it reports when registered (the operator's view).")] = "",
    spot: Annotated[bool, typer.Option(help="Report itself as a spot instance.")] = False,
    price_per_hour: Annotated[float, typer.Option(help="USD per hour it reports, for cost-aware routing.")] = 0.0,
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
    if control_plane is None:
        run(config, host, port)
        return
    if not token or not region:
        typer.echo("error: --control-plane needs --token and --region", err=True)
        raise typer.Exit(1)
    asyncio.run(
        _sim_with_agent(
            config,
            host,
            port,
            AgentConfig(
                control_plane=control_plane,
                token=token,
                region=region,
                model=model,
                provider="simulator",
                name=f"sim-{model}-{port}",
                gpu=gpu,
                spot=spot,
                price_per_hour=price_per_hour,
            ),
        )
    )


async def _sim_with_agent(config: SimConfig, host: str, port: int, agent_config: AgentConfig) -> None:
    sim = await start_simulator(config, host, port)
    try:
        await _run_agent(NodeAgent(agent_config, Engine(sim.url)))
    finally:
        await sim.stop()


async def _run_agent(agent: NodeAgent) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.request_drain, f"signal {sig.name}")
    await agent.run()


def agent_command(
    ctx: typer.Context,
    control_plane: Annotated[str, typer.Option(help="Control-plane base URL.", envvar="CIC_CONTROL_PLANE")],
    token: Annotated[str, typer.Option(help="Bootstrap token (cic nodes token).", envvar="CIC_NODE_TOKEN")],
    region: Annotated[str, typer.Option(help="Region code of this node.")],
    model: Annotated[str, typer.Option(help="Catalog model id this node serves.")],
    provider: Annotated[str, typer.Option(help="Cloud or provider (aws, gcp, azure, lambda, local).")] = "local",
    upstream: Annotated[
        str | None,
        typer.Option(help="Attach to a running OpenAI-compatible server at this URL instead of starting vLLM."),
    ] = None,
    vllm_model: Annotated[str | None, typer.Option(help="Weights for `vllm serve` (HF repo id or a path).")] = None,
    vllm_python: Annotated[
        str | None, typer.Option(help="Python interpreter that has vLLM installed (default: this one).")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface vLLM binds.")] = "0.0.0.0",  # noqa: S104 - gateways must reach it
    port: Annotated[int, typer.Option(help="Port vLLM listens on.")] = 8000,
    advertise_url: Annotated[
        str | None, typer.Option(help="URL gateways use to reach the engine (default: the engine's).")
    ] = None,
    gpu: Annotated[str, typer.Option(help="GPU type, for the operator's view.")] = "",
    spot: Annotated[bool, typer.Option(help="A spot/preemptible instance.")] = False,
    price_per_hour: Annotated[float, typer.Option(help="USD per hour, for cost-aware routing.")] = 0.0,
    spot_cloud: Annotated[
        str | None, typer.Option(help="Watch this cloud's spot-termination notice: aws, gcp or azure.")
    ] = None,
    spot_notice_url: Annotated[str | None, typer.Option(help="Override the metadata URL polled.")] = None,
    drain_timeout: Annotated[float, typer.Option(help="Longest wait for in-flight requests when draining, s.")] = 120,
    launch_id: Annotated[
        str | None, typer.Option(help="The launch that made this node (set by `cic nodes launch`).")
    ] = None,
) -> None:
    """Run the node agent: start vLLM (arguments after `--` go to it) or attach to --upstream, register,
    heartbeat, and drain on SIGTERM or a spot notice."""
    if (upstream is None) == (vllm_model is None):
        typer.echo("error: give exactly one of --upstream (attach) or --vllm-model (start vLLM)", err=True)
        raise typer.Exit(1)
    if spot_cloud not in (None, "aws", "gcp", "azure"):
        typer.echo("error: --spot-cloud is aws, gcp or azure", err=True)
        raise typer.Exit(1)
    engine: Engine = (
        Engine(upstream)
        if upstream
        else VllmProcess(str(vllm_model), model, host=host, port=port, extra_args=list(ctx.args), python=vllm_python)
    )
    if advertise_url is None and not upstream and host in ("0.0.0.0", "::"):  # noqa: S104
        advertise_url = f"http://{socket.gethostname()}:{port}"
    config = AgentConfig(
        control_plane=control_plane,
        token=token,
        region=region,
        model=model,
        provider=provider,
        advertise_url=advertise_url,
        gpu=gpu,
        spot=spot,
        price_per_hour=price_per_hour,
        spot_cloud=spot_cloud,  # type: ignore[arg-type]
        spot_notice_url=spot_notice_url,
        drain_timeout_s=drain_timeout,
        launch_id=launch_id,
    )
    try:
        asyncio.run(_run_agent(NodeAgent(config, engine)))
    except ControlPlaneError as exc:
        typer.echo(f"error: the control plane refused this node: {exc.message}", err=True)
        raise typer.Exit(1) from None

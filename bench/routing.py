"""Routing policies compared on a fleet of vLLM simulators, in one process, with no gateway in the loop.

    .venv/bin/python bench/routing.py                      # every policy, ~15 s of arrivals each
    .venv/bin/python bench/routing.py --policies least_load,round_robin --duration 20

The fleet (per policy, started fresh so caches and counters start cold): ``--nodes`` simulators of one model,
``--slow-nodes`` of them ``--slow-speed`` times slower (an older GPU), each with ``--max-num-seqs`` slots, a time to
first token of ``--ttft-ms`` and ``--itl-ms`` per further token, and a prefix cache of ``--cache-entries`` prompt
prefixes (LRU; a hit cuts the TTFT to 20 %). Prices: one fast node is spot, the rest on-demand; the slow one is
the cheaper older GPU, on-demand.

The workload: an open-loop Poisson arrival process at ``--load`` × the fleet's capacity (slots / per-request slot
time on a cache miss, summed over the nodes), streaming chat requests of ``--max-tokens`` tokens, each a system
prompt drawn from ``--prompts`` with Zipf(``--zipf``) popularity plus a unique user message. Arrivals, prompts and
messages come from ``--seed``, so every policy gets exactly the same requests at the same times.

Routing: a `NodeRegistry` fed as the gateway feeds it — node views carrying `EngineStats` scraped from each
simulator's ``/metrics`` every ``--scrape-interval`` s (the heartbeat, sped up), this client's in-flight counts,
and ``observe`` after every request — and asked to ``pick`` with the policy and the prompt's first 256 characters
as the prefix key. The request then goes straight to the chosen simulator with aiohttp.

Per policy: TTFT percentiles (from the request's arrival to its first token), throughput (requests completed and
tokens generated per second from the first arrival to the last completion), the prefix-cache hit rate (tokens, from
the simulators' ``vllm:prefix_cache_hits_total`` / ``_queries_total``), each node's share, and the client event
loop's lag (a check that the benchmark itself did not distort the timings). Results go to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import re
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.scrape import EngineStats
from agent.simulator import RunningSim, SimConfig, start_simulator
from api.gateway.policies import POLICY_NAMES
from api.gateway.registry import NodeRegistry, NodeView

MODEL = "llama-3-8b"
REGION = "us-east"
PREFIX_KEY_CHARS = 256  # as the gateway computes it
ORDER = ("round_robin", "least_load", "latency", "cost", "prefix_affinity")
FAST_ON_DEMAND_MICROS = 1_006_000  # $/h × 1e6: an A10G-class node on demand
FAST_SPOT_MICROS = 402_000
SLOW_ON_DEMAND_MICROS = 526_000  # a T4-class node
_COMPLETION = re.compile(rb'"completion_tokens":\s*(\d+)')
_WORDS = (  # noqa: SIM905 - easier to read as prose
    "policy customer invoice shipment latency schema contract ledger forecast region cluster tenant refund "
    "warranty compliance audit summary escalation priority backlog incident deploy rollback metric quota"
).split()


@dataclass(frozen=True, slots=True)
class Arrival:
    at_s: float
    system: int
    user: str


@dataclass(frozen=True, slots=True)
class NodeSpec:
    id: str
    speed: float
    spot: bool
    price_per_hour_micros: int


@dataclass(slots=True)
class Outcome:
    node: str
    ok: bool
    ttft_s: float | None
    done_at: float
    tokens: int


@dataclass(slots=True)
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    lag_s: list[float] = field(default_factory=list)


def fleet(args: argparse.Namespace) -> list[NodeSpec]:
    specs = []
    for i in range(args.nodes):
        slow = i >= args.nodes - args.slow_nodes
        if slow:
            specs.append(NodeSpec(f"node_{i}", args.slow_speed, False, SLOW_ON_DEMAND_MICROS))
        else:
            spot = i == 0
            specs.append(NodeSpec(f"node_{i}", 1.0, spot, FAST_SPOT_MICROS if spot else FAST_ON_DEMAND_MICROS))
    return specs


def slot_time_s(args: argparse.Namespace, speed: float) -> float:
    """How long one request holds a slot on a cache miss: the first token, then one ITL per further token."""
    return (args.ttft_ms + args.itl_ms * (args.max_tokens - 1)) * speed / 1000.0


def capacity_rps(args: argparse.Namespace) -> float:
    return sum(args.max_num_seqs / slot_time_s(args, spec.speed) for spec in fleet(args))


def system_prompts(n: int, rng: random.Random) -> list[str]:
    """``n`` distinct system prompts, each longer than the prefix key, so the key is the system prompt."""
    out = []
    for k in range(n):
        body = " ".join(rng.choice(_WORDS) for _ in range(120))
        out.append(f"You are assistant #{k} of the CrossLogic support desk. Follow these house rules: {body}.")
    return out


def schedule(args: argparse.Namespace, rate: float) -> list[Arrival]:
    rng = random.Random(args.seed)
    weights = [1.0 / (k + 1) ** args.zipf for k in range(args.prompts)]
    arrivals: list[Arrival] = []
    t = rng.expovariate(rate)
    while t < args.duration:
        system = rng.choices(range(args.prompts), weights)[0]
        user = f"Ticket {len(arrivals)}: " + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 40)))
        arrivals.append(Arrival(t, system, user))
        t += rng.expovariate(rate)
    return arrivals


async def scrape(http: aiohttp.ClientSession, sim: RunningSim) -> EngineStats | None:
    try:
        async with http.get(f"{sim.url}/metrics") as resp:
            return EngineStats.from_vllm_scrape(await resp.text())
    except (aiohttp.ClientError, TimeoutError):
        return None


def views(specs: list[NodeSpec], sims: list[RunningSim], stats: list[EngineStats | None]) -> list[NodeView]:
    now = datetime.now(UTC)
    return [
        NodeView(
            spec.id,
            MODEL,
            REGION,
            sim.url,
            "vllm",
            MODEL,
            "",
            spot=spec.spot,
            price_per_hour_micros=spec.price_per_hour_micros,
            stats=s or EngineStats(),
            last_heartbeat_at=now if s is not None else None,
        )
        for spec, sim, s in zip(specs, sims, stats, strict=True)
    ]


async def heartbeats(
    http: aiohttp.ClientSession, registry: NodeRegistry, specs: list[NodeSpec], sims: list[RunningSim], every: float
) -> None:
    while True:
        stats = await asyncio.gather(*(scrape(http, s) for s in sims))
        registry.replace(views(specs, sims, list(stats)))
        await asyncio.sleep(every)


async def loop_lag(run: Run, tick: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(tick)
        run.lag_s.append(loop.time() - before - tick)


async def one_request(
    http: aiohttp.ClientSession,
    registry: NodeRegistry,
    by_id: dict[str, RunningSim],
    policy: str,
    arrival: Arrival,
    prompts: list[str],
    args: argparse.Namespace,
    run: Run,
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    system = prompts[arrival.system]
    prompt_text = f"{system}\n{arrival.user}"  # what the gateway's `prompt_text()` renders for these messages
    node = registry.pick(
        MODEL, REGION, cross_region=False, policy=policy, prefix_key=prompt_text[:PREFIX_KEY_CHARS], session_id=None
    )
    assert node is not None
    body = {
        "model": MODEL,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": arrival.user}],
        "max_tokens": args.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    registry.in_flight[node.id] += 1
    ttft: float | None = None
    tokens = 0
    ok = False
    try:
        async with http.post(f"{by_id[node.id].url}/v1/chat/completions", json=body) as resp:
            if resp.status == 200:
                tail = b""
                async for chunk in resp.content.iter_any():
                    if ttft is None:
                        ttft = loop.time() - started
                    tail = (tail + chunk)[-512:]
                match = _COMPLETION.search(tail)
                tokens = int(match.group(1)) if match else 0
                ok = b"[DONE]" in tail
            else:
                await resp.read()
    except (aiohttp.ClientError, TimeoutError):
        ok = False
    finally:
        registry.in_flight[node.id] -= 1
    done = loop.time()
    registry.observe(node.id, ok=ok, latency_s=done - started, ttft_s=ttft)
    run.outcomes.append(Outcome(node.id, ok, ttft, done, tokens))


async def run_policy(
    policy: str, args: argparse.Namespace, arrivals: list[Arrival], prompts: list[str]
) -> dict[str, Any]:
    specs = fleet(args)
    sims = [
        await start_simulator(
            SimConfig(
                model=MODEL,
                ttft_ms=args.ttft_ms,
                itl_ms=args.itl_ms,
                speed=spec.speed,
                max_num_seqs=args.max_num_seqs,
                prefix_cache=True,
                prefix_cache_entries=args.cache_entries,
                seed=i,
            ),
            "127.0.0.1",
            0,
        )
        for i, spec in enumerate(specs)
    ]
    by_id = {spec.id: sim for spec, sim in zip(specs, sims, strict=True)}
    registry = NodeRegistry(policy)
    run = Run()
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        registry.replace(views(specs, sims, list(await asyncio.gather(*(scrape(http, s) for s in sims)))))
        background = [
            asyncio.create_task(heartbeats(http, registry, specs, sims, args.scrape_interval)),
            asyncio.create_task(loop_lag(run)),
        ]
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        t0 = loop.time()
        for arrival in arrivals:
            delay = t0 + arrival.at_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one_request(http, registry, by_id, policy, arrival, prompts, args, run)))
        issued_until = loop.time() - t0
        _, pending = await asyncio.wait(tasks, timeout=args.drain_timeout) if tasks else (set(), set())
        for t in pending:
            t.cancel()
        for t in background:
            t.cancel()
        for t in [*pending, *background]:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        final = [await scrape(http, s) for s in sims]
    for sim in sims:
        await sim.stop()

    ok = [o for o in run.outcomes if o.ok]
    ttfts = sorted(o.ttft_s for o in ok if o.ttft_s is not None)
    end = max((o.done_at for o in ok), default=t0) - t0
    hits = sum(s.prefix_cache_hits_total for s in final if s)
    queries = sum(s.prefix_cache_queries_total for s in final if s)
    share = Counter(o.node for o in run.outcomes)
    lag = sorted(run.lag_s)
    return {
        "policy": policy,
        "issued": len(arrivals),
        "ok": len(ok),
        "failed": len(run.outcomes) - len(ok),
        "unfinished": len(pending),
        "issue_span_s": round(issued_until, 3),
        "makespan_s": round(end, 3),
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p90_s": percentile(ttfts, 90),
        "ttft_p99_s": percentile(ttfts, 99),
        "ttft_mean_s": statistics.fmean(ttfts) if ttfts else None,
        "throughput_rps": len(ok) / end if end > 0 else 0.0,
        "throughput_tok_s": sum(o.tokens for o in ok) / end if end > 0 else 0.0,
        "prefix_cache_hit_rate": hits / queries if queries else 0.0,
        "share": {spec.id: share.get(spec.id, 0) for spec in specs},
        "loop_lag_p99_ms": 1000 * percentile(lag, 99) if lag else None,
        "loop_lag_max_ms": 1000 * lag[-1] if lag else None,
    }


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return math.nan
    k = (len(sorted_values) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def table(results: list[dict[str, Any]], specs: list[NodeSpec]) -> str:
    head = (
        f"{'policy':<16}{'ok/issued':>11}{'p50 TTFT':>10}{'p90 TTFT':>10}{'p99 TTFT':>10}{'req/s':>8}"
        f"{'tok/s':>8}{'cache hit':>11}  share ({' / '.join(s.id for s in specs)})  loop lag p99"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        share = " / ".join(str(r["share"][s.id]) for s in specs)
        lines.append(
            f"{r['policy']:<16}{str(r['ok']) + '/' + str(r['issued']):>11}"
            f"{r['ttft_p50_s'] * 1000:>8.0f}ms{r['ttft_p90_s'] * 1000:>8.0f}ms{r['ttft_p99_s'] * 1000:>8.0f}ms"
            f"{r['throughput_rps']:>8.1f}{r['throughput_tok_s']:>8.0f}{r['prefix_cache_hit_rate'] * 100:>10.1f}%"
            f"  {share}  {r['loop_lag_p99_ms']:.1f}ms"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Compare the gateway's routing policies on an in-process fleet of vLLM simulators.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--policies", default=",".join(ORDER), help=f"comma-separated, of: {', '.join(POLICY_NAMES)}")
    p.add_argument("--duration", type=float, default=15.0, help="seconds of arrivals per policy")
    p.add_argument("--load", type=float, default=0.8, help="arrival rate as a fraction of the fleet's capacity")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--slow-nodes", type=int, default=1)
    p.add_argument("--slow-speed", type=float, default=3.0, help="latency multiplier of the slow nodes")
    p.add_argument("--max-num-seqs", type=int, default=8, help="concurrent sequences per node")
    p.add_argument("--ttft-ms", type=float, default=150.0, help="time to first token on a cache miss")
    p.add_argument("--itl-ms", type=float, default=25.0, help="inter-token latency")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--prompts", type=int, default=20, help="distinct system prompts")
    p.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of the system prompts' popularity")
    p.add_argument("--cache-entries", type=int, default=8, help="prefixes each node's prefix cache holds")
    p.add_argument("--scrape-interval", type=float, default=0.5, help="seconds between /metrics scrapes")
    p.add_argument("--drain-timeout", type=float, default=60.0, help="seconds to wait for requests in flight")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=None, help="results JSON (default: bench/results/routing-<time>.json)")
    args = p.parse_args(argv)
    unknown = [x for x in args.policies.split(",") if x not in POLICY_NAMES]
    if unknown:
        p.error(f"unknown policies {unknown}; known: {', '.join(POLICY_NAMES)}")
    if not 0 <= args.slow_nodes <= args.nodes or args.nodes < 1:
        p.error("need 1+ nodes and at most --nodes slow ones")
    return args


async def main(args: argparse.Namespace) -> None:
    rate = args.load * capacity_rps(args)
    arrivals = schedule(args, rate)
    prompts = system_prompts(args.prompts, random.Random(args.seed + 1))
    specs = fleet(args)
    print(
        f"fleet: {len(specs)} nodes ({args.slow_nodes} × {args.slow_speed}× slower), {args.max_num_seqs} slots each, "
        f"TTFT {args.ttft_ms:.0f} ms + {args.itl_ms:.0f} ms/token × {args.max_tokens} tokens; capacity "
        f"{capacity_rps(args):.1f} req/s (cache misses); offered {rate:.1f} req/s ({args.load:.0%}), "
        f"{len(arrivals)} requests over {args.duration:.0f} s; {args.prompts} system prompts, Zipf {args.zipf}, "
        f"{args.cache_entries} cached prefixes per node",
        flush=True,
    )
    results = []
    for policy in args.policies.split(","):
        started = time.perf_counter()
        result = await run_policy(policy, args, arrivals, prompts)
        result["wall_s"] = round(time.perf_counter() - started, 1)
        results.append(result)
        print(f"  {policy}: done in {result['wall_s']} s", flush=True)
    print()
    print(table(results, specs))
    out = args.out or ROOT / "bench" / "results" / f"routing-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    payload = {
        "config": config,
        "capacity_rps": capacity_rps(args),
        "offered_rps": rate,
        "fleet": [vars_of(s) for s in specs],
        "results": results,
    }
    out.write_text(json.dumps(payload, indent=2))
    print(f"\nresults: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def vars_of(spec: NodeSpec) -> dict[str, Any]:
    return {"id": spec.id, "speed": spec.speed, "spot": spec.spot, "price_per_hour_micros": spec.price_per_hour_micros}


if __name__ == "__main__":
    parsed = parse_args()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is optional
        runner = asyncio.Runner()
    with runner:
        runner.run(main(parsed))

"""`inframind sim`: run one policy on a simulated cluster and print its summary and speed."""

from __future__ import annotations

import argparse
import json

from .calibration import PLACEMENTS
from .workload import ARRIVALS, Benchmark

TASKS = ("all", *(b.value for b in Benchmark))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sim",
        help="simulate a policy on a vLLM cluster model",
        description="Serve a synthetic workload with one policy on the calibrated cluster "
        "simulator and print accuracy, latency, SLO compliance and simulation speed.",
    )
    p.add_argument(
        "--policy",
        default="budget-greedy",
        help="heuristic name, optionally +fcfs or +edf (default: budget-greedy)",
    )
    p.add_argument("--load-rpm", type=float, default=10.0, help="mean arrivals per minute")
    p.add_argument("--duration", type=float, default=3600.0, help="simulated seconds of arrivals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arrival", choices=ARRIVALS, default="poisson")
    p.add_argument("--task", choices=TASKS, default="all", help="benchmark mix (default: all)")
    p.add_argument(
        "--budget",
        default="loguniform:10:60",
        help="per-query latency budget: fixed:S, uniform:LO:HI or loguniform:LO:HI seconds",
    )
    p.add_argument("--placement", choices=sorted(PLACEMENTS), default="b200x2")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..policy.heuristics import make_heuristic
    from .run import SimConfig, simulate

    console = Console()
    try:
        policy = make_heuristic(args.policy)
        benchmarks = tuple(Benchmark) if args.task == "all" else (Benchmark(args.task),)
        config = SimConfig(
            rate_rpm=args.load_rpm,
            duration_s=args.duration,
            arrival=args.arrival,
            benchmarks=benchmarks,
            budget=args.budget,
            seed=args.seed,
            placement=args.placement,
        )
        config.workload()  # validates rate, duration, arrival and budget with a message
    except ValueError as exc:
        console.print(f"[red]inframind sim: {exc}[/red]")
        return 2

    result = simulate(policy, config)
    summary = result.summary()
    speed = result.speed
    if args.json:
        print(json.dumps({"policy": result.policy, "summary": summary, "speed": speed}))
        return 0

    table = Table(
        title=f"{result.policy} · {args.task} · {args.load_rpm:g} req/min {args.arrival} · "
        f"{args.duration:g} s · {args.placement} · seed {args.seed}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:,.0f}" if key == "queries" else f"{value:.3f}")
    table.add_row("preemptions", f"{result.preemptions:,}")
    console.print(table)
    mixes = (
        ("calls by pool", result.calls_by_pool),
        ("depths", result.depth_mix),
        ("topologies", result.topology_mix),
    )
    for label, mix in mixes:
        console.print(f"{label}: " + ", ".join(f"{k} {v}" for k, v in sorted(mix.items())))
    console.print(
        f"speed: {speed['queries_per_s']:,.0f} requests/s, {speed['events_per_s']:,.0f} events/s, "
        f"{speed['sim_s_per_wall_s']:,.0f}x real time ({result.wall_s:.2f} s wall, "
        f"{result.events:,} events)"
    )
    return 0

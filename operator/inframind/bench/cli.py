"""`inframind bench`: run a scenario, print the table, write results/bench.json and the plots."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import scenarios as sc
from .scenarios import BenchError, Overrides


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="simulator benchmarks: every policy side by side, table + bench.json + plots",
        description="Run a benchmark scenario on the simulator. Every policy of a cell "
        "sees the same seed and workload; the table prints ratios against the baselines.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios:\n"
        + "\n".join(f"  {name:<11} {text}" for name, text in sc.SCENARIO_HELP.items()),
    )
    p.add_argument(
        "--scenario",
        default="paper",
        help="smoke | paper | sweep | generalise (simulator) | decisions (policies' own time) "
        "| gateway, overload (real vLLM engine) | operator (200 pools, 50 pipelines against "
        "the API emulator)",
    )
    p.add_argument(
        "--requests", type=int, default=100, help="gateway scenario: calls per path (sequential)"
    )
    p.add_argument("--seed", type=int, default=None, help="workload seed shared by all policies")
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="run every cell with this many consecutive seeds; tables then show means and "
        "each policy's paired difference to the learned one (default 5 for headroom, else 1)",
    )
    p.add_argument("--load-rpm", default=None, help="comma-separated loads, e.g. 10,100")
    p.add_argument("--arrival", default=None, help="poisson | bursty | diurnal (all cells)")
    p.add_argument("--duration", type=float, default=None, help="simulated seconds per run")
    p.add_argument("--policies", default=None, help="comma-separated, e.g. budget-greedy,moa")
    p.add_argument("--budget", default=None, help=f"latency budget spec ({sc.DEFAULT_BUDGET})")
    p.add_argument("--out", type=Path, default=Path("results"), help="output directory")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="simulation processes (results do not depend on it)",
    )
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> Overrides:
    return Overrides(
        seed=args.seed,
        loads=sc.parse_loads(args.load_rpm) if args.load_rpm else None,
        arrival=args.arrival,
        duration_s=args.duration,
        policies=sc.parse_policies(args.policies) if args.policies else None,
        budget=args.budget,
        seeds=args.seeds,
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    # Piped output (make, CI logs) would otherwise wrap the table at 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 132)
    if args.scenario == "gateway":
        return _gateway(args, console)
    if args.scenario == "overload":
        return _overload(args, console)
    if args.scenario == "operator":
        return _operator(args, console)
    if args.scenario == "decisions":
        return _decisions(args, console)
    try:
        scenario = sc.build_scenario(args.scenario, _overrides(args))
    except BenchError as exc:
        print(f"inframind bench: error: {exc}", file=sys.stderr)
        return 2

    console.print(
        f"[bold]bench {scenario.name}[/bold]: {len(scenario.cells)} cells x "
        f"{len(scenario.policies)} policies, {scenario.cells[0].duration_s:g} s simulated "
        f"per run, {args.workers} worker(s)"
    )
    started = time.perf_counter()
    try:
        outcomes = sc.run_scenario(scenario, workers=args.workers)
    except ValueError as exc:  # a bad --budget or arrival reaches the simulator
        print(f"inframind bench: error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started

    from . import report

    rows = report.build_rows(outcomes)
    seeds = sorted({c.seed for c in scenario.cells})
    shown, reference = rows, None
    if len(seeds) > 1:
        reference = report.paired_reference(scenario.policies)
        shown = report.over_seeds(rows, reference)
    report.render_tables(shown, console, reference)

    speed = report.speed_summary(outcomes)
    hour = report.hour_at_load(outcomes, "moa", 100.0)
    probe = hour is None and scenario.name != "smoke"
    if probe:
        # No moa run at 100 req/min in this scenario: time one hour of it directly.
        cell = sc.Cell("speed-probe", 100.0, sc.MIXED, "poisson", 0, 3600.0, sc.DEFAULT_BUDGET)
        hour = sc.run_one(cell, "moa").wall_s
    console.print(
        f"simulator speed: {speed['queries']} requests, {speed['events']} events in "
        f"{speed['sim_wall_s']:.1f} s of simulation -> "
        f"{speed['requests_per_wall_s']} requests/s, {speed['events_per_wall_s']} events/s\n"
        f"whole bench: {elapsed:.1f} s wall with {args.workers} worker(s)"
    )
    if hour is not None:
        how = "measured" if probe else "scaled from this scenario's moa runs"
        console.print(
            f"one simulated hour at 100 req/min with moa (multi-agent ensemble): "
            f"{hour:.1f} s wall ({how})"
        )

    meta = {
        "scenario": scenario.name,
        "description": sc.SCENARIO_HELP[scenario.name],
        "policies": list(scenario.policies),
        "cells": len(scenario.cells),
        "seed": scenario.cells[0].seed,
        "seeds": seeds,
        "duration_s": scenario.cells[0].duration_s,
        "budget": scenario.cells[0].budget,
        "baselines": list(sc.BASELINES),
        "reference": sc.REFERENCE,
        "workers": args.workers,
        "bench_wall_s": round(elapsed, 2),
        "speed": speed,
        "hour_at_100rpm_moa_wall_s": None if hour is None else round(hour, 2),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out: Path = args.out
    path = out / "bench.json"
    if reference is not None:
        meta["paired_reference"] = reference
        meta["over_seeds"] = shown  # per (cell, policy): means and paired differences
    report.write_json(rows, meta, path, scenario.name)
    console.print(f"wrote {path}")
    if not args.no_plots:
        for png in report.write_plots(outcomes, shown, out, scenario.name):
            console.print(f"wrote {png}")
    return 0


def _gateway(args: argparse.Namespace, console: Any) -> int:
    """Gateway overhead on a real vLLM engine, against direct calls and vllm-router."""
    from . import overhead

    console.print(f"[bold]bench gateway[/bold]: {args.requests} calls per path, vLLM CPU engine")
    summary = overhead.run(requests=args.requests)
    overhead.render(summary, console)
    return _write_json(args.out / "gateway-overhead.json", summary, console)


def _decisions(args: argparse.Namespace, console: Any) -> int:
    """Each policy's decide / choose time on one snapshot, in process (seconds to run)."""
    from . import decisions

    summary = decisions.run()
    decisions.render(summary["policies"], console)
    return _write_json(args.out / "decisions.json", summary, console)


def _overload(args: argparse.Namespace, console: Any) -> int:
    """Ten times a real engine's capacity through the gateway: SLO and shedding per class."""
    from . import overload

    console.print("[bold]bench overload[/bold]: 10x a vLLM CPU engine's capacity, 30 s")
    summary = overload.run()
    overload.render(summary, console)
    return _write_json(args.out / "overload.json", summary, console)


def _write_json(path: Path, summary: dict[str, Any], console: Any) -> int:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    console.print(f"wrote {path}")
    return 0


def _operator(args: argparse.Namespace, console: Any) -> int:
    """Operator reconcile throughput and PromQL per metrics pull, at scale on the emulator."""
    import json

    from rich.table import Table

    from . import scale

    console.print("[bold]bench operator[/bold]: 200 ModelPools + 50 AgentPipelines, real operator")
    result = scale.run_scale()
    table = Table("measure", "value")
    for key, value in result.items():
        table.add_row(key, str(value))
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "operator-scale.json"
    path.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {path}")
    return 0

"""Benchmark output: rows with ratios against the baselines, rich tables, bench.json, PNG plots."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..policy.heuristics import BudgetGreedy, make_heuristic
from .scenarios import BASELINES, LEARNED, REFERENCE, Cell, RunOutcome

# Summary metrics every row carries (from SimResult.summary()).
METRICS: tuple[str, ...] = (
    "accuracy",
    "latency_mean_s",
    "latency_p95_s",
    "latency_p99_s",
    "slo_compliance",
    "calls_per_query",
    "tokens_per_query",
)


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity; an undefined metric is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _best(rows: Sequence[dict[str, Any]], key: str, lower: bool = False) -> dict[str, Any] | None:
    scored = [r for r in rows if r.get(key) is not None]
    if not scored:
        return None
    return (min if lower else max)(scored, key=lambda r: r[key])


def build_rows(outcomes: Iterable[RunOutcome]) -> list[dict[str, Any]]:
    """One row per (cell, policy), with ratios against the baselines run in the same cell."""
    by_cell: dict[Cell, list[dict[str, Any]]] = defaultdict(list)
    for o in outcomes:
        c = o.cell
        row: dict[str, Any] = {
            "scenario": c.scenario,
            "load_rpm": c.load_rpm,
            "task": c.task,
            "policy": o.policy,
        }
        row.update({m: _clean(o.summary.get(m)) for m in METRICS})
        row.update(
            queries=o.queries,
            arrival=c.arrival,
            seed=c.seed,
            duration_s=c.duration_s,
            budget=c.budget,
            events=o.events,
            sim_wall_s=round(o.wall_s, 4),
            calls_by_pool=dict(o.calls_by_pool),
            depth_mix=dict(o.depth_mix),
            topology_mix=dict(o.topology_mix),
        )
        by_cell[c].append(row)

    rows: list[dict[str, Any]] = []
    for cell_rows in by_cell.values():
        _add_ratios(cell_rows)
        rows.extend(cell_rows)
    return rows


def _cell_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What a table shows one of, and pools seeds within: scenario, task, load, arrival."""
    return row["scenario"], row["task"], row["load_rpm"], row["arrival"]


def paired_reference(policies: Sequence[str]) -> str:
    """The policy others are compared with seed by seed: the learned one if it ran."""
    return LEARNED if LEARNED in policies else policies[0]


def over_seeds(rows: Sequence[dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    """Rows of a multi-seed run pooled per (cell, policy): metrics averaged over the seeds,
    and each policy's accuracy and SLO minus the reference's on the same seed (paired:
    same arrivals, budgets and query difficulties), as a mean and its standard error in
    percentage points. A policy ahead of the reference has a positive difference."""
    groups: dict[tuple[Any, ...], dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in rows:
        groups[_cell_key(r)][r["policy"]].append(r)
    pooled: list[dict[str, Any]] = []
    for by_policy in groups.values():
        ref = {r["seed"]: r for r in by_policy.get(reference, [])}
        cell_rows = []
        for runs in by_policy.values():
            row = {k: v for k, v in runs[0].items() if k not in (*METRICS, "seed")}
            for m in METRICS:
                values = [r[m] for r in runs if r[m] is not None]
                row[m] = sum(values) / len(values) if len(values) == len(runs) else None
            row["seeds"] = sorted(r["seed"] for r in runs)
            for total in ("queries", "events", "sim_wall_s"):  # over all the seeds' runs
                row[total] = sum(r[total] for r in runs)
            for counts in ("calls_by_pool", "depth_mix", "topology_mix"):
                merged: dict[str, int] = defaultdict(int)
                for r in runs:
                    for key, n in r[counts].items():
                        merged[key] += n
                row[counts] = dict(merged)
            for m, key in (("accuracy", "accuracy"), ("slo_compliance", "slo")):
                diffs = [
                    100 * (r[m] - ref[r["seed"]][m])
                    for r in runs
                    if r["seed"] in ref and r[m] is not None and ref[r["seed"]][m] is not None
                ]
                mean, se = _mean_se(diffs)
                row[f"{key}_delta_pp_vs_{reference}"] = mean
                row[f"{key}_delta_pp_vs_{reference}_se"] = se
            cell_rows.append(row)
        _add_ratios(cell_rows)
        pooled.extend(cell_rows)
    return pooled


def _mean_se(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return round(mean, 3), None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return round(mean, 3), round(math.sqrt(var / len(values)), 3)


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    ref = next((r for r in rows if r["policy"] == REFERENCE), None)
    baselines = [r for r in rows if r["policy"] in BASELINES]
    best_acc = _best(baselines, "accuracy")
    best_slo = _best(baselines, "slo_compliance")
    ref_latency = ref["latency_mean_s"] if ref else None
    for r in rows:
        lat = r["latency_mean_s"]
        r[f"latency_vs_{REFERENCE}"] = (
            round(lat / ref_latency, 4) if lat is not None and ref_latency else None
        )
        # The paper's "x lower latency": reference mean latency over this policy's.
        r[f"speedup_vs_{REFERENCE}"] = (
            float(f"{ref_latency / lat:.4g}") if lat and ref_latency else None
        )
        r["best_baseline"] = best_acc["policy"] if best_acc else None
        r["accuracy_delta_pp_vs_best_baseline"] = (
            round(100 * (r["accuracy"] - best_acc["accuracy"]), 2)
            if best_acc and r["accuracy"] is not None
            else None
        )
        r["slo_delta_pp_vs_best_baseline"] = (
            round(100 * (r["slo_compliance"] - best_slo["slo_compliance"]), 2)
            if best_slo and r["slo_compliance"] is not None
            else None
        )


# ---------------------------------------------------------------------------- table


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def render_tables(
    rows: Sequence[dict[str, Any]], console: Any, reference: str | None = None
) -> None:
    """One rich table per cell; the best accuracy, latency and SLO of a cell in bold.

    Rows pooled over seeds (`over_seeds`) show means, and two more columns: accuracy and
    SLO minus the `reference` policy's on the same seeds, mean ± standard error."""
    from rich.table import Table

    cells: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        cells[_cell_key(r)].append(r)
    for (scenario, task, load, arrival), cell_rows in cells.items():
        title = f"{scenario} · {task} · {load:g} req/min · {arrival}"
        n = cell_rows[0]["queries"]
        seeds = cell_rows[0].get("seeds")
        if seeds:  # pooled over seeds
            which = f"mean over seeds {seeds[0]}-{seeds[-1]}"
        else:
            which = f"seed {cell_rows[0]['seed']}"
        caption = (
            f"{n} queries, {which}, budget {cell_rows[0]['budget']}; "
            f"best baseline by accuracy: {cell_rows[0]['best_baseline'] or '-'}"
        )
        paired = reference is not None and f"accuracy_delta_pp_vs_{reference}" in cell_rows[0]
        best = {
            "accuracy": _best(cell_rows, "accuracy"),
            "latency_mean_s": _best(cell_rows, "latency_mean_s", lower=True),
            "slo_compliance": _best(cell_rows, "slo_compliance"),
        }

        def mark(r: dict[str, Any], key: str, text: str, _best: dict = best) -> str:
            return f"[bold]{text}[/bold]" if _best[key] is r else text

        slo_digits = ".2f" if paired else ".1f"  # paired differences are hundredths
        columns: list[tuple[str, list[str]]] = [
            ("policy", [r["policy"] for r in cell_rows]),
            ("acc", [mark(r, "accuracy", _fmt(_pct(r["accuracy"]), ".1f", "%"))
                     for r in cell_rows]),
            ("mean s", [mark(r, "latency_mean_s", _fmt(r["latency_mean_s"], ".2f"))
                        for r in cell_rows]),
            ("p95 s", [_fmt(r["latency_p95_s"], ".2f") for r in cell_rows]),
            ("p99 s", [_fmt(r["latency_p99_s"], ".2f") for r in cell_rows]),
            ("SLO", [mark(r, "slo_compliance", _fmt(_pct(r["slo_compliance"]), slo_digits, "%"))
                     for r in cell_rows]),
            ("tok/q", [_fmt(r["tokens_per_query"], ".0f") for r in cell_rows]),
            ("calls/q", [_fmt(r["calls_per_query"], ".2f") for r in cell_rows]),
            (f"faster than {REFERENCE}", [_ratio(r[f"speedup_vs_{REFERENCE}"])
                                          for r in cell_rows]),
            ("Δacc pp", [_fmt(r["accuracy_delta_pp_vs_best_baseline"], "+.1f")
                         for r in cell_rows]),
            ("ΔSLO pp", [_fmt(r["slo_delta_pp_vs_best_baseline"], "+.1f") for r in cell_rows]),
        ]  # fmt: skip
        if paired:
            for key, name in (("accuracy", "acc"), ("slo", "SLO")):
                mean, se = f"{key}_delta_pp_vs_{reference}", f"{key}_delta_pp_vs_{reference}_se"
                columns.append(
                    (
                        f"{name} - {reference} pp",
                        [
                            "(reference)" if r["policy"] == reference else _pm(r[mean], r[se])
                            for r in cell_rows
                        ],
                    )
                )
        table = Table(title=title, caption=caption, title_justify="left")
        # A column with nothing in it (no baseline ran, say) is left out.
        columns = [(name, cells) for name, cells in columns if any(c != "-" for c in cells)]
        for i, (name, _) in enumerate(columns):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row_cells in zip(*(cells for _, cells in columns), strict=True):
            table.add_row(*row_cells)
        console.print(table)
        console.print()


def _pm(mean: float | None, se: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:+.2f}" if se is None else f"{mean:+.2f}±{se:.2f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}x"
    return f"{value:.1f}x" if value >= 10 else f"{value:.2g}x" if value < 0.1 else f"{value:.2f}x"


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


# ---------------------------------------------------------------------------- speed


def speed_summary(outcomes: Sequence[RunOutcome]) -> dict[str, Any]:
    """How fast the simulator ran: totals over runs, per second of simulator wall time."""
    wall = sum(o.wall_s for o in outcomes)
    queries = sum(o.queries for o in outcomes)
    events = sum(o.events for o in outcomes)
    return {
        "runs": len(outcomes),
        "simulated_s": sum(o.cell.duration_s for o in outcomes),
        "queries": queries,
        "events": events,
        "sim_wall_s": round(wall, 3),
        "requests_per_wall_s": round(queries / wall, 1) if wall > 0 else None,
        "events_per_wall_s": round(events / wall, 1) if wall > 0 else None,
    }


def hour_at_load(outcomes: Sequence[RunOutcome], policy: str, load_rpm: float) -> float | None:
    """Wall seconds to simulate one hour of `policy` at `load_rpm` (Poisson), scaled from runs."""
    runs = [
        o
        for o in outcomes
        if (o.policy, o.cell.load_rpm, o.cell.arrival) == (policy, load_rpm, "poisson")
    ]
    if not runs:
        return None
    return sum(o.wall_s * 3600.0 / o.cell.duration_s for o in runs) / len(runs)


# ---------------------------------------------------------------------------- JSON


def write_json(
    rows: Sequence[dict[str, Any]], meta: dict[str, Any], path: Path, scenario: str
) -> dict[str, Any]:
    """Write bench.json, replacing this scenario's rows and keeping other scenarios' rows."""
    doc: dict[str, Any] = {"scenarios": [], "meta": {}}
    if path.exists():
        try:
            old = json.loads(path.read_text())
            if isinstance(old.get("scenarios"), list) and isinstance(old.get("meta"), dict):
                doc = old
        except (OSError, ValueError, AttributeError):
            pass  # an unreadable file is replaced, not merged
    doc["scenarios"] = [r for r in doc["scenarios"] if r.get("scenario") != scenario]
    doc["scenarios"].extend(rows)
    doc["meta"].setdefault("runs", {})[scenario] = meta
    doc["meta"]["last_scenario"] = scenario
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return doc


# ---------------------------------------------------------------------------- plots


def _styles(policies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A colour per base policy; a scheduler variant (`x+fcfs`) shares it, dashed and hollow,
    so an ablation that changes nothing is still visible instead of hiding its base."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    bases = list(dict.fromkeys(p.partition("+")[0] for p in policies))
    out = {}
    for p in policies:
        colour = cmap(bases.index(p.partition("+")[0]) % 10)
        variant = "+" in p
        out[p] = {
            "color": colour,
            "linestyle": "--" if variant else "-",
            "facecolor": "none" if variant else colour,
        }
    return out


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def _policies(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["policy"] for r in rows))


def plot_slo_vs_load(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """SLO compliance against offered load, one line per policy (mean over tasks of a load)."""
    plt = _pyplot()
    arrivals = list(dict.fromkeys(r["arrival"] for r in rows))
    policies = _policies(rows)
    styles = _styles(policies)
    fig, axes = plt.subplots(
        1, len(arrivals), figsize=(6 * len(arrivals), 4.2), squeeze=False, sharey=True
    )
    for ax, arrival in zip(axes[0], arrivals, strict=True):
        for policy in policies:
            points: dict[float, list[float]] = defaultdict(list)
            for r in rows:
                same = (r["policy"], r["arrival"]) == (policy, arrival)
                if same and r["slo_compliance"] is not None:
                    points[r["load_rpm"]].append(r["slo_compliance"])
            loads = sorted(points)
            ys = [100 * sum(points[x]) / len(points[x]) for x in loads]
            st = styles[policy]
            ax.plot(
                loads,
                ys,
                marker="o",
                label=policy,
                color=st["color"],
                linestyle=st["linestyle"],
                markerfacecolor=st["facecolor"],
            )
        ax.set_title(f"SLO compliance vs load ({arrival})")
        ax.set_xlabel("offered load (req/min)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("queries within budget (%)")
    axes[0][-1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_latency_cdf(outcomes: Sequence[RunOutcome], path: Path, load_rpm: float) -> Path:
    """Empirical CDF of whole-workflow latency per policy at one load, pooled over tasks."""
    import numpy as np

    plt = _pyplot()
    chosen = [o for o in outcomes if o.cell.load_rpm == load_rpm]
    arrival = chosen[0].cell.arrival if chosen else "poisson"
    chosen = [o for o in chosen if o.cell.arrival == arrival]
    policies = list(dict.fromkeys(o.policy for o in chosen))
    styles = _styles(policies)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for policy in policies:
        lat = np.sort(
            np.concatenate([np.asarray(o.latencies, float) for o in chosen if o.policy == policy])
        )
        lat = lat[np.isfinite(lat) & (lat > 0)]
        if len(lat) == 0:
            continue
        ax.step(
            lat,
            np.arange(1, len(lat) + 1) / len(lat),
            where="post",
            label=policy,
            color=styles[policy]["color"],
            linestyle=styles[policy]["linestyle"],
        )
    ax.set_xscale("log")
    ax.set_xlabel("workflow latency (s, log scale)")
    ax.set_ylabel("share of queries")
    ax.set_title(f"Latency CDF at {load_rpm:g} req/min ({arrival})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy_vs_latency(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Accuracy against mean latency, a point per (cell, policy); colour = policy, marker = load."""
    plt = _pyplot()
    policies = _policies(rows)
    styles = _styles(policies)
    loads = sorted({r["load_rpm"] for r in rows})
    markers = dict(zip(loads, "os^Dvp*hX<>", strict=False))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in rows:
        if r["accuracy"] is None or r["latency_mean_s"] is None:
            continue
        ax.scatter(
            r["latency_mean_s"],
            100 * r["accuracy"],
            edgecolors=styles[r["policy"]]["color"],
            facecolors=styles[r["policy"]]["facecolor"],
            marker=markers.get(r["load_rpm"], "o"),
            s=36,
            alpha=0.85,
        )
    for policy in policies:
        st = styles[policy]
        ax.scatter(
            [], [], edgecolors=st["color"], facecolors=st["facecolor"], marker="o", label=policy
        )
    for load in loads:
        ax.scatter([], [], color="black", marker=markers.get(load, "o"), label=f"{load:g} req/min")
    ax.set_xscale("log")
    ax.set_xlabel("mean workflow latency (s, log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy vs latency (up and left is better)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _safety(policy: str) -> float | None:
    """The fixed safety of a budget-greedy run at EDF, else None (another policy, a
    scheduler ablation, or budget-greedy tuned to an SLO target)."""
    if "+" in policy:
        return None  # a scheduler ablation, not a point of the frontier
    try:
        heuristic = make_heuristic(policy)
    except ValueError:  # learned, or not a heuristic at all
        return None
    if isinstance(heuristic, BudgetGreedy) and heuristic.tuner is None:
        return heuristic.safety
    return None


def plot_accuracy_vs_slo(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Accuracy against SLO compliance per cell: budget-greedy's safety settings joined by
    a line (its frontier), every other policy a labelled star."""
    plt = _pyplot()
    cells = list(dict.fromkeys((r["load_rpm"], r["task"], r["arrival"]) for r in rows))
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for k, (load, task, arrival) in enumerate(cells):
        colour = cmap(k % 10)
        at = [
            r
            for r in rows
            if (r["load_rpm"], r["task"], r["arrival"]) == (load, task, arrival)
            and r["accuracy"] is not None
            and "+" not in r["policy"]
        ]
        family = sorted(
            ((s, r) for r in at if (s := _safety(r["policy"])) is not None), key=lambda f: f[0]
        )
        label = f"budget-greedy, {task}, {load:g} req/min"
        xs = [100 * r["slo_compliance"] for _, r in family]
        ys = [100 * r["accuracy"] for _, r in family]
        ax.plot(xs, ys, "-o", color=colour, ms=4, label=label)
        for (safety, _), x, y in zip(family, xs, ys, strict=True):
            ax.annotate(f"{safety:g}", (x, y), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        for r in at:
            if _safety(r["policy"]) is None:
                x, y = 100 * r["slo_compliance"], 100 * r["accuracy"]
                ax.scatter(x, y, marker="*", s=90, color=colour, edgecolors="black")
                ax.annotate(r["policy"], (x, y), fontsize=7, xytext=(4, -9),
                            textcoords="offset points")  # fmt: skip
    ax.set_xlabel("SLO compliance (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("What SLO compliance buys in accuracy (labels: safety)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(
    outcomes: Sequence[RunOutcome], rows: Sequence[dict[str, Any]], out: Path, scenario: str
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    # A frontier needs a few settings of the knob (the headroom scenario has them). Its
    # runs are variations of one policy on one workload, where the other plots say nothing
    # the frontier does not.
    if len({_safety(r["policy"]) for r in rows} - {None}) >= 3:
        return [plot_accuracy_vs_slo(rows, out / f"{scenario}-accuracy-vs-slo.png")]
    top_load = max(o.cell.load_rpm for o in outcomes)
    return [
        plot_slo_vs_load(rows, out / f"{scenario}-slo-vs-load.png"),
        plot_latency_cdf(outcomes, out / f"{scenario}-latency-cdf.png", top_load),
        plot_accuracy_vs_latency(rows, out / f"{scenario}-accuracy-vs-latency.png"),
    ]

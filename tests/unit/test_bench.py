"""`inframind bench`: scenarios, bench.json schema, plots and the command line. Never timings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from inframind.bench import report
from inframind.bench import scenarios as sc
from inframind.bench.scenarios import BenchError, Cell, Overrides, RunOutcome

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REQUIRED = (
    "scenario",
    "load_rpm",
    "task",
    "policy",
    "accuracy",
    "latency_mean_s",
    "latency_p95_s",
    "latency_p99_s",
    "slo_compliance",
    "calls_per_query",
)


def _outcome(cell: Cell, policy: str, scale: float, acc: float, n: int = 50) -> RunOutcome:
    """A hand-made run: latencies from the cell's seed, scaled per policy."""
    rng = np.random.default_rng(cell.seed)
    lat = rng.lognormal(1.0, 0.5, n) * scale
    met = lat <= 20.0
    summary = {
        "accuracy": acc,
        "latency_mean_s": float(lat.mean()),
        "latency_p95_s": float(np.percentile(lat, 95)),
        "latency_p99_s": float(np.percentile(lat, 99)),
        "slo_compliance": float(met.mean()),
        "calls_per_query": 1.0 if policy != "moa" else 7.0,
        "tokens_per_query": 300.0 * scale,
        "queries": float(n),
    }
    return RunOutcome(cell, policy, summary, lat.tolist(), met.tolist(), events=10 * n, wall_s=0.1)


def _hand_made() -> list[RunOutcome]:
    out = []
    for load in (10.0, 100.0):
        cell = Cell("paper", load, "math", seed=3, duration_s=600.0)
        out += [
            _outcome(cell, "budget-greedy", 1.0, 0.80),
            _outcome(cell, "moa", 4.0, 0.74),
            _outcome(cell, "masrouter", 2.0, 0.73),
        ]
    return out


def test_rows_carry_the_schema_and_ratios_against_the_baselines():
    rows = report.build_rows(_hand_made())
    assert len(rows) == 6
    for row in rows:
        assert set(REQUIRED) <= set(row)
    greedy = next(r for r in rows if r["policy"] == "budget-greedy" and r["load_rpm"] == 10.0)
    moa = next(r for r in rows if r["policy"] == "moa" and r["load_rpm"] == 10.0)
    assert moa["latency_vs_moa"] == pytest.approx(1.0)
    assert greedy["latency_vs_moa"] == pytest.approx(0.25, rel=1e-3)
    assert greedy["speedup_vs_moa"] == pytest.approx(4.0, rel=1e-3)
    assert greedy["best_baseline"] == "moa"
    assert greedy["accuracy_delta_pp_vs_best_baseline"] == pytest.approx(6.0)


def test_bench_json_has_one_row_per_cell_and_policy_and_keeps_other_scenarios(tmp_path: Path):
    path = tmp_path / "bench.json"
    report.write_json([{"scenario": "sweep", "policy": "moa"}], {"n": 1}, path, "sweep")
    rows = report.build_rows(_hand_made())
    report.write_json(rows, {"n": 2}, path, "paper")
    report.write_json(rows, {"n": 3}, path, "paper")  # a rerun replaces, never duplicates
    doc = json.loads(path.read_text())
    paper = [r for r in doc["scenarios"] if r["scenario"] == "paper"]
    keys = {(r["load_rpm"], r["task"], r["policy"]) for r in paper}
    assert len(paper) == len(keys) == 6
    assert [r["policy"] for r in doc["scenarios"] if r["scenario"] == "sweep"] == ["moa"]
    assert doc["meta"]["runs"]["paper"] == {"n": 3}


def test_undefined_metrics_are_null_not_nan(tmp_path: Path):
    cell = Cell("smoke", 30.0, "math")
    empty = RunOutcome(cell, "moa", {"accuracy": math.nan, "latency_mean_s": math.nan}, [], [])
    rows = report.build_rows([empty])
    report.write_json(rows, {}, tmp_path / "bench.json", "smoke")
    row = json.loads((tmp_path / "bench.json").read_text())["scenarios"][0]
    assert row["accuracy"] is None and row["latency_vs_moa"] is None


def test_plots_are_valid_png_files(tmp_path: Path):
    outcomes = _hand_made()
    paths = report.write_plots(outcomes, report.build_rows(outcomes), tmp_path, "paper")
    assert len(paths) == 3
    for png in paths:
        assert png.read_bytes()[:8] == PNG_MAGIC


def test_table_prints_every_policy_of_a_cell():
    from rich.console import Console

    console = Console(record=True, width=160)
    report.render_tables(report.build_rows(_hand_made()), console)
    text = console.export_text()
    assert "paper · math · 100 req/min" in text
    assert text.count("budget-greedy") == 2


def test_overload_report_says_how_busy_the_engine_was_per_variant():
    """The committed run (the README's figures) renders with its engine-use line."""
    from rich.console import Console

    from inframind.bench import overload

    summary = json.loads((ROOT / "docs" / "bench" / "overload.json").read_text())
    console = Console(record=True, width=200)
    overload.render(summary, console)
    text = console.export_text()
    for variant, v in summary["variants"].items():
        assert f"{variant}: {v['answered_rps']:.2f} answers/s" in text
        assert f"engine slots busy while arriving: {v['engine_slots_busy']:.0%}" in text


def test_unknown_policy_names_the_valid_ones():
    with pytest.raises(BenchError, match=r"valid policies: .*budget-greedy.*moa"):
        sc.resolve_policy("oracle")
    with pytest.raises(BenchError, match="budget-greedy"):
        sc.build_scenario("smoke", Overrides(policies=("budget-greedy", "nope")))


def test_unknown_scenario_names_the_valid_ones():
    with pytest.raises(BenchError, match="valid scenarios: smoke, paper, sweep, generalise"):
        sc.build_scenario("full")


def test_bad_budget_is_refused_before_any_run_with_the_forms_it_takes():
    with pytest.raises(BenchError, match="loguniform:LOW:HIGH"):
        sc.build_scenario("smoke", Overrides(budget="fast"))


def test_fcfs_variant_resolves_to_a_policy_with_the_fcfs_scheduler():
    policy = sc.resolve_policy("budget-greedy+fcfs")
    assert policy.name == "budget-greedy+fcfs"
    assert policy.scheduler == "fcfs"


def test_budget_greedy_takes_a_safety_and_a_bad_one_says_what_to_fix():
    policy = sc.resolve_policy("budget-greedy:safety=0.4+fcfs")
    assert (policy.name, policy.safety, policy.scheduler) == (
        "budget-greedy:safety=0.4+fcfs",
        0.4,
        "fcfs",
    )
    assert sc.resolve_policy("budget-greedy").safety == 0.7
    with pytest.raises(BenchError, match=r"in \(0, 1\], got 1.5"):
        sc.resolve_policy("budget-greedy:safety=1.5")
    with pytest.raises(BenchError, match="a number"):
        sc.resolve_policy("budget-greedy:safety=high")
    with pytest.raises(BenchError, match="only budget-greedy takes an option"):
        sc.resolve_policy("moa:safety=0.5")
    with pytest.raises(BenchError, match=r"SLO target must be in \(0, 1\]"):
        sc.resolve_policy("budget-greedy:slo=99.9")


def test_headroom_scenario_sweeps_budget_greedys_safety_beside_the_learned_policy():
    scenario = sc.build_scenario("headroom")
    assert {c.task for c in scenario.cells} == {sc.MIXED}
    assert sorted({c.load_rpm for c in scenario.cells}) == [10.0, 30.0, 100.0]
    fixed = [p for p in scenario.policies if p == "budget-greedy" or ":safety=" in p]
    safeties = {sc.resolve_policy(p).safety for p in fixed}
    assert {0.3, 0.7, 1.0} <= safeties and len(safeties) == len(fixed)
    tuned = [sc.resolve_policy(p) for p in scenario.policies if ":slo=" in p]
    assert {p.tuner.target for p in tuned} == {0.99, 0.999}
    assert ("learned" in scenario.policies) == sc.LEARNED_ARTIFACT.exists()


def test_headroom_plot_draws_the_safety_frontier_of_every_cell(tmp_path: Path):
    outcomes = []
    for load, task in ((30.0, sc.MIXED), (30.0, "math"), (100.0, "math")):
        cell = Cell("headroom", load, task, seed=3, duration_s=600.0)
        outcomes += [
            _outcome(cell, "budget-greedy", 1.0, 0.71),
            _outcome(cell, "budget-greedy+fcfs", 1.0, 0.71),
            _outcome(cell, "budget-greedy:safety=0.4", 0.6, 0.70),
            _outcome(cell, "budget-greedy:safety=1", 1.3, 0.72),
            _outcome(cell, "learned", 0.9, 0.71),
        ]
    paths = report.write_plots(outcomes, report.build_rows(outcomes), tmp_path, "headroom")
    # Only the frontier: the per-load plots say nothing more about one workload.
    assert paths == [tmp_path / "headroom-accuracy-vs-slo.png"]
    assert paths[0].read_bytes().startswith(PNG_MAGIC)
    # Without a few settings of the knob there is no frontier to draw.
    plain = report.write_plots(_hand_made(), report.build_rows(_hand_made()), tmp_path, "paper")
    assert not any("accuracy-vs-slo" in p.name for p in plain)


def test_paper_scenario_is_two_loads_by_four_benchmarks_with_every_policy():
    scenario = sc.build_scenario("paper")
    assert {(c.load_rpm, c.task) for c in scenario.cells} == {
        (load, task) for load in (10.0, 100.0) for task in sc.TASKS
    }
    assert {"budget-greedy", "moa", "gptswarm", "masrouter"} <= set(scenario.policies)
    assert {c.arrival for c in scenario.cells} == {"poisson"}


def test_overrides_replace_loads_arrival_duration_and_seed():
    scenario = sc.build_scenario(
        "sweep", Overrides(seed=7, loads=(20.0,), arrival="bursty", duration_s=60.0)
    )
    (cell,) = scenario.cells
    assert (cell.load_rpm, cell.arrival, cell.duration_s, cell.seed) == (20.0, "bursty", 60.0, 7)


def test_generalise_uses_bursty_and_diurnal_arrivals_and_held_out_seeds():
    scenario = sc.build_scenario("generalise", Overrides(seed=0))
    assert {c.arrival for c in scenario.cells} == {"bursty", "diurnal"}
    assert all(c.seed >= sc.HELD_OUT_SEED_BASE for c in scenario.cells)
    # Five held-out seeds per cell unless --seeds says otherwise.
    assert len({c.seed for c in scenario.cells}) == 5
    one = sc.build_scenario("generalise", Overrides(seed=0, seeds=1))
    assert len({c.seed for c in one.cells}) == 1


# --------------------------------------------------------------- with the real simulator


def test_policies_of_a_cell_share_seed_and_workload():
    scenario = sc.build_scenario(
        "smoke", Overrides(duration_s=120.0, loads=(10.0,), policies=("budget-greedy", "moa"))
    )
    outcomes = sc.run_scenario(scenario, workers=1, progress=False)
    assert [o.policy for o in outcomes] == ["budget-greedy", "moa"]
    assert len({o.cell.seed for o in outcomes}) == 1
    assert len({o.queries for o in outcomes}) == 1 and outcomes[0].queries > 0


def test_a_cautious_budget_greedy_buys_slo_compliance_with_fewer_calls():
    """The headroom bench's knob works as a user reads it: a lower safety plans fewer and
    faster calls, and misses fewer budgets, on the same loaded workload."""
    scenario = sc.build_scenario(
        "smoke",
        Overrides(
            duration_s=600.0,
            loads=(100.0,),
            policies=("budget-greedy:safety=0.3", "budget-greedy:safety=1"),
        ),
    )
    cautious, bold = (o.summary for o in sc.run_scenario(scenario, workers=1, progress=False))
    assert cautious["calls_per_query"] < bold["calls_per_query"]
    assert cautious["latency_mean_s"] < bold["latency_mean_s"]
    assert cautious["slo_compliance"] > bold["slo_compliance"]


def test_a_pool_of_workers_gives_the_same_numbers_as_one_process():
    scenario = sc.build_scenario(
        "smoke", Overrides(duration_s=90.0, loads=(10.0,), policies=("budget-greedy", "moa"))
    )
    one = sc.run_scenario(scenario, workers=1, progress=False)
    two = sc.run_scenario(scenario, workers=2, progress=False)
    assert [o.summary for o in one] == [o.summary for o in two]


def test_seeds_multiply_the_cells_and_headroom_runs_five_by_default():
    headroom = sc.build_scenario("headroom")
    assert sorted({c.seed for c in headroom.cells}) == [0, 1, 2, 3, 4]
    assert len(headroom.cells) == 5 * len(sc.HEADROOM_LOADS)
    paper = sc.build_scenario("paper", Overrides(seed=7, seeds=2))
    assert sorted({c.seed for c in paper.cells}) == [7, 8]
    with pytest.raises(BenchError, match="--seeds"):
        sc.build_scenario("paper", Overrides(seeds=0))


def test_over_seeds_pairs_every_policy_with_the_reference_on_the_same_seeds():
    scenario = sc.build_scenario(
        "smoke",
        Overrides(
            duration_s=240.0,
            loads=(30.0,),
            seeds=3,
            policies=("budget-greedy", "budget-greedy:safety=0.3", "single-best"),
        ),
    )
    rows = report.build_rows(sc.run_scenario(scenario, workers=1, progress=False))
    pooled = {r["policy"]: r for r in report.over_seeds(rows, "budget-greedy")}
    assert set(pooled) == set(scenario.policies) and pooled["single-best"]["seeds"] == [0, 1, 2]
    by = {(r["policy"], r["seed"]): r for r in rows}
    diffs = [
        100 * (by["single-best", s]["accuracy"] - by["budget-greedy", s]["accuracy"])
        for s in range(3)
    ]
    single = pooled["single-best"]
    assert single["accuracy_delta_pp_vs_budget-greedy"] == pytest.approx(np.mean(diffs), abs=1e-3)
    want_se = np.std(diffs, ddof=1) / math.sqrt(3)
    assert single["accuracy_delta_pp_vs_budget-greedy_se"] == pytest.approx(want_se, abs=1e-3)
    mean_acc = np.mean([by["single-best", s]["accuracy"] for s in range(3)])
    assert single["accuracy"] == pytest.approx(mean_acc)
    assert pooled["budget-greedy"]["accuracy_delta_pp_vs_budget-greedy"] == 0.0
    # Counts are totals over the seeds' runs, not the first seed's.
    runs = [by["single-best", s] for s in range(3)]
    assert single["queries"] == sum(r["queries"] for r in runs) and "seed" not in single
    assert sum(single["calls_by_pool"].values()) == sum(
        sum(r["calls_by_pool"].values()) for r in runs
    )
    # The seeds differ, so the runs do: the pooling is over distinct workloads.
    assert len({by["budget-greedy", s]["accuracy"] for s in range(3)}) > 1


def test_a_multi_seed_bench_prints_means_and_paired_differences(tmp_path: Path, capsys):
    from inframind.cli import main

    policies = "budget-greedy,single-best"
    args = ["bench", "--scenario", "smoke", "--duration", "120", "--seeds", "2",
            "--policies", policies, "--out", str(tmp_path), "--no-plots"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mean over seeds 0-1" in out and "acc - budget-greedy pp" in out
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert len(doc["scenarios"]) == 4  # raw rows: 2 seeds x 2 policies
    run = doc["meta"]["runs"]["smoke"]
    assert run["seeds"] == [0, 1] and run["paired_reference"] == "budget-greedy"
    assert {r["policy"] for r in run["over_seeds"]} == {"budget-greedy", "single-best"}


def test_smoke_scenario_end_to_end_through_the_cli(tmp_path: Path):
    from inframind.cli import main

    code = main(["bench", "--scenario", "smoke", "--duration", "120", "--out", str(tmp_path)])
    assert code == 0
    doc = json.loads((tmp_path / "bench.json").read_text())
    rows = doc["scenarios"]
    assert {r["policy"] for r in rows} == set(sc.SMOKE_POLICIES)
    assert all(set(REQUIRED) <= set(r) for r in rows)
    assert len({r["queries"] for r in rows}) == 1
    pngs = sorted(tmp_path.glob("smoke-*.png"))
    assert len(pngs) == 3 and all(p.read_bytes()[:8] == PNG_MAGIC for p in pngs)


def test_cli_refuses_an_unknown_scenario_with_the_valid_ones(tmp_path: Path, capsys):
    from inframind.cli import main

    assert main(["bench", "--scenario", "nope", "--out", str(tmp_path)]) == 2
    assert "valid scenarios: smoke, paper" in capsys.readouterr().err


def test_benches_run_by_hand_find_the_projects_vllm_venv(tmp_path, monkeypatch):
    """`.venv/bin/inframind bench ...` outside make: no INFRAMIND_VLLM_PYTHON, yet the
    engines start with `.venv-serve`'s interpreter, which has vLLM; the variable wins."""
    from inframind.localstack import engines

    serve = tmp_path / ".venv-serve" / "bin" / "python"
    serve.parent.mkdir(parents=True)
    serve.touch()
    monkeypatch.delenv("INFRAMIND_VLLM_PYTHON", raising=False)
    monkeypatch.setattr(engines.sys, "prefix", str(tmp_path / ".venv"))
    assert engines.vllm_python() == str(serve)
    monkeypatch.setenv("INFRAMIND_VLLM_PYTHON", "/opt/vllm/bin/python")
    assert engines.vllm_python() == "/opt/vllm/bin/python"

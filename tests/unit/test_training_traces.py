"""Gateway traces feed retraining: schema read tolerantly, task mix, budgets, load and speed."""

from __future__ import annotations

import json

import pytest

from inframind.orchestrator.runner import QueryTrace, StepTrace
from inframind_training import traces

pytestmark = pytest.mark.unit


def trace_line(i: int, task: str = "math", budget: float = 30.0, **extra) -> str:
    t = QueryTrace(
        id=f"q{i}",
        pipeline="reasoning",
        task=task,
        plan="single/1x1",
        topology="single",
        policy="heuristic:budget-greedy",
        priority=1000 * i,
        budget_s=budget,
        decision_us=12.0,
        latency_s=3.0,
        met_budget=True,
        steps=[StepTrace(0, 0, "solver", "llama-8b", "concise", "http://x", 2.0, 100, 400, 1)],
    )
    return json.dumps({**t.to_dict(), **extra})


def test_the_gateways_own_trace_lines_parse_and_a_torn_last_line_is_skipped():
    lines = [trace_line(i) for i in range(5)] + ['{"id": "q9", "task": "ma']
    records, skipped = traces.read_traces(lines)
    assert len(records) == 5 and skipped == 1
    summary = traces.summarise(records, skipped)
    assert summary.s_per_token == {"llama-8b": pytest.approx(2.0 / 400)}
    assert summary.slo_compliance == 1.0


def test_overrides_follow_the_task_mix_budgets_and_stamped_arrivals():
    lines = [
        trace_line(
            i, task="code" if i % 4 == 0 else "math", budget=10.0 + i, arrival_unix_s=i * 0.6
        )
        for i in range(100)
    ]
    summary = traces.summarise(traces.read_traces(lines)[0])
    assert summary.arrival_rpm == pytest.approx(100.0)
    got = traces.training_overrides(summary)
    assert got["benchmarks"].count("code") == 3 and len(got["benchmarks"]) == 12
    assert got["budget"].startswith("loguniform:")
    assert got["loads_rpm"][-1] == 100.0


def test_too_few_traces_change_nothing():
    summary = traces.summarise(traces.read_traces([trace_line(i) for i in range(5)])[0])
    assert traces.training_overrides(summary) == {}


def test_a_pool_far_slower_than_its_calibration_is_flagged():
    summary = traces.summarise(traces.read_traces([trace_line(i) for i in range(30)])[0])
    report = traces.speed_report(summary, {"llama-8b": 0.001})
    assert report["llama-8b"]["flag"] and report["llama-8b"]["ratio"] == pytest.approx(5.0)


def test_a_directory_of_per_pod_trace_files_is_read_as_one(tmp_path):
    # As the gateways write them on the traces claim: <pipeline>/<pod>.jsonl, each pod's
    # file possibly ending in a line it is still writing.
    for pod, first in (("gw-a", 0), ("gw-b", 20)):
        folder = tmp_path / "reasoning"
        folder.mkdir(exist_ok=True)
        lines = [trace_line(i) for i in range(first, first + 20)] + ['{"id": "torn']
        (folder / f"{pod}.jsonl").write_text("\n".join(lines))
    (tmp_path / "notes.txt").write_text("not a trace file")
    summary = traces.load(tmp_path)
    assert summary.queries == 40 and summary.skipped == 2
    assert traces.load(tmp_path / "reasoning" / "gw-a.jsonl").queries == 20


def test_an_empty_traces_directory_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no \*\.jsonl trace files"):
        traces.load(tmp_path)


def test_a_window_keeps_the_recent_traces_and_those_with_no_time(tmp_path):
    now = 1_800_000_000.0
    day = 86400.0
    lines = [trace_line(i, arrival_unix_s=now - 30 * day) for i in range(5)]  # a month ago
    lines += [trace_line(i, arrival_unix_s=now - day) for i in range(5, 12)]  # yesterday
    lines += [trace_line(i) for i in range(12, 14)]  # no arrival and no call sent: kept
    (tmp_path / "gw.jsonl").write_text("\n".join(lines))
    recent = traces.load(tmp_path, since_unix=now - 14 * day)
    assert (recent.queries, recent.older) == (9, 5)
    assert traces.load(tmp_path).queries == 14


def test_without_an_arrival_stamp_a_trace_is_dated_by_its_first_call():
    rec = json.loads(trace_line(0))
    rec["steps"] = [
        {**rec["steps"][0], "started_at": 1_800_000_100.0},
        {**rec["steps"][0], "started_at": 1_800_000_000.0},
        {**rec["steps"][0], "started_at": None},
    ]
    assert traces.record_time(rec) == 1_800_000_000.0

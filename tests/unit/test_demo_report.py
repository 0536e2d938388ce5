"""The demo's closing summary, read from the traces the gateway answers with."""

from __future__ import annotations

import pytest

from inframind.localstack.dataplane import LoadReport, summarize
from inframind.orchestrator.runner import QueryTrace, StepTrace

pytestmark = pytest.mark.unit

VIEW = {"pools": [{"name": "tiny-roomy", "routed": 3}, {"name": "tiny-small-kv", "routed": 1}]}


def trace(budget: float, latency: float, *rescues: str | None) -> dict:
    steps = [
        StepTrace(0, i, "solver", "tiny-roomy", "concise", "http://127.0.0.1:9", 1.0, rescue=r)
        for i, r in enumerate(rescues or (None,))
    ]
    return QueryTrace(
        id="q", pipeline="local", task="math", plan=f"single/1x{len(steps)}",
        topology="single", policy="heuristic:budget-greedy", priority=1, budget_s=budget,
        decision_us=20.0, latency_s=latency, met_budget=latency <= budget, steps=steps,
    ).to_dict()  # fmt: skip


def test_the_summary_says_which_answers_were_late_and_how_each_rescue_ended(capsys):
    report = LoadReport(sent=5)
    report.record(trace(15.0, 3.0))
    report.record(trace(6.0, 7.5, "answered"))
    report.record(trace(6.0, 6.2, None, "cancelled"))
    report.record(trace(40.0, 12.0, "answered", "failed"))
    report.shed = 1
    summarize(report, VIEW)
    out = capsys.readouterr().out
    assert "answered 4/5" in out and "shed with 429 1" in out
    assert "SLO compliance (answered within budget): 50.0 %" in out
    assert "late: 2, worst 1.5 s over a 6 s budget, 0.2 s over a 6 s budget" in out
    assert "deadline rescues: 4 steps; the rescue answered first in 2, the first call in 1, " \
        "the rescue failed in 1" in out  # fmt: skip
    assert "routing shares: tiny-roomy 75 %, tiny-small-kv 25 %" in out


def test_a_quiet_run_prints_no_late_or_rescue_line(capsys):
    report = LoadReport(sent=1)
    report.record(trace(15.0, 3.0))
    summarize(report, VIEW)
    out = capsys.readouterr().out
    assert "late:" not in out and "rescues" not in out

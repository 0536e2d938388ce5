"""Parsing vLLM's /metrics: both name spellings, engine cores summed, bad lines skipped."""

from __future__ import annotations

import pytest

from inframind.telemetry.vllm_metrics import Histogram, parse_vllm_metrics, window

pytestmark = pytest.mark.unit

# The shape vLLM 0.32 serves (names and labels copied from a real scrape here).
SCRAPE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 3.0
vllm:num_requests_running{engine="1",model_name="tiny"} 2.0
vllm:num_requests_waiting{engine="0",model_name="tiny"} 7.0
vllm:num_requests_waiting{engine="1",model_name="tiny"} 1.0
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="tiny"} 0.25
vllm:num_preemptions_total{engine="0",model_name="tiny"} 4.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="1.0",model_name="tiny"} 2.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="2.0",model_name="tiny"} 6.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 10.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="tiny"} 20.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="tiny"} 10.0
process_cpu_seconds_total 12.0
"""


def test_gauges_add_up_over_engine_cores_and_kv_usage_is_averaged() -> None:
    m = parse_vllm_metrics(SCRAPE)
    assert (m.running, m.waiting, m.kv_usage) == (5.0, 8.0, 0.375)
    assert m.counters["preemptions"] == 4.0
    assert m.skipped_lines == 0


def test_prometheus_2_underscore_names_read_the_same() -> None:
    m = parse_vllm_metrics(SCRAPE.replace("vllm:", "vllm_"))
    assert (m.running, m.waiting) == (5.0, 8.0)
    assert m.histograms["e2e"].count == 10.0


def test_malformed_lines_are_skipped_and_counted_not_fatal() -> None:
    broken = (
        SCRAPE + 'vllm:num_requests_waiting{engine="2" 3\nvllm:kv_cache_usage_perc notanumber\n'
    )
    m = parse_vllm_metrics(broken)
    assert m.waiting == 8.0
    assert m.skipped_lines == 2


def test_missing_metrics_are_none_not_zero() -> None:
    m = parse_vllm_metrics("process_cpu_seconds_total 1.0\n")
    assert m.waiting is None and m.running is None and m.kv_usage is None


def test_histogram_quantile_interpolates_inside_buckets_like_promql() -> None:
    h = parse_vllm_metrics(SCRAPE).histograms["e2e"]
    assert h.quantile(0.5) == pytest.approx(1.75)  # rank 5 of 10 inside (1, 2]
    assert h.quantile(0.1) == pytest.approx(0.5)
    assert h.quantile(0.95) == pytest.approx(2.0)  # +Inf bucket -> its lower bound
    assert Histogram().quantile(0.5) is None


def test_window_counts_only_observations_since_the_earlier_scrape() -> None:
    before = parse_vllm_metrics(SCRAPE)
    later_text = SCRAPE.replace(
        'le="1.0",model_name="tiny"} 2.0', 'le="1.0",model_name="tiny"} 12.0'
    )
    later_text = later_text.replace(
        'le="2.0",model_name="tiny"} 6.0', 'le="2.0",model_name="tiny"} 16.0'
    )
    later_text = later_text.replace(
        'le="+Inf",model_name="tiny"} 10.0', 'le="+Inf",model_name="tiny"} 20.0'
    )
    later_text = later_text.replace(
        '_count{engine="0",model_name="tiny"} 10.0', '_count{engine="0",model_name="tiny"} 20.0'
    )
    recent = window(parse_vllm_metrics(later_text), before)["e2e"]
    assert recent.count == 10.0
    assert recent.quantile(0.5) <= 1.0  # all ten new observations were under a second

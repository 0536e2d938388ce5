"""PrometheusSource against a real Prometheus scraping a real vLLM CPU engine.

Which spelling Prometheus stores depends on versions: RECIPES.md saw vLLM's
`vllm:` names arrive as `vllm_` in Prometheus 2.42; with prometheus_client
0.26 in the engine they keep the colon (colons are legal classic names). So a
second, tiny exporter (a real HTTP server in this process) serves the escaped
`vllm_` spelling in the classic text format, and one Prometheus holds both
spellings whatever the versions. The exporter refuses anyone but Prometheus,
which is how a gateway whose direct scrape fails while the cluster's
Prometheus still sees the engine looks.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import pytest

from inframind.api.config import PipelineConfig, PoolConfig
from inframind.localstack.engines import (
    Engine,
    EngineSpec,
    ensure_tiny_model,
    free_port,
    start_engines,
    stop_engines,
    vllm_python,
)
from inframind.telemetry.prometheus import PrometheusSource, instance_of
from inframind.telemetry.scrape import EngineScraper
from inframind.telemetry.snapshot import Endpoints, LiveView
from support.prometheus import (
    PrometheusProc,
    start_prometheus,
    stop_prometheus,
    wait_for_series,
)

pytestmark = pytest.mark.integration

WAITING, RUNNING, KV = 3.0, 2.0, 0.25


class _UnderscoreExporter(BaseHTTPRequestHandler):
    """vLLM-shaped series under `vllm_` names; the e2e histogram grows on every scrape."""

    scrapes = 0

    def do_GET(self) -> None:
        if self.path != "/metrics" or "Prometheus" not in self.headers.get("User-Agent", ""):
            self.send_error(503, "only Prometheus may scrape this exporter")
            return
        type(self).scrapes += 1
        n = 10 * type(self).scrapes
        body = "\n".join(
            [
                "# TYPE vllm_num_requests_waiting gauge",
                f'vllm_num_requests_waiting{{model_name="escaped"}} {WAITING}',
                "# TYPE vllm_num_requests_running gauge",
                f'vllm_num_requests_running{{model_name="escaped"}} {RUNNING}',
                "# TYPE vllm_kv_cache_usage_perc gauge",
                f'vllm_kv_cache_usage_perc{{model_name="escaped"}} {KV}',
                "# TYPE vllm_e2e_request_latency_seconds histogram",
                f'vllm_e2e_request_latency_seconds_bucket{{model_name="escaped",le="0.5"}} {n}',
                f'vllm_e2e_request_latency_seconds_bucket{{model_name="escaped",le="+Inf"}} {n}',
                f'vllm_e2e_request_latency_seconds_count{{model_name="escaped"}} {n}',
                f'vllm_e2e_request_latency_seconds_sum{{model_name="escaped"}} {n * 0.25}',
                "",
            ]
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    python = vllm_python()
    has_vllm = (
        importlib.util.find_spec("vllm") is not None
        if python == sys.executable
        else Path(python).exists()
    )
    if not has_vllm:
        pytest.fail("no vLLM interpreter: set INFRAMIND_VLLM_PYTHON (make test does)")
    model = ensure_tiny_model(tmp_path_factory.mktemp("tiny-model"))
    started = start_engines(
        [EngineSpec("prom", max_num_seqs=8, max_model_len=1024)],
        model,
        tmp_path_factory.mktemp("engine-logs"),
    )
    try:
        yield started[0]
    finally:
        stop_engines(started)


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _UnderscoreExporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def prom(
    engine: Engine, exporter: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusProc]:
    targets = [instance_of(engine.url), instance_of(exporter)]
    server = start_prometheus(targets, tmp_path_factory.mktemp("prometheus"), interval_s=1.0)
    try:
        for url in (engine.url, exporter):
            selector = f'{{__name__=~"vllm[:_]num_requests_waiting",instance="{instance_of(url)}"}}'
            wait_for_series(server, selector, timeout=30)
        yield server
    finally:
        stop_prometheus(server)


def _complete(engine: Engine, tokens: int) -> None:
    body = {
        "model": engine.spec.name,
        "prompt": "the load source reads",
        "max_tokens": tokens,
        "min_tokens": tokens,
        "ignore_eos": True,
    }
    req = urllib.request.Request(
        f"{engine.url}/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=240) as resp:
        resp.read()


def _pool(name: str, url: str) -> PoolConfig:
    return PoolConfig(name=name, model="tiny", served_model_name=name, endpoints=[url])


def test_engine_load_is_read_from_prometheus_by_instance(
    prom: PrometheusProc, engine: Engine
) -> None:
    # Debian's Prometheus 2.42 (RECIPES.md); the engine's names arrive in either spelling.
    version = json.loads(urllib.request.urlopen(f"{prom.url}/api/v1/status/buildinfo").read())
    assert version["data"]["version"].startswith("2.")
    stored = prom.query(f'{{__name__=~"vllm.num_requests_running",instance="{engine.url[7:]}"}}')
    names = {s["metric"]["__name__"] for s in stored}
    assert len(names) == 1 and names <= {"vllm:num_requests_running", "vllm_num_requests_running"}

    source = PrometheusSource(prom.url, [engine.url], interval_s=0.5)
    seen: list[tuple[float, float]] = []
    stale: list[str | None] = []
    stop = threading.Event()
    failed: list[BaseException] = []

    def keep_busy() -> None:
        # Load lasts until a refresh has seen it (bounded by `stop`), not a fixed amount: a
        # PromQL answer from a CPU-starved Prometheus can take seconds, and is evaluated at
        # the time the query arrived, so a fixed burst could end between two refreshes.
        while not stop.is_set():
            try:
                _complete(engine, 300)
            except Exception as exc:  # reported below, not lost in a thread
                failed.append(exc)
                return

    async def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not failed:
            await source.refresh_once()
            load = source.loads()[engine.url]
            if load.stale:
                # Prometheus itself starved of CPU by the engine beside it: past the
                # source's read timeout. Marked stale, as it should be; try again.
                stale.append(load.error)
            else:
                assert load.waiting is not None and load.running is not None
                assert load.kv_usage is not None
                seen.append((load.running, load.kv_usage))
                if load.running > 0 and load.kv_usage > 0:
                    return
            await asyncio.sleep(0.5)

    workers = [threading.Thread(target=keep_busy) for _ in range(10)]  # 8 slots + a queue
    for w in workers:
        w.start()
    try:
        asyncio.run(watch())
    finally:
        stop.set()
        for w in workers:
            w.join(60)
    assert not failed, failed
    assert seen and seen[-1][0] > 0 and seen[-1][1] > 0, f"never saw it busy: {seen}, {stale}"

    # Finished requests reach the e2e histogram: quantiles over rate()[1m] by instance.
    async def quantiles() -> tuple[float | None, float | None]:
        deadline = time.monotonic() + 10
        while True:
            await source.refresh_once()
            load = source.loads()[engine.url]
            if load.latency_p50_s is not None or time.monotonic() > deadline:
                return load.latency_p50_s, load.latency_p95_s
            await asyncio.sleep(0.5)

    p50, p95 = asyncio.run(quantiles())
    assert p50 is not None and p95 is not None and 0 < p50 <= p95


def test_prometheus_2x_escaped_vllm_underscore_names_are_read(
    prom: PrometheusProc, engine: Engine, exporter: str
) -> None:
    stored = prom.query(f'{{__name__=~"vllm.num_requests_waiting",instance="{exporter[7:]}"}}')
    assert {s["metric"]["__name__"] for s in stored} == {"vllm_num_requests_waiting"}

    source = PrometheusSource(prom.url, [exporter, engine.url])
    asyncio.run(source.refresh_once())
    # One refresh reads both endpoints, whichever spelling each one's series carry.
    assert not source.loads()[engine.url].stale
    load = source.loads()[exporter]
    assert not load.stale and load.error is None
    assert (load.waiting, load.running, load.kv_usage) == (WAITING, RUNNING, KV)
    assert load.latency_p50_s is not None and 0 < load.latency_p50_s <= 0.5


def test_queries_per_refresh_do_not_grow_with_the_endpoint_count(
    prom: PrometheusProc, engine: Engine, exporter: str
) -> None:
    absent = [f"http://127.0.0.1:{free_port()}" for _ in range(8)]

    def per_refresh(endpoints: list[str]) -> tuple[float, float]:
        source = PrometheusSource(prom.url, endpoints)
        served = prom.self_metric("prometheus_http_requests_total", handler="/api/v1/query")
        for _ in range(3):
            asyncio.run(source.refresh_once())
        served = (
            prom.self_metric("prometheus_http_requests_total", handler="/api/v1/query") - served
        )
        return source.queries_issued / 3, served / 3

    one = per_refresh([engine.url])
    many = per_refresh([engine.url, exporter, *absent])
    # Counted on both sides: what the source issued and what Prometheus itself served.
    assert one == many == (len(PrometheusSource(prom.url).queries),) * 2
    assert one[0] <= 4


def test_live_view_falls_back_to_prometheus_when_the_direct_scrape_is_stale(
    prom: PrometheusProc, exporter: str
) -> None:
    config = PipelineConfig(pipeline="p", pools=[_pool("escaped", exporter)])

    async def views() -> tuple:
        scraper = EngineScraper([], interval_s=0.2)
        source = PrometheusSource(prom.url, [], interval_s=0.5)
        with_prom = LiveView(scraper, Endpoints(), prometheus=source)
        without = LiveView(scraper, Endpoints())
        with_prom.configure(config)
        without.configure(config)
        assert source.endpoints == [exporter]
        async with aiohttp.ClientSession() as session:
            await scraper.scrape_once(session)  # the exporter refuses us: HTTP 503
        await source.refresh_once()
        return scraper.loads()[exporter], with_prom, without

    direct, with_prom, without = asyncio.run(views())
    assert direct.stale and "503" in (direct.error or "")
    assert without.snapshot().loads[0].stale
    load = with_prom.snapshot().loads[0]
    assert not load.stale
    assert (load.waiting, load.running, load.kv_usage) == (WAITING, RUNNING, KV)
    assert with_prom.pick_endpoint(0) == exporter


def test_stopped_prometheus_marks_loads_stale_with_an_error_and_keeps_values(
    exporter: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    own = start_prometheus([instance_of(exporter)], tmp_path / "prometheus", interval_s=1.0)
    try:
        wait_for_series(own, '{__name__=~"vllm[:_]num_requests_waiting"}', timeout=30)
        source = PrometheusSource(own.url, [exporter], interval_s=0.2, timeout_s=1.0)
        asyncio.run(source.refresh_once())
        assert not source.loads()[exporter].stale
    finally:
        stop_prometheus(own)
    assert not own.alive()

    async def outage() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(source.run(stop))
        await asyncio.sleep(1.0)  # several refreshes against a dead port
        stop.set()
        await asyncio.wait_for(task, 5)

    with caplog.at_level(logging.WARNING, logger="inframind.telemetry.prometheus"):
        asyncio.run(outage())
    load = source.loads()[exporter]
    assert load.stale and load.error and own.url in load.error
    assert (load.waiting, load.running, load.kv_usage) == (WAITING, RUNNING, KV)
    assert source.refreshes >= 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]

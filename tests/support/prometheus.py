"""A real Prometheus server on 127.0.0.1 for tests: config written by the test, stopped by PID."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from inframind.localstack.engines import free_port
from inframind.localstack.processes import stop_process, wait_for

APT_HINT = "apt-get update && apt-get install -y prometheus"


def ensure_prometheus_binary() -> str:
    """The prometheus binary; installed from Debian if missing. Fails (not skips) if it cannot
    be: every integration run must exercise the real server."""
    found = shutil.which("prometheus")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "prometheus"])
    for cmd in steps:
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"cannot install Prometheus ({exc}); run `{APT_HINT}`") from exc
        if done.returncode != 0:
            raise RuntimeError(
                f"cannot install Prometheus: `{' '.join(cmd)}` exited {done.returncode}:\n"
                f"{done.stderr[-2000:]}\nRun `{APT_HINT}` as root (make setup does)."
            )
    found = shutil.which("prometheus")
    if not found:
        raise RuntimeError(f"`{APT_HINT}` succeeded but no prometheus binary is on PATH")
    return found


def scrape_config(
    targets: Sequence[str],
    interval_s: float = 1.0,
    labels: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """A minimal prometheus.yml scraping `targets` (host:port) at `interval_s` (JSON is YAML).
    `labels` gives some targets labels of their own, as Kubernetes service discovery gives a
    pod's series its `namespace`."""
    every = f"{int(interval_s * 1000)}ms"
    labels = labels or {}
    groups = [{"targets": [t for t in targets if t not in labels]}]
    groups += [{"targets": [t], "labels": dict(labels[t])} for t in targets if t in labels]
    return json.dumps(
        {
            "global": {"scrape_interval": every, "evaluation_interval": every},
            "scrape_configs": [
                {
                    "job_name": "vllm",
                    "scrape_interval": every,
                    "scrape_timeout": every,
                    "static_configs": groups,
                }
            ],
        },
        indent=2,
    )


@dataclass
class PrometheusProc:
    url: str
    process: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def query(self, promql: str) -> list[dict]:
        q = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=5) as resp:
            return json.loads(resp.read())["data"]["result"]

    def self_metric(self, name: str, **labels: str) -> float:
        """Sum of one of Prometheus's own metrics (its /metrics), over matching label sets."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path.exists() else ""


def start_prometheus(
    targets: Sequence[str],
    workdir: Path,
    interval_s: float = 1.0,
    timeout: float = 30.0,
    port: int | None = None,
    labels: Mapping[str, Mapping[str, str]] | None = None,
) -> PrometheusProc:
    """Run Prometheus as a plain process on a loopback port (a free one unless given, e.g.
    to restart one where clients expect it); return once it is ready."""
    binary = ensure_prometheus_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(scrape_config(targets, interval_s, labels))
    port = port or free_port()
    log_path = workdir / "prometheus.log"
    cmd = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
    ]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir
        )
    prom = PrometheusProc(f"http://127.0.0.1:{port}", proc, log_path)

    def ready() -> bool:
        if not prom.alive():
            raise RuntimeError(f"Prometheus exited:\n{prom.log_tail()}")
        with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1) as resp:
            return resp.status == 200

    try:
        wait_for(ready, timeout, "Prometheus /-/ready")
    except BaseException:
        stop_prometheus(prom)
        raise
    return prom


def stop_prometheus(prom: PrometheusProc) -> None:
    stop_process(prom.process, timeout=10)


def wait_for_series(prom: PrometheusProc, promql: str, timeout: float = 30.0) -> list[dict]:
    """Poll until `promql` returns at least one series (the first scrapes take a few s)."""
    started = time.monotonic()
    try:
        return wait_for(lambda: prom.query(promql), timeout, f"Prometheus series {promql}", 0.5)
    except TimeoutError as exc:
        waited = time.monotonic() - started
        raise AssertionError(f"{exc} after {waited:.0f} s\n{prom.log_tail()}") from None

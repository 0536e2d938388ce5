"""Start and stop the local stack's processes by PID, and wait for things with a deadline."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """Stop one process by its PID: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return proc.returncode


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except Exception as exc:  # a probe may race with the thing it waits for
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})"
            )
        time.sleep(interval)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_operator(
    kubeconfig: str | os.PathLike[str],
    namespaces: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    log: IO[str] | Path | None = None,
) -> subprocess.Popen[str]:
    """Run `inframind operator` as its own process (the real kopf operator) against a kubeconfig."""
    cmd = [sys.executable, "-m", "inframind.cli", "operator", "--kubeconfig", str(kubeconfig)]
    for ns in namespaces:
        cmd += ["--namespace", ns]
    # Its own /metrics on a free loopback port unless the caller chose one (two local
    # operators must not fight over the in-cluster default 0.0.0.0:8082).
    local = {
        "INFRAMIND_OPERATOR_METRICS_HOST": "127.0.0.1",
        "INFRAMIND_OPERATOR_METRICS_PORT": str(free_port()),
    }
    full_env = {**os.environ, **local, "KUBECONFIG": str(kubeconfig), **(env or {})}
    out: IO[str] | int = subprocess.DEVNULL
    if isinstance(log, Path):
        out = log.open("a")
    elif log is not None:
        out = log
    return subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=full_env
    )


def spawn(cmd: list[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Run `cmd` with its output appended to `log`, no stdin, and `env` over this one's."""
    out = log.open("a")
    try:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
    finally:
        out.close()


def start_gateway(
    config: str | os.PathLike[str],
    port: int,
    log: Path,
    trace_log: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[str]:
    """Run `inframind gateway` on 127.0.0.1:`port` reading a pipeline config file."""
    cmd = [
        sys.executable, "-m", "inframind.cli", "gateway",
        "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    if trace_log is not None:
        cmd += ["--trace-log", str(trace_log)]
    return spawn(cmd, log, env)

"""Real vLLM engines on loopback for the local stack and the end-to-end tests.

Each engine is `vllm.entrypoints.openai.api_server` serving the tiny offline
model on CPU with `--scheduling-policy priority`. Engines can be given a
small KV cache on purpose (`kv_blocks`) so that one saturates before the
others, which is the situation InfraMind exists for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .processes import free_port, stop_process


@dataclass(frozen=True)
class EngineSpec:
    name: str
    # None: vLLM sizes the KV cache from VLLM_CPU_KVCACHE_SPACE. On the CPU backend a block
    # holds 128 tokens (vLLM's log says so at start-up), not the 16 of GPUs.
    kv_blocks: int | None = None
    max_num_seqs: int = 16
    max_model_len: int = 2048


@dataclass
class Engine:
    spec: EngineSpec
    port: int
    process: subprocess.Popen
    log_path: Path
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None


def vllm_python() -> str:
    """The interpreter that has vLLM: INFRAMIND_VLLM_PYTHON (the Makefile sets it), else the
    project's `.venv-serve` beside this venv (as `make serve-setup` makes it), else this one."""
    if chosen := os.environ.get("INFRAMIND_VLLM_PYTHON"):
        return chosen
    serve = Path(sys.prefix).parent / ".venv-serve" / "bin" / "python"
    return str(serve) if serve.exists() else sys.executable


def ensure_tiny_model(out: Path) -> Path:
    """Build the tiny offline model into `out` (once) with the vLLM interpreter, which has
    tokenizers and safetensors; the builder script imports nothing from this package."""
    from . import tinymodel

    subprocess.run(
        [vllm_python(), tinymodel.__file__, str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return out


# Local engines run at a lower CPU priority than everything else. They stand in for GPU
# servers, which on a cluster do not share cores with the gateway, the operator or
# Prometheus; here they do, and a busy vLLM engine core spins on its worker's queue
# (sched_yield for a second after each read) besides computing: two engine processes took
# 1.85 of the 2 cores, the gateway and test clients under 2 %, and a load test meant to send
# 20 calls/s managed 2 (its thread waited 79 s of 85 to be scheduled). Niced, they still take
# every idle cycle.
ENGINE_NICENESS = 10


def start_engine(
    spec: EngineSpec, model_dir: Path, log_dir: Path, port: int | None = None
) -> Engine:
    port = port or free_port()
    cmd = [
        # `nice` execs the server, so the PID is still vLLM's, and its engine core and worker
        # inherit the priority (see ENGINE_NICENESS).
        "nice",
        "-n",
        str(ENGINE_NICENESS),
        vllm_python(),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        spec.name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        str(spec.max_model_len),
        "--max-num-seqs",
        str(spec.max_num_seqs),
        "--scheduling-policy",
        "priority",
        "--enforce-eager",
        "--disable-uvicorn-access-log",
    ]
    if spec.kv_blocks is not None:
        cmd += ["--num-gpu-blocks-override", str(spec.kv_blocks)]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        # Two cores are shared by every engine: do not let each one spin all of them.
        "OMP_NUM_THREADS": "1",
        # vLLM's CPU backend pins each engine's compute thread by default, and every engine
        # picked core 0: they all shared one core while the other served only the rest, and
        # a flooded engine starved its neighbours (a 64-token call to an idle engine did
        # not answer within 60 s; unpinned, 0.3-1.2 s). The scheduler places them instead.
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"vllm-{spec.name}.log"
    log = log_path.open("w")
    # Its own process group: vLLM forks an engine core and workers, and a stop (or a
    # simulated crash) must take them all, not orphan them.
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=log_dir,
        start_new_session=True,
    )
    log.close()
    _lower_session_priority(proc.pid)
    return Engine(spec, port, proc, log_path)


def _lower_session_priority(pid: int) -> None:
    """With autogroup scheduling on (most desktop and many VM kernels), CPU time is shared
    fairly between sessions first and process niceness only counts within one: an engine
    in its own session would take its full share however niced. Nice its session too."""
    with contextlib.suppress(OSError):  # no autogroups here: `nice` alone does it
        Path(f"/proc/{pid}/autogroup").write_text(str(ENGINE_NICENESS))


def wait_healthy(engines: Sequence[Engine], timeout: float = 180.0) -> None:
    """Block until every engine answers /health; raise with the log tail of one that died."""
    deadline = time.monotonic() + timeout
    pending = list(engines)
    while pending:
        for engine in list(pending):
            if not engine.alive():
                tail = engine.log_path.read_text()[-3000:]
                raise RuntimeError(f"vLLM engine {engine.spec.name} exited:\n{tail}")
            try:
                with urllib.request.urlopen(f"{engine.url}/health", timeout=1) as resp:
                    if resp.status == 200:
                        pending.remove(engine)
            except OSError:
                pass
        if pending and time.monotonic() > deadline:
            names = ", ".join(e.spec.name for e in pending)
            raise TimeoutError(f"vLLM engine(s) {names} not healthy after {timeout:.0f} s")
        if pending:
            time.sleep(0.5)


def start_engines(
    specs: Sequence[EngineSpec], model_dir: Path, log_dir: Path, timeout: float = 240.0
) -> list[Engine]:
    """Start engines one after another (two cores: parallel start-up only thrashes)."""
    engines: list[Engine] = []
    try:
        for spec in specs:
            engine = start_engine(spec, model_dir, log_dir)
            engines.append(engine)
            wait_healthy([engine], timeout)
    except BaseException:
        stop_engines(engines)
        raise
    return engines


def kill_engine(engine: Engine) -> None:
    """SIGKILL the engine's whole process group, as when its pod dies."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(engine.process.pid, signal.SIGKILL)
    # SIGKILL cannot be refused, but a process in the middle of freeing gigabytes on two
    # busy cores took over 10 s to be reaped in CI.
    engine.process.wait(60)


def stop_engines(engines: Sequence[Engine]) -> None:
    """Stop each engine by its PID (SIGTERM), then anything left in its process group."""
    for engine in engines:
        stop_process(engine.process, timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(engine.process.pid, signal.SIGKILL)

"""Real vLLM CPU engines (one set per test session) and gateway processes on loopback.

Engines serve the tiny offline model with different shapes on purpose:
`alpha` is roomy, `beta` runs few sequences at once (so requests queue and
priorities matter), `small` has a KV cache of one long sequence (so it
saturates first). Each test starts its own gateway with the pipeline config
it needs, and stops it by PID.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inframind.api.config import PipelineConfig
from inframind.localstack.engines import (
    EngineSpec,
    ensure_tiny_model,
    free_port,
    start_engines,
    stop_engines,
    vllm_python,
)
from inframind.localstack.processes import start_gateway, stop_process, wait_for
from support.dataplane import GatewayProc, get_json

ENGINE_SPECS = (
    EngineSpec("alpha", max_num_seqs=16),
    EngineSpec("beta", max_num_seqs=2),
    EngineSpec("small", kv_blocks=16, max_num_seqs=8, max_model_len=1536),  # 2,048 KV tokens
)


def _vllm_available() -> bool:
    python = vllm_python()
    if python == sys.executable:
        return importlib.util.find_spec("vllm") is not None
    return Path(python).exists()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _vllm_available():
        pytest.fail(
            "no vLLM interpreter: run the tests through `make test` (it installs vLLM into "
            ".venv-serve) or set INFRAMIND_VLLM_PYTHON"
        )
    return ensure_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def engines(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    started = start_engines(ENGINE_SPECS, tiny_model, tmp_path_factory.mktemp("engine-logs"))
    try:
        yield {e.spec.name: e for e in started}
    finally:
        stop_engines(started)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProc]]:
    started: list[GatewayProc] = []

    def start(config: PipelineConfig, env: dict[str, str] | None = None) -> GatewayProc:
        port = free_port()
        gw = GatewayProc(
            url=f"http://127.0.0.1:{port}",
            config_path=tmp_path / f"pipeline-{port}.json",
            trace_log=tmp_path / f"traces-{port}.jsonl",
            log=tmp_path / f"gateway-{port}.log",
            process=None,
        )
        gw.write_config(config)
        gw.process = start_gateway(gw.config_path, port, gw.log, gw.trace_log, env=env)
        started.append(gw)

        def ready() -> bool:
            if gw.process.poll() is not None:
                raise RuntimeError(f"gateway exited:\n{gw.log.read_text()[-3000:]}")
            return get_json(f"{gw.url}/readyz", timeout=1).get("ready")

        wait_for(ready, 30, "gateway /readyz")
        # Let the first scrape of every engine land, so the policy starts from real load.
        wait_for(
            lambda: all(not p["stale"] for p in gw.pools()["pools"]), 15, "first engine scrape"
        )
        return gw

    yield start
    for gw in started:
        stop_process(gw.process)

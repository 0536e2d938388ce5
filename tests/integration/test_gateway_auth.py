"""Bearer-token authentication on the gateway process, both ways, and the token kept secret."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from inframind.api.config import PipelineConfig, PoolConfig
from inframind.localstack.engines import free_port
from inframind.localstack.processes import start_gateway, stop_process, wait_for

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-for-tests"


def _get(url: str, token: str | None = None) -> tuple[int, dict, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def _gateway(tmp_path: Path, auth: bool, token: str | None):
    config = PipelineConfig(
        pipeline="secure",
        auth=auth,
        # No engine needed: /v1/models answers from the configuration.
        pools=[
            PoolConfig(
                name="p",
                model="m",
                served_model_name="m",
                endpoints=[f"http://127.0.0.1:{free_port()}"],
            )
        ],
    )
    path = tmp_path / f"pipeline-{auth}-{bool(token)}.json"
    path.write_text(config.model_dump_json(by_alias=True))
    port = free_port()
    env = {"INFRAMIND_GATEWAY_TOKEN": token} if token else {}
    log = tmp_path / f"gateway-{port}.log"
    proc = start_gateway(path, port, log, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _get(f"{url}/healthz")[0] == 200, 30, "gateway /healthz")
    return proc, url, log


def test_a_gateway_with_a_token_refuses_calls_without_it(tmp_path):
    proc, url, log = _gateway(tmp_path, auth=True, token=TOKEN)
    try:
        status, body, headers = _get(f"{url}/v1/models")
        assert status == 401 and "Bearer" in body["error"]["message"]
        assert headers.get("WWW-Authenticate", "").startswith("Bearer")
        assert _get(f"{url}/v1/models", token="wrong")[0] == 401
        status, body, _ = _get(f"{url}/v1/models", token=TOKEN)
        assert status == 200 and body["data"][0]["id"] == "secure"
        # A refused chat call is counted like any other.
        chat = urllib.request.Request(
            f"{url}/v1/chat/completions", data=b"{}", headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(chat, timeout=5)
        assert refused.value.code == 401
        # Probes and metrics stay open for the kubelet and Prometheus.
        assert _get(f"{url}/healthz")[0] == 200
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as page:
            metrics = page.read().decode()
        assert 'inframind_requests_total{code="401",pipeline="secure"} 1.0' in metrics
    finally:
        stop_process(proc)
    assert TOKEN not in log.read_text()


def test_a_pipeline_that_requires_auth_fails_closed_without_a_token(tmp_path):
    proc, url, _ = _gateway(tmp_path, auth=True, token=None)
    try:
        status, body, _ = _get(f"{url}/v1/models")
        assert status == 503 and "INFRAMIND_GATEWAY_TOKEN" in body["error"]["message"]
    finally:
        stop_process(proc)
    proc, url, _ = _gateway(tmp_path, auth=False, token=None)
    try:
        assert _get(f"{url}/v1/models")[0] == 200  # no auth asked, none needed
    finally:
        stop_process(proc)

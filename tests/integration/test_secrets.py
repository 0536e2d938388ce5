"""Secrets stay in their Secret: the operator passes references, never values.

A Hugging Face token for a managed pool and a gateway's bearer token are created as
Secrets; the operator reconciles a pool and a pipeline that use them. Neither value may
show up in anything the operator writes (status, ConfigMaps, Deployments, Events) or in
its log, while the workloads still get them (as secretKeyRef env).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import yaml

from conftest import ControlPlane

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


def _env(deployment: dict) -> dict[str, dict]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container.get("env") or []}


def test_secret_values_never_leave_their_secret(control_plane: ControlPlane, namespace: str):
    cp, ns = control_plane, namespace
    hf_token, gateway_token = f"hf_{secrets.token_hex(12)}", secrets.token_hex(16)
    for name, value in (("hf-token", hf_token), ("gw-auth", gateway_token)):
        cp.kubectl("create", "secret", "generic", name, f"--from-literal=token={value}", "-n", ns)
    pool = yaml.safe_load((EXAMPLES / "modelpool-llama-8b.yaml").read_text())  # hf-token ref
    pipeline = {
        "apiVersion": "inframind.io/v1alpha1",
        "kind": "AgentPipeline",
        "metadata": {"name": "private"},
        "spec": {
            "pools": ["llama-8b"],
            "gateway": {"authSecretRef": {"name": "gw-auth", "key": "token"}},
        },
    }
    cp.kubectl("apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump_all([pool, pipeline]))

    vllm = cp.wait(lambda: cp.read("Deployment", ns, "vllm-llama-8b"), "the vLLM Deployment")
    assert _env(vllm)["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "hf-token",
        "key": "token",
    }
    cp.mark_ready(ns, "vllm-llama-8b")
    gateway = cp.wait(lambda: cp.read("Deployment", ns, "inframind-gw-private"), "the gateway")
    assert _env(gateway)["INFRAMIND_GATEWAY_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "gw-auth",
        "key": "token",
    }
    cp.wait(
        lambda: (
            (cp.custom("agentpipelines", ns, "private") or {}).get("status", {}).get("phase")
            == "Ready"
        ),
        "the pipeline to be Ready",
    )

    written = cp.kubectl(
        "get",
        "modelpools,agentpipelines,deployments,services,configmaps,events",
        "-n",
        ns,
        "-o",
        "yaml",
    ).stdout
    assert "llama-8b" in written and "private" in written  # the dump holds the objects
    for value in (hf_token, gateway_token):
        assert value not in written
        assert value not in cp.operator_log.read_text()

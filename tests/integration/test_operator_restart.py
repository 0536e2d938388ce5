"""The operator killed mid-life and restarted: reconcile resumes where the cluster is, with
no duplicate, lost or orphaned objects, and changes made while it was down converge."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from inframind.localstack import run_emulator
from inframind.localstack.processes import start_operator, stop_process
from support.controlplane import ControlPlane

pytestmark = [pytest.mark.integration, pytest.mark.faults]

ROOT = Path(__file__).resolve().parents[2]
ENV = {"INFRAMIND_RESYNC_SECONDS": "2"}


@pytest.fixture
def own_control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    kubeconfig = tmp_path / "kubeconfig"
    with run_emulator(port=0, crds=[ROOT / "crds"], kubeconfig_path=kubeconfig):
        operator = start_operator(kubeconfig, env=ENV, log=tmp_path / "operator-1.log")
        api = config.new_client_from_config(config_file=str(kubeconfig))
        cp = ControlPlane(kubeconfig, operator, tmp_path / "operator-1.log", api)
        try:
            yield cp
        finally:
            api.close()
            stop_process(cp.operator)


def _managed(cp: ControlPlane, ns: str) -> dict[str, list[Any]]:
    """kind -> the objects in the namespace that the operator manages."""
    core, apps = client.CoreV1Api(cp.api), client.AppsV1Api(cp.api)
    return {
        kind: [
            o
            for o in items
            if (o.metadata.labels or {}).get("app.kubernetes.io/managed-by") == "inframind"
        ]
        for kind, items in (
            ("Deployment", apps.list_namespaced_deployment(ns).items),
            ("Service", core.list_namespaced_service(ns).items),
            ("ConfigMap", core.list_namespaced_config_map(ns).items),
        )
    }


def _owned(cp: ControlPlane, ns: str) -> dict[str, dict[str, str]]:
    """kind -> {name: uid} of everything in the namespace the operator manages."""
    return {
        kind: {o.metadata.name: o.metadata.uid for o in objs}
        for kind, objs in _managed(cp, ns).items()
    }


def _chat_config(cp: ControlPlane, ns: str) -> dict:
    """The pipeline config the operator wrote for the `chat` pipeline's gateway."""
    cm = cp.read("ConfigMap", ns, "inframind-gw-chat") or {}
    return json.loads((cm.get("data") or {}).get("pipeline.json") or "{}")


def _apply_examples(cp: ControlPlane, ns: str) -> dict[str, dict[str, str]]:
    """Apply the examples and return what the operator made of them, once it has made all:
    on a fast machine a partial snapshot (the gateway Services not yet made) would read as
    objects created after a restart."""
    cp.kubectl("apply", "-n", ns, "-f", str(ROOT / "manifests" / "examples"))
    full = {"ConfigMap": 2, "Deployment": 7, "Service": 7}  # 5 vLLM pools + 2 gateways
    return cp.wait(
        lambda: (o := _owned(cp, ns)) and {k: len(v) for k, v in o.items()} == full and o,
        "the examples' ConfigMaps, Deployments and Services",
        60,
    )


def test_a_restarted_operator_resumes_without_duplicates_or_orphans(own_control_plane, tmp_path):
    cp, ns = own_control_plane, "default"
    before = _apply_examples(cp, ns)

    cp.operator.kill()  # SIGKILL: no shutdown handlers, mid-whatever it was doing
    cp.operator.wait(10)
    # While it is down: a spec change, and an owned object lost.
    cp.kubectl("patch", "agentpipeline", "chat", "-n", ns, "--type", "merge",
               "-p", json.dumps({"spec": {"budget": {"defaultSeconds": 7}}}))  # fmt: skip
    client.CoreV1Api(cp.api).delete_namespaced_service("vllm-llama-3b", ns)

    cp.operator = start_operator(cp.kubeconfig, env=ENV, log=tmp_path / "operator-2.log")
    cp.operator_log = tmp_path / "operator-2.log"
    cp.wait(lambda: "vllm-llama-3b" in _owned(cp, ns)["Service"], "the lost Service back", 60)

    cp.wait(
        lambda: _chat_config(cp, ns).get("budget", {}).get("defaultSeconds") == 7,
        "the change made while down",
        60,
    )
    after = _owned(cp, ns)
    # Same objects, same identities (nothing recreated or doubled), except the one deleted.
    assert {k: set(v) for k, v in after.items()} == {k: set(v) for k, v in before.items()}
    for kind, objs in before.items():
        for name, uid in objs.items():
            if (kind, name) != ("Service", "vllm-llama-3b"):
                assert after[kind][name] == uid, (kind, name)
    assert cp.operator.poll() is None


def _orphans(cp: ControlPlane, ns: str) -> list[str]:
    """Owned objects whose owner (a ModelPool or AgentPipeline) no longer exists."""
    custom = client.CustomObjectsApi(cp.api)
    owners = {
        o["metadata"]["uid"]
        for plural in ("modelpools", "agentpipelines")
        for o in custom.list_namespaced_custom_object("inframind.io", "v1alpha1", ns, plural)[
            "items"
        ]
    }
    return [
        f"{kind}/{o.metadata.name}"
        for kind, objs in _managed(cp, ns).items()
        for o in objs
        if not o.metadata.owner_references
        or any(r.uid not in owners for r in o.metadata.owner_references)
    ]


def test_an_api_server_restart_is_ridden_out_and_reconcile_resumes(tmp_path):
    """The API server goes away (a control-plane upgrade) and comes back with its data, as
    kube-apiserver does from etcd: the operator keeps running, re-lists, and acts on the
    next change, with nothing doubled, recreated or orphaned."""
    kubeconfig, state = tmp_path / "kubeconfig", tmp_path / "etcd.json"
    emulator = run_emulator(port=0, crds=[ROOT / "crds"], kubeconfig_path=kubeconfig,
                            state_path=state)  # fmt: skip
    port = emulator.port
    operator = start_operator(kubeconfig, env=ENV, log=tmp_path / "operator.log")
    api = config.new_client_from_config(config_file=str(kubeconfig))
    cp = ControlPlane(kubeconfig, operator, tmp_path / "operator.log", api)
    ns = "default"
    try:
        before = _apply_examples(cp, ns)

        emulator.stop()  # connections refused from here on
        time.sleep(5)  # the operator's watches and timers fail meanwhile
        assert operator.poll() is None, "the operator exited while the API server was away"
        emulator = run_emulator(port=port, crds=[ROOT / "crds"], kubeconfig_path=kubeconfig,
                                state_path=state)  # fmt: skip

        cp.kubectl("patch", "agentpipeline", "chat", "-n", ns, "--type", "merge",
                   "-p", json.dumps({"spec": {"budget": {"defaultSeconds": 9}}}))  # fmt: skip

        cp.wait(
            lambda: _chat_config(cp, ns).get("budget", {}).get("defaultSeconds") == 9,
            "a change made after the restart to reach the gateway config",
            90,
        )
        time.sleep(3)  # a resync period: late duplicates would show now
        assert _owned(cp, ns) == before  # same names, same uids: nothing doubled or remade
        assert _orphans(cp, ns) == []
        assert operator.poll() is None
    finally:
        api.close()
        stop_process(operator)
        emulator.stop()

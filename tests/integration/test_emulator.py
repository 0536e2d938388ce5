"""The local Kubernetes emulator behaves like an apiserver for kubectl, clients and kopf."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from inframind.localstack.emulator import EmulatorHandle, run_emulator
from support.kube import (
    kubectl,
    sample_modelpool_crd,
    start_emulator_process,
    stop_process,
    use_kubeconfig,
    write_sample_crd,
)

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "inframind.io", "v1alpha1", "modelpools"


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    tmp = tmp_path_factory.mktemp("emulator")
    crd = write_sample_crd(tmp / "crds")
    with run_emulator(crds=[crd], kubeconfig_path=tmp / "kubeconfig") as handle:
        yield handle


@pytest.fixture
def kube(emu: EmulatorHandle) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert emu.kubeconfig_path is not None
        return kubectl(emu.kubeconfig_path, *args, **kwargs)

    return run


@pytest.fixture
def namespace(kube: Callable[..., Any], request: pytest.FixtureRequest) -> str:
    # One namespace per test keeps tests independent on the shared emulator.
    name = request.node.name.replace("_", "-").lower()[:50].strip("-")
    kube("create", "namespace", name)
    return name


@pytest.fixture
def client(emu: EmulatorHandle) -> Iterator[kubernetes.client.ApiClient]:
    api = kubernetes.config.new_client_from_config(config_file=emu.kubeconfig_path)
    yield api
    api.close()


def pool(name: str, replicas: int = 1, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelPool",
        "metadata": {"name": name, **metadata},
        "spec": {"replicas": replicas},
    }


def deployment(name: str, replicas: int = 1, **metadata: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, **metadata},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "x"}]},
            },
        },
    }


def get_json(kube: Callable[..., Any], *args: str) -> dict[str, Any]:
    return json.loads(kube("get", *args, "-o", "json").stdout)


def test_kubectl_apply_creates_a_missing_pool_then_configures_it(kube, namespace):
    manifest = yaml.safe_dump(pool("alpha", replicas=1))
    created = kube("apply", "-n", namespace, "-f", "-", stdin=manifest)
    assert "modelpool.inframind.io/alpha created" in created.stdout
    again = kube("apply", "-n", namespace, "-f", "-", stdin=manifest)
    assert "unchanged" in again.stdout

    changed = kube(
        "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(pool("alpha", replicas=3))
    )
    assert "configured" in changed.stdout
    obj = get_json(kube, "mp", "alpha", "-n", namespace)  # the short name resolves
    assert obj["spec"]["replicas"] == 3
    assert obj["metadata"]["generation"] == 2
    assert obj["metadata"]["uid"] and obj["metadata"]["creationTimestamp"]

    table = kube("get", "modelpools", "-n", namespace).stdout
    assert table.split()[:4] == ["NAME", "REPLICAS", "PHASE", "AGE"]
    assert "alpha" in kube("get", "inframind", "-n", namespace).stdout  # the category


def test_missing_objects_are_kubernetes_404s(kube, namespace):
    result = kube("get", "mp", "ghost", "-n", namespace, check=False)
    assert result.returncode == 1
    assert 'Error from server (NotFound): modelpools.inframind.io "ghost" not found' in (
        result.stderr
    )
    result = kube("delete", "configmap", "ghost", "-n", namespace, check=False)
    assert '(NotFound): configmaps "ghost" not found' in result.stderr


def test_kubectl_lists_core_and_apps_resources(kube, namespace):
    kube("create", "configmap", "settings", "-n", namespace, "--from-literal=a=1")
    kube(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump_all(
            [
                deployment("web", replicas=2),
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "web"},
                    "spec": {
                        "selector": {"app": "web"},
                        "ports": [{"port": 80, "targetPort": 8080}],
                    },
                },
            ]
        ),
    )
    out = kube("get", "configmaps,deployments,services,events", "-n", namespace).stdout
    assert "configmap/settings" in out
    assert "deployment.apps/web" in out and "0/2" in out
    assert "service/web" in out
    describe = kube("describe", "deployment", "web", "-n", namespace).stdout
    assert "Replicas:" in describe and "2 desired" in describe
    kube("delete", "deployment", "web", "-n", namespace)
    assert kube("get", "deployments", "-n", namespace).stderr.startswith("No resources")


def test_generation_bumps_on_spec_changes_but_not_on_status_or_metadata(kube, namespace):
    kube("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(pool("beta")))
    kube(
        "patch",
        "mp",
        "beta",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Ready"}}',
    )
    kube("label", "mp", "beta", "-n", namespace, "tier=gold")
    obj = get_json(kube, "mp", "beta", "-n", namespace)
    assert obj["metadata"]["generation"] == 1
    assert obj["status"] == {"phase": "Ready"}

    # Status written through the main resource is ignored when a status subresource exists.
    kube(
        "patch",
        "mp",
        "beta",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"replicas": 5}, "status": {"phase": "Hacked"}}',
    )
    obj = get_json(kube, "mp", "beta", "-n", namespace)
    assert obj["metadata"]["generation"] == 2
    assert obj["status"] == {"phase": "Ready"}
    assert "Ready" in kube("get", "mp", "beta", "-n", namespace).stdout


def test_finalizers_delay_deletion_until_removed(kube, namespace):
    kube(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump(pool("gamma", finalizers=["test.inframind.io/hold"])),
    )
    kube("delete", "mp", "gamma", "-n", namespace, "--wait=false")
    obj = get_json(kube, "mp", "gamma", "-n", namespace)
    assert obj["metadata"]["deletionTimestamp"]

    kube(
        "patch",
        "mp",
        "gamma",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op": "remove", "path": "/metadata/finalizers"}]',
    )
    result = kube("get", "mp", "gamma", "-n", namespace, check=False)
    assert "NotFound" in result.stderr


def test_deleting_an_owner_garbage_collects_its_children(emu, kube, namespace):
    kube("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(pool("delta")))
    owner = get_json(kube, "mp", "delta", "-n", namespace)
    ref = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelPool",
        "name": "delta",
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    children = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "delta-config", "ownerReferences": [ref]},
            "data": {"k": "v"},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "delta", "ownerReferences": [ref]},
            "spec": {"ports": [{"port": 80}]},
        },
        deployment("delta", ownerReferences=[ref]),
    ]
    kube("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(children))
    kube("create", "configmap", "unrelated", "-n", namespace)

    kube("delete", "mp", "delta", "-n", namespace)
    left = kube("get", "configmaps,services,deployments", "-n", namespace, "-o", "name").stdout
    assert left.split() == ["configmap/unrelated"]


def test_deployments_turn_ready_only_when_marked(emu, kube, namespace):
    kube("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(deployment("engine", 3)))
    assert "readyReplicas" not in get_json(kube, "deploy", "engine", "-n", namespace).get(
        "status", {}
    )
    emu.mark_deployment_ready(namespace, "engine")
    dep = get_json(kube, "deploy", "engine", "-n", namespace)
    assert dep["status"]["readyReplicas"] == 3
    assert dep["status"]["observedGeneration"] == dep["metadata"]["generation"]
    kube("wait", "deployment/engine", "-n", namespace, "--for=condition=Available", "--timeout=5s")


def test_official_client_gets_404_and_409_as_api_exceptions(client, namespace):
    custom = kubernetes.client.CustomObjectsApi(client)
    core = kubernetes.client.CoreV1Api(client)
    with pytest.raises(kubernetes.client.ApiException) as missing:
        custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "nope")
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["reason"] == "NotFound"

    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, pool("eps"))
    with pytest.raises(kubernetes.client.ApiException) as duplicate:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, pool("eps"))
    assert duplicate.value.status == 409
    assert json.loads(duplicate.value.body)["reason"] == "AlreadyExists"

    body = kubernetes.client.V1ConfigMap(
        metadata=kubernetes.client.V1ObjectMeta(name="c"), data={"a": "1"}
    )
    created = core.create_namespaced_config_map(namespace, body)
    stale = created.metadata.resource_version
    core.patch_namespaced_config_map("c", namespace, {"data": {"a": "2"}})
    with pytest.raises(kubernetes.client.ApiException) as conflict:
        core.replace_namespaced_config_map(
            "c",
            namespace,
            kubernetes.client.V1ConfigMap(
                metadata=kubernetes.client.V1ObjectMeta(name="c", resource_version=stale),
                data={"a": "3"},
            ),
        )
    assert conflict.value.status == 409


def test_strategic_merge_patch_merges_containers_by_name(client, namespace):
    apps = kubernetes.client.AppsV1Api(client)
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "smp"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "smp"}},
                "template": {
                    "metadata": {"labels": {"app": "smp"}},
                    "spec": {
                        "containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]
                    },
                },
            },
        },
    )
    # The python client sends dict patches as strategic merge patches for built-ins.
    apps.patch_namespaced_deployment(
        "smp",
        namespace,
        {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}},
    )
    dep = apps.read_namespaced_deployment("smp", namespace)
    images = {c.name: c.image for c in dep.spec.template.spec.containers}
    assert images == {"a": "a:1", "b": "b:2"}


def _watch(url: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]


def test_watch_resumes_from_a_resource_version_with_bookmarks(emu, client, namespace):
    emu.call(setattr, emu.emulator, "bookmark_interval", 0.2)
    custom = kubernetes.client.CustomObjectsApi(client)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, pool("w1"))
    listing = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    since = listing["metadata"]["resourceVersion"]
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, pool("w2"))
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "w2", {"spec": {"replicas": 2}}
    )
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w2")

    base = f"{emu.url}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    events = _watch(
        f"{base}?watch=true&resourceVersion={since}&allowWatchBookmarks=true&timeoutSeconds=1"
    )
    changes = [
        (e["type"], e["object"]["metadata"]["name"]) for e in events if e["type"] != "BOOKMARK"
    ]
    assert changes == [("ADDED", "w2"), ("MODIFIED", "w2"), ("DELETED", "w2")]
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks and int(bookmarks[-1]["object"]["metadata"]["resourceVersion"]) > int(since)

    initial = _watch(
        f"{base}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true"
        "&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"
    )
    assert [e["type"] for e in initial[:2]] == ["ADDED", "BOOKMARK"]
    assert initial[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_crds_posted_by_kubectl_register_new_resources(tmp_path):
    with run_emulator(kubeconfig_path=tmp_path / "kubeconfig") as fresh:
        assert fresh.kubeconfig_path is not None
        crd = yaml.safe_dump(sample_modelpool_crd())
        missing = kubectl(fresh.kubeconfig_path, "get", "mp", check=False)
        assert "the server doesn't have a resource type" in missing.stderr
        kubectl(fresh.kubeconfig_path, "apply", "-f", "-", stdin=crd)
        assert "modelpools.inframind.io" in kubectl(fresh.kubeconfig_path, "get", "crds").stdout
        kubectl(fresh.kubeconfig_path, "apply", "-f", "-", stdin=yaml.safe_dump(pool("p")))
        assert "p " in kubectl(fresh.kubeconfig_path, "get", "mp").stdout
        kubectl(fresh.kubeconfig_path, "delete", "crd", "modelpools.inframind.io")
        gone = kubectl(fresh.kubeconfig_path, "get", "mp", check=False)
        assert gone.returncode != 0


def test_cli_serves_on_loopback_and_stops_on_sigterm(tmp_path):
    crds = write_sample_crd(tmp_path / "crds").parent
    kubeconfig = tmp_path / "kubeconfig"
    proc, url = start_emulator_process(crds=crds, kubeconfig=kubeconfig)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"] == url
        assert "No resources found" in kubectl(kubeconfig, "get", "modelpools").stderr
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            assert response.read() == b"ok"
    finally:
        assert stop_process(proc) == 0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/healthz", timeout=2)


OPERATOR = textwrap.dedent("""
    import kopf

    @kopf.on.startup()
    def configure(settings, **_):
        settings.watching.server_timeout = 30
        settings.posting.level = 20

    @kopf.on.create("inframind.io", "v1alpha1", "modelpools")
    def created(spec, name, body, patch, **_):
        patch.status["phase"] = "Created"
        patch.status["observedReplicas"] = spec.get("replicas")
        kopf.info(body, reason="PoolCreated", message=f"pool {name} created")

    @kopf.on.update("inframind.io", "v1alpha1", "modelpools")
    def updated(spec, patch, **_):
        patch.status["phase"] = "Updated"
        patch.status["observedReplicas"] = spec.get("replicas")

    @kopf.on.delete("inframind.io", "v1alpha1", "modelpools")
    def deleted(name, logger, **_):
        logger.info(f"DELETE-HANDLED {name}")
""")


def test_kopf_operator_handles_create_update_delete(emu, client, namespace, tmp_path, monkeypatch):
    from kopf.testing import KopfRunner

    operator = tmp_path / "operator.py"
    operator.write_text(OPERATOR)
    assert emu.kubeconfig_path is not None
    use_kubeconfig(monkeypatch, emu.kubeconfig_path)
    custom = kubernetes.client.CustomObjectsApi(client)
    core = kubernetes.client.CoreV1Api(client)

    def status() -> dict[str, Any]:
        try:
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "k")
        except kubernetes.client.ApiException as e:
            return {"gone": e.status == 404}
        return obj.get("status") or {}

    args = ["run", "--standalone", "--namespace", namespace, str(operator)]
    with KopfRunner(args, timeout=30) as runner:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, pool("k", replicas=1)
        )
        wait_for(lambda: status().get("phase") == "Created", what="create handler status")
        wait_for(
            lambda: [
                e
                for e in core.list_namespaced_event(namespace).items
                if e.reason == "PoolCreated" and e.involved_object.name == "k"
            ],
            what="the posted event",
        )

        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "k", {"spec": {"replicas": 4}}
        )
        wait_for(lambda: status().get("observedReplicas") == 4, what="update handler status")
        assert status()["phase"] == "Updated"

        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "k")
        wait_for(lambda: status().get("gone"), what="kopf to release its finalizer")

    assert runner.exit_code == 0, runner.output
    assert "DELETE-HANDLED k" in runner.output


def test_user_kmock_reactions_still_take_precedence(emu):
    # The emulator stays a kmock handler: reactions added by a test win over the store.
    reaction = emu.call(lambda: emu.emulator["get /custom-probe"] << {"hello": "world"})
    assert reaction is not None
    with urllib.request.urlopen(f"{emu.url}/custom-probe", timeout=5) as response:
        assert json.loads(response.read()) == {"hello": "world"}


def test_a_restart_with_a_state_file_keeps_objects_and_expires_older_watches(tmp_path):
    crd = write_sample_crd(tmp_path / "crds")
    state = tmp_path / "etcd.json"
    kubeconfig = tmp_path / "kubeconfig"
    with run_emulator(crds=[crd], kubeconfig_path=kubeconfig, state_path=state) as first:
        port = first.port
        kubectl(str(kubeconfig), "create", "namespace", "kept")
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        custom = kubernetes.client.CustomObjectsApi(api)
        made = custom.create_namespaced_custom_object(GROUP, VERSION, "kept", PLURAL, pool("p"))
        since = custom.list_namespaced_custom_object(GROUP, VERSION, "kept", PLURAL)["metadata"][
            "resourceVersion"
        ]
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "kept", PLURAL, "p", {"spec": {"replicas": 3}}
        )
        api.close()
    assert state.exists()
    with run_emulator(port=port, crds=[crd], kubeconfig_path=kubeconfig, state_path=state):
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        custom = kubernetes.client.CustomObjectsApi(api)
        back = custom.get_namespaced_custom_object(GROUP, VERSION, "kept", PLURAL, "p")
        api.close()
        # The same object: its identity, its last change, its version.
        assert back["metadata"]["uid"] == made["metadata"]["uid"]
        assert back["spec"]["replicas"] == 3
        assert int(back["metadata"]["resourceVersion"]) > int(since)
        # A watch resumed from before the restart cannot be served (no event log): 410, so
        # clients re-list, as after etcd compaction.
        base = f"http://127.0.0.1:{port}/apis/{GROUP}/{VERSION}/namespaces/kept/{PLURAL}"
        events = _watch(f"{base}?watch=true&resourceVersion={since}&timeoutSeconds=1")
        assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410

"""A local control plane for integration tests: the API emulator plus the real operator process."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from inframind.localstack import run_emulator
from inframind.localstack.processes import start_operator, stop_process, wait_for
from support.kube import kubectl

ROOT = Path(__file__).resolve().parents[2]
RESYNC_SECONDS = 2


@dataclass
class ControlPlane:
    """What a test needs to act like a user of a cluster running the operator."""

    kubeconfig: Path
    operator: Any  # subprocess.Popen
    operator_log: Path
    api: client.ApiClient

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True):
        return kubectl(self.kubeconfig, *args, stdin=stdin, check=check)

    def custom(self, plural: str, namespace: str, name: str) -> dict | None:
        try:
            return client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                "inframind.io", "v1alpha1", namespace, plural, name
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def read(self, kind: str, namespace: str, name: str) -> dict | None:
        api, method = {
            "Deployment": (client.AppsV1Api, "read_namespaced_deployment"),
            "Service": (client.CoreV1Api, "read_namespaced_service"),
            "ConfigMap": (client.CoreV1Api, "read_namespaced_config_map"),
        }[kind]
        try:
            obj = getattr(api(self.api), method)(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self.api.sanitize_for_serialization(obj)

    def events(self, namespace: str, name: str) -> list[dict]:
        found = client.CoreV1Api(self.api).list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        )
        return [self.api.sanitize_for_serialization(e) for e in found.items]

    def mark_ready(self, namespace: str, deployment: str, replicas: int = 1) -> None:
        """Do what kubelet and the deployment controller would: report replicas ready."""
        client.AppsV1Api(self.api).patch_namespaced_deployment_status(
            deployment,
            namespace,
            {
                "status": {
                    "replicas": replicas,
                    "readyReplicas": replicas,
                    "availableReplicas": replicas,
                }
            },
        )

    def wait(self, probe: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        if self.operator.poll() is not None:
            raise AssertionError(f"the operator exited:\n{self.operator_log.read_text()[-3000:]}")
        try:
            return wait_for(probe, timeout, what)
        except TimeoutError as exc:
            tail = self.operator_log.read_text()[-4000:]
            raise AssertionError(f"{exc}\n--- operator log (tail) ---\n{tail}") from None


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    workdir = tmp_path_factory.mktemp("control-plane")
    kubeconfig = workdir / "kubeconfig"
    log = workdir / "operator.log"
    with run_emulator(port=0, crds=[ROOT / "crds"], kubeconfig_path=kubeconfig):
        operator = start_operator(
            kubeconfig, env={"INFRAMIND_RESYNC_SECONDS": str(RESYNC_SECONDS)}, log=log
        )
        api = config.new_client_from_config(config_file=str(kubeconfig))
        try:
            yield ControlPlane(kubeconfig, operator, log, api)
        finally:
            api.close()
            stop_process(operator)


@pytest.fixture
def namespace(control_plane: ControlPlane) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    return name

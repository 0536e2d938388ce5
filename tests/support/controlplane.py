"""What a test needs to act like a user of a cluster that runs the operator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from inframind.localstack.processes import wait_for
from support.kube import kubectl


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

"""Test helpers for the Kubernetes emulator: sample CRDs, kubectl, emulator subprocesses."""

from __future__ import annotations

import os
import pathlib
import select
import subprocess
import sys
import time
from typing import Any

import yaml

from inframind.localstack.processes import stop_process

KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def sample_modelpool_crd(*, printer_columns: bool = True) -> dict[str, Any]:
    """A small ModelPool CRD (namespaced, short name mp, status subresource)."""
    version: dict[str, Any] = {
        "name": "v1alpha1",
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
        "schema": {
            "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        },
    }
    if printer_columns:
        version["additionalPrinterColumns"] = [
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "modelpools.inframind.io"},
        "spec": {
            "group": "inframind.io",
            "scope": "Namespaced",
            "names": {
                "plural": "modelpools",
                "singular": "modelpool",
                "kind": "ModelPool",
                "shortNames": ["mp"],
                "categories": ["inframind"],
            },
            "versions": [version],
        },
    }


def write_sample_crd(directory: pathlib.Path) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "modelpools.yaml"
    path.write_text(yaml.safe_dump(sample_modelpool_crd(), sort_keys=False))
    return path


def kubectl(
    kubeconfig: str | os.PathLike[str],
    *args: str,
    stdin: str | None = None,
    check: bool = True,
    timeout: float = 30.0,
    cache_dir: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the given kubeconfig with a private discovery cache."""
    cache = cache_dir or pathlib.Path(kubeconfig).with_name("kubectl-cache")
    cmd = [
        KUBECTL,
        "--kubeconfig",
        str(kubeconfig),
        "--cache-dir",
        str(cache),
        "--request-timeout",
        "10s",
        *args,
    ]
    result = subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def start_emulator_process(
    *,
    port: int = 0,
    crds: str | os.PathLike[str] | None = None,
    kubeconfig: str | os.PathLike[str],
    extra: tuple[str, ...] = (),
    timeout: float = 15.0,
) -> tuple[subprocess.Popen[str], str]:
    """Start `python -m inframind.localstack.emulator`; return the process and its URL."""
    cmd = [
        sys.executable,
        "-m",
        "inframind.localstack.emulator",
        "--port",
        str(port),
        "--kubeconfig",
        str(kubeconfig),
        *extra,
    ]
    if crds is not None:
        cmd += ["--crds", str(crds)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO_ROOT / "operator"), os.environ.get("PYTHONPATH")])
        ),
    }
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("inframind-emulator ready"):
                fields = dict(f.split("=", 1) for f in line.split()[2:])
                return proc, fields["url"]
        if proc.poll() is not None:
            break
    exited = proc.poll() is not None
    errors = proc.stderr.read() if exited and proc.stderr else "(still running, killed)"
    stop_process(proc)
    raise RuntimeError(f"the emulator did not become ready within {timeout} s: {errors}")


def use_kubeconfig(monkeypatch: Any, path: str | os.PathLike[str]) -> None:
    """Point in-process clients (kopf's KopfRunner login, kubernetes) at this kubeconfig.

    The kubernetes library reads $KUBECONFIG once, at import; kopf's piggybacking login then
    uses that stale default, so the module-level default must be patched as well.
    """
    import kubernetes.config.kube_config

    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))

"""Publish a trained policy as the ConfigMap (binaryData `policy.npz`) AgentPipelines reference.

    python -m inframind_training.publish --file policy.npz --configmap inframind-policy \\
        --namespace inframind [--dry-run]

The ConfigMap name stays the same across versions; its content and the
`inframind.io/policy-version` annotation change. Gateways mount it (the
AgentPipeline's `spec.policy.configMapRef`), the kubelet refreshes the file,
and the gateway hot-reloads it; a file the runtime refuses (wrong feature
schema) is never published because it is read back here first.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path
from typing import Any

from inframind.api.common import POLICY_VERSION_ANNOTATION as VERSION_ANNOTATION

SCHEMA_ANNOTATION = "inframind.io/feature-schema"


def build_configmap(name: str, namespace: str, data: bytes, meta: dict[str, Any]) -> dict:
    """The ConfigMap object (pure)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "inframind", "inframind.io/policy": "true"},
            "annotations": {
                VERSION_ANNOTATION: str(meta.get("version", "unknown")),
                SCHEMA_ANNOTATION: str(meta.get("feature_schema", "unknown")),
            },
        },
        "binaryData": {"policy.npz": base64.b64encode(data).decode()},
    }


def ensure_configmap(body: dict) -> str:
    """Create or replace the ConfigMap in the cluster (in-cluster config, else kubeconfig)."""
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.CoreV1Api()
    name, ns = body["metadata"]["name"], body["metadata"]["namespace"]
    try:
        api.replace_namespaced_config_map(name, ns, body)
        return "replaced"
    except ApiException as exc:
        if exc.status != 404:
            raise
    api.create_namespaced_config_map(ns, body)
    return "created"


def main(argv: list[str] | None = None) -> int:
    from inframind.policy.runtime import read_policy_file

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--file", type=Path, required=True)
    p.add_argument("--configmap", default="inframind-policy")
    p.add_argument("--namespace", default="default")
    p.add_argument("--dry-run", action="store_true", help="print the ConfigMap as YAML")
    args = p.parse_args(argv)
    meta, _ = read_policy_file(args.file)  # refuses a file this runtime cannot load
    body = build_configmap(args.configmap, args.namespace, args.file.read_bytes(), meta)
    if args.dry_run:
        import yaml

        print(yaml.safe_dump(body, sort_keys=False))
        return 0
    what = ensure_configmap(body)
    print(f"{what} ConfigMap {args.namespace}/{args.configmap} with policy {meta.get('version')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Validate rendered Kubernetes manifests (helm template, kubectl kustomize) offline.

Built-in kinds are checked against the Kubernetes OpenAPI schemas bundled with
kubernetes-validate, strictly (an unknown field is an error). InfraMind's own
custom resources are checked against the openAPIV3Schema of the CRDs in crds/
(CEL rules are not evaluated). Kinds from other projects' CRDs (prometheus-operator,
Argo CD, Flux) have no bundled schema: they are listed by name and only checked for
metadata.name and a spec, never skipped silently. Any other unknown kind is an error,
so a typo in an apiVersion cannot slip through as "skipped".

    helm template x charts/inframind | python tools/validate_manifests.py -
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
# The kubectl on the machines that run this (Debian) is 1.32.
DEFAULT_KUBERNETES_VERSION = "1.32.0"

# (apiVersion, kind) of third-party CRDs that the chart and manifests/gitops use.
THIRD_PARTY_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "prometheus-operator",
    ("monitoring.coreos.com/v1", "PodMonitor"): "prometheus-operator",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheus-operator",
    ("argoproj.io/v1alpha1", "Application"): "Argo CD",
    ("source.toolkit.fluxcd.io/v1", "GitRepository"): "Flux",
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"): "Flux",
}


def load_documents(texts: Iterable[str]) -> list[dict[str, Any]]:
    docs = []
    for text in texts:
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def crd_schemas(crd_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of every served version in crd_dir."""
    schemas = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        for version in spec["versions"]:
            key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def _where(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def check(doc: dict[str, Any], k8s_version: str, crds: dict) -> tuple[str, str]:
    """('ok' | 'third-party' | 'error', detail) for one document."""
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not api_version or not kind:
        return "error", "no apiVersion or kind"
    if (api_version, kind) in crds:
        # CRD schemas are OpenAPI 3.0, whose exclusiveMinimum is draft-4 style.
        validator = jsonschema.Draft4Validator(crds[(api_version, kind)])
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        if errors:
            return "error", "; ".join(f"{_where(e.path)}: {e.message}" for e in errors)
        return "ok", "CRD schema"
    if (api_version, kind) in THIRD_PARTY_KINDS:
        meta, spec = doc.get("metadata") or {}, doc.get("spec")
        if not meta.get("name") or not isinstance(spec, dict):
            return "error", "needs metadata.name and a spec"
        return "third-party", f"{THIRD_PARTY_KINDS[(api_version, kind)]} CRD, no bundled schema"
    try:
        kubernetes_validate.validate(doc, k8s_version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return "error", f"no schema for {api_version} {kind} (typo, or a CRD this tool lacks)"
    except kubernetes_validate.ValidationError as exc:
        return "error", f"{_where(exc.path)}: {exc.message}"
    return "ok", f"Kubernetes {k8s_version} schema"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="manifest files, or - for stdin")
    parser.add_argument("--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION)
    parser.add_argument("--crds", type=Path, default=ROOT / "crds", help="CRDs of custom kinds")
    args = parser.parse_args(argv)
    texts = [sys.stdin.read() if f == "-" else Path(f).read_text() for f in args.files]
    docs = load_documents(texts)
    if not docs:
        print("error: no manifests in the input", file=sys.stderr)
        return 1
    crds = crd_schemas(args.crds)
    counts = {"ok": 0, "third-party": 0, "error": 0}
    for doc in docs:
        verdict, detail = check(doc, args.kubernetes_version, crds)
        counts[verdict] += 1
        name = (doc.get("metadata") or {}).get("name", "?")
        label = {"ok": "ok", "third-party": "not validated", "error": "ERROR"}[verdict]
        print(f"{label:14} {doc.get('kind')}/{name}: {detail}")
    print(
        f"{counts['ok']} valid, {counts['third-party']} third-party kinds not validated "
        f"(metadata and spec present), {counts['error']} invalid"
    )
    return 1 if counts["error"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Generate the CustomResourceDefinitions from the pydantic models (`inframind crds`).

Kubernetes wants a *structural* OpenAPI v3 schema: every node typed, no $ref,
no anyOf over types, numeric exclusive bounds as booleans. Pydantic emits
JSON Schema 2020-12, so this module rewrites one into the other.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from .common import GROUP, VERSION, CrdInfo
from .modelpool import MODELPOOL_CRD, ModelPoolSpec, ModelPoolStatus
from .pipeline import AGENTPIPELINE_CRD, AgentPipelineSpec, PipelineStatus

RESOURCES: tuple[tuple[CrdInfo, type[BaseModel], type[BaseModel]], ...] = (
    (MODELPOOL_CRD, ModelPoolSpec, ModelPoolStatus),
    (AGENTPIPELINE_CRD, AgentPipelineSpec, PipelineStatus),
)

# Keywords that survive into the structural schema unchanged.
_KEPT = {
    "type",
    "description",
    "enum",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "x-kubernetes-validations",
}


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        # Optional[X] is anyOf [X, null]; Kubernetes expresses it by omission.
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union of {len(options)} types structurally: {node}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        return _structural({**options[0], **rest}, defs)

    out: dict[str, Any] = {k: v for k, v in node.items() if k in _KEPT}
    if "const" in node:
        out["enum"] = [node["const"]]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node:
            out[plain] = node[bound]
            out[bound] = True
    default = node.get("default")
    if default is not None and (
        isinstance(default, str | int | float | bool)
        or (isinstance(default, list) and all(isinstance(v, str | int | float) for v in default))
    ):
        out["default"] = default
    if "enum" in out and "type" not in out:
        out["type"] = "string"

    kind = out.get("type")
    if kind == "object" or "properties" in node:
        out["type"] = "object"
        props = node.get("properties", {})
        if props:
            out["properties"] = {k: _structural(v, defs) for k, v in props.items()}
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = _structural(extra, defs)
        if node.get("required"):
            out["required"] = list(node["required"])
    elif kind == "array":
        out["items"] = _structural(node.get("items", {}), defs)
    if "type" not in out:
        raise ValueError(f"schema node has no type and cannot be made structural: {node}")
    return out


def build_openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of one pydantic model, as Kubernetes stores it."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


def build_crd(info: CrdInfo, spec: type[BaseModel], status: type[BaseModel]) -> dict[str, Any]:
    """A complete apiextensions.k8s.io/v1 CustomResourceDefinition as a dict."""
    schema = {
        "type": "object",
        "description": info.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": build_openapi_schema(spec),
            # Status also carries kopf's bookkeeping, hence unknown fields kept.
            "status": {
                **build_openapi_schema(status),
                "x-kubernetes-preserve-unknown-fields": True,
            },
        },
    }
    columns = [
        {
            "name": c.name,
            "type": c.type,
            "jsonPath": c.json_path,
            **({"description": c.description} if c.description else {}),
            **({"priority": c.priority} if c.priority else {}),
        }
        for c in info.columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "inframind"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def render_crds() -> dict[str, str]:
    """File name -> YAML text for every CRD, exactly as committed under crds/."""
    header = "# Generated by `inframind crds` from operator/inframind/api; do not edit.\n"
    return {
        f"{GROUP}_{info.plural}.yaml": header
        + yaml.safe_dump(build_crd(info, spec, status), sort_keys=False, width=100)
        for info, spec, status in RESOURCES
    }


def write_crds(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_crds().items():
        path = out / name
        path.write_text(text)
        written.append(path)
    return written


def check_crds(out: Path) -> list[str]:
    """Unified diffs between the committed CRDs and freshly generated ones."""
    problems = []
    for name, text in render_crds().items():
        path = out / name
        current = path.read_text() if path.exists() else ""
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(True), text.splitlines(True), str(path), "generated"
            )
            problems.append("".join(diff) or f"{path} is missing")
    return problems


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.check:
        problems = check_crds(out)
        for p in problems:
            sys.stdout.write(p)
        if problems:
            print(f"\nCRDs in {out} drift from the API models: run `make crds` and commit.")
            return 1
        print(f"CRDs in {out} match the API models.")
        return 0
    for path in write_crds(out):
        print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("crds", help="generate CRD YAML from the API models")
    p.add_argument("--out", default="crds", help="directory to write (default: crds)")
    p.add_argument("--check", action="store_true", help="fail if the files differ from the models")
    p.set_defaults(func=_run)

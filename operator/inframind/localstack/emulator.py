"""An in-memory Kubernetes API server on kmock, faithful enough for kopf, kubectl and clients."""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import copy
import dataclasses
import datetime
import json
import logging
import os
import pathlib
import random
import re
import signal
import string
import sys
import threading
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

logger = logging.getLogger(__name__)

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
# The namespaces a fresh cluster has; tests and kopf expect "default" to exist.
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# How many watch events per resource are kept so that watches can resume from a resourceVersion.
EVENT_LOG_SIZE = 10_000
# kmock keeps every request for assertions; a long demo must not grow without bound.
MAX_KEPT_REQUESTS = 20_000
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


# --------------------------------------------------------------------------------------------
# Resource types
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ResourceType:
    """What discovery says about one resource, and how the store treats its objects."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    # All served versions (CRDs may serve several); objects are shared between them.
    versions: tuple[str, ...] = ()
    # (name, type, jsonPath, priority) from a CRD's additionalPrinterColumns.
    printer_columns: tuple[tuple[str, str, str, int], ...] = ()
    # ConfigMaps, Secrets, Events... have no spec, and real clusters give them no generation.
    has_generation: bool = True
    # Custom resources reject strategic-merge patches (there is no Go struct to merge by).
    custom: bool = False

    def __post_init__(self) -> None:
        self.singular = self.singular or self.kind.lower()
        self.versions = self.versions or (self.version,)

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    def api_version(self, version: str | None = None) -> str:
        version = version or self.version
        return f"{self.group}/{version}" if self.group else version

    @property
    def qualified(self) -> str:
        """The name kubectl prints in messages: `modelpools.inframind.io`, `configmaps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _builtin(group_version: str, plural: str, kind: str, **kwargs: Any) -> ResourceType:
    group, _, version = group_version.rpartition("/")
    return ResourceType(group=group, version=version, plural=plural, kind=kind, **kwargs)


BUILTIN_RESOURCES: tuple[ResourceType, ...] = (
    _builtin(
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        subresources=("status",),
        has_generation=False,
    ),
    _builtin("v1", "configmaps", "ConfigMap", short_names=("cm",), has_generation=False),
    _builtin("v1", "secrets", "Secret", has_generation=False),
    _builtin("v1", "serviceaccounts", "ServiceAccount", short_names=("sa",), has_generation=False),
    _builtin(
        "v1",
        "services",
        "Service",
        short_names=("svc",),
        categories=("all",),
        subresources=("status",),
        has_generation=False,
    ),
    _builtin("v1", "endpoints", "Endpoints", short_names=("ep",), has_generation=False),
    _builtin(
        "v1",
        "pods",
        "Pod",
        short_names=("po",),
        categories=("all",),
        subresources=("status",),
        has_generation=False,
    ),
    _builtin("v1", "events", "Event", short_names=("ev",), has_generation=False),
    _builtin(
        "v1",
        "nodes",
        "Node",
        namespaced=False,
        short_names=("no",),
        subresources=("status",),
        has_generation=False,
    ),
    _builtin(
        "apps/v1",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        categories=("all",),
        subresources=("status",),
    ),
    _builtin(
        "apps/v1",
        "replicasets",
        "ReplicaSet",
        short_names=("rs",),
        categories=("all",),
        subresources=("status",),
    ),
    _builtin(
        "apps/v1",
        "statefulsets",
        "StatefulSet",
        short_names=("sts",),
        categories=("all",),
        subresources=("status",),
    ),
    _builtin("events.k8s.io/v1", "events", "Event", has_generation=False),
    _builtin("coordination.k8s.io/v1", "leases", "Lease", has_generation=False),
    _builtin(
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short_names=("crd", "crds"),
        subresources=("status",),
    ),
)
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
DEPLOYMENT_KEY = ("apps", "deployments")
NAMESPACE_KEY = ("", "namespaces")


def resource_type_from_crd(crd: dict[str, Any]) -> ResourceType:
    """Read an apiextensions.k8s.io/v1 CustomResourceDefinition into a ResourceType."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
    versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
    missing = [
        f
        for f, v in (
            ("spec.group", group),
            ("spec.names.plural", plural),
            ("spec.names.kind", kind),
            ("spec.versions", versions),
        )
        if not v
    ]
    if missing:
        raise ApiError.invalid(
            crd, "CustomResourceDefinition", f"required fields are missing: {', '.join(missing)}"
        )
    expected = f"{plural}.{group}"
    name = (crd.get("metadata") or {}).get("name")
    if name != expected:
        raise ApiError.invalid(
            crd,
            "CustomResourceDefinition",
            f"metadata.name: Invalid value: {name!r}: must be {expected!r}",
        )
    storage = next((v for v in versions if v.get("storage")), versions[0])
    columns = tuple(
        (c["name"], c.get("type", "string"), c.get("jsonPath", ""), int(c.get("priority", 0)))
        for c in storage.get("additionalPrinterColumns") or []
    )
    return ResourceType(
        group=group,
        version=storage["name"],
        plural=plural,
        kind=kind,
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        singular=names.get("singular", ""),
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        subresources=tuple(sorted((storage.get("subresources") or {}).keys())),
        versions=tuple(v["name"] for v in versions),
        printer_columns=columns,
        custom=True,
    )


# --------------------------------------------------------------------------------------------
# Errors as Kubernetes Status objects
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error the API answers with a metav1.Status body, as a real apiserver does."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body

    @classmethod
    def not_found(cls, rt: ResourceType, name: str) -> ApiError:
        return cls(
            404,
            "NotFound",
            f'{rt.qualified} "{name}" not found',
            {"name": name, "group": rt.group, "kind": rt.plural},
        )

    @classmethod
    def already_exists(cls, rt: ResourceType, name: str) -> ApiError:
        return cls(
            409,
            "AlreadyExists",
            f'{rt.qualified} "{name}" already exists',
            {"name": name, "group": rt.group, "kind": rt.plural},
        )

    @classmethod
    def conflict(cls, rt: ResourceType, name: str, why: str) -> ApiError:
        return cls(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
            {"name": name, "group": rt.group, "kind": rt.plural},
        )

    @classmethod
    def invalid(cls, obj: dict[str, Any], kind: str, why: str) -> ApiError:
        name = (obj.get("metadata") or {}).get("name") or ""
        return cls(
            422,
            "Invalid",
            f'{kind} "{name}" is invalid: {why}',
            {"name": name, "kind": kind, "causes": [{"message": why}]},
        )

    @classmethod
    def bad_request(cls, why: str) -> ApiError:
        return cls(400, "BadRequest", why)

    @classmethod
    def no_such_resource(cls) -> ApiError:
        return cls(404, "NotFound", "the server could not find the requested resource")


# --------------------------------------------------------------------------------------------
# Patch algorithms: RFC 7386 merge, RFC 6902 JSON patch, Kubernetes strategic merge
# --------------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, null deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk_pointer(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 with add/remove/replace/move/copy/test; raises ValueError on a failed op."""
    doc = copy.deepcopy(doc)

    def add(parts: list[str], value: Any) -> None:
        nonlocal doc
        if not parts:
            doc = value
            return
        parent = _walk_pointer(doc, parts[:-1])
        last = parts[-1]
        if isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), value)
        else:
            parent[last] = value

    def remove(parts: list[str]) -> Any:
        parent = _walk_pointer(doc, parts[:-1])
        return parent.pop(int(parts[-1]) if isinstance(parent, list) else parts[-1])

    if not isinstance(ops, list):
        raise ValueError("a JSON patch must be a list of operations")
    for op in ops:
        kind, parts = op.get("op"), _pointer(op.get("path", ""))
        try:
            if kind == "add":
                add(parts, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(parts)
            elif kind == "replace":
                remove(parts)
                add(parts, copy.deepcopy(op["value"]))
            elif kind == "move":
                add(parts, remove(_pointer(op["from"])))
            elif kind == "copy":
                add(parts, copy.deepcopy(_walk_pointer(doc, _pointer(op["from"]))))
            elif kind == "test":
                if _walk_pointer(doc, parts) != op.get("value"):
                    raise ValueError(f"test failed at {op.get('path')!r}")
            else:
                raise ValueError(f"unknown JSON patch op {kind!r}")
        except (KeyError, IndexError, TypeError) as e:
            raise ValueError(f"cannot {kind} at {op.get('path')!r}: {e!r}") from e
    return doc


# Merge keys of the Go types that kubectl's strategic-merge patches touch. The real server reads
# them from struct tags; a field-name table is the same for every list kubectl and kopf patch.
SMP_MERGE_KEYS: dict[str, str | None] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "ports": "port",
    "finalizers": None,  # a list of primitives merged as a set
}


def _smp_port_key(items: list[Any]) -> str:
    # Container ports merge by containerPort, Service ports by port: same field name.
    return (
        "containerPort"
        if any(isinstance(i, dict) and "containerPort" in i for i in items)
        else "port"
    )


def _smp_list(current: list[Any], patch: list[Any], field: str) -> list[Any]:
    key = SMP_MERGE_KEYS[field]
    if field == "ports":
        key = _smp_port_key(current + patch)
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [_strip_directives(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    if key is None:
        return list(current) + [i for i in patch if i not in current]
    result = [copy.deepcopy(i) for i in current]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            result.append(copy.deepcopy(item))
            continue
        index = next(
            (n for n, c in enumerate(result) if isinstance(c, dict) and c.get(key) == item[key]),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
        elif index is None:
            result.append(_strip_directives(item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _strip_directives(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_directives(v) for k, v in obj.items() if not k.startswith("$")}
    if isinstance(obj, list):
        return [_strip_directives(i) for i in obj]
    return obj


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """The subset of Kubernetes strategic merge patch that kubectl apply/edit/patch produce."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return _strip_directives(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, list) and key in SMP_MERGE_KEYS:
            result[key] = _smp_list(result.get(key) or [], value, key)
        elif isinstance(value, dict):
            result[key] = strategic_merge_patch(result.get(key), value)
        else:
            result[key] = _strip_directives(value)
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [i for i in result.get(field) or [] if i not in value]
        elif key.startswith("$setElementOrder/"):
            field = key.split("/", 1)[1]
            result[field] = _reorder(result.get(field) or [], value, field)
    if "$retainKeys" in patch:
        keep = set(patch["$retainKeys"])
        result = {k: v for k, v in result.items() if k in keep}
    return result


def _reorder(items: list[Any], order: list[Any], field: str) -> list[Any]:
    key = SMP_MERGE_KEYS.get(field)
    if field == "ports":
        key = _smp_port_key(items)

    def ident(i: Any) -> Any:
        return i.get(key) if key and isinstance(i, dict) else json.dumps(i, sort_keys=True)

    rank = {ident(o): n for n, o in enumerate(order)}
    return sorted(items, key=lambda i: rank.get(ident(i), len(rank)))


# --------------------------------------------------------------------------------------------
# Protobuf bodies (only the kinds kubectl's generators send without a JSON alternative)
# --------------------------------------------------------------------------------------------


def _protobuf_fields(data: bytes) -> dict[int, list[Any]]:
    """Split a protobuf message into {field number: [raw values]} (wire types 0, 1, 2, 5)."""
    fields: dict[int, list[Any]] = collections.defaultdict(list)
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while pos < len(data):
        tag = varint()
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            fields[number].append(varint())
        elif wire == 2:
            size = varint()
            fields[number].append(data[pos : pos + size])
            pos += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            fields[number].append(data[pos : pos + width])
            pos += width
        else:
            raise ApiError.bad_request(f"unsupported protobuf wire type {wire}")
    return fields


def _pb_str(fields: dict[int, list[Any]], number: int) -> str | None:
    return fields[number][-1].decode() if fields.get(number) else None


def _pb_map(fields: dict[int, list[Any]], number: int, *, binary: bool = False) -> dict[str, Any]:
    result = {}
    for entry in fields.get(number, []):
        kv = _protobuf_fields(entry)
        value = kv[2][-1] if kv.get(2) else b""
        result[_pb_str(kv, 1) or ""] = (
            base64.b64encode(value).decode() if binary else value.decode()
        )
    return result


def _pb_object_meta(data: bytes) -> dict[str, Any]:
    f = _protobuf_fields(data)
    meta: dict[str, Any] = {
        k: v
        for k, v in (
            ("name", _pb_str(f, 1)),
            ("generateName", _pb_str(f, 2)),
            ("namespace", _pb_str(f, 3)),
        )
        if v
    }
    for number, key in ((11, "labels"), (12, "annotations")):
        if f.get(number):
            meta[key] = _pb_map(f, number)
    if f.get(14):
        meta["finalizers"] = [v.decode() for v in f[14]]
    return meta


def protobuf_to_json(body: bytes, rt: ResourceType) -> dict[str, Any]:
    """Decode the protobuf Namespace/ConfigMap/Secret/ServiceAccount that kubectl create sends."""
    if not body.startswith(b"k8s\x00"):
        raise ApiError.bad_request("a protobuf body must start with the k8s envelope magic")
    envelope = _protobuf_fields(body[4:])
    raw = envelope[2][-1] if envelope.get(2) else b""
    f = _protobuf_fields(raw)
    obj: dict[str, Any] = {
        "apiVersion": rt.api_version(),
        "kind": rt.kind,
        "metadata": _pb_object_meta(f[1][-1]) if f.get(1) else {},
    }
    if rt.key == ("", "configmaps"):
        if f.get(2):
            obj["data"] = _pb_map(f, 2)
        if f.get(3):
            obj["binaryData"] = _pb_map(f, 3, binary=True)
    elif rt.key == ("", "secrets"):
        if f.get(2):
            obj["data"] = _pb_map(f, 2, binary=True)
        if f.get(3):
            obj["type"] = _pb_str(f, 3)
    elif rt.key not in (NAMESPACE_KEY, ("", "serviceaccounts")):
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"this emulator reads protobuf only for namespaces, configmaps, secrets "
            f"and serviceaccounts; create {rt.plural} from a manifest instead "
            f"(kubectl apply -f / kubectl create -f)",
        )
    return obj


# --------------------------------------------------------------------------------------------
# Selectors and printer-column paths
# --------------------------------------------------------------------------------------------


def _split_terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += ch
    terms.append(current.strip())
    return [t for t in terms if t]


def label_selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in _split_terms(selector):
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            key, op, values = m[1], m[2], {v.strip() for v in m[3].split(",")}
            if (op == "in") != (labels.get(key) in values):
                return False
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def _dotted(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def field_selector_matches(selector: str, obj: dict[str, Any]) -> bool:
    for term in _split_terms(selector):
        negate = "!=" in term
        path, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        actual = _dotted(obj, path.strip())
        actual = "" if actual is None else str(actual)
        if (actual == value.strip()) == negate:
            return False
    return True


def json_path(obj: Any, path: str) -> Any:
    """Enough of kubectl JSONPath for printer columns: `.a.b`, `[0]`, `[?(@.type=="Ready")]`."""
    for token in re.findall(
        r"\[\?\(@\.[^)]*\)\]|\[\d+\]|[^.\[\]]+", path.strip().lstrip("{").rstrip("}")
    ):
        if obj is None:
            return None
        if m := re.fullmatch(r'\[\?\(@\.([\w.]+)\s*==\s*["\']?([^"\']*)["\']?\)\]', token):
            obj = next((i for i in obj or [] if str(_dotted(i, m[1])) == m[2]), None)
        elif m := re.fullmatch(r"\[(\d+)\]", token):
            obj = obj[int(m[1])] if isinstance(obj, list) and len(obj) > int(m[1]) else None
        else:
            obj = obj.get(token) if isinstance(obj, dict) else None
    return obj


# --------------------------------------------------------------------------------------------
# Time helpers
# --------------------------------------------------------------------------------------------


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.strptime(timestamp[:19], "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.UTC
    )
    seconds = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


# --------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class InfraMindEmulator(kmock.KubernetesEmulator):
    """
    A kmock Kubernetes emulator with the apiserver semantics kopf and kubectl rely on.

    kmock's own emulation (merge-only patches, 500 on parse errors, thin discovery) is
    replaced by a store with resourceVersions, generations, status subresources, finalizers,
    owner-reference garbage collection, resumable watches with bookmarks and server-side
    tables. User reactions added through kmock's DSL (``emu['get /x'] << ...``) still take
    precedence over this store, as in plain kmock.

    All state lives on the event loop that serves the requests; from other threads, call
    methods through :meth:`EmulatorHandle.call`.
    """

    # Deployments have no kubelet here; with this flag they turn ready as soon as they change.
    ready_deployments: bool = False
    # Real servers bookmark every minute or so; kopf only needs them to be regular.
    bookmark_interval: float = 10.0

    _types: dict[tuple[str, str], ResourceType] = attrs.field(factory=dict, init=False)
    _store: dict[tuple[str, str], dict[tuple[str | None, str], dict[str, Any]]] = attrs.field(
        factory=lambda: collections.defaultdict(dict), init=False
    )
    _uids: dict[str, tuple[tuple[str, str], str | None, str]] = attrs.field(
        factory=dict, init=False
    )
    _rv: int = attrs.field(default=1, init=False)
    # The resourceVersion a saved state was restored at: no event log reaches back past it.
    _restored_rv: int = attrs.field(default=0, init=False)
    _logs: dict[tuple[str, str], collections.deque[tuple[int, str, dict[str, Any]]]] = attrs.field(
        factory=lambda: collections.defaultdict(lambda: collections.deque(maxlen=EVENT_LOG_SIZE)),
        init=False,
    )
    _watchers: dict[tuple[str, str], set[asyncio.Queue[Any]]] = attrs.field(
        factory=lambda: collections.defaultdict(set), init=False
    )

    def __attrs_post_init__(self) -> None:
        # Deliberately not calling kmock's post-init: its fallback reactions would answer
        # every request before this store could, with the thin semantics we replace.
        for rt in BUILTIN_RESOURCES:
            self.register(dataclasses.replace(rt))
        for name in INITIAL_NAMESPACES:
            self.create(self._types[NAMESPACE_KEY], None, {"metadata": {"name": name}})

    # ---------------------------------------------------------------- registration

    def register(self, rt: ResourceType) -> ResourceType:
        """Serve a resource type (also listed in discovery)."""
        self._types[rt.key] = rt
        # Keep kmock's own registry in step, for users who inspect `emu.resources`.
        for version in rt.versions:
            self.resources[
                f"{rt.group}/{version}/{rt.plural}" if rt.group else f"{version}/{rt.plural}"
            ] = kmock.ResourceInfo(
                kind=rt.kind,
                singular=rt.singular,
                namespaced=rt.namespaced,
                verbs=set(ALL_VERBS),
                shortnames=set(rt.short_names),
                categories=set(rt.categories),
                subresources=set(rt.subresources),
            )
        return rt

    def load_crds(self, paths: Iterable[str | os.PathLike[str]]) -> list[ResourceType]:
        """Create every CustomResourceDefinition found in the YAML files or directories."""
        registered = []
        for doc in _iter_yaml_docs(paths):
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            name = doc.get("metadata", {}).get("name", "")
            crd_type = self._types[CRD_KEY]
            if (None, name) in self._store[CRD_KEY]:
                self.patch(
                    crd_type, None, name, "application/merge-patch+json", {"spec": doc.get("spec")}
                )
            else:
                self.create(crd_type, None, doc)
            registered.append(self._types[(doc["spec"]["group"], doc["spec"]["names"]["plural"])])
        return registered

    def type_of(self, resource: str) -> ResourceType:
        """Find a type by `plural`, `plural.group`, kind or short name, as kubectl does."""
        for rt in self._types.values():
            names = {rt.plural, rt.qualified, rt.kind.lower(), rt.singular, *rt.short_names}
            if resource.lower() in names:
                return rt
        raise KeyError(f"no resource type {resource!r} is served; load its CRD first")

    # ---------------------------------------------------------------- persistence

    def save_state(self, path: str | os.PathLike[str]) -> None:
        """Write every object and the resourceVersion counter (etcd's part in a restart)."""
        objects = [
            [list(key), obj]
            # CRDs first, so that a restore can serve their kinds before their objects.
            for key in sorted(self._store, key=lambda k: k != CRD_KEY)
            for obj in self._store[key].values()
        ]
        target = pathlib.Path(path)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps({"resourceVersion": self._rv, "objects": objects}))
        tmp.replace(target)

    def load_state(self, path: str | os.PathLike[str]) -> None:
        """Serve what `save_state` wrote, as an API server does from etcd after a restart:
        same objects, uids and resourceVersions; watches resumed from before it get 410."""
        state = json.loads(pathlib.Path(path).read_text())
        self._store.clear()
        self._uids.clear()
        for key, obj in state["objects"]:
            key = tuple(key)
            if key == CRD_KEY:
                self.register(resource_type_from_crd(obj))
            meta = obj["metadata"]
            self._store[key][(meta.get("namespace"), meta["name"])] = obj
            self._uids[meta["uid"]] = (key, meta.get("namespace"), meta["name"])
        self._rv = self._restored_rv = int(state["resourceVersion"])

    # ---------------------------------------------------------------- reading

    def get(self, rt: ResourceType | str, namespace: str | None, name: str) -> dict[str, Any]:
        rt = self.type_of(rt) if isinstance(rt, str) else rt
        obj = self._store[rt.key].get((namespace if rt.namespaced else None, name))
        if obj is None:
            raise ApiError.not_found(rt, name)
        return copy.deepcopy(obj)

    def list(
        self,
        rt: ResourceType | str,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
    ) -> list[dict[str, Any]]:
        rt = self.type_of(rt) if isinstance(rt, str) else rt
        return [
            copy.deepcopy(obj)
            for obj in self._select(rt, namespace, label_selector, field_selector)
        ]

    def _select(
        self, rt: ResourceType, namespace: str | None, label_selector: str, field_selector: str
    ) -> list[dict[str, Any]]:
        items = [
            obj
            for (ns, _), obj in sorted(
                self._store[rt.key].items(), key=lambda kv: (kv[0][0] or "", kv[0][1])
            )
            if namespace is None or ns == namespace
        ]
        return [obj for obj in items if self._matches(obj, label_selector, field_selector)]

    @staticmethod
    def _matches(obj: dict[str, Any], label_selector: str, field_selector: str) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return (not label_selector or label_selector_matches(label_selector, labels)) and (
            not field_selector or field_selector_matches(field_selector, obj)
        )

    # ---------------------------------------------------------------- writing

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _emit(self, rt: ResourceType, event_type: str, obj: dict[str, Any]) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        self._logs[rt.key].append((rv, event_type, obj))
        for queue in list(self._watchers[rt.key]):
            queue.put_nowait((event_type, obj))

    def create(
        self,
        rt: ResourceType,
        namespace: str | None,
        body: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of a create must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            body_ns = meta.get("namespace")
            if namespace and body_ns and body_ns != namespace:
                raise ApiError.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            namespace = namespace or body_ns
            if not namespace:
                raise ApiError.bad_request(f"{rt.kind} is namespaced: a namespace is required")
            ns_obj = self._store[NAMESPACE_KEY].get((None, namespace))
            if ns_obj is None:
                raise ApiError.not_found(self._types[NAMESPACE_KEY], namespace)
            if ns_obj["metadata"].get("deletionTimestamp"):
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{rt.qualified} "{meta.get("name", "")}" is forbidden: unable '
                    f"to create new content in namespace {namespace} because it is "
                    "being terminated",
                )
            meta["namespace"] = namespace
        else:
            namespace = None
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                random.choices(string.ascii_lowercase + string.digits, k=5)
            )
        name = meta.get("name")
        if not name:
            raise ApiError.invalid(
                obj, rt.kind, "metadata.name: Required value: name or generateName is required"
            )
        if len(name) > 253 or not NAME_RE.match(name):
            raise ApiError.invalid(
                obj,
                rt.kind,
                f"metadata.name: Invalid value: {name!r}: a "
                "lowercase RFC 1123 subdomain must consist of lower case "
                "alphanumeric characters, '-' or '.'",
            )
        if (namespace, name) in self._store[rt.key]:
            raise ApiError.already_exists(rt, name)
        if rt.key == CRD_KEY:
            crd_type = resource_type_from_crd(obj)  # validates before anything is stored
            obj["status"] = _crd_status(obj)
        elif "status" in rt.subresources:
            obj.pop("status", None)  # the status subresource owns it; creates cannot set it
        if rt.key == NAMESPACE_KEY:
            obj["status"] = {"phase": "Active"}
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            meta.pop(field, None)
        obj["apiVersion"], obj["kind"] = rt.api_version(), rt.kind
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339())
        if rt.has_generation:
            meta["generation"] = 1
        if dry_run:
            return obj
        meta["resourceVersion"] = self._next_rv()
        self._store[rt.key][(namespace, name)] = obj
        self._uids[meta["uid"]] = (rt.key, namespace, name)
        self._emit(rt, "ADDED", obj)
        if rt.key == CRD_KEY:
            self.register(crd_type)
        if rt.key == DEPLOYMENT_KEY and self.ready_deployments:
            obj = self.mark_deployment_ready(namespace or "", name)
        return copy.deepcopy(obj)

    def replace(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: dict[str, Any],
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        old = self._current(rt, namespace, name)
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of an update must be a JSON object")
        return self._update(rt, old, copy.deepcopy(body), subresource=subresource, dry_run=dry_run)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        content_type = content_type.split(";")[0].strip().lower()
        old = self._current(rt, namespace, name)
        try:
            if content_type == "application/json-patch+json":
                new = json_patch(old, patch)
            elif content_type == "application/strategic-merge-patch+json":
                if rt.custom:
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        "strategic merge patch is not supported for custom "
                        "resources; use --type=merge or --type=json",
                    )
                new = strategic_merge_patch(old, patch)
            elif content_type in (
                "application/merge-patch+json",
                "application/json",
                "application/apply-patch+yaml",
            ):
                # Server-side apply is approximated as a merge: no field ownership here.
                new = merge_patch(old, patch)
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted "
                    f"media types include: application/json-patch+json, "
                    f"application/merge-patch+json, application/apply-patch+yaml"
                    f" (got {content_type!r})",
                )
        except ValueError as e:
            raise ApiError(422, "Invalid", f"the patch could not be applied: {e}") from e
        if not isinstance(new, dict):
            raise ApiError.bad_request("the patched object is not a JSON object")
        # A patch names the object by URL; its resourceVersion is checked only if it sent one.
        patch_meta = patch.get("metadata") if isinstance(patch, dict) else None
        if not (isinstance(patch_meta, dict) and "resourceVersion" in patch_meta):
            new.setdefault("metadata", {})["resourceVersion"] = old["metadata"]["resourceVersion"]
        return self._update(rt, old, new, subresource=subresource, dry_run=dry_run)

    def _current(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._store[rt.key].get((namespace if rt.namespaced else None, name))
        if obj is None:
            raise ApiError.not_found(rt, name)
        return obj

    def _update(
        self,
        rt: ResourceType,
        old: dict[str, Any],
        new: dict[str, Any],
        *,
        subresource: str | None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        old_meta = old["metadata"]
        name, namespace = old_meta["name"], old_meta.get("namespace")
        if subresource not in (None, "status") or (
            subresource == "status" and "status" not in rt.subresources
        ):
            raise ApiError.no_such_resource()
        new_meta = new.setdefault("metadata", {})
        if not isinstance(new_meta, dict):
            raise ApiError.bad_request("metadata must be an object")
        wanted_rv = new_meta.get("resourceVersion")
        if wanted_rv and str(wanted_rv) != old_meta["resourceVersion"]:
            raise ApiError.conflict(
                rt,
                name,
                "the object has been modified; please apply "
                "your changes to the latest version and try again",
            )
        if new_meta.get("uid") and new_meta["uid"] != old_meta["uid"]:
            raise ApiError.conflict(
                rt,
                name,
                "Precondition failed: UID in precondition: "
                f"{new_meta['uid']}, UID in object meta: "
                f"{old_meta['uid']}",
            )
        if subresource == "status":
            # Only the status moves through /status; everything else stays as it was.
            result = {k: v for k, v in old.items() if k != "status"}
            if "status" in new:
                result["status"] = new["status"]
        else:
            result = dict(new)
            if "status" in rt.subresources and rt.key != NAMESPACE_KEY:
                result.pop("status", None)
                if "status" in old:
                    result["status"] = old["status"]
            elif rt.key == NAMESPACE_KEY:
                result["status"] = old.get("status")
        meta = dict(result.get("metadata") or {})
        # System-owned metadata cannot be changed by clients.
        for field in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        result["metadata"] = meta
        result["apiVersion"], result["kind"] = old["apiVersion"], old["kind"]
        if result == old:
            return copy.deepcopy(old)  # a no-op write changes nothing and notifies nobody
        if rt.has_generation and _spec_part(result, rt) != _spec_part(old, rt):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if rt.key == CRD_KEY:
            crd_type = resource_type_from_crd(result)
            result["status"] = _crd_status(result)
        if dry_run:
            return result
        meta["resourceVersion"] = self._next_rv()
        key = (namespace, name)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            # The last finalizer is gone: the pending deletion completes now.
            self._store[rt.key][key] = result
            self._hard_delete(rt, result, "Background")
            return copy.deepcopy(result)
        self._store[rt.key][key] = result
        self._emit(rt, "MODIFIED", result)
        if rt.key == CRD_KEY:
            self.register(crd_type)
        if (
            rt.key == DEPLOYMENT_KEY
            and self.ready_deployments
            and subresource is None
            and meta.get("generation") != old_meta.get("generation")
        ):
            result = self.mark_deployment_ready(namespace, name)
        return copy.deepcopy(result)

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
        preconditions: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        obj = self._current(rt, namespace, name)
        meta = obj["metadata"]
        for field in ("uid", "resourceVersion"):
            wanted = (preconditions or {}).get(field)
            if wanted and wanted != meta.get(field):
                raise ApiError.conflict(
                    rt,
                    name,
                    f"Precondition failed: {field} in "
                    f"precondition: {wanted}, {field} in object "
                    f"meta: {meta.get(field)}",
                )
        if dry_run:
            return copy.deepcopy(obj)
        if rt.key == NAMESPACE_KEY:
            return self._delete_namespace(rt, obj)
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return copy.deepcopy(obj)  # already pending; waiting for the finalizers
            marked = {
                **obj,
                "metadata": {
                    **meta,
                    "deletionTimestamp": now_rfc3339(),
                    "deletionGracePeriodSeconds": 0,
                    "resourceVersion": self._next_rv(),
                },
            }
            self._store[rt.key][(meta.get("namespace"), name)] = marked
            self._emit(rt, "MODIFIED", marked)
            return copy.deepcopy(marked)
        return copy.deepcopy(self._hard_delete(rt, obj, propagation))

    def _hard_delete(
        self, rt: ResourceType, obj: dict[str, Any], propagation: str
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (meta.get("namespace"), meta["name"])
        if self._store[rt.key].pop(key, None) is None:
            return obj
        self._uids.pop(meta["uid"], None)
        gone = {**obj, "metadata": {**meta, "resourceVersion": self._next_rv()}}
        self._emit(rt, "DELETED", gone)
        if rt.key == CRD_KEY:
            self._unregister_crd(obj)
        self._collect_dependents(meta["uid"], orphan=propagation == "Orphan")
        namespace = meta.get("namespace")
        if namespace:
            self._finish_namespace_if_empty(namespace)
        return gone

    def _collect_dependents(self, owner_uid: str, *, orphan: bool) -> None:
        """Garbage collection: dependents whose last owner is gone are deleted too."""
        for rt in list(self._types.values()):
            for obj in list(self._store[rt.key].values()):
                refs = obj["metadata"].get("ownerReferences") or []
                if not any(ref.get("uid") == owner_uid for ref in refs):
                    continue
                remaining = [ref for ref in refs if ref.get("uid") != owner_uid]
                alive = [ref for ref in remaining if ref.get("uid") in self._uids]
                meta = obj["metadata"]
                if orphan or alive:
                    self.patch(
                        rt,
                        meta.get("namespace"),
                        meta["name"],
                        "application/json-patch+json",
                        [
                            {
                                "op": "replace",
                                "path": "/metadata/ownerReferences",
                                "value": remaining,
                            }
                        ],
                    )
                elif (meta.get("namespace"), meta["name"]) in self._store[rt.key]:
                    self.delete(rt, meta.get("namespace"), meta["name"])

    def _delete_namespace(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        if not obj["metadata"].get("deletionTimestamp"):
            obj = {
                **obj,
                "metadata": {
                    **obj["metadata"],
                    "deletionTimestamp": now_rfc3339(),
                    "resourceVersion": self._next_rv(),
                },
                "status": {"phase": "Terminating"},
            }
            self._store[rt.key][(None, name)] = obj
            self._emit(rt, "MODIFIED", obj)
        for other in list(self._types.values()):
            if not other.namespaced:
                continue
            for ns, obj_name in list(self._store[other.key]):
                if ns == name and (ns, obj_name) in self._store[other.key]:
                    self.delete(other, ns, obj_name)
        self._finish_namespace_if_empty(name)
        return copy.deepcopy(self._store[rt.key].get((None, name), obj))

    def _finish_namespace_if_empty(self, namespace: str) -> None:
        ns_obj = self._store[NAMESPACE_KEY].get((None, namespace))
        if ns_obj is None or not ns_obj["metadata"].get("deletionTimestamp"):
            return
        if any(
            ns == namespace
            for rt in self._types.values()
            if rt.namespaced
            for (ns, _) in self._store[rt.key]
        ):
            return
        self._hard_delete(self._types[NAMESPACE_KEY], ns_obj, "Background")

    def _unregister_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        key = (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
        rt = self._types.pop(key, None)
        if rt is None:
            return
        for obj in list(self._store[key].values()):
            self._hard_delete(rt, obj, "Background")
        for version in rt.versions:
            with contextlib.suppress(KeyError):
                del self.resources[f"{rt.group}/{version}/{rt.plural}"]

    # ---------------------------------------------------------------- no-kubelet helpers

    def mark_deployment_ready(
        self, namespace: str, name: str, replicas: int | None = None
    ) -> dict[str, Any]:
        """Write the status a kubelet and controller-manager would: all replicas ready."""
        rt = self._types[DEPLOYMENT_KEY]
        obj = self._current(rt, namespace, name)
        wanted = (obj.get("spec") or {}).get("replicas", 1) if replicas is None else replicas
        now = now_rfc3339()
        status = {
            "observedGeneration": obj["metadata"].get("generation", 1),
            "replicas": wanted,
            "updatedReplicas": wanted,
            "readyReplicas": wanted,
            "availableReplicas": wanted,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                    "lastUpdateTime": now,
                    "lastTransitionTime": now,
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "message": f'ReplicaSet "{name}" has successfully progressed.',
                    "lastUpdateTime": now,
                    "lastTransitionTime": now,
                },
            ],
        }
        if wanted == 0:
            for field in ("readyReplicas", "availableReplicas"):
                status.pop(field)
        return self._update(rt, obj, {**obj, "status": status}, subresource="status")

    # ---------------------------------------------------------------- HTTP

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's parser raises on some valid paths (e.g. GET /api/v1/namespaces) and turns
        # that into a 500; parse defensively and route everything through _handle().
        await raw_request.read()
        try:
            request = await kmock.Request._parse(raw_request, id=len(self._requests))
        except ValueError:
            request = kmock.Request(
                id=len(self._requests),
                raw_request=raw_request,
                url=raw_request.url,
                method=raw_request.method,
                params=dict(raw_request.query),
                headers=dict(raw_request.headers),
                body=await raw_request.read(),
            )
        if len(self._requests) >= MAX_KEPT_REQUESTS:
            del self._requests[: MAX_KEPT_REQUESTS // 2]
        self._requests.append(request)
        try:
            return await self._handle(request)
        except Exception as e:
            logger.exception(
                "The emulator failed to serve %s %s", raw_request.method, raw_request.path_qs
            )
            return _status_response(
                ApiError(
                    500,
                    "InternalError",
                    f"an error on the server ({e!r}) has prevented the request from succeeding",
                    {"causes": [{"message": traceback.format_exc()}]},
                )
            )

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # First the user's kmock reactions (if any), bypassing kmock's own k8s emulation...
        try:
            return await kmock.RawHandler._handle(self, request)
        except NotImplementedError:
            pass
        # ...then this emulator's store.
        try:
            return await self._serve(request)
        except ApiError as e:
            return _status_response(e)

    async def _serve(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None
        path, method, params = raw.path.rstrip("/") or "/", raw.method.upper(), raw.query
        if method == "GET":
            static = self._static_document(path)
            if static is not None:
                return static
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        elif parts[0] == "apis" and len(parts) == 2 and method == "GET":
            return aiohttp.web.json_response(self._api_group(parts[1]))
        else:
            raise ApiError.no_such_resource()
        if not rest:
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
            return aiohttp.web.json_response(self._api_resource_list(group, version))

        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        plural, name = rest[0], rest[1] if len(rest) > 1 else None
        subresource = "/".join(rest[2:]) or None
        rt = self._types.get((group, plural))
        if rt is None or version not in rt.versions or (namespace and not rt.namespaced):
            raise ApiError.no_such_resource()
        if subresource == "finalize":  # namespaces/<ns>/finalize: nothing to finalize here
            subresource = None

        body_bytes = request.body
        if "protobuf" in raw.headers.get("Content-Type", "") and body_bytes:
            # kubectl's typed generators (create namespace/configmap/secret) send protobuf only.
            body_bytes = json.dumps(protobuf_to_json(body_bytes, rt)).encode()
        dry_run = params.get("dryRun") == "All"
        table = _wants_table(raw)
        if method == "GET" and (params.get("watch") in ("true", "1") or params.get("watch") == ""):
            field_selector = params.get("fieldSelector", "")
            if name:
                field_selector = ",".join(filter(None, [field_selector, f"metadata.name={name}"]))
            return await self._watch(
                raw, rt, version, namespace, params.get("labelSelector", ""), field_selector, table
            )
        if method == "GET" and name is None:
            return self._respond_list(rt, version, namespace, params, table)
        if method == "GET":
            if subresource not in (None, "status"):
                raise ApiError.no_such_resource()
            obj = self._current(rt, namespace, name)
            return self._respond(rt, version, obj, table=table)
        if method == "POST" and name is None:
            obj = self.create(rt, namespace, _decode(body_bytes), dry_run=dry_run)
            return self._respond(rt, version, obj, status=201)
        if method == "PUT" and name:
            obj = self.replace(
                rt, namespace, name, _decode(body_bytes), subresource=subresource, dry_run=dry_run
            )
            return self._respond(rt, version, obj)
        if method == "PATCH" and name:
            content_type = raw.headers.get("Content-Type", "application/merge-patch+json")
            body = _decode(body_bytes)
            if content_type.startswith("application/apply-patch") and (
                (namespace if rt.namespaced else None, name) not in self._store[rt.key]
            ):
                obj = self.create(rt, namespace, body, dry_run=dry_run)
                return self._respond(rt, version, obj, status=201)
            obj = self.patch(
                rt, namespace, name, content_type, body, subresource=subresource, dry_run=dry_run
            )
            return self._respond(rt, version, obj)
        if method == "DELETE":
            options = _decode(body_bytes) if body_bytes else {}
            options = options if isinstance(options, dict) else {}
            propagation = (
                params.get("propagationPolicy")
                or options.get("propagationPolicy")
                or ("Orphan" if options.get("orphanDependents") else "Background")
            )
            dry_run = dry_run or "All" in (options.get("dryRun") or [])
            if name:
                obj = self.delete(
                    rt,
                    namespace,
                    name,
                    propagation=propagation,
                    preconditions=options.get("preconditions"),
                    dry_run=dry_run,
                )
                return self._respond(rt, version, obj)
            victims = self._select(
                rt, namespace, params.get("labelSelector", ""), params.get("fieldSelector", "")
            )
            for victim in victims:
                if not dry_run:
                    self.delete(
                        rt,
                        victim["metadata"].get("namespace"),
                        victim["metadata"]["name"],
                        propagation=propagation,
                    )
            return aiohttp.web.json_response(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
            )
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {path}")

    # ---------------------------------------------------------------- responses

    def _respond(
        self,
        rt: ResourceType,
        version: str,
        obj: dict[str, Any],
        *,
        status: int = 200,
        table: bool = False,
    ) -> aiohttp.web.Response:
        body = {**obj, "apiVersion": rt.api_version(version)}
        if table:
            body = self._table(rt, [body])
        return aiohttp.web.json_response(body, status=status, dumps=json.dumps)

    def _respond_list(
        self, rt: ResourceType, version: str, namespace: str | None, params: Any, table: bool
    ) -> aiohttp.web.Response:
        items = self._select(
            rt, namespace, params.get("labelSelector", ""), params.get("fieldSelector", "")
        )
        items = [{**obj, "apiVersion": rt.api_version(version)} for obj in items]
        if table:
            return aiohttp.web.json_response(self._table(rt, items))
        return aiohttp.web.json_response(
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version(version),
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }
        )

    async def _watch(
        self,
        raw: aiohttp.web.BaseRequest,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        label_selector: str,
        field_selector: str,
        table: bool,
    ) -> aiohttp.web.StreamResponse:
        params = raw.query
        since = params.get("resourceVersion", "")
        initial = params.get("sendInitialEvents") == "true"
        bookmarks = params.get("allowWatchBookmarks") == "true"
        try:
            timeout = float(params.get("timeoutSeconds") or 1800)
        except ValueError:
            raise ApiError.bad_request("timeoutSeconds must be a number") from None

        # Subscribe before taking the backlog so that no event falls in between (both are sync).
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._watchers[rt.key].add(queue)
        backlog: list[tuple[str, dict[str, Any]]] = []
        expired = False
        if since in ("", "0") or initial:
            backlog = [
                ("ADDED", obj)
                for obj in self._select(rt, namespace, label_selector, field_selector)
            ]
        else:
            try:
                since_rv = int(since)
            except ValueError:
                self._watchers[rt.key].discard(queue)
                raise ApiError.bad_request(f"invalid resourceVersion {since!r}") from None
            log = self._logs[rt.key]
            # Resuming needs every event after `since`; if the log was trimmed, say 410 Gone.
            expired = (len(log) == log.maxlen and log[0][0] > since_rv + 1) or (
                since_rv < self._restored_rv  # from before a restart: the log is gone
            )
            backlog = [(t, o) for rv, t, o in log if rv > since_rv]

        response = aiohttp.web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        )
        try:
            await response.prepare(raw)
            if expired:
                await self._write_event(
                    response,
                    "ERROR",
                    {**ApiError(410, "Expired", f"too old resource version: {since}").status()},
                )
                return response
            for event_type, obj in backlog:
                await self._write_watch_event(
                    response,
                    rt,
                    version,
                    event_type,
                    obj,
                    namespace,
                    label_selector,
                    field_selector,
                    table,
                )
            if initial:
                await self._write_event(
                    response,
                    "BOOKMARK",
                    self._bookmark(rt, version, {"k8s.io/initial-events-end": "true"}),
                )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while (left := deadline - loop.time()) > 0:
                wait = min(left, self.bookmark_interval) if bookmarks else left
                try:
                    item = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    if bookmarks and deadline - loop.time() > 0:
                        await self._write_event(response, "BOOKMARK", self._bookmark(rt, version))
                    continue
                if item is None:  # the server is shutting down
                    break
                await self._write_watch_event(
                    response, rt, version, *item, namespace, label_selector, field_selector, table
                )
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass  # the client went away; nothing to tell it
        finally:
            self._watchers[rt.key].discard(queue)
        with contextlib.suppress(ConnectionResetError, aiohttp.ClientConnectionResetError):
            await response.write_eof()
        return response

    async def _write_watch_event(
        self,
        response: aiohttp.web.StreamResponse,
        rt: ResourceType,
        version: str,
        event_type: str,
        obj: dict[str, Any],
        namespace: str | None,
        label_selector: str,
        field_selector: str,
        table: bool,
    ) -> None:
        if namespace is not None and obj["metadata"].get("namespace") != namespace:
            return
        if not self._matches(obj, label_selector, field_selector):
            return
        body: dict[str, Any] = {**obj, "apiVersion": rt.api_version(version)}
        if table:
            body = self._table(rt, [body])
        await self._write_event(response, event_type, body)

    @staticmethod
    async def _write_event(
        response: aiohttp.web.StreamResponse, event_type: str, obj: dict[str, Any]
    ) -> None:
        await response.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")

    def _bookmark(
        self, rt: ResourceType, version: str, annotations: dict[str, str] | None = None
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
        if annotations:
            meta["annotations"] = annotations
        return {"kind": rt.kind, "apiVersion": rt.api_version(version), "metadata": meta}

    def close_watches(self) -> None:
        """End every open watch stream (on shutdown), so that servers stop promptly."""
        for queues in self._watchers.values():
            for queue in queues:
                queue.put_nowait(None)

    # ---------------------------------------------------------------- tables for kubectl get

    def _table(self, rt: ResourceType, items: list[dict[str, Any]]) -> dict[str, Any]:
        columns: list[tuple[str, str, Callable[[dict[str, Any]], Any], int]] = [
            ("Name", "string", lambda o: o["metadata"]["name"], 0)
        ]
        if rt.printer_columns:
            for col_name, col_type, path, priority in rt.printer_columns:
                columns.append((col_name, col_type, _column_getter(col_type, path), priority))
        else:
            columns.extend(_builtin_columns(rt))
            columns.append(
                ("Age", "string", lambda o: _age(o["metadata"].get("creationTimestamp")), 0)
            )
        rows = []
        for obj in items:
            cells = []
            for _, _, getter, _ in columns:
                value = getter(obj)
                cells.append("<none>" if value is None else value)
            rows.append(
                {
                    "cells": cells,
                    "object": {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": obj["metadata"],
                    },
                }
            )
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(self._rv)},
            "columnDefinitions": [
                {
                    "name": n,
                    "type": t,
                    "format": "name" if n == "Name" else "",
                    "description": n,
                    "priority": p,
                }
                for n, t, _, p in columns
            ],
            "rows": rows,
        }

    # ---------------------------------------------------------------- discovery

    def _static_document(self, path: str) -> aiohttp.web.Response | None:
        if path in ("/healthz", "/readyz", "/livez"):
            return aiohttp.web.Response(text="ok")
        if path == "/openapi/v2":
            # kubectl validates manifests against this protobuf document. An empty protobuf
            # message is a valid, empty OpenAPI document: every kind is then "unknown" and
            # kubectl skips schema checks instead of failing to download (no --validate=false).
            return aiohttp.web.Response(
                body=b"", content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
            )
        if path == "/version":
            return aiohttp.web.json_response(
                {
                    "major": "1",
                    "minor": "32",
                    "gitVersion": "v1.32.0-inframind-localstack",
                    "gitCommit": "0" * 40,
                    "gitTreeState": "clean",
                    "buildDate": "2025-01-01T00:00:00Z",
                    "goVersion": "go1.23",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }
            )
        if path == "/api":
            return aiohttp.web.json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
                    ],
                }
            )
        if path == "/apis":
            groups = sorted({rt.group for rt in self._types.values() if rt.group})
            return aiohttp.web.json_response(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [self._api_group(g) for g in groups],
                }
            )
        if path == "/":
            paths = {"/api", "/api/v1", "/apis", "/version", "/healthz"}
            for rt in self._types.values():
                if rt.group:
                    paths |= {f"/apis/{rt.group}"} | {f"/apis/{rt.group}/{v}" for v in rt.versions}
            return aiohttp.web.json_response({"paths": sorted(paths)})
        return None

    def _api_group(self, group: str) -> dict[str, Any]:
        rts = [rt for rt in self._types.values() if rt.group == group]
        if not rts:
            raise ApiError.no_such_resource()
        versions = sorted({v for rt in rts for v in rt.versions}, key=_version_priority)
        preferred = next((rt.version for rt in rts), versions[0])

        def gv(v: str) -> dict[str, str]:
            return {"groupVersion": f"{group}/{v}", "version": v}

        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": [gv(v) for v in versions],
            "preferredVersion": gv(preferred),
        }

    def _api_resource_list(self, group: str, version: str) -> dict[str, Any]:
        rts = [rt for rt in self._types.values() if rt.group == group and version in rt.versions]
        if not rts:
            raise ApiError.no_such_resource()
        resources: list[dict[str, Any]] = []
        for rt in sorted(rts, key=lambda r: r.plural):
            resources.append(
                {
                    "name": rt.plural,
                    "singularName": rt.singular,
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": list(ALL_VERBS),
                    "shortNames": list(rt.short_names),
                    "categories": list(rt.categories),
                }
            )
            for sub in rt.subresources:
                if sub == "status":
                    resources.append(
                        {
                            "name": f"{rt.plural}/status",
                            "singularName": "",
                            "namespaced": rt.namespaced,
                            "kind": rt.kind,
                            "verbs": ["get", "patch", "update"],
                        }
                    )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }


def _version_priority(version: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0)
    stability = {"alpha": 2, "beta": 1, None: 0}[m[2]]
    return (stability, -int(m[1]), -int(m[3] or 0))


def _spec_part(obj: dict[str, Any], rt: ResourceType) -> dict[str, Any]:
    # Generation tracks the desired state: everything except metadata (and status, when a
    # status subresource owns it).
    skip = {"metadata", "status"} if "status" in rt.subresources else {"metadata"}
    return {k: v for k, v in obj.items() if k not in skip}


def _crd_status(crd: dict[str, Any]) -> dict[str, Any]:
    spec = crd.get("spec") or {}
    now = now_rfc3339()
    return {
        "acceptedNames": spec.get("names") or {},
        "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": now,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": now,
            },
        ],
    }


def _column_getter(col_type: str, path: str) -> Callable[[dict[str, Any]], Any]:
    def get(obj: dict[str, Any]) -> Any:
        value = json_path(obj, path)
        if col_type == "date" and isinstance(value, str):
            return _age(value)
        return value

    return get


def _builtin_columns(rt: ResourceType) -> list[tuple[str, str, Callable[..., Any], int]]:
    def st(o: dict[str, Any], f: str) -> Any:
        return (o.get("status") or {}).get(f) or 0

    if rt.key == DEPLOYMENT_KEY:
        return [
            (
                "Ready",
                "string",
                lambda o: f"{st(o, 'readyReplicas')}/{(o.get('spec') or {}).get('replicas', 1)}",
                0,
            ),
            ("Up-to-date", "integer", lambda o: st(o, "updatedReplicas"), 0),
            ("Available", "integer", lambda o: st(o, "availableReplicas"), 0),
        ]
    if rt.key in (("", "configmaps"), ("", "secrets")):
        return [
            (
                "Data",
                "integer",
                lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}),
                0,
            )
        ]
    if rt.key == ("", "services"):
        return [
            ("Type", "string", lambda o: (o.get("spec") or {}).get("type", "ClusterIP"), 0),
            ("Cluster-IP", "string", lambda o: (o.get("spec") or {}).get("clusterIP"), 0),
            (
                "Port(s)",
                "string",
                lambda o: (
                    ",".join(
                        f"{p.get('port')}/{p.get('protocol', 'TCP')}"
                        for p in (o.get("spec") or {}).get("ports") or []
                    )
                    or None
                ),
                0,
            ),
        ]
    if rt.key == NAMESPACE_KEY:
        return [("Status", "string", lambda o: (o.get("status") or {}).get("phase"), 0)]
    if rt.plural == "events":
        return [
            ("Type", "string", lambda o: o.get("type"), 0),
            ("Reason", "string", lambda o: o.get("reason"), 0),
            (
                "Object",
                "string",
                lambda o: "/".join(
                    filter(
                        None,
                        [
                            (
                                (o.get("involvedObject") or o.get("regarding") or {}).get("kind")
                                or ""
                            ).lower(),
                            (o.get("involvedObject") or o.get("regarding") or {}).get("name"),
                        ],
                    )
                ),
                0,
            ),
            ("Message", "string", lambda o: o.get("message") or o.get("note"), 0),
        ]
    if rt.key == ("", "pods"):
        return [("Status", "string", lambda o: (o.get("status") or {}).get("phase"), 0)]
    return []


def _wants_table(raw: aiohttp.web.BaseRequest) -> bool:
    return "as=Table" in raw.headers.get("Accept", "")


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body or b"{}")
    except ValueError:
        try:
            return yaml.safe_load(body)  # server-side apply sends YAML
        except yaml.YAMLError as e:
            raise ApiError.bad_request(f"the request body is neither JSON nor YAML: {e}") from e


def _status_response(error: ApiError) -> aiohttp.web.Response:
    return aiohttp.web.json_response(error.status(), status=error.code)


def _iter_yaml_docs(paths: Iterable[str | os.PathLike[str]]) -> Iterator[dict[str, Any]]:
    for path in map(pathlib.Path, paths):
        files = (
            sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
            if path.is_dir()
            else [path]
        )
        for file in files:
            for doc in yaml.safe_load_all(file.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "List":
                    yield from (i for i in doc.get("items") or [] if isinstance(i, dict))
                elif isinstance(doc, dict):
                    yield doc


# --------------------------------------------------------------------------------------------
# Serving: async context manager, background-thread handle, command line
# --------------------------------------------------------------------------------------------


def write_kubeconfig(path: str | os.PathLike[str], url: str, namespace: str = "default") -> str:
    """Write a kubeconfig for an insecure, auth-less local server; return its path."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": "inframind-local", "cluster": {"server": url}}],
        "users": [{"name": "inframind-local", "user": {}}],
        "contexts": [
            {
                "name": "inframind-local",
                "context": {
                    "cluster": "inframind-local",
                    "user": "inframind-local",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "inframind-local",
    }
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(target)


@dataclasses.dataclass
class ServingInfo:
    """Where a running emulator listens."""

    emulator: InfraMindEmulator
    port: int
    url: str
    kubeconfig_path: str | None


@contextlib.asynccontextmanager
async def serve_emulator(
    port: int = 0,
    crds: Iterable[str | os.PathLike[str]] = (),
    kubeconfig_path: str | os.PathLike[str] | None = None,
    *,
    ready_deployments: bool = False,
    emulator: InfraMindEmulator | None = None,
    state_path: str | os.PathLike[str] | None = None,
) -> AsyncIterator[ServingInfo]:
    """Serve an emulator on 127.0.0.1:port (0 picks a free port) in the running event loop.

    With `state_path`, objects survive a restart: read from it at start when it exists,
    written to it at a clean stop."""
    emu = emulator or InfraMindEmulator(ready_deployments=ready_deployments)
    if state_path is not None and pathlib.Path(state_path).exists():
        emu.load_state(state_path)
    emu.load_crds(crds)
    async with emu:
        # No access log: kopf and kubectl poll, and per-request lines drown test output.
        server = aiohttp.web.Server(emu, handler_cancellation=True, access_log=None)
        runner = aiohttp.web.ServerRunner(server, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = aiohttp.web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
            actual_port = runner.addresses[0][1]
            url = f"http://127.0.0.1:{actual_port}"
            kubeconfig = (
                write_kubeconfig(kubeconfig_path, url) if kubeconfig_path is not None else None
            )
            yield ServingInfo(emu, actual_port, url, kubeconfig)
        finally:
            emu.close_watches()
            await runner.cleanup()
            if state_path is not None:
                emu.save_state(state_path)


class EmulatorHandle:
    """An emulator served from a background thread, for synchronous tests and scripts."""

    def __init__(
        self,
        port: int = 0,
        crds: Iterable[str | os.PathLike[str]] = (),
        kubeconfig_path: str | os.PathLike[str] | None = None,
        *,
        ready_deployments: bool = False,
        start_timeout: float = 10.0,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self._args = (port, list(crds), kubeconfig_path, ready_deployments, state_path)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._info: ServingInfo | None = None
        self._thread = threading.Thread(target=self._run, name="inframind-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(start_timeout):
            raise TimeoutError(f"the emulator did not start within {start_timeout} s")
        if self._error is not None:
            raise RuntimeError(f"the emulator failed to start: {self._error!r}") from self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        port, crds, kubeconfig_path, ready_deployments, state_path = self._args
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve_emulator(
            port,
            crds,
            kubeconfig_path,
            ready_deployments=ready_deployments,
            state_path=state_path,
        ) as info:
            self._info = info
            self._ready.set()
            await self._stop.wait()

    @property
    def info(self) -> ServingInfo:
        assert self._info is not None, "the emulator is not running"
        return self._info

    @property
    def url(self) -> str:
        return self.info.url

    @property
    def port(self) -> int:
        return self.info.port

    @property
    def kubeconfig_path(self) -> str | None:
        return self.info.kubeconfig_path

    @property
    def emulator(self) -> InfraMindEmulator:
        return self.info.emulator

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 10.0, **kwargs: Any) -> Any:
        """Run fn(*args, **kwargs) on the emulator's event loop, where its state lives."""
        assert self._loop is not None

        async def run() -> Any:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def mark_deployment_ready(
        self, namespace: str, name: str, replicas: int | None = None
    ) -> dict[str, Any]:
        return self.call(self.emulator.mark_deployment_ready, namespace, name, replicas)

    def load_crds(self, paths: Iterable[str | os.PathLike[str]]) -> list[ResourceType]:
        return self.call(self.emulator.load_crds, list(paths))

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any]:
        return self.call(self.emulator.get, resource, namespace, name)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the emulator thread did not stop within {timeout} s")

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_emulator(
    port: int = 0,
    crds: Iterable[str | os.PathLike[str]] = (),
    kubeconfig_path: str | os.PathLike[str] | None = None,
    *,
    ready_deployments: bool = False,
    start_timeout: float = 10.0,
    state_path: str | os.PathLike[str] | None = None,
) -> EmulatorHandle:
    """Start an emulator in a background thread; use as `with run_emulator(...) as emu:`."""
    return EmulatorHandle(
        port,
        crds,
        kubeconfig_path,
        ready_deployments=ready_deployments,
        start_timeout=start_timeout,
        state_path=state_path,
    )


async def _serve_forever(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    crds = [args.crds] if args.crds else []
    async with serve_emulator(
        args.port,
        crds,
        args.kubeconfig,
        ready_deployments=args.ready_deployments,
        state_path=args.state,
    ) as info:
        served = sorted(rt.qualified for rt in info.emulator._types.values() if rt.custom)
        print(
            f"inframind-emulator ready url={info.url} kubeconfig={info.kubeconfig_path} "
            f"crds={','.join(served) or '-'} pid={os.getpid()}",
            flush=True,
        )
        await stop.wait()
    print("inframind-emulator stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inframind.localstack.emulator",
        description="Serve an in-memory Kubernetes API on 127.0.0.1 (no auth, no TLS).",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--crds", help="a directory or file of CustomResourceDefinition YAML")
    parser.add_argument("--kubeconfig", help="write a kubeconfig pointing at the server here")
    parser.add_argument(
        "--ready-deployments",
        action="store_true",
        help="mark Deployments ready as soon as they change (a fake kubelet)",
    )
    parser.add_argument(
        "--state",
        help="keep objects across restarts in this JSON file (read at start, written at stop)",
    )
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    if args.crds and not pathlib.Path(args.crds).exists():
        parser.error(f"--crds {args.crds}: no such file or directory")
    asyncio.run(_serve_forever(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

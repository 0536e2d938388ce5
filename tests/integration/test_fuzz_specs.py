"""Property-based fuzzing of ModelPool and AgentPipeline specs through the real operator.

The API emulator does not enforce the CRD schema, so every generated spec reaches the
operator: each must end with a Ready condition that carries a reason and a message (a
valid spec converges, a bad one is Invalid and says why), and the operator must survive.
Specs mix the real field names with junk values and keys; the search is derandomised so
CI runs the same cases every time.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client

from support.controlplane import ControlPlane

pytestmark = [pytest.mark.integration, pytest.mark.faults]

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 100_000),
    st.floats(-1, 1e6, allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["single", "debate", "flash", "edf", "http://127.0.0.1:9", "m", ""]),
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _spec(fields: list[str]) -> st.SearchStrategy[dict]:
    return st.dictionaries(st.sampled_from([*fields, "junk"]), _json, max_size=len(fields))


POOL_FIELDS = ["model", "servedModelName", "endpoints", "managed", "profile",
               "prioritySchedulingEnabled"]  # fmt: skip
PIPELINE_FIELDS = ["pools", "poolSelector", "topologies", "roles", "maxAgents", "depths",
                   "budget", "scheduler", "policy", "gateway", "retraining"]  # fmt: skip
_names = itertools.count()


def _ready_condition(cp: ControlPlane, plural: str, ns: str, name: str) -> dict | None:
    obj = cp.custom(plural, ns, name) or {}
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == "Ready" and c.get("reason") and c.get("message") is not None:
            return c
    return None


@pytest.mark.parametrize(
    ("kind", "plural", "fields"),
    [
        ("ModelPool", "modelpools", POOL_FIELDS),
        ("AgentPipeline", "agentpipelines", PIPELINE_FIELDS),
    ],
)
def test_every_generated_spec_gets_a_ready_condition_and_the_operator_survives(
    control_plane: ControlPlane, namespace: str, kind: str, plural: str, fields: list[str]
) -> None:
    cp, ns = control_plane, namespace
    api = client.CustomObjectsApi(cp.api)

    @settings(
        max_examples=50,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(spec=_spec(fields))
    def check(spec: dict) -> None:
        name = f"fuzz-{next(_names)}"
        body = {"apiVersion": "inframind.io/v1alpha1", "kind": kind,
                "metadata": {"name": name}, "spec": spec}  # fmt: skip
        api.create_namespaced_custom_object("inframind.io", "v1alpha1", ns, plural, body)
        cond = cp.wait(lambda: _ready_condition(cp, plural, ns, name), f"condition on {spec}")
        if cond["status"] == "False" and cond["reason"] == "InvalidSpec":
            assert cond["message"], spec  # says which field is wrong
        api.delete_namespaced_custom_object("inframind.io", "v1alpha1", ns, plural, name)

    check()
    assert cp.operator.poll() is None, "the operator exited"

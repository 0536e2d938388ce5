"""Shared building blocks of the custom resources: camelCase models, conditions, CRD metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "inframind.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes object names (RFC 1123 subdomain, as used for most resources).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A ConfigMap data key, which is also a file name where the ConfigMap is mounted.
CONFIGMAP_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
# The key of a gateway's ConfigMap that holds its resolved pipeline configuration; the
# gateway reads it as a file, with any policy artifact mounted beside it.
GATEWAY_CONFIG_KEY = "pipeline.json"
# On a published policy ConfigMap (inframind_training.publish writes it, the operator
# reports it in the AgentPipeline's status).
POLICY_VERSION_ANNOTATION = "inframind.io/policy-version"


class CamelModel(BaseModel):
    """Python names in snake_case, Kubernetes names in camelCase; unknown fields are errors.

    Unknown fields are refused rather than dropped so that a typo in a CR
    (`replicaz: 3`) surfaces as a condition instead of silently doing nothing.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        frozen=False,
    )

    def to_k8s(self) -> dict:
        """The object as Kubernetes stores it: camelCase keys, JSON types, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SecretKeyRef(CamelModel):
    """A key of a Secret in the resource's own namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN)
    key: str = Field(min_length=1, max_length=253)


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(CamelModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str
    status: ConditionStatus
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"] = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class CrdInfo:
    """What a CRD says beyond the schema: names, scope, columns."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    categories: tuple[str, ...] = ("inframind",)
    columns: tuple[PrinterColumn, ...] = field(default_factory=tuple)
    description: str = ""

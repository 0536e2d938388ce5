"""Typed API of the custom resources; the CRDs are generated from these models."""

from .common import API_VERSION, GROUP, VERSION, Condition, CrdInfo
from .modelpool import MODELPOOL_CRD, ModelPool, ModelPoolSpec, ModelPoolStatus, PoolLoadStatus
from .pipeline import AGENTPIPELINE_CRD, AgentPipeline, AgentPipelineSpec, PipelineStatus

__all__ = [
    "AGENTPIPELINE_CRD",
    "API_VERSION",
    "GROUP",
    "MODELPOOL_CRD",
    "VERSION",
    "AgentPipeline",
    "AgentPipelineSpec",
    "Condition",
    "CrdInfo",
    "ModelPool",
    "ModelPoolSpec",
    "ModelPoolStatus",
    "PipelineStatus",
    "PoolLoadStatus",
]

"""The shared vocabulary: topologies, roles, reasoning depths and task families.

The CRDs, the policies, the simulator and the gateway all speak these names, so
they live in one leaf module that imports nothing else from the package.
"""

from __future__ import annotations

from enum import StrEnum


class Topology(StrEnum):
    """How agents are wired for one query."""

    SINGLE = "single"  # one agent answers
    CHAIN = "chain"  # draft -> refine, sequential
    DEBATE = "debate"  # n agents x rounds, majority at the end
    ENSEMBLE = "ensemble"  # k parallel proposers + one aggregator (MoA-like)
    VERIFY = "verify"  # solver -> verifier -> (revise)


class Role(StrEnum):
    SOLVER = "solver"
    DRAFTER = "drafter"
    REFINER = "refiner"
    DEBATER = "debater"
    PROPOSER = "proposer"
    AGGREGATOR = "aggregator"
    VERIFIER = "verifier"


class Depth(StrEnum):
    """Reasoning depth of one agent step (names from the INFRAMIND paper)."""

    FLASH = "flash"  # answer directly
    CONCISE = "concise"  # short reasoning
    DEEPTHINK = "deepthink"  # long step-by-step reasoning


class TaskFamily(StrEnum):
    MATH = "math"
    CODE = "code"
    KNOWLEDGE = "knowledge"


class SchedulerKind(StrEnum):
    EDF = "edf"  # earliest deadline first: vLLM priority = deadline
    FCFS = "fcfs"  # first come first served: no priority sent

"""The plans a planner may pick: each topology's waves of roles, and the fixed catalogue.

A wave is a set of agent steps that run in parallel; waves run in sequence and
each sees the answers of the previous one (ACCURACY.md, Table 4: workflow
latency is the sum over waves of the slowest step). The catalogue is small and
fixed so that a learned planner has a discrete action space that does not
change between training and serving.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..vocab import Role, Topology
from .types import Plan


def build_plan(topology: Topology, agents: int = 1, rounds: int = 1) -> Plan:
    """The waves of one topology. `agents` is the width, `rounds` the debate rounds."""
    if agents < 1 or rounds < 1:
        raise ValueError("a plan needs at least one agent and one round")
    match topology:
        case Topology.SINGLE:
            waves: tuple[tuple[Role, ...], ...] = ((Role.SOLVER,),)
        case Topology.CHAIN:
            # A drafter then agents-1 refiners, at least one.
            waves = ((Role.DRAFTER,),) + ((Role.REFINER,),) * max(1, agents - 1)
        case Topology.DEBATE:
            # Du et al.: every agent answers, then `rounds` rounds of reading the others.
            width = max(2, agents)
            waves = ((Role.DEBATER,) * width,) * (rounds + 1)
        case Topology.ENSEMBLE:
            # MoA-like: parallel proposers, one aggregator.
            width = max(2, agents - 1)
            waves = ((Role.PROPOSER,) * width, (Role.AGGREGATOR,))
        case Topology.VERIFY:
            waves = ((Role.SOLVER,), (Role.VERIFIER,))
        case _:  # pragma: no cover - the enum is closed
            raise ValueError(f"unknown topology {topology!r}")
    return Plan(topology=topology, waves=waves)


# Index = the learned planner's action. Append only: reordering breaks exported policies.
CATALOGUE: tuple[Plan, ...] = (
    build_plan(Topology.SINGLE),
    build_plan(Topology.CHAIN, agents=2),
    build_plan(Topology.VERIFY),
    build_plan(Topology.ENSEMBLE, agents=4),
    build_plan(Topology.ENSEMBLE, agents=6),
    build_plan(Topology.DEBATE, agents=3, rounds=1),
    build_plan(Topology.DEBATE, agents=3, rounds=2),
)


def permitted_plans(
    topologies: Iterable[Topology], max_agents: int, roles: Iterable[Role] | None = None
) -> list[int]:
    """Catalogue indices within a pipeline's limits: its topologies, its width and, if it
    restricts them, the roles its agents take. May be empty (the spec checks it is not)."""
    allowed = set(topologies)
    permitted = None if roles is None else set(roles)
    return [
        i
        for i, p in enumerate(CATALOGUE)
        if p.topology in allowed
        and (p.topology is Topology.SINGLE or p.agents <= max_agents)
        and (permitted is None or all(r in permitted for wave in p.waves for r in wave))
    ]


def allowed_plans(
    topologies: Iterable[Topology], max_agents: int, roles: Iterable[Role] | None = None
) -> list[int]:
    """The permitted plans, always non-empty: the AgentPipeline spec refuses limits that
    admit no plan, so the single-agent fallback is a last guard."""
    return permitted_plans(topologies, max_agents, roles) or [0]

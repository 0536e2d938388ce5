"""The policy interface: a planner `decide` and an executor `choose`, within a pipeline's limits."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from ..vocab import Depth, Role, SchedulerKind, Topology
from .plans import CATALOGUE, allowed_plans
from .types import DEPTHS, TOPOLOGIES, Choice, ClusterSnapshot, Plan, Query, StepContext


@dataclass(frozen=True, slots=True)
class Limits:
    """What a pipeline allows a policy to pick (from AgentPipeline spec)."""

    topologies: tuple[Topology, ...] = TOPOLOGIES
    depths: tuple[Depth, ...] = DEPTHS
    max_agents: int = 6
    scheduler: SchedulerKind = SchedulerKind.EDF
    roles: tuple[Role, ...] | None = None  # None: any role

    @property
    def plan_ids(self) -> list[int]:
        return allowed_plans(self.topologies, self.max_agents, self.roles)


class Policy(ABC):
    """Planner + executor. Implementations must be pure functions of their inputs
    (apart from documented state such as a round-robin cursor) and fast: they
    run on the gateway's hot path for every query and every step."""

    name: str = "policy"

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._plans: list[Plan] = [CATALOGUE[i] for i in self.limits.plan_ids]
        self._depths: Sequence[Depth] = self.limits.depths

    @property
    def scheduler(self) -> SchedulerKind:
        return self.limits.scheduler

    @abstractmethod
    def decide(self, snapshot: ClusterSnapshot, query: Query) -> Plan: ...

    @abstractmethod
    def choose(self, snapshot: ClusterSnapshot, step: StepContext) -> Choice: ...

    def observe(self, met_budget: bool) -> None:
        """Feedback once a query has finished, whether within its budget. The gateway and
        the simulator call it; most policies ignore it (budget-greedy may tune itself)."""
        return None  # a hook with a do-nothing default, not an abstract method

    # Helpers for subclasses -------------------------------------------------

    def _plan(self, topology: Topology, prefer_agents: int) -> Plan:
        """The allowed catalogue plan of this topology closest to the wanted width."""
        same = [p for p in self._plans if p.topology is topology]
        if not same:
            return self._plans[0]
        return min(same, key=lambda p: (abs(p.agents - prefer_agents), -p.calls))

    def _depth(self, wanted: Depth) -> Depth:
        if wanted in self._depths:
            return wanted
        return self._depths[len(self._depths) // 2]

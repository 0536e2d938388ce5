"""The data a policy sees and returns, shared by the simulator and the gateway.

A policy is a pure function of a `ClusterSnapshot` (static pool profiles plus
their live load) and a `Query` or `StepContext`. Nothing here knows whether the
load came from a simulated engine or a real vLLM /metrics scrape, which is the
point: every policy runs unchanged in both places.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..vocab import Depth, Role, SchedulerKind, TaskFamily, Topology

TASKS: tuple[TaskFamily, ...] = tuple(TaskFamily)
DEPTHS: tuple[Depth, ...] = tuple(Depth)
ROLES: tuple[Role, ...] = tuple(Role)
TOPOLOGIES: tuple[Topology, ...] = tuple(Topology)
TASK_INDEX = {t: i for i, t in enumerate(TASKS)}
DEPTH_INDEX = {d: i for i, d in enumerate(DEPTHS)}
ROLE_INDEX = {r: i for i, r in enumerate(ROLES)}


@dataclass(frozen=True, slots=True, eq=False)
class PoolProfile:
    """What is known about a pool before any load: its model's priors and speed.

    `accuracy` and `output_tokens` are [task, depth] arrays indexed by TASKS
    and DEPTHS. Speeds describe one engine replica at small batch; `tpot_slope_s`
    is how much each extra running sequence slows every decode step.
    """

    name: str
    model: str
    accuracy: np.ndarray
    output_tokens: np.ndarray
    ttft_s: float = 0.05
    tpot_s: float = 0.02
    tpot_slope_s: float = 0.0005
    max_running: int = 32
    replicas: int = 1
    # Relative price of one output token (largest model = 1); load-blind routers use it.
    cost: float = 0.5
    # Share of calls in which the model obeys a Flash prompt (R1-style models do not).
    flash_compliance: float = 1.0

    def prior(self, task: TaskFamily, depth: Depth) -> float:
        return float(self.accuracy[TASK_INDEX[task], DEPTH_INDEX[depth]])

    def tokens(self, task: TaskFamily, depth: Depth) -> float:
        return float(self.output_tokens[TASK_INDEX[task], DEPTH_INDEX[depth]])


@dataclass(frozen=True, slots=True)
class PoolLoad:
    """Live load of one pool, summed over its endpoints.

    `stale` says the numbers are old or partly missing; consumers must not read
    a stale zero as "idle". `available` is False when no endpoint answers.
    """

    waiting: float = 0.0
    running: float = 0.0
    kv_usage: float = 0.0
    inflight: int = 0
    latency_s: float | None = None
    stale: bool = False
    available: bool = True

    @property
    def occupancy(self) -> float:
        """Sequences on the pool: the scrape's running + waiting, or this gateway's own
        in-flight count when that is larger (it is fresher than any scrape)."""
        return max(self.running + self.waiting, float(self.inflight))


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    now: float
    profiles: tuple[PoolProfile, ...]
    loads: tuple[PoolLoad, ...]

    def __post_init__(self) -> None:
        if len(self.profiles) != len(self.loads):
            raise ValueError("a snapshot needs one load per pool profile")


@dataclass(frozen=True, slots=True)
class Query:
    """What a policy may know about a query: never its hidden difficulty or answer."""

    id: int | str
    task: TaskFamily
    budget_s: float
    arrival_s: float
    prompt_tokens: int = 200

    @property
    def deadline_s(self) -> float:
        return self.arrival_s + self.budget_s


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's decision: a topology with its agent count and roles per wave."""

    topology: Topology
    waves: tuple[tuple[Role, ...], ...]

    @property
    def agents(self) -> int:
        # Debaters are the same agents every round; elsewhere each step is its own agent.
        if self.topology is Topology.DEBATE:
            return len(self.waves[0])
        return self.calls

    @property
    def calls(self) -> int:
        return sum(len(w) for w in self.waves)

    @property
    def label(self) -> str:
        return f"{self.topology.value}/{self.agents}x{len(self.waves)}"


@dataclass(frozen=True, slots=True)
class StepContext:
    """One agent step awaiting the executor's choice."""

    query: Query
    plan: Plan
    wave: int
    slot: int
    role: Role
    now: float
    # Pools already chosen for earlier slots of this query, to spread ensembles.
    used_pools: tuple[int, ...] = field(default=())

    @property
    def remaining_s(self) -> float:
        return self.query.deadline_s - self.now

    @property
    def waves_left(self) -> int:
        return len(self.plan.waves) - self.wave


@dataclass(frozen=True, slots=True)
class Choice:
    pool: int
    depth: Depth


def priority_for(scheduler: SchedulerKind, query: Query) -> int | None:
    """vLLM `priority` for a query's calls: the deadline in ms under EDF, none under FCFS
    (the simulator then orders by arrival; the gateway's runner sends arrival plus the
    pipeline's default budget, so FCFS calls do not jump EDF pipelines' on shared engines).

    The paper sends int(deadline) in seconds; milliseconds keep the order of
    deadlines that fall within the same second. Lower is served first.
    """
    if scheduler is SchedulerKind.EDF:
        return int(query.deadline_s * 1000)
    return None

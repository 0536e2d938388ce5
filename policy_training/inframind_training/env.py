"""The simulator as an RLlib multi-agent environment: one planner and one executor agent per query.

Agent ids carry the role and the query: `planner_<qid>` acts once, when its
query arrives (which catalogue plan), `executor_<qid>` acts once per agent
step of that query (which pool slot x depth). Both terminate when the query
completes and receive the same reward then; `policy_mapping_fn` sends them
to the `planner` and `executor` modules by prefix.

Observations are the gateway's own feature vectors (`encode_query`,
`encode_step`) plus the action mask (`{"obs", "action_mask"}`), so a masking
RLModule never samples an absent pool or a plan the pipeline forbids: a
remapping penalty would waste samples teaching the policy a fact the
runtime masks anyway. An action outside the mask (e.g. from a random
sampler) is mapped to the nearest valid one and counted.

One episode is a window of simulated time at one load, drawn per episode
from the episode's seed, and runs until every query of the window has
completed: deterministic per seed, every agent terminates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from inframind.policy.features import (
    EXECUTOR_ACTIONS,
    EXECUTOR_FEATURES,
    PLANNER_ACTIONS,
    PLANNER_FEATURES,
    action_to_choice,
    encode_query,
    encode_step,
    executor_mask,
)
from inframind.policy.heuristics import make_heuristic
from inframind.policy.plans import CATALOGUE, allowed_plans
from inframind.policy.types import DEPTHS, TOPOLOGIES, Choice
from inframind.sim.run import PlanRequest, QueryDone, SimConfig, StepRequest, serve
from inframind.sim.workload import Benchmark
from inframind.vocab import SchedulerKind

PLANNER = "planner"
EXECUTOR = "executor"


def policy_mapping_fn(agent_id: str, episode: Any = None, **kwargs: Any) -> str:
    """`planner_17` -> `planner`, `executor_17` -> `executor`."""
    return PLANNER if agent_id.startswith(PLANNER) else EXECUTOR


def quality(correct: bool, latency_s: float, budget_s: float, wrong_credit: float = 0.3) -> float:
    """Quality-first shaping (ACCURACY.md Table 4): a correct answer always beats a wrong one.

    Correct: 1 - min(0.5, 0.3 * overrun), in [0.5, 1]. Wrong: -1 + wrong_credit *
    min(1, L / beta), in [-1, -1 + wrong_credit]. The authors used 0.3: it pays a
    wrong answer for the time it spent (capped at the budget), which pushed their
    policy away from "fast and wrong"; 0 removes that push.
    """
    ratio = latency_s / budget_s
    if correct:
        return 1.0 - min(0.5, 0.3 * max(0.0, ratio - 1.0))
    return -1.0 + wrong_credit * min(1.0, ratio)


def budget_cost(latency_s: float, budget_s: float, ramp_from: float = 1.0) -> float:
    """The constraint's cost of one query: 1 if it missed its budget, else 0 below
    `ramp_from` x budget and a linear ramp from there to the budget.

    With `ramp_from` = 1 it is the indicator of the very event the constraint
    bounds. Below 1, near misses cost too: at a 0.1 % target a training
    iteration sees about one miss, so the indicator alone tells the policy
    almost nothing about which decisions run close to the budget."""
    ratio = latency_s / budget_s
    if ratio > 1.0:
        return 1.0
    if ramp_from >= 1.0 or ratio <= ramp_from:
        return 0.0
    return (ratio - ramp_from) / (1.0 - ramp_from)


def shaped_reward(
    correct: bool | float,
    latency_s: float,
    budget_s: float,
    lam: float,
    wrong_credit: float = 0.3,
    ramp_from: float = 1.0,
    cost: float | None = None,
) -> float:
    """The Lagrangian reward: quality minus lambda x `budget_cost`.

    Dual ascent on (violation rate - SLO target) moves lambda, so the cost must
    be 1 for a miss; the ramp (`ramp_from` < 1) only adds signal before it.
    `correct` may be a probability (the simulator's `p_correct`): the reward is
    then quality's expectation over the answer's coin flip, at the latency the
    query really had. `cost`, when given, replaces `budget_cost` of the latency: its
    expectation over replays (`expected_cost`).
    """
    if cost is None:
        cost = budget_cost(latency_s, budget_s, ramp_from)
    p = float(correct)  # True / False are the probabilities 1 / 0: quality itself
    right = quality(True, latency_s, budget_s, wrong_credit)
    wrong = quality(False, latency_s, budget_s, wrong_credit)
    return p * right + (1.0 - p) * wrong - lam * cost


def expected_cost(replays: np.ndarray, budget_s: float, ramp_from: float = 1.0) -> float:
    """`budget_cost` averaged over a query's replayed latencies (SimConfig.latency_samples):
    with `ramp_from` = 1, the share of replays over budget, P(miss | the choices)."""
    return float(np.mean([budget_cost(float(x), budget_s, ramp_from) for x in replays]))


@dataclass(frozen=True)
class EnvSettings:
    """What an episode looks like. Read from the RLlib env_config dict (same keys)."""

    loads_rpm: tuple[float, ...] = (10.0, 30.0, 50.0, 100.0, 150.0)
    window_s: float = 300.0
    # Simulated time before the window in which `warmup_policy` serves the queries
    # (no agents, no rewards): queues reach their level for the load while the
    # episode stays short, and RLlib's per-step bookkeeping grows with the agents
    # of an episode.
    warmup_s: float = 0.0
    warmup_policy: str = "budget-greedy"
    # At most this many queries of the window become agents (0: all); later arrivals
    # are served by `warmup_policy` as background traffic, and the episode ends when
    # the agents' queries have completed. RLlib's per-step bookkeeping is linear in
    # the agents of an episode, so this bounds the cost of a step at any load.
    agent_queries: int = 0
    budget: str = "loguniform:5:120"
    arrival: str = "poisson"
    benchmarks: tuple[str, ...] = tuple(b.value for b in Benchmark)
    placement: str = "b200x2"
    seed: int = 0
    wrong_credit: float = 0.3
    # "sampled": a query's reward scores whether its answer came out right; "expected":
    # the probability that it does, given its difficulty and the steps chosen (the
    # simulator replays the answers `reward_samples` times; exact for one step), less
    # a baseline of the query's difficulty (`InfraMindEnv.reward_of`). The same
    # gradient in expectation, with a small part of the variance.
    reward: str = "sampled"
    reward_samples: int = 32
    lam: float = 0.0
    # Where the cost starts to ramp up towards a missed budget (see `budget_cost`).
    cost_ramp_from: float = 1.0
    # "sampled": the cost of the latency the query had; "expected": its mean over
    # `reward_samples` replays of the calls' output lengths (`replay_latencies`), so a
    # choice that risks a miss pays for the risk on every query, not on the one in a
    # thousand that misses. The dual still follows the misses that happened.
    cost: str = "sampled"
    # The pipeline limits the masks encode (AgentPipeline spec.maxAgents, depths).
    max_agents: int = 6
    depths: tuple[str, ...] = tuple(d.value for d in DEPTHS)
    extra: dict[str, Any] = field(default_factory=dict)

    def max_queries(self) -> int:
        """A bound on the queries of one window: twice the mean of the busiest load, plus slack."""
        return int(2 * max(self.loads_rpm) * (self.warmup_s + self.window_s) / 60.0) + 100

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> EnvSettings:
        config = dict(config or {})
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kwargs = {k: v for k, v in config.items() if k in known}
        for key in ("loads_rpm", "benchmarks", "depths"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        settings = cls(**kwargs, extra={k: v for k, v in config.items() if k not in known})
        if settings.reward not in ("sampled", "expected"):
            raise ValueError(f"reward must be 'sampled' or 'expected', got {settings.reward!r}")
        if settings.cost not in ("sampled", "expected"):
            raise ValueError(f"cost must be 'sampled' or 'expected', got {settings.cost!r}")
        return settings


def planner_space() -> gym.spaces.Dict:
    return gym.spaces.Dict(
        {
            "obs": gym.spaces.Box(-np.inf, np.inf, (len(PLANNER_FEATURES),), np.float32),
            "action_mask": gym.spaces.Box(0.0, 1.0, (PLANNER_ACTIONS,), np.float32),
        }
    )


def executor_space() -> gym.spaces.Dict:
    return gym.spaces.Dict(
        {
            "obs": gym.spaces.Box(-np.inf, np.inf, (len(EXECUTOR_FEATURES),), np.float32),
            "action_mask": gym.spaces.Box(0.0, 1.0, (EXECUTOR_ACTIONS,), np.float32),
        }
    )


def nearest_valid_executor_action(action: int, mask: np.ndarray) -> int:
    """Same depth on the nearest valid pool slot, else any valid action."""
    if mask[action]:
        return action
    pool, depth = action_to_choice(action)
    n = len(DEPTHS)
    valid = np.flatnonzero(mask)
    same_depth = [a for a in valid if a % n == depth]
    pool_of = np.array(same_depth) // n if same_depth else valid // n
    options = np.array(same_depth) if same_depth else valid
    return int(options[np.argmin(np.abs(pool_of - pool))])


def nearest_valid_plan(action: int, mask: np.ndarray) -> int:
    if mask[action]:
        return action
    valid = np.flatnonzero(mask)
    return int(valid[np.argmin(np.abs(valid - action))])


class InfraMindEnv(MultiAgentEnv):
    """The cluster simulator driven one agent decision at a time (see module docstring)."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.settings = EnvSettings.from_config(config)
        self.lam = float(self.settings.lam)
        # RLlib's connectors keep per-agent space tables built from `possible_agents`,
        # so every id an episode can use is listed: query ids run 0..n-1.
        self.max_queries = self.settings.max_queries()
        self.possible_agents = [
            f"{role}_{q}" for q in range(self.max_queries) for role in (PLANNER, EXECUTOR)
        ]
        self.agents: list[str] = []
        self._live: dict[str, None] = {}
        self._deferred: tuple[dict, dict, dict] = ({}, {}, {})
        self._spaces = {PLANNER: planner_space(), EXECUTOR: executor_space()}
        self._actions = {
            PLANNER: gym.spaces.Discrete(PLANNER_ACTIONS),
            EXECUTOR: gym.spaces.Discrete(EXECUTOR_ACTIONS),
        }
        self.observation_spaces = {a: self.get_observation_space(a) for a in self.possible_agents}
        self.action_spaces = {a: self.get_action_space(a) for a in self.possible_agents}
        self._episode = 0
        self._loop: Any = None
        self._request: PlanRequest | StepRequest | None = None
        self._mask: np.ndarray | None = None
        self.sim_config: SimConfig | None = None
        self.stats = EpisodeStats()
        self.plan_mask = np.ones(PLANNER_ACTIONS, dtype=np.float32)
        self.depths = DEPTHS
        self._warm: Any = None
        self._warm_ids: set[int] = set()
        self._agent_count = 0
        self._open_queries = 0

    # -- spaces ------------------------------------------------------------

    def get_observation_space(self, agent_id: str) -> gym.Space:
        return self._spaces[policy_mapping_fn(agent_id)]

    def get_action_space(self, agent_id: str) -> gym.Space:
        return self._actions[policy_mapping_fn(agent_id)]

    # -- control -----------------------------------------------------------

    def set_lambda(self, lam: float) -> None:
        """The Lagrange multiplier, set by the training callback after each iteration."""
        self.lam = float(lam)

    def pop_stats(self) -> EpisodeStats:
        stats, self.stats = self.stats, EpisodeStats()
        return stats

    def episode_config(self, seed: int) -> SimConfig:
        """The window an episode seed stands for: load, budgets and arrivals all follow from it."""
        rng = np.random.default_rng([self.settings.seed, seed, 0x1F])
        s = self.settings
        return SimConfig(
            rate_rpm=float(rng.choice(s.loads_rpm)),
            duration_s=s.warmup_s + s.window_s,
            arrival=s.arrival,
            benchmarks=tuple(Benchmark(b) for b in s.benchmarks),
            budget=s.budget,
            seed=int(rng.integers(0, 2**31 - 1)),
            placement=s.placement,
            expected_samples=s.reward_samples if s.reward == "expected" else 0,
            latency_samples=s.reward_samples if s.cost == "expected" else 0,
        )

    # -- gymnasium API -----------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self._episode = int(seed)
        while True:
            obs = self._start(self._episode)
            self._episode += 1
            if obs:
                return obs, {}
            # A quiet window (no arrival after the warm-up): RLlib needs an agent to
            # act after reset, so the next seed's window is used instead.

    def _start(self, episode_seed: int) -> dict:
        self.sim_config = self.episode_config(episode_seed)
        allowed = allowed_plans(TOPOLOGIES, self.settings.max_agents)
        self.plan_mask = np.array([i in allowed for i in range(PLANNER_ACTIONS)], dtype=np.float32)
        self.depths = tuple(d for d in DEPTHS if d.value in self.settings.depths)
        self._loop = serve(self.sim_config, SchedulerKind.EDF, "rllib")
        uses_heuristic = self.settings.warmup_s > 0 or self.settings.agent_queries > 0
        self._warm = make_heuristic(self.settings.warmup_policy) if uses_heuristic else None
        self._warm_ids: set[int] = set()
        self._agent_count = 0
        self._open_queries = 0
        self._live: dict[str, None] = {}
        self._deferred: tuple[dict, dict, dict] = ({}, {}, {})
        try:
            first = next(self._loop)
        except StopIteration:  # no query at all in this window
            return {}
        obs, _, _, _ = self._pump(first)
        return obs

    def step(self, action_dict: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if self._request is None:
            raise RuntimeError("step() after the episode ended; call reset()")
        agent = self._agent_id(self._request)
        if agent not in action_dict:
            raise KeyError(f"expected an action for {agent}, got {sorted(action_dict)}")
        event = self._loop.send(self.decision(int(action_dict[agent])))
        obs, rewards, terminateds, infos = self._pump(event)
        return obs, rewards, terminateds, {"__all__": False}, infos

    def decision(self, action: int) -> Any:
        """What the current agent's action means to the simulator (masked to the nearest valid)."""
        req, mask = self._request, self._mask
        assert req is not None and mask is not None
        if isinstance(req, PlanRequest):
            valid = nearest_valid_plan(action, mask)
            self.stats.remapped += valid != action
            return CATALOGUE[valid]
        valid = nearest_valid_executor_action(action, mask)
        self.stats.remapped += valid != action
        pool, depth = action_to_choice(valid)
        return Choice(pool, DEPTHS[depth])

    def reward_of(self, rec: Any) -> float:
        """A completed query's reward for both of its agents (see EnvSettings.reward)."""
        credit, ramp = self.settings.wrong_credit, self.settings.cost_ramp_from
        cost = None
        if rec.latency_replays is not None:
            cost = expected_cost(rec.latency_replays, rec.budget_s, ramp)
        if rec.p_correct is None:
            return shaped_reward(
                rec.correct, rec.latency_s, rec.budget_s, self.lam, credit, ramp, cost
            )
        # The expectation over the answer's coin flip, less a baseline that depends only
        # on the query: how likely the most accurate pool is to answer it in one Concise
        # call, scaled by what a right answer is worth over a wrong one at half the budget.
        # The policy never sees the difficulty, so the baseline leaves the gradient
        # unbiased; it takes out the spread between easy and hard queries, which is most
        # of what is left (reward variance 0.78 -> 0.03 for budget-greedy's queries).
        worth = quality(True, 0.5, 1.0, credit) - quality(False, 0.5, 1.0, credit)
        expected = shaped_reward(
            rec.p_correct, rec.latency_s, rec.budget_s, self.lam, credit, ramp, cost
        )
        return expected - worth * rec.p_reference

    # -- internals ---------------------------------------------------------

    def _is_warmup(self, event: Any) -> bool:
        """Requests and completions of queries that arrived before the window."""
        if isinstance(event, QueryDone):
            if event.record.id in self._warm_ids:
                self._warm_ids.discard(event.record.id)
                return True
            return False
        query = event.query if isinstance(event, PlanRequest) else event.step.query
        if isinstance(event, PlanRequest):
            cap = self.settings.agent_queries
            if query.arrival_s < self.settings.warmup_s or (cap and self._agent_count >= cap):
                self._warm_ids.add(int(query.id))
            else:
                self._agent_count += 1
        return int(query.id) in self._warm_ids

    def _warm_decision(self, event: Any) -> Any:
        if isinstance(event, QueryDone):
            return None
        if isinstance(event, PlanRequest):
            return self._warm.decide(event.snapshot, event.query)
        return self._warm.choose(event.snapshot, event.step)

    @staticmethod
    def _agent_id(req: PlanRequest | StepRequest) -> str:
        if isinstance(req, PlanRequest):
            return f"{PLANNER}_{req.query.id}"
        return f"{EXECUTOR}_{req.step.query.id}"

    def observe(self, req: PlanRequest | StepRequest) -> dict[str, np.ndarray]:
        if isinstance(req, PlanRequest):
            mask = self.plan_mask
            vec = encode_query(req.snapshot, req.query)
        else:
            mask = executor_mask(req.snapshot, self.depths).astype(np.float32)
            vec = encode_step(req.snapshot, req.step)
        self._mask = mask > 0
        return {"obs": vec, "action_mask": mask}

    def _pump(self, event: Any) -> tuple[dict, dict, dict, dict]:
        """Collect completions until the next decision request (or the end of the window).

        Completions are reported one env step late. RLlib ends a multi-agent
        episode as soon as every agent it has seen is done, so a step that
        terminated the only open queries and introduced a new query's planner
        would end the episode early; one step later the agent that is acting
        now is always known to RLlib and still open.
        """
        rewards, terminateds, infos = self._deferred
        self._deferred = ({}, {}, {})
        new_rewards, new_terms, new_infos = self._deferred
        while True:
            if self._warm is not None and self._is_warmup(event):
                try:
                    event = self._loop.send(self._warm_decision(event))
                except StopIteration:
                    event = None
                if event is not None:
                    continue
                self._request = None
                self.agents = []
                self._deferred = ({}, {}, {})
                return (
                    {},
                    {**rewards, **new_rewards},
                    {**terminateds, **new_terms, "__all__": True},
                    {**infos, **new_infos},
                )
            if isinstance(event, QueryDone):
                rec = event.record
                r = self.reward_of(rec)
                self.stats.add(rec, r)
                self._open_queries -= 1
                for role in (PLANNER, EXECUTOR):
                    aid = f"{role}_{rec.id}"
                    new_rewards[aid] = r
                    new_terms[aid] = True
                    self._live.pop(aid, None)
                    new_infos[aid] = {
                        "correct": rec.correct,
                        "latency_s": rec.latency_s,
                        "budget_s": rec.budget_s,
                    }
                cap = self.settings.agent_queries
                done = cap and self._agent_count >= cap and self._open_queries == 0
                try:
                    if done:  # the rest is background traffic nobody is rewarded for
                        raise StopIteration
                    event = self._loop.send(None)
                except StopIteration:
                    self._request = None
                    self.agents = []
                    self._deferred = ({}, {}, {})
                    return (
                        {},
                        {**rewards, **new_rewards},
                        {**terminateds, **new_terms, "__all__": True},
                        {**infos, **new_infos},
                    )
                continue
            self._request = event
            aid = self._agent_id(event)
            if isinstance(event, PlanRequest) and int(event.query.id) >= self.max_queries:
                raise RuntimeError(
                    f"query {event.query.id} exceeds the {self.max_queries} agent ids declared "
                    "for this window; lower window_s or loads_rpm"
                )
            if isinstance(event, PlanRequest):
                self._open_queries += 1
            if aid in self._live:
                # RLlib wants a reward with every observation after an agent's first; the
                # query's reward comes only when it completes.
                rewards.setdefault(aid, 0.0)
            else:
                self._live[aid] = None
                # Agents still in the episode: acting now or waiting for their reward.
                self.agents = list(self._live)
            return {aid: self.observe(event)}, rewards, {**terminateds, "__all__": False}, infos


@dataclass
class EpisodeStats:
    """Outcomes since the last `pop_stats`, for the constraint and the logs."""

    queries: int = 0
    correct: int = 0
    violations: int = 0
    reward: float = 0.0
    latency_s: float = 0.0
    remapped: int = 0

    def add(self, record: Any, reward: float) -> None:
        self.queries += 1
        self.correct += bool(record.correct)
        self.violations += not record.met_budget
        self.reward += reward
        self.latency_s += record.latency_s

    def merge(self, others: Sequence[EpisodeStats]) -> EpisodeStats:
        out = EpisodeStats()
        for s in (self, *others):
            out.queries += s.queries
            out.correct += s.correct
            out.violations += s.violations
            out.reward += s.reward
            out.latency_s += s.latency_s
            out.remapped += s.remapped
        return out

    @property
    def violation_rate(self) -> float:
        return self.violations / self.queries if self.queries else 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.queries if self.queries else 0.0

"""Run one query's multi-agent plan against real engines: plan, choose, call, combine, trace.

Waves run in sequence and the steps of a wave in parallel (asyncio.gather),
each step seeing the previous wave's answers. An engine that fails is
retried on another endpoint (another pool if its own has none left) while
the budget lasts; an invalid request (4xx) is not retried. Every decision
and its outcome lands in a trace that is returned to the client and can be
appended to a log for offline training.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from typing import Any

from ..policy.base import Policy
from ..policy.estimate import latency_table
from ..policy.types import (
    DEPTHS,
    Choice,
    ClusterSnapshot,
    Plan,
    PoolLoad,
    Query,
    StepContext,
    priority_for,
)
from ..vocab import Depth, Role, TaskFamily
from .engine import (
    CallResult,
    EngineError,
    EngineRejected,
    EngineUnavailable,
    TooSlow,
    build_request,
    chat,
    chat_stream,
)
from .prompts import DEPTH_MAX_TOKENS, build_messages
from .slots import SlotQueue
from .wire import EngineClient

log = logging.getLogger(__name__)

# A step gets at least this long even when the budget is (nearly) spent: a late
# answer is better than none, and the trace reports the miss.
MIN_STEP_TIMEOUT_S = 2.0
# How long an engine has to accept a call (send response headers) before the step moves
# on to another endpoint: half the time left, and never less than START_TIMEOUT_S. A
# healthy vLLM accepts at once even with a long queue, but on two shared cores busy with
# three engines its API server was seen taking over 15 s, and a false "hung" verdict
# costs a retry. Without any such limit, a hung engine (socket open, no answer) held
# each call for its whole budget.
START_TIMEOUT_S = 15.0
START_TIMEOUT_SHARE = 0.5
MAX_RETRIES = 2
# Deadline rescue (a hedged request, as in Dean and Barroso, "The Tail at Scale", CACM
# 2013): a step whose call has not answered when only the rescue window is left of the
# query's budget (the larger of RESCUE_MIN_S and RESCUE_SHARE of the budget) sends the
# option predicted fastest to another endpoint as well, and takes whichever answers first.
# Without it, a call chosen at a deep depth on a pool that then slowed down answers late
# or times out at the deadline, and a retry is late anyway.
RESCUE_MIN_S = 1.5
RESCUE_SHARE = 0.3
# Earlier answers shown to a step are cut to fit the engine's context window. Budgeted
# at a conservative 2 characters per token, with room kept for the step's own answer.
CHARS_PER_TOKEN = 2
DEFAULT_CONTEXT_CHARS = 6000


def fit_context(context: list[str], max_chars: int) -> list[str]:
    """Each earlier answer's tail (where final answers usually are), within max_chars in all."""
    if not context:
        return context
    share = max(64, max_chars // len(context))
    return [a if len(a) <= share else "..." + a[-share:] for a in context]


class _Race:
    """A step's first call and its deadline rescue (Runner._rescued)."""

    __slots__ = ("answer", "failed", "option", "rescue", "sent_at", "settled", "task")

    def __init__(self, task: asyncio.Task) -> None:
        self.task = task  # the one awaiting the first call
        self.rescue: asyncio.Future[CallResult] | None = None
        self.option: tuple[int, Depth, str] = (0, Depth.FLASH, "")  # the rescue's pool, depth, url
        self.sent_at = 0.0
        self.answer: CallResult | None = None  # the rescue's, when it answered first
        self.failed = False  # the rescue failed
        self.settled = False  # the step no longer listens to the rescue's outcome


class _Holding:
    """Runner._holding. A class: contextlib's generator-based manager cost 3 % of the
    gateway's time per call."""

    __slots__ = ("endpoints", "key", "slots", "timeout_s", "url")

    def __init__(
        self, endpoints: Any, slots: SlotQueue, url: str, key: float, timeout_s: float
    ) -> None:
        self.endpoints, self.slots, self.url = endpoints, slots, url
        self.key, self.timeout_s = key, timeout_s

    async def __aenter__(self) -> float:
        self.endpoints.acquire(self.url)
        try:
            return await self.slots.acquire(self.url, self.key, self.timeout_s)
        except BaseException:
            self.endpoints.release(self.url)
            raise

    async def __aexit__(self, *exc: object) -> None:
        try:
            self.slots.release(self.url)
        finally:
            self.endpoints.release(self.url)


class ClientGone(Exception):
    """The client of a streamed answer went away: the query ends, unanswered and unfailed
    (no one is left to answer), and its calls are cancelled, which aborts them in vLLM."""


class PipelineFailed(Exception):
    """No answer could be produced; `status` is the HTTP status the gateway should return."""

    def __init__(self, status: int, message: str, trace: dict[str, Any]) -> None:
        super().__init__(message)
        self.status = status
        self.trace = trace


@dataclass(slots=True)
class StepTrace:
    wave: int
    slot: int
    role: str
    pool: str
    depth: str
    endpoint: str | None = None
    latency_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    error: str | None = None
    started_at: float | None = None  # Unix time the (last) attempt was sent
    queued_s: float = 0.0  # held here for a free batch slot before that (slots.py)
    ttft_s: float | None = None  # from sending to the engine's first token
    # None: no rescue sent; "answered": a rescue answered (the fields above are its call,
    # `replaced` the first call, cancelled); "cancelled": the first call answered first;
    # "failed": the rescue failed and the first call's outcome stands.
    rescue: str | None = None
    replaced: dict[str, Any] | None = None


@dataclass(slots=True)
class QueryTrace:
    id: str
    pipeline: str
    task: str
    plan: str
    topology: str
    policy: str
    priority: int | None
    budget_s: float
    decision_us: float = 0.0
    latency_s: float | None = None
    met_budget: bool | None = None
    steps: list[StepTrace] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies every field, a third of the gateway's
        # own time per request.
        out = {name: getattr(self, name) for name in _QUERY_FIELDS}
        out["steps"] = [{name: getattr(st, name) for name in _STEP_FIELDS} for st in self.steps]
        return out


_STEP_FIELDS = tuple(f.name for f in fields(StepTrace))
_QUERY_FIELDS = tuple(f.name for f in fields(QueryTrace) if f.name != "steps")


@dataclass(frozen=True, slots=True)
class Outcome:
    text: str
    prompt_tokens: int
    completion_tokens: int
    trace: QueryTrace
    # The last step's, as OpenAI reports it: "length" when its depth's token cap cut the
    # answer; "stop" for an answer combined from several steps.
    finish_reason: str = "stop"


_CODE = re.compile(r"```|\bdef |\bclass |\bfunction\b|\bimplement\b|\bpython\b", re.I)
_MATH = re.compile(r"\d\s*[-+*/^=]\s*\d|\bsolve\b|\bcompute\b|\bcalculate\b|\bequation\b", re.I)


def infer_task(messages: list[dict[str, str]]) -> TaskFamily:
    """A cheap guess of the task family when the client does not say (header or body)."""
    text = " ".join(m["content"] for m in messages if m["role"] == "user")[-4000:]
    if _CODE.search(text):
        return TaskFamily.CODE
    if _MATH.search(text):
        return TaskFamily.MATH
    return TaskFamily.KNOWLEDGE


def combine(answers: list[str]) -> str:
    """The final text of a parallel last wave: the answer most agents gave, else the first."""
    if len(answers) == 1:
        return answers[0]
    counts = Counter(" ".join(a.split()).lower() for a in answers)
    top, n = counts.most_common(1)[0]
    if n > 1:
        return next(a for a in answers if " ".join(a.split()).lower() == top)
    return answers[0]


class Runner:
    """Executes plans for one pipeline. `view` provides snapshots and endpoints (LiveView)."""

    def __init__(
        self,
        pipeline: str,
        client: EngineClient,
        view: Any,
        policy: Policy,
        max_tokens: dict[Depth, int] | None = None,
        on_step: Callable[[StepTrace], None] | None = None,
        slots: SlotQueue | None = None,
        rescue: bool = True,
        policy_version: str | None = None,
        default_budget_s: float = 30.0,
    ) -> None:
        self.pipeline = pipeline
        self.default_budget_s = default_budget_s  # the pipeline's; ranks its FCFS calls
        # What traces name as the decider: an artifact's version, so that retraining can
        # tell which version took each decision (default: the policy's name).
        self.policy_version = policy_version or policy.name
        self.rescue = rescue
        self.client = client
        self.view = view
        self.policy = policy
        self.max_tokens = max_tokens or DEPTH_MAX_TOKENS
        self.on_step = on_step
        # Kept by the gateway across config reloads: calls in flight hold their slots.
        self.slots = slots or SlotQueue()
        self.slots.configure(
            {u: p.max_num_seqs for p in view.pools if p.max_num_seqs for u in p.endpoints}
        )

    @property
    def pending(self) -> int:
        """Steps of admitted queries that have not taken an endpoint yet (see run()), of
        this runner and of any before it that shared its slots, whose waves may still be
        starting after a config reload."""
        return self.slots.pending

    def plan(self, query: Query) -> tuple[Plan, ClusterSnapshot, float]:
        snapshot = self.view.snapshot(now=query.arrival_s)
        t0 = time.perf_counter()
        plan = self.policy.decide(snapshot, query)
        return plan, snapshot, (time.perf_counter() - t0) * 1e6

    async def run(
        self,
        query: Query,
        messages: list[dict[str, str]],
        plan: Plan,
        decision_us: float = 0.0,
        on_delta: Callable[[str], Awaitable[None]] | None = None,
        snapshot: ClusterSnapshot | None = None,
    ) -> Outcome:
        """Run `plan`. `snapshot`, the one the plan was made from, is reused by the first
        step when it is taken alone, saving a second snapshot microseconds later: pass it
        only when nothing could have run in between (no await since `plan()`)."""
        priority = priority_for(self.policy.scheduler, query)
        if priority is None:
            # FCFS still sends a priority: an engine running priority scheduling serves a
            # call without one (0) before every EDF pipeline's call it shares the engine
            # with. Arrival plus the pipeline's default budget keeps this pipeline's calls
            # in arrival order and ranks them against others' as a default-budget query.
            priority = int((query.arrival_s + self.default_budget_s) * 1000)
        trace = QueryTrace(
            id=str(query.id),
            pipeline=self.pipeline,
            task=query.task.value,
            plan=plan.label,
            topology=plan.topology.value,
            policy=self.policy_version,
            priority=priority,
            budget_s=query.budget_s,
            decision_us=round(decision_us, 1),
        )
        context: list[str] = []
        used: list[int] = []
        prompt_tokens = completion_tokens = 0
        last: list[str] = []
        for w, roles in enumerate(plan.waves):
            stream_this = on_delta if (w == len(plan.waves) - 1 and len(roles) == 1) else None
            jobs = [
                self._step(
                    query,
                    plan,
                    w,
                    slot,
                    role,
                    messages,
                    context,
                    used,
                    priority,
                    trace,
                    stream_this,
                    snapshot if w == 0 and len(roles) == 1 else None,
                )
                for slot, role in enumerate(roles)
            ]
            results: list[CallResult | BaseException]
            if len(jobs) == 1:
                # One step runs in this task, not a new one: it takes its engine slot
                # (endpoints.acquire) before the handler first yields, so queries arriving
                # in a burst see each other's load at admission. As tasks, all of a burst
                # was admitted before any step started, and none was ever shed.
                try:
                    results = [await jobs[0]]
                except ClientGone:
                    raise
                except Exception as exc:  # collected, as gather(return_exceptions) does
                    results = [exc]
            else:
                # Steps started as tasks take their endpoints only when they first run, and
                # a burst's other handlers may run before that: until then they count as
                # `pending` load for admission, or a burst of ensembles was all admitted
                # and then waited out its budget for batch slots.
                left = [len(jobs)]
                self.slots.pending += len(jobs)
                try:
                    results = await asyncio.gather(
                        *(self._counted(job, left) for job in jobs), return_exceptions=True
                    )
                finally:
                    self.slots.pending -= left[0]  # steps cancelled before they ever ran
            answers = []
            finishes = []
            for r in results:
                if isinstance(r, CallResult):
                    answers.append(r.text)
                    finishes.append(r.finish_reason)
                    prompt_tokens += r.prompt_tokens
                    completion_tokens += r.completion_tokens
            if not answers:
                self._finish(trace, query, answered=False)
                errors = [str(r) for r in results if isinstance(r, BaseException)]
                rejected = [r for r in results if isinstance(r, EngineRejected)]
                # A refusal of the user's own prompt is the client's to fix (400); a refusal
                # in a later wave, or no engine answering, is ours (502 / 503).
                status = (400 if w == 0 else 502) if rejected else 503
                raise PipelineFailed(
                    status,
                    f"wave {w} of plan {plan.label} produced no answer: {'; '.join(errors)}",
                    trace.to_dict(),
                )
            context, last = answers, answers
        self._finish(trace, query)
        text = combine(last)
        if on_delta is not None and len(plan.waves[-1]) > 1:
            await on_delta(text)
        finish = finishes[0] if len(finishes) == 1 and finishes[0] else "stop"
        return Outcome(text, prompt_tokens, completion_tokens, trace, finish)

    async def _counted(self, job: Awaitable[CallResult], left: list[int]) -> CallResult:
        """Run a step that was counted as pending: from here it counts itself, as it takes
        its endpoint before it first yields."""
        left[0] -= 1
        self.slots.pending -= 1
        return await job

    def _finish(self, trace: QueryTrace, query: Query, answered: bool = True) -> None:
        trace.latency_s = round(time.time() - query.arrival_s, 4)
        # A query that failed fast did not meet its budget: its client got no answer. Its
        # trace feeds retraining, where a fast failure counted as met would reward it.
        trace.met_budget = answered and trace.latency_s <= query.budget_s

    async def _step(
        self,
        query: Query,
        plan: Plan,
        wave: int,
        slot: int,
        role: Role,
        messages: list[dict[str, str]],
        context: list[str],
        used: list[int],
        priority: int | None,
        trace: QueryTrace,
        on_delta: Callable[[str], Awaitable[None]] | None,
        first_snapshot: ClusterSnapshot | None = None,
    ) -> CallResult:
        failed_endpoints: list[str] = []
        last_error: EngineError | None = None
        # Order in the gateway's slot queue: as vLLM's (EDF: the deadline; FCFS: arrival).
        slot_key = priority if priority is not None else query.arrival_s * 1000
        streamed = False
        context_chars: int | None = None
        step_trace: StepTrace | None = None
        for attempt in range(MAX_RETRIES + 1):
            snapshot = first_snapshot if attempt == 0 and first_snapshot else self.view.snapshot()
            snapshot = _without(snapshot, self._dead_pools(failed_endpoints))
            step = StepContext(query, plan, wave, slot, role, snapshot.now, tuple(used))
            choice: Choice = self.policy.choose(snapshot, step)
            endpoint = self.view.pick_endpoint(choice.pool, exclude=failed_endpoints)
            if endpoint is None:
                endpoint = self._any_endpoint(failed_endpoints)
                if endpoint is None:
                    break
                choice = Choice(self._pool_of(endpoint), choice.depth)
            used.append(choice.pool)
            pool = self.view.pools[choice.pool]
            if step_trace is None:
                step_trace = StepTrace(wave, slot, role.value, pool.name, choice.depth.value)
                trace.steps.append(step_trace)
            step_trace.pool, step_trace.depth = pool.name, choice.depth.value
            step_trace.endpoint, step_trace.attempts = endpoint, attempt + 1
            max_tokens = self.max_tokens[choice.depth]
            window = self.view.scraper.max_model_len(endpoint)
            if context_chars is None:
                context_chars = DEFAULT_CONTEXT_CHARS
                if window is not None:
                    user_chars = sum(len(m["content"]) for m in messages)
                    room = window - min(max_tokens, window // 2) - user_chars // CHARS_PER_TOKEN
                    context_chars = max(256, (room - 128) * CHARS_PER_TOKEN)
            shown = fit_context(context, context_chars)  # earlier answers this step sees

            def body_for(p: int, d: Depth, shown: list[str] = shown) -> dict[str, Any]:
                """This step's request to pool `p` at depth `d` (the rescue's too)."""
                target = self.view.pools[p]
                return build_request(
                    target.served_model_name,
                    build_messages(role, d, messages, shown),
                    self.max_tokens[d],
                    priority if target.priority_scheduling_enabled else None,
                )

            body = body_for(choice.pool, choice.depth)
            timeout = max(query.deadline_s - time.time(), MIN_STEP_TIMEOUT_S)
            try:
                async with self._holding(endpoint, slot_key, timeout) as queued_s:
                    step_trace.queued_s = round(queued_s, 4)
                    if queued_s:
                        timeout = max(query.deadline_s - time.time(), MIN_STEP_TIMEOUT_S)
                    start_timeout = max(START_TIMEOUT_S, START_TIMEOUT_SHARE * timeout)
                    step_trace.started_at = round(time.time(), 4)
                    if on_delta is None:
                        first = chat(self.client, endpoint, body, timeout, start_timeout)
                        result = await self._rescued(
                            first, query, endpoint, slot_key, step_trace, body_for
                        )
                    else:
                        result = None
                        # Closed at once if on_delta raises (the client went away): its
                        # connection closes, and vLLM stops generating for no one.
                        async with contextlib.aclosing(
                            chat_stream(self.client, endpoint, body, timeout, start_timeout)
                        ) as stream:
                            async for item in stream:
                                if isinstance(item, CallResult):
                                    result = item
                                else:
                                    streamed = True
                                    await on_delta(item)
                        assert result is not None
            except EngineUnavailable as exc:
                log.warning("%s step %d/%d: %s", trace.id, wave, slot, exc)
                self._failed(endpoint, exc)
                failed_endpoints.append(endpoint)
                last_error = exc
                step_trace.error = str(exc)
                if streamed:
                    # The client already has part of this answer; a retry would splice
                    # two different answers together.
                    raise
                continue
            except EngineRejected as exc:
                step_trace.error = str(exc)
                if context and "context length" in str(exc) and context_chars and not streamed:
                    # Earlier answers overflowed this model's window: show less of them.
                    failed_endpoints.clear()
                    context_chars //= 2
                    continue
                raise
            if step_trace.rescue != "answered":  # a rescue accounts for its own call
                self._answered(choice.pool, endpoint, result)
            step_trace.latency_s = round(result.latency_s, 4)
            step_trace.ttft_s = None if result.ttft_s is None else round(result.ttft_s, 4)
            step_trace.prompt_tokens = result.prompt_tokens
            step_trace.completion_tokens = result.completion_tokens
            step_trace.error = None
            if self.on_step is not None:
                self.on_step(step_trace)
            return result
        if step_trace is not None and self.on_step is not None:
            self.on_step(step_trace)
        raise last_error or EngineUnavailable("-", "no usable endpoint in any pool")

    def _rescue_option(self, query: Query, exclude: str) -> tuple[int, Depth, str, float] | None:
        """The (pool, depth, endpoint) predicted fastest for this query, on an endpoint other
        than `exclude`, with its predicted seconds; None when there is no other endpoint."""
        allowed = self.policy.limits.depths
        best: tuple[int, Depth, str, float] | None = None
        for i, row in enumerate(latency_table(self.view.snapshot(), query)):
            url = self.view.pick_endpoint(i, exclude=[exclude])
            if url is None:
                continue
            for depth, seconds in zip(DEPTHS, row, strict=True):
                if depth in allowed and (best is None or seconds < best[3]):
                    best = (i, depth, url, seconds)
        return best if best is not None and best[3] < float("inf") else None

    async def _rescued(
        self,
        first: Awaitable[CallResult],
        query: Query,
        endpoint: str,
        slot_key: float,
        step_trace: StepTrace,
        body_for: Callable[[int, Depth], dict[str, Any]],
    ) -> CallResult:
        """Await the step's call; near the deadline, race it against a rescue (see
        RESCUE_SHARE). The loser is cancelled, which closes its connection, and vLLM
        aborts a request whose client went away. Raises the first call's error when
        neither answers.

        The first call runs in this task and a timer sends the rescue when it is due: a
        task and asyncio.wait per step cost ~4 % of the gateway's CPU per call, for
        a rescue that almost every call never needs. A rescue that answers first cancels
        this task's wait on the first call; `race.answer` tells that cancellation apart
        from the caller's."""
        started = time.time()
        rescue_at = query.deadline_s - max(RESCUE_MIN_S, RESCUE_SHARE * query.budget_s)
        if not self.rescue or rescue_at <= started:  # off, or no time to hedge in
            return await first
        race = _Race(asyncio.current_task())
        timer = asyncio.get_running_loop().call_later(
            rescue_at - started, self._send_rescue, race, query, endpoint, slot_key, body_for
        )
        try:
            result = await first
        except asyncio.CancelledError:
            if race.answer is None or race.task.uncancel() > 0:
                raise  # the caller's cancellation, not the rescue's
            self._took_rescue(race, step_trace, endpoint)
            return race.answer
        except Exception as first_error:
            rescue = race.rescue
            if rescue is None:
                raise
            if race.failed:
                step_trace.rescue = "failed"
                raise
            race.settled = True  # from here the rescue is awaited, not signalled
            try:
                race.answer = await rescue
            except Exception as exc:
                log.warning("rescue of a step on %s failed: %s", endpoint, exc)
                step_trace.rescue = "failed"
                raise first_error from None
            self._took_rescue(race, step_trace, endpoint)
            return race.answer
        finally:
            timer.cancel()
            race.settled = True
            if race.rescue is not None and not race.rescue.done():
                race.rescue.cancel()
        if race.rescue is not None:
            step_trace.rescue = "failed" if race.failed else "cancelled"
        return result

    def _send_rescue(
        self,
        race: _Race,
        query: Query,
        endpoint: str,
        slot_key: float,
        body_for: Callable[[int, Depth], dict[str, Any]],
    ) -> None:
        """The rescue timer: the option predicted fastest, chosen now from the load as it is
        when the first call is late, sent to another endpoint."""
        if race.settled:
            return
        option = self._rescue_option(query, endpoint)
        if option is None:
            return
        pool, depth, url, _ = option
        race.option, race.sent_at = (pool, depth, url), time.time()
        race.rescue = asyncio.ensure_future(
            self._rescue_call(query, pool, url, slot_key, body_for(pool, depth))
        )
        race.rescue.add_done_callback(functools.partial(self._rescue_done, race, endpoint))

    @staticmethod
    def _rescue_done(race: _Race, endpoint: str, rescue: asyncio.Future[CallResult]) -> None:
        if race.settled or rescue.cancelled():
            return
        if (exc := rescue.exception()) is not None:
            race.failed = True
            log.warning("rescue of a step on %s failed: %s", endpoint, exc)
            return
        race.answer = rescue.result()
        race.task.cancel()  # ends the step's wait on its first call (_rescued)

    def _took_rescue(self, race: _Race, step_trace: StepTrace, endpoint: str) -> None:
        """The step's trace now describes the rescue's call; `replaced`, the first one."""
        pool, depth, url = race.option
        step_trace.replaced = {
            "pool": step_trace.pool,
            "depth": step_trace.depth,
            "endpoint": endpoint,
            "started_at": step_trace.started_at,
        }
        step_trace.rescue = "answered"
        step_trace.pool = self.view.pools[pool].name
        step_trace.depth = depth.value
        step_trace.endpoint = url
        step_trace.started_at = round(race.sent_at, 4)
        step_trace.attempts += 1

    async def _rescue_call(
        self, query: Query, pool: int, url: str, slot_key: float, body: dict[str, Any]
    ) -> CallResult:
        """One rescue call, accounted like any other: endpoint load, batch slot, outcome."""
        timeout = max(query.deadline_s - time.time(), MIN_STEP_TIMEOUT_S)
        try:
            async with self._holding(url, slot_key, timeout):
                timeout = max(query.deadline_s - time.time(), MIN_STEP_TIMEOUT_S)
                result = await chat(self.client, url, body, timeout, timeout)
        except EngineUnavailable as exc:
            self._failed(url, exc)
            raise
        self._answered(pool, url, result)
        return result

    def _holding(self, url: str, slot_key: float, timeout_s: float) -> _Holding:
        """`url` held for one call (`async with`): counted as its load from now (a call
        waiting for a slot is load too), then one of its batch slots; gives the seconds
        spent waiting for the slot. Raises NoSlotInTime when none came free within
        `timeout_s`."""
        return _Holding(self.view.endpoints, self.slots, url, slot_key, timeout_s)

    def _failed(self, url: str, exc: EngineUnavailable) -> None:
        if not isinstance(exc, TooSlow):  # slow for this budget is not broken
            self.view.endpoints.failed(url)

    def _answered(self, pool: int, url: str, result: CallResult) -> None:
        self.view.endpoints.succeeded(url)
        self.view.observe(pool, result.latency_s, result.completion_tokens, result.ttft_s)

    def _dead_pools(self, failed: list[str]) -> set[int]:
        dead = set()
        routable = self.view.routable()
        for i, pool in enumerate(self.view.pools):
            alive = [u for u in pool.endpoints if u not in failed and u in routable]
            if not alive:
                dead.add(i)
        return dead

    def _any_endpoint(self, exclude: list[str]) -> str | None:
        for i in range(len(self.view.pools)):
            url = self.view.pick_endpoint(i, exclude=exclude)
            if url is not None:
                return url
        return None

    def _pool_of(self, endpoint: str) -> int:
        return next(i for i, p in enumerate(self.view.pools) if endpoint in p.endpoints)


def _without(snapshot: ClusterSnapshot, dead: set[int]) -> ClusterSnapshot:
    if not dead:
        return snapshot
    loads = tuple(
        PoolLoad(inflight=ld.inflight, stale=True, available=False) if i in dead else ld
        for i, ld in enumerate(snapshot.loads)
    )
    return ClusterSnapshot(snapshot.now, snapshot.profiles, loads)

"""Discrete-event model of vLLM engines: continuous batching, paged KV, preemption, priorities.

Each engine replica follows vLLM V1's scheduler closely enough for latency
studies: a waiting queue ordered by (priority, arrival) — FCFS when priority
scheduling is off —, at most `max_num_seqs` running sequences and
`max_num_batched_tokens` tokens per step, KV in 16-token blocks reserved for a
whole prompt on admission and grown one block at a time while decoding. When
a step cannot get the blocks it needs, the running sequence with the largest
(priority, arrival) key is preempted: its blocks are freed and it goes back to
the waiting queue; like vLLM V1's recompute mode it keeps the tokens it
generated but must prefill prompt + generated tokens again. No call is lost.

Speed comes from jumping between events instead of stepping tokens: between
two events the batch composition is constant, so a whole run of decode steps
is one "segment" whose duration is a closed form (the context, hence the step
time, grows linearly). A segment ends at the first of: a sequence finishing,
the KV cache running out, or an interruption (a new call that may join the
batch, or a co-located engine starting or stopping); an interruption cuts the
segment at the end of the step in progress.

Co-location: engines that share a GPU are separate processes, which the GPU
time-slices (no MPS); each busy engine then progresses at 1/n of its solo
speed, so a segment's step time is multiplied by the number of busy engines
on its GPU, fixed when the segment is planned and re-planned whenever that
number changes. This is pessimistic for small engines next to big ones (real
kernels overlap a little) and optimistic against none at all.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..policy.types import PoolLoad
from .calibration import (
    BLOCK_TOKENS,
    EngineCalibration,
    engine_calibrations,
    get_placement,
    pool_names,
)


@dataclass(slots=True)
class SimCall:
    """One LLM call as the cluster sees it; times are filled in as it progresses."""

    id: int
    pool: int
    prompt_tokens: int
    output_tokens: int
    priority: float | None
    submitted_s: float = 0.0
    started_s: float | None = None
    first_token_s: float | None = None
    finished_s: float | None = None
    preemptions: int = 0
    tag: object = None

    @property
    def latency_s(self) -> float:
        if self.finished_s is None:
            raise ValueError(f"call {self.id} has not finished")
        return self.finished_s - self.submitted_s


@dataclass(frozen=True, slots=True)
class ExpService:
    """Queueing-theory test mode: no batching, exponential service, `servers` per pool (M/M/c)."""

    mean_s: float
    servers: int = 1
    seed: int = 0


class _Seq:
    """A call inside an engine.

    While it decodes, its context and generated counts are not stored but
    derived from the engine's step counter: ctx = engine.e - base and
    generated = engine.e - gb (`ctx`, `generated` and `blocks` are exact only
    while it waits or prefills, and once it has left).
    """

    __slots__ = (
        "base",
        "blocks",
        "call",
        "chunk",
        "ctx",
        "gb",
        "generated",
        "key",
        "order",
        "out",
        "prefilled",
        "prompt",
    )

    def __init__(self, call: SimCall, key: tuple) -> None:
        self.call = call
        self.key = key
        self.out = call.output_tokens
        self.prompt = call.prompt_tokens  # tokens to prefill (grows on recompute)
        self.prefilled = 0
        self.generated = 0
        self.ctx = 0  # tokens whose KV the sequence holds (prompt reserved whole)
        self.blocks = 0
        self.chunk = 0  # prompt tokens prefilled in the current segment
        self.order = -1  # admission number while running, -1 otherwise
        self.base = self.gb = 0


class _Engine:
    """One vLLM engine replica (see the module docstring).

    Every decoding sequence advances one token per step, so the engine keeps
    aggregates instead of visiting each sequence per event: a step counter
    `e` from which each decoder's context and output length follow, the
    decoders counted by the step (mod 16) at which they need their next KV
    block (`cls`), a heap of the steps at which they finish (`fins`), and the
    running sums the step-time model needs. An event then costs the same
    whatever the batch size; only preemption and chunked prefills still look
    at sequences one by one.
    """

    __slots__ = (
        "a",
        "b",
        "busy",
        "c",
        "cap",
        "chunked",
        "cls",
        "ctxsum",
        "e",
        "end",
        "f",
        "fins",
        "gpu",
        "h",
        "k",
        "max_seqs",
        "max_tokens",
        "ndec",
        "new",
        "orders",
        "p",
        "pool",
        "pre",
        "preemptions",
        "prefilling",
        "rot",
        "running",
        "s0",
        "t0",
        "used",
        "version",
        "waiting",
    )

    def __init__(self, cal: EngineCalibration, pool: int, gpu: int) -> None:
        self.a, self.b, self.c, self.p = cal.a_s, cal.b_s, cal.c_s, cal.p_s
        self.cap = cal.kv_blocks
        self.max_seqs = cal.max_num_seqs
        self.max_tokens = cal.max_num_batched_tokens
        self.pool = pool
        self.gpu = gpu
        self.waiting: list[tuple[tuple, _Seq]] = []
        self.running: dict[int, _Seq] = {}  # by admission number, hence in admission order
        self.orders = 0
        self.e = 0  # decode steps run so far
        self.cls = [0] * BLOCK_TOKENS  # decoders by (ctx - e) mod 16: base mod 16
        self.fins: list[tuple[int, int, _Seq]] = []  # (finishing step, order, seq), lazy
        self.ndec = 0  # decoding sequences
        self.prefilling = 0  # running sequences whose prompt is not yet prefilled
        self.ctxsum = 0  # KV tokens held by running sequences
        self.used = 0
        self.new: list[_Seq] = []  # sequences that start decoding in the planned segment
        self.chunked: list[_Seq] = []  # sequences prefilling in the planned segment
        self.rot: list[int] = []  # decoders by the step of their first block need, 1..16
        self.busy = False
        self.end = math.inf
        self.version = 0
        self.preemptions = 0
        self.t0 = self.f = self.pre = self.s0 = self.h = 0.0
        self.k = 0

    # -- queue ---------------------------------------------------------------

    def enqueue(self, call: SimCall, key: tuple) -> None:
        heapq.heappush(self.waiting, (key, _Seq(call, key)))

    def on_submit(self, t: float, factor: float) -> bool:
        """A call joined the queue at t; True when this engine's next event moved."""
        if not self.busy:
            self.plan(t, factor)
            return self.busy
        if len(self.running) < self.max_seqs:
            return self.truncate(t)  # it may join the batch at the next step boundary
        return False

    def _preempt(self, seq: _Seq) -> None:
        if seq.prefilled >= seq.prompt:  # decoding
            seq.generated = self.e - seq.gb
            self.used -= self._drop_decoder(seq)
        else:
            del self.running[seq.order]
            seq.order = -1
            self.prefilling -= 1
            self.used -= seq.blocks
            self.ctxsum -= seq.ctx
        seq.blocks = 0
        seq.ctx = 0
        seq.prefilled = 0
        seq.prompt = seq.call.prompt_tokens + seq.generated  # recompute what it had
        seq.call.preemptions += 1
        self.preemptions += 1
        heapq.heappush(self.waiting, (seq.key, seq))

    def _drop_decoder(self, seq: _Seq) -> int:
        """Take a decoding sequence out of the batch's aggregates; the blocks it held."""
        ctx = self.e - seq.base
        self.ctxsum -= ctx
        self.cls[seq.base % BLOCK_TOKENS] -= 1
        self.ndec -= 1
        del self.running[seq.order]
        seq.order = -1  # its entry in `fins`, if any, is now stale
        return -(-ctx // BLOCK_TOKENS)

    # -- segments ------------------------------------------------------------

    def plan(self, t: float, factor: float) -> None:
        """At a step boundary: schedule like vLLM and plan the next segment."""
        running, cls, e = self.running, self.cls, self.e
        # A decoder needs a block for its next token when its context is a multiple of 16.
        preempted = False
        while cls[e % BLOCK_TOKENS] > self.cap - self.used:
            self._preempt(max(running.values(), key=_key))
            preempted = True
        need = cls[e % BLOCK_TOKENS]

        fins = self.fins
        while fins and fins[0][2].order != fins[0][1]:
            heapq.heappop(fins)
        kmax = fins[0][0] - e if fins else 1 << 30  # steps until the first decoder finishes
        new: list[_Seq] = []  # sequences that decode from this segment on
        newf: list[int] = []  # the step at which each of them needs its next block
        chunked: list[_Seq] = []
        prefill = 0
        partial = False
        if not self.prefilling:
            budget = self.max_tokens - self.ndec
        else:  # chunked prefills continue, served in running order after the decoders before them
            budget = self.max_tokens
            for s in running.values():
                if s.prefilled >= s.prompt:
                    budget -= 1
                    continue
                s.chunk = min(s.prompt - s.prefilled, max(budget, 0))
                budget -= s.chunk
                prefill += s.chunk
                chunked.append(s)
                if s.prefilled + s.chunk >= s.prompt:
                    self.prefilling -= 1  # the segment's first step completes it
                    new.append(s)
                    newf.append(s.blocks * BLOCK_TOKENS - s.ctx + 1)
                    kmax = min(kmax, s.out - s.generated)
                else:
                    partial = True

        # vLLM V1 admits nothing in a step that had to preempt.
        waiting = self.waiting
        if not preempted and waiting:
            avail = self.cap - self.used - need
            while waiting and len(running) < self.max_seqs:
                if budget <= 0:
                    partial = True  # more could join next step: keep the segment to one step
                    break
                s = waiting[0][1]
                blocks = -(-(s.prompt + 1) // BLOCK_TOKENS)
                if blocks > avail:
                    break
                heapq.heappop(waiting)
                avail -= blocks
                self.used += blocks
                s.blocks = blocks
                s.ctx = s.prompt
                self.ctxsum += s.prompt
                s.prefilled = 0
                s.chunk = min(s.prompt, budget)
                budget -= s.chunk
                prefill += s.chunk
                s.order = self.orders
                self.orders += 1
                running[s.order] = s
                chunked.append(s)
                if s.call.started_s is None:
                    s.call.started_s = t
                if s.chunk >= s.prompt:
                    new.append(s)
                    newf.append(blocks * BLOCK_TOKENS - s.prompt + 1)
                    kmax = min(kmax, s.out - s.generated)
                else:
                    self.prefilling += 1
                    partial = True

        if not running:
            self.busy = False
            self.end = math.inf
            self.new = self.chunked = []
            return

        d = self.ndec
        n = d + len(new)
        r = e % BLOCK_TOKENS
        rot = self.rot = cls[r:] + cls[:r] if d else []  # rot[f - 1]: first need at step f
        k = 1
        if not partial and n and kmax > 1:
            # KV horizon: sequence i needs a block at steps f_i, f_i + 16, ... with every
            # f_i in a window of 16, so needs come in rounds of one per sequence and the
            # (free+1)-th need falls at sorted(f)[free % n] + 16 (free // n).
            counts = [*rot, 0] if d else [0] * (BLOCK_TOKENS + 1)
            for f in newf:
                counts[f - 1] += 1
            rounds, rem = divmod(self.cap - self.used, n)
            f = bisect.bisect_right(list(itertools.accumulate(counts)), rem) + 1
            k = min(kmax, f + BLOCK_TOKENS * rounds - 1)
        self.new = new
        self.chunked = chunked
        self.busy = True
        self.t0 = t
        self.f = factor
        self.k = k
        self.pre = self.p * prefill
        self.s0 = self.a + self.b * n + self.c * self.ctxsum
        self.h = self.c * n
        self.end = t + factor * (self.pre + k * self.s0 + self.h * k * (k - 1) / 2)

    def truncate(self, t: float) -> bool:
        """Cut the segment at the end of the step in progress at t; True if it moved."""
        if not self.busy or t >= self.end or self.k <= 1:
            return False
        e = (t - self.t0) / self.f - self.pre  # decode time elapsed, in solo seconds
        s0, h = self.s0, self.h
        if e < s0:
            j = 0
        elif h <= 0:
            j = int(e / s0)
        else:
            q = s0 - h / 2
            j = int((-q + math.sqrt(q * q + 2 * h * e)) / h)
        while j > 0 and j * s0 + h * j * (j - 1) / 2 > e:
            j -= 1
        while (j + 1) * s0 + h * (j + 1) * j / 2 <= e:
            j += 1
        k = j + 1
        if k >= self.k:
            return False
        self.k = k
        self.end = self.t0 + self.f * (self.pre + k * s0 + h * k * (k - 1) / 2)
        return True

    def commit(self, t: float, out: list[SimCall]) -> None:
        """Apply the segment that ends at t: tokens, first tokens, blocks, completions."""
        k = self.k
        e0 = self.e
        e = self.e = e0 + k
        for s in self.chunked:
            s.prefilled += s.chunk
            s.chunk = 0
        used = self.used
        d = self.ndec
        if d:  # decoders' block needs: one per 16 steps each, plus those due in the remainder
            rounds, rest = divmod(k, BLOCK_TOKENS)
            used += rounds * d + sum(self.rot[:rest])
        fins = self.fins
        new = self.new
        if new:
            first_t = self.t0 + self.f * (self.pre + self.s0)
            cls = self.cls
            for s in new:
                g0 = s.generated
                if g0 == 0 and s.call.first_token_s is None:
                    s.call.first_token_s = first_t
                ctx = s.ctx + k
                grow = -(-ctx // BLOCK_TOKENS) - s.blocks
                if grow > 0:
                    used += grow
                s.base = e0 - s.ctx
                s.gb = e0 - g0
                cls[s.base % BLOCK_TOKENS] += 1
                heapq.heappush(fins, (e0 + s.out - g0, s.order, s))
            self.ndec = d = d + len(new)
        self.ctxsum += k * d
        while fins and fins[0][0] <= e:  # k never passes a finish, so these finish at e
            _, order, s = heapq.heappop(fins)
            if s.order != order:
                continue
            used -= self._drop_decoder(s)
            s.generated = s.out
            s.ctx = s.blocks = 0
            s.call.finished_s = t
            out.append(s.call)
        self.used = used
        self.new = self.chunked = []
        self.busy = False
        self.end = math.inf

    @property
    def kv_usage(self) -> float:
        return self.used / self.cap if self.cap else 0.0


def _key(s: _Seq) -> tuple:
    return s.key


class _ExpEngine:
    """M/M/c station for the queueing-theory tests: c servers, one queue, no batching."""

    __slots__ = (
        "busy",
        "end",
        "gpu",
        "max_seqs",
        "mean",
        "pool",
        "preemptions",
        "rng",
        "running",
        "servers",
        "used",
        "version",
        "waiting",
    )

    def __init__(self, service: ExpService, pool: int, gpu: int) -> None:
        self.mean = service.mean_s
        self.servers = service.servers
        self.max_seqs = service.servers
        self.rng = random.Random(f"exp-service:{service.seed}:{pool}")
        self.pool = pool
        self.gpu = gpu
        self.waiting: list[tuple[tuple, _Seq]] = []
        self.running: list[tuple[float, _Seq]] = []
        self.used = 0
        self.busy = False
        self.end = math.inf
        self.version = 0
        self.preemptions = 0

    def enqueue(self, call: SimCall, key: tuple) -> None:
        heapq.heappush(self.waiting, (key, _Seq(call, key)))

    def on_submit(self, t: float, factor: float) -> bool:
        if len(self.running) < self.servers:
            self.plan(t, factor)
            return True
        return False

    def plan(self, t: float, factor: float) -> None:
        while self.waiting and len(self.running) < self.servers:
            s = heapq.heappop(self.waiting)[1]
            s.call.started_s = s.call.first_token_s = t
            self.running.append((t + self.rng.expovariate(1.0 / self.mean), s))
        self.busy = bool(self.running)
        self.end = min((e for e, _ in self.running), default=math.inf)

    def truncate(self, t: float) -> bool:
        return False

    def commit(self, t: float, out: list[SimCall]) -> None:
        keep = []
        for e, s in self.running:
            if e <= t:
                s.generated = s.call.output_tokens
                s.call.finished_s = t
                out.append(s.call)
            else:
                keep.append((e, s))
        self.running = keep
        self.busy = False
        self.end = math.inf

    @property
    def kv_usage(self) -> float:
        return 0.0


class Cluster:
    """The vLLM engines of one placement, one pool per model, driven by `submit` and `advance`.

    `scheduler_priority` mirrors `--scheduling-policy priority` (False: FCFS,
    priorities ignored). Keyword-only test hooks: `service` switches every pool
    to an M/M/c station; `max_num_seqs`, `max_num_batched_tokens` and
    `kv_blocks` override the calibration of every engine; `colocation=False`
    lets engines on one GPU run as if alone.
    """

    def __init__(
        self,
        placement: str = "b200x2",
        pools: Sequence[str] | None = None,
        scheduler_priority: bool = True,
        *,
        service: ExpService | None = None,
        max_num_seqs: int | None = None,
        max_num_batched_tokens: int | None = None,
        kv_blocks: int | None = None,
        colocation: bool = True,
        latency_alpha: float = 0.1,
    ) -> None:
        plc = get_placement(placement)
        self.placement = plc.name
        self.pool_names: tuple[str, ...] = tuple(pools) if pools is not None else pool_names(plc)
        self.scheduler_priority = scheduler_priority
        self.now = 0.0
        self.events = 0
        self._alpha = latency_alpha
        self._latency: list[float | None] = [None] * len(self.pool_names)
        self._engines: list[_Engine | _ExpEngine] = []
        self._pool_engines: list[list[int]] = []
        self._gpu_engines: dict[int, list[int]] = {}
        self._gpu_busy: dict[int, int] = {}
        self._colocation = colocation
        self._heap: list[tuple[float, int, int]] = []
        self._arrivals = 0
        self._max_tokens: list[int | float] = []
        self._loads: list[PoolLoad] = []
        self._dirty: set[int] = set()

        cals = engine_calibrations(plc)
        for pool, name in enumerate(self.pool_names):
            mine = [cal for cal in cals if cal.model == name]
            if not mine:
                raise ValueError(f"placement {plc.name!r} serves no {name!r}")
            idxs = []
            if service is not None:
                mine = mine[:1]  # one M/M/c station per pool
            for cal in mine:
                idx = len(self._engines)
                if service is not None:
                    eng: _Engine | _ExpEngine = _ExpEngine(service, pool, gpu=-1 - idx)
                else:
                    eng = _Engine(cal, pool, gpu=cal.gpu)
                    if max_num_seqs is not None:
                        eng.max_seqs = max_num_seqs
                    if max_num_batched_tokens is not None:
                        eng.max_tokens = max_num_batched_tokens
                    if kv_blocks is not None:
                        eng.cap = kv_blocks
                self._engines.append(eng)
                idxs.append(idx)
                self._gpu_engines.setdefault(eng.gpu, []).append(idx)
                self._gpu_busy.setdefault(eng.gpu, 0)
            self._pool_engines.append(idxs)
            self._loads.append(PoolLoad())
            self._dirty.add(pool)
            if service is None:
                self._max_tokens.append(min(self._engines[i].cap for i in idxs) * BLOCK_TOKENS)
            else:
                self._max_tokens.append(math.inf)

    # -- driving -------------------------------------------------------------

    def submit(self, call: SimCall) -> None:
        """Queue a call at `now` on the least-loaded replica of its pool."""
        if not 0 <= call.pool < len(self.pool_names):
            raise ValueError(f"call {call.id}: no pool {call.pool} (have {len(self.pool_names)})")
        if call.prompt_tokens < 1 or call.output_tokens < 1:
            raise ValueError(f"call {call.id}: prompt and output need at least one token")
        if call.prompt_tokens + call.output_tokens + 1 > self._max_tokens[call.pool]:
            raise ValueError(
                f"call {call.id} needs {call.prompt_tokens + call.output_tokens} tokens of KV "
                f"but a {self.pool_names[call.pool]} engine holds {self._max_tokens[call.pool]}"
            )
        call.submitted_s = self.now
        self._arrivals += 1
        prio = call.priority if self.scheduler_priority and call.priority is not None else 0
        idxs = self._pool_engines[call.pool]
        idx = idxs[0]
        if len(idxs) > 1:
            idx = min(
                idxs, key=lambda i: len(self._engines[i].running) + len(self._engines[i].waiting)
            )
        eng = self._engines[idx]
        was_busy = eng.busy
        self._dirty.add(call.pool)
        eng.enqueue(call, (prio, self._arrivals))
        if eng.on_submit(self.now, self._factor(eng, was_busy)):
            self._push(idx, eng)
        if eng.busy != was_busy:
            self._gpu_changed(eng, eng.busy)

    def next_event_time(self) -> float:
        heap = self._heap
        while heap:
            t, idx, ver = heap[0]
            if self._engines[idx].version == ver:
                return t
            heapq.heappop(heap)
        return math.inf

    def advance(self, until: float) -> list[SimCall]:
        """Run engine events up to `until` (inclusive); finished calls in completion order.

        `until=math.inf` drains the cluster and leaves `now` at the last event.
        """
        if until < self.now:
            raise ValueError(f"cannot advance to {until} before now={self.now}")
        out: list[SimCall] = []
        heap, engines = self._heap, self._engines
        while heap and heap[0][0] <= until:
            t, idx, ver = heapq.heappop(heap)
            eng = engines[idx]
            if eng.version != ver:
                continue
            self.now = t
            self.events += 1
            self._dirty.add(eng.pool)
            n_out = len(out)
            eng.commit(t, out)
            eng.plan(t, self._factor(eng, True))
            if eng.busy:
                self._push(idx, eng)
            else:
                self._gpu_changed(eng, False)
            for call in out[n_out:]:
                self._observe(call)
        if until != math.inf:
            self.now = until
        return out

    def drain(self) -> list[SimCall]:
        return self.advance(math.inf)

    # -- signals -------------------------------------------------------------

    def loads(self) -> tuple[PoolLoad, ...]:
        """Per pool, summed over replicas; the latency is an EWMA of finished calls' e2e."""
        for pool in self._dirty:
            waiting = running = used = cap = 0
            for i in self._pool_engines[pool]:
                eng = self._engines[i]
                waiting += len(eng.waiting)
                running += len(eng.running)
                used += eng.used
                cap += getattr(eng, "cap", 0)
            self._loads[pool] = PoolLoad(
                waiting=float(waiting),
                running=float(running),
                kv_usage=used / cap if cap else 0.0,
                inflight=waiting + running,
                latency_s=self._latency[pool],
            )
        self._dirty.clear()
        return tuple(self._loads)

    def max_call_tokens(self, pool: int) -> int | float:
        """Prompt + output tokens one call of this pool may hold (its engines' KV)."""
        return self._max_tokens[pool] - 1

    @property
    def preemptions(self) -> int:
        return sum(e.preemptions for e in self._engines)

    def idle(self) -> bool:
        return all(not e.running and not e.waiting for e in self._engines)

    # -- internals -----------------------------------------------------------

    def _push(self, idx: int, eng: _Engine | _ExpEngine) -> None:
        eng.version += 1
        heapq.heappush(self._heap, (eng.end, idx, eng.version))

    def _factor(self, eng: _Engine | _ExpEngine, counted: bool) -> float:
        """Time-slicing slowdown: busy engines on this GPU, this one included."""
        if not self._colocation:
            return 1.0
        busy = self._gpu_busy[eng.gpu]
        return float(busy if counted else busy + 1) or 1.0

    def _gpu_changed(self, eng: _Engine | _ExpEngine, busy: bool) -> None:
        self._gpu_busy[eng.gpu] += 1 if busy else -1
        if not self._colocation:
            return
        for idx in self._gpu_engines[eng.gpu]:
            other = self._engines[idx]
            if other is not eng and other.busy and other.truncate(self.now):
                self._push(idx, other)

    def _observe(self, call: SimCall) -> None:
        lat = call.finished_s - call.submitted_s  # type: ignore[operator]
        prev = self._latency[call.pool]
        self._latency[call.pool] = lat if prev is None else prev + self._alpha * (lat - prev)

"""The simulator's engine model as first written: every sequence stepped in turn.

`inframind.sim.cluster._Engine` keeps the same rules with aggregate
bookkeeping (one decode-step counter per engine, block needs counted by
residue class, a heap of finish steps) so that an event costs the same
whatever the batch size. This is the plain version it replaced, kept as the
reference the fast one must reproduce exactly (tests/unit/test_sim_reference.py).
"""

from __future__ import annotations

import heapq
import math

from inframind.sim.calibration import BLOCK_TOKENS, EngineCalibration
from inframind.sim.cluster import SimCall, _Engine


class Seq:
    __slots__ = ("blocks", "call", "chunk", "ctx", "generated", "key", "out", "prefilled", "prompt")

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


class ReferenceEngine:
    """One vLLM engine replica (see the module docstring)."""

    __slots__ = (
        "a",
        "b",
        "busy",
        "c",
        "cap",
        "end",
        "f",
        "gen",
        "gpu",
        "h",
        "k",
        "max_seqs",
        "max_tokens",
        "p",
        "pool",
        "pre",
        "preemptions",
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
        self.waiting: list[tuple[tuple, Seq]] = []
        self.running: list[Seq] = []
        self.gen: list[Seq] = []
        self.used = 0
        self.busy = False
        self.end = math.inf
        self.version = 0
        self.preemptions = 0
        self.t0 = self.f = self.pre = self.s0 = self.h = 0.0
        self.k = 0

    # -- queue ---------------------------------------------------------------

    def enqueue(self, call: SimCall, key: tuple) -> None:
        seq = Seq(call, key)
        heapq.heappush(self.waiting, (seq.key, seq))

    # Unchanged by the rewrite, so shared: waking on a submission, cutting a segment short.
    on_submit = _Engine.on_submit
    truncate = _Engine.truncate
    kv_usage = _Engine.kv_usage

    def _preempt(self, seq: Seq) -> None:
        self.running.remove(seq)
        self.used -= seq.blocks
        seq.blocks = 0
        seq.ctx = 0
        seq.prefilled = 0
        seq.prompt = seq.call.prompt_tokens + seq.generated  # recompute what it had
        seq.call.preemptions += 1
        self.preemptions += 1
        heapq.heappush(self.waiting, (seq.key, seq))

    # -- segments ------------------------------------------------------------

    def plan(self, t: float, factor: float) -> None:
        """At a step boundary: schedule like vLLM and plan the next segment."""
        running = self.running
        preempted = False
        if self.cap - self.used < len(running):
            while True:
                # Blocks the running decoders need for their next token.
                need = 0
                for s in running:
                    if s.prefilled >= s.prompt and s.ctx >= s.blocks * BLOCK_TOKENS:
                        need += 1
                if need <= self.cap - self.used:
                    break
                self._preempt(max(running, key=_key))
                preempted = True
        need = 0  # counted again below, with the batch

        budget = self.max_tokens
        gen: list[Seq] = []
        firsts: list[int] = []  # per generating sequence: the step that needs its next block
        kmax = 1 << 30  # steps until the first generating sequence finishes
        prefill = 0
        context = 0
        partial = False
        for s in running:
            ctx = s.ctx
            context += ctx
            if s.prefilled >= s.prompt:  # decoding: one token this step
                budget -= 1
                slack = s.blocks * BLOCK_TOKENS - ctx
                if slack <= 0:
                    need += 1
                gen.append(s)
                firsts.append(slack + 1)
                left = s.out - s.generated
                if left < kmax:
                    kmax = left
            else:  # a chunked prefill continues
                s.chunk = min(s.prompt - s.prefilled, max(budget, 0))
                budget -= s.chunk
                prefill += s.chunk
                if s.prefilled + s.chunk >= s.prompt:
                    gen.append(s)
                    firsts.append(s.blocks * BLOCK_TOKENS - ctx + 1)
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
                context += s.prompt
                s.prefilled = 0
                s.chunk = min(s.prompt, budget)
                budget -= s.chunk
                prefill += s.chunk
                running.append(s)
                if s.call.started_s is None:
                    s.call.started_s = t
                if s.chunk >= s.prompt:
                    gen.append(s)
                    firsts.append(blocks * BLOCK_TOKENS - s.prompt + 1)
                    kmax = min(kmax, s.out - s.generated)
                else:
                    partial = True

        if not running:
            self.busy = False
            self.end = math.inf
            self.gen = []
            return

        n = len(gen)
        k = 1
        if not partial and n and kmax > 1:
            # KV horizon: sequence i needs a block at steps f_i, f_i + 16, ... with every
            # f_i in a window of 16, so needs come in rounds of one per sequence and the
            # (free+1)-th need falls at sorted(f)[free % n] + 16 (free // n).
            firsts.sort()
            rounds, rem = divmod(self.cap - self.used, n)
            k = min(kmax, firsts[rem] + BLOCK_TOKENS * rounds - 1)
        self.gen = gen
        self.busy = True
        self.t0 = t
        self.f = factor
        self.k = k
        self.pre = self.p * prefill
        self.s0 = self.a + self.b * n + self.c * context
        self.h = self.c * n
        self.end = t + factor * (self.pre + k * self.s0 + self.h * k * (k - 1) / 2)

    def commit(self, t: float, out: list[SimCall]) -> None:
        """Apply the segment that ends at t: tokens, first tokens, blocks, completions."""
        k = self.k
        first_t = self.t0 + self.f * (self.pre + self.s0)
        done = False
        if self.pre:
            for s in self.running:
                if s.chunk:
                    s.prefilled += s.chunk
                    s.chunk = 0
        used = self.used
        for s in self.gen:
            g = s.generated = s.generated + k
            ctx = s.ctx = s.ctx + k
            if g == k and s.call.first_token_s is None:
                s.call.first_token_s = first_t
            grow = -(-ctx // BLOCK_TOKENS) - s.blocks
            if grow > 0:
                s.blocks += grow
                used += grow
            if g >= s.out:
                done = True
        if done:
            keep = []
            for s in self.running:
                if s.generated >= s.out:
                    used -= s.blocks
                    s.blocks = 0
                    s.call.finished_s = t
                    out.append(s.call)
                else:
                    keep.append(s)
            self.running = keep
        self.used = used
        self.gen = []
        self.busy = False
        self.end = math.inf


def _key(s: Seq) -> tuple:
    return s.key

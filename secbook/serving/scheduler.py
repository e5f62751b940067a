"""The scheduler: which sequences run in the next step, and which wait.

Orca (Yu et al., OSDI'22, "Orca: A Distributed Serving System for Transformer-Based Generative Models")
schedules at the granularity of one iteration: after every decode step, finished sequences leave the batch and
waiting ones join it — **continuous batching**. vLLM (Kwon et al., SOSP'23) adds the memory side: a waiting
sequence is admitted only if the free KV blocks can hold its prompt, each running sequence takes one more block
when its last one is full, and when none is left the newest running sequence is **preempted** — its blocks are
freed and it goes back to the head of the queue, to be recomputed from its prompt and the tokens it already
produced (vLLM's "recompute" preemption; greedy output is unchanged by it).

Three policies share this code so they can be measured against each other:

* ``continuous`` — admit at every step while a slot (``max_batch``) and the blocks are free;
* ``static`` — admit a new batch only when the whole previous batch has finished (what a server that calls
  ``generate`` on a padded batch does);
* ``single`` — one request at a time (``max_batch`` 1).

**Long prompts: chunked prefill.** A prompt is fed in chunks of at most ``prefill_chunk`` tokens, one step at a
time, and the step's prefill budget (``prefill_chunk`` tokens in all) goes to the oldest prefilling sequences
first. A long prompt therefore holds up the running decodes by at most one chunk's forward per step instead
of its whole prefill (Sarathi-Serve's idea, Agrawal et al., OSDI'24); in this engine the prefill rows and the
decode rows run as two forwards of the same step.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import torch

from .blocks import PagedKVCache

POLICIES = ("continuous", "static", "single")


@dataclass
class Sampling:
    """How the next token is picked: greedy when ``temperature`` is 0, else softmax sampling with nucleus
    ``top_p`` and a per-request generator (seeded by ``seed`` when given, so a seeded answer repeats)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass
class Sequence:
    """One request inside the engine: its prompt, what it produced, how far its KV cache is computed."""

    id: int
    prompt: list[int]
    max_tokens: int
    sampling: Sampling = field(default_factory=Sampling)
    stop_ids: frozenset = frozenset()
    on_event: object = None  # callable(kind, payload) from the engine thread
    output: list[int] = field(default_factory=list)
    computed: int = 0  # tokens whose keys/values are in the cache
    arrival: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finish_reason: str | None = None
    cancelled: str | None = None  # why it was stopped from outside: 'cancelled' or 'stop'
    preemptions: int = 0
    generator: torch.Generator | None = None

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output

    @property
    def planned(self) -> int:
        return len(self.prompt) + self.max_tokens

    @property
    def prefilling(self) -> bool:
        """More than one token still to feed (a prompt, or a prompt + output after a preemption)."""
        return len(self.tokens) - self.computed > 1


@dataclass
class Plan:
    """One step: prefill rows ``(seq, n_tokens)`` and decode rows (one token each); who was preempted."""

    prefill: list[tuple[Sequence, int]] = field(default_factory=list)
    decode: list[Sequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    dropped: list[Sequence] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.prefill or self.decode)


class Scheduler:
    """Waiting and running queues over one :class:`PagedKVCache` (see the module docstring)."""

    def __init__(self, cache: PagedKVCache, policy: str = "continuous", max_batch: int = 8,
                 prefill_chunk: int = 256):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if max_batch < 1 or prefill_chunk < 1:
            raise ValueError(f"max_batch and prefill_chunk must be >= 1, got {max_batch}, {prefill_chunk}")
        self.cache, self.policy, self.prefill_chunk = cache, policy, prefill_chunk
        self.max_batch = 1 if policy == "single" else max_batch
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.preemptions = 0

    def add(self, seq: Sequence) -> None:
        """Queue a new request (FCFS)."""
        if self.cache.blocks_for(seq.planned) > self.cache.num_blocks:
            raise ValueError(f"a request of {seq.planned} tokens needs more KV blocks than the cache has "
                             f"({self.cache.num_blocks} of {self.cache.block_size} tokens)")
        self.waiting.append(seq)

    def finish(self, seq: Sequence) -> None:
        """Take a finished or cancelled sequence out of the running batch and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        self.cache.free(seq.id)

    def _admit(self) -> None:
        if self.policy == "static" and self.running:
            return
        while self.waiting and len(self.running) < self.max_batch:
            seq = self.waiting[0]
            if not self.cache.can_reserve(seq.id, len(seq.tokens)):
                break  # FCFS: nobody overtakes the head of the queue
            self.cache.reserve(seq.id, len(seq.tokens), planned=seq.planned)
            self.running.append(self.waiting.popleft())

    def _preempt(self, seq: Sequence, plan: Plan) -> None:
        self.running.remove(seq)
        self.cache.free(seq.id)
        seq.computed = 0
        seq.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(seq)
        plan.preempted.append(seq)

    def schedule(self) -> Plan:
        """Drop cancelled sequences, admit waiting ones, give every decoding sequence a slot for its next token
        (preempting the newest ones when blocks run out) and hand out the prefill budget."""
        plan = Plan()
        for seq in [s for s in self.waiting if s.cancelled]:
            self.waiting.remove(seq)
            plan.dropped.append(seq)
        for seq in [s for s in self.running if s.cancelled]:
            self.finish(seq)
            plan.dropped.append(seq)
        self._admit()
        for seq in list(self.running):
            if seq not in self.running or seq.prefilling:
                continue
            while not self.cache.can_reserve(seq.id, len(seq.tokens)):
                victim = self.running[-1]
                self._preempt(victim, plan)
                if victim is seq:
                    break
            if seq in self.running:
                self.cache.reserve(seq.id, len(seq.tokens))
                plan.decode.append(seq)
        budget = self.prefill_chunk
        for seq in self.running:
            if seq.prefilling and budget > 0:
                n = min(budget, len(seq.tokens) - seq.computed)
                plan.prefill.append((seq, n))
                budget -= n
        return plan

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

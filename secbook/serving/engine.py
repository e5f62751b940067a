"""The engine: schedule a step, run it, hand out the new tokens — over and over, in a thread of its own.

Every iteration asks the :class:`~secbook.serving.scheduler.Scheduler` for a plan (which sequences feed how
many tokens), runs the prefill rows and the decode rows through the runner (two batched forwards), samples one
token for every sequence whose input is used up, and reports it through the sequence's ``on_event`` callback:
``("token", id)``, then ``("done", finish_reason)`` or ``("error", message)``. Because the scheduler is asked
again after every step, a request that arrives while others are decoding joins them at the next step and one
that finishes leaves at once — the iteration-level scheduling of Orca (Yu et al., OSDI'22).

The HTTP server lives in an asyncio loop; the model's forward is long, blocking work. So the engine runs in its
own thread, ``submit`` and ``cancel`` are the only ways in (both thread-safe), and the server turns the
callbacks into asyncio events. ``generate`` drives the same loop without a thread, for tests and notebooks.
"""
from __future__ import annotations

import itertools
import threading
import time

import torch

from .scheduler import Sampling, Scheduler, Sequence


class QueueFull(RuntimeError):
    """More requests are waiting than ``max_queue`` allows: the server answers 429 with Retry-After."""


class EngineStopped(RuntimeError):
    """The engine is shutting down and takes no new requests."""


def sample(logits: torch.Tensor, s: Sampling, generator: torch.Generator | None = None) -> int:
    """The next token from one row of logits: argmax when ``s.temperature == 0``, else nucleus sampling."""
    if s.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / s.temperature, dim=-1)
    if s.top_p < 1.0:
        sorted_p, idx = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < s.top_p
        probs = torch.zeros_like(probs).scatter_(0, idx[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


class Engine:
    """Continuous batching over a paged KV cache (see the module docstring). ``runner`` is an
    :class:`~secbook.serving.runner.HFRunner` (or anything with ``cache``, ``max_positions`` and ``forward``)."""

    def __init__(self, runner, policy: str = "continuous", max_batch: int = 8, max_queue: int = 64,
                 prefill_chunk: int = 256, max_model_len: int | None = None):
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.runner, self.max_queue = runner, max_queue
        self.scheduler = Scheduler(runner.cache, policy, max_batch, prefill_chunk)
        self.max_model_len = min(max_model_len or runner.max_positions, runner.max_positions)
        self._ids = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.counters = dict.fromkeys(("submitted", "rejected", "completed", "cancelled", "failed",
                                       "prompt_tokens", "generated_tokens", "steps", "decode_rows",
                                       "prefill_tokens"), 0)
        self.busy_s = 0.0

    # --- ways in (any thread) ---------------------------------------------------------------------------
    def submit(self, prompt: list[int], max_tokens: int, sampling: Sampling | None = None,
               stop_ids=(), on_event=None) -> Sequence:
        """Queue a request; :class:`QueueFull` past ``max_queue`` waiting, ValueError if it cannot fit."""
        if not prompt:
            raise ValueError("the prompt has no tokens")
        if max_tokens < 1 or len(prompt) + max_tokens > self.max_model_len:
            raise ValueError(f"prompt ({len(prompt)} tokens) + max_tokens ({max_tokens}) must be at most the "
                             f"context length {self.max_model_len}, and max_tokens at least 1")
        sampling = sampling or Sampling()
        with self._cv:
            if self._stopping:
                raise EngineStopped("the server is shutting down")
            if self.scheduler.num_waiting >= self.max_queue:
                self.counters["rejected"] += 1
                raise QueueFull(f"{self.scheduler.num_waiting} requests are already waiting (max_queue "
                                f"{self.max_queue})")
            seq = Sequence(next(self._ids), list(prompt), max_tokens, sampling, frozenset(stop_ids), on_event)
            if sampling.temperature > 0:
                seq.generator = torch.Generator()
                seq.generator.manual_seed(sampling.seed if sampling.seed is not None else
                                          torch.randint(2**62, ()).item())
            self.scheduler.add(seq)
            self.counters["submitted"] += 1
            self.counters["prompt_tokens"] += len(prompt)
            self._cv.notify()
        return seq

    def cancel(self, seq: Sequence, reason: str = "cancelled") -> None:
        """Stop ``seq``: it leaves the batch and frees its blocks at the next step. ``reason`` is
        ``"cancelled"`` (its client went away) or ``"stop"`` (the server found a stop string: a completion)."""
        with self._cv:
            if seq.finish_reason is None and not seq.cancelled:
                seq.cancelled = reason
                self._cv.notify()

    # --- the loop ---------------------------------------------------------------------------------------
    def _emit(self, seq: Sequence, kind: str, payload) -> None:
        if seq.on_event is not None:
            try:
                seq.on_event(kind, payload)
            except Exception:  # a listener that broke must not stop the engine
                pass

    def _end(self, seq: Sequence, reason: str, counter: str, kind: str = "done") -> None:
        seq.finish_reason = reason
        self.scheduler.finish(seq)
        self.counters[counter] += 1
        self._emit(seq, kind, reason)

    def _advance(self, seq: Sequence, n: int, logits: torch.Tensor) -> None:
        seq.computed += n
        if seq.computed < len(seq.tokens):
            return  # a prompt chunk: no token yet
        tok = sample(logits, seq.sampling, seq.generator)
        if seq.first_token_at is None:
            seq.first_token_at = time.perf_counter()
        if tok in seq.stop_ids:
            with self._cv:
                self._end(seq, "stop", "completed")
            return
        seq.output.append(tok)
        self.counters["generated_tokens"] += 1
        self._emit(seq, "token", tok)
        if len(seq.output) >= seq.max_tokens or len(seq.tokens) >= self.max_model_len:
            with self._cv:
                self._end(seq, "length", "completed")

    def _run(self, rows: list[tuple[Sequence, int]]) -> None:
        live = [(s, n) for s, n in rows if s.finish_reason is None]
        if not live:
            return
        try:
            logits = self.runner.forward([s.id for s, _ in live],
                                         [s.tokens[s.computed:s.computed + n] for s, n in live],
                                         [s.computed for s, _ in live])
        except Exception as e:  # a failed forward fails its requests, not the server
            with self._cv:
                for s, _ in live:
                    self._end(s, f"{type(e).__name__}: {e}", "failed", kind="error")
            return
        for (s, n), row in zip(live, logits):
            self._advance(s, n, row)

    def step(self) -> bool:
        """One iteration: schedule, prefill, decode. False when there was nothing to run."""
        with self._cv:
            plan = self.scheduler.schedule()
            for seq in plan.dropped:
                seq.finish_reason = seq.cancelled
                self.counters["completed" if seq.cancelled == "stop" else "cancelled"] += 1
        if not plan:
            return False
        t0 = time.perf_counter()
        self._run(plan.prefill)
        self._run([(s, 1) for s in plan.decode])
        self.busy_s += time.perf_counter() - t0
        self.counters["steps"] += 1
        self.counters["decode_rows"] += len(plan.decode)
        self.counters["prefill_tokens"] += sum(n for _, n in plan.prefill)
        return True

    def _has_work(self) -> bool:
        return bool(self.scheduler.waiting or self.scheduler.running)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._has_work():
                    self._cv.wait(timeout=1.0)
                if self._stopping:
                    return
            if not self.step():
                time.sleep(0.001)  # only cancelled or unadmittable work: do not spin

    def start(self) -> "Engine":
        """Run the loop in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="secbook-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop; every request still queued or running gets an ``error`` event."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cv:
            for seq in list(self.scheduler.waiting) + list(self.scheduler.running):
                self._end(seq, "server shutting down", "failed", kind="error")
            self.scheduler.waiting.clear()

    # --- offline use --------------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], max_tokens: int | list[int], sampling: Sampling | None = None,
                 stop_ids=(), max_steps: int = 100_000) -> list[list[int]]:
        """Submit every prompt (``max_tokens`` one number or one per prompt), step until all are done (no
        thread), return each one's output tokens."""
        if self._thread is not None:
            raise RuntimeError("generate() drives the loop itself; do not call it on a started engine")
        limits = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(prompts)
        seqs = [self.submit(p, n, sampling, stop_ids) for p, n in zip(prompts, limits)]
        for _ in range(max_steps):
            if not self.step():
                break
        return [s.output for s in seqs]

    def stats(self) -> dict:
        """Counters, queue lengths and the KV cache's :meth:`~secbook.serving.blocks.PagedKVCache.stats`."""
        with self._cv:
            return {**self.counters, "running": len(self.scheduler.running),
                    "waiting": self.scheduler.num_waiting, "preemptions": self.scheduler.preemptions,
                    "busy_s": self.busy_s, "policy": self.scheduler.policy, "max_batch": self.scheduler.max_batch,
                    "max_queue": self.max_queue, **{f"kv_{k}": v for k, v in self.runner.cache.stats().items()}}

"""A load test that speaks only the OpenAI API: Poisson arrivals, every response streamed, per-request timings.

Real users do not wait for each other: requests arrive at random moments. The classic model is a **Poisson
process** — independent arrivals at rate λ, so the gaps between them are exponential with mean 1/λ. The test
draws the arrival times first (an *open loop*) and sends each request at its time whatever the server is
doing, so a slow server meets a growing queue instead of a politely waiting client; every latency is measured
from the request's scheduled arrival (a client that only measured from the moment it got round to sending would
hide the queue — the "coordinated omission" mistake). ``concurrency`` optionally caps the requests in flight.

Per request it records, from the server-sent events of a streamed answer: **TTFT** (arrival → first text),
**TPOT** (the mean gap between later tokens), end-to-end latency, output tokens (the server's ``usage`` when it
sends it, else the text chunks) and any error (HTTP status, an error event, a time-out). ``summarize`` gives
p50/p90/p99, throughput and **goodput** — completed requests per second that met a latency SLO (DistServe,
Zhong et al., OSDI'24), the rate users actually experience as good service. Because only ``/v1/models`` and
``/v1/chat/completions`` (or ``/v1/completions``) are used, the same test runs against vLLM, SGLang, TGI,
llama.cpp's server or ``transformers serve``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# Mixed lengths on purpose: a one-liner, questions, and a long context to summarise.
DEFAULT_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in two sentences why the sky is blue.",
    "List three uses of a paperclip.",
    "What does a compiler do?",
    "Give me a short recipe for pancakes.",
    "Translate 'good morning' into Spanish and German.",
    "Why do we have seasons on Earth? Answer briefly.",
    ("Summarise the following text in one sentence. The library opened at nine, as it always did, and the first "
     "visitors were two students who needed a quiet place to study for their exams. By noon the reading room was "
     "full; a school class had come to learn how to find books in the catalogue, and an old man was reading every "
     "newspaper he could find. In the afternoon it rained, and more people came in to stay dry. The librarian, "
     "who had worked there for thirty years, said it was the busiest day of the month."),
    ("Here is a function:\n\ndef mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total "
     "/ len(xs)\n\nWhat happens if xs is empty, and how would you fix it?"),
]


@dataclass
class LoadConfig:
    """One load run. ``rate`` requests/s for ``duration`` s (``rate`` 0: all at once, ``requests`` of them);
    ``max_tokens`` is a number or a ``(lo, hi)`` range drawn uniformly per request."""

    url: str
    rate: float = 1.0
    duration: float = 10.0
    concurrency: int | None = None
    requests: int | None = None
    max_tokens: int | tuple[int, int] = 64
    endpoint: str = "chat"
    model: str | None = None
    prompts: list = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    temperature: float = 0.0
    timeout: float = 120.0
    seed: int = 0

    def __post_init__(self):
        if self.rate < 0 or self.duration < 0:
            raise ValueError(f"rate and duration must be >= 0, got {self.rate}, {self.duration}")
        if self.rate == 0 and not self.requests:
            raise ValueError("rate 0 sends everything at once: give the number of requests")
        if self.endpoint not in ("chat", "completions"):
            raise ValueError(f"endpoint must be 'chat' or 'completions', got {self.endpoint!r}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if not self.prompts:
            raise ValueError("no prompts")


def base_url(url: str) -> str:
    """``http://host:port`` from a URL that may end in ``/`` or ``/v1``."""
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def arrivals(rate: float, duration: float, seed: int = 0, limit: int | None = None) -> list[float]:
    """Arrival times of a Poisson process of rate ``rate`` on ``[0, duration)`` (exponential gaps), at most
    ``limit`` of them; with ``rate`` 0, ``limit`` arrivals at time 0."""
    if rate == 0:
        return [0.0] * (limit or 0)
    rng, t, out = random.Random(seed), 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t >= duration or (limit is not None and len(out) >= limit):
            return out
        out.append(t)


def load_prompts(path: str | Path) -> list:
    """A prompts file: ``.jsonl`` lines of ``{"prompt": str}`` or ``{"messages": [...]}`` (optionally with
    ``max_tokens``), or plain text with one prompt per line."""
    text = Path(path).read_text()
    if str(path).endswith(".jsonl"):
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
        for i, it in enumerate(items):
            if not isinstance(it, dict) or not ({"prompt", "messages"} & it.keys()):
                raise ValueError(f"{path}: line {i + 1} needs 'prompt' or 'messages'")
        return items
    return [line for line in text.splitlines() if line.strip()]


def _body(cfg: LoadConfig, model: str, item, max_tokens: int) -> dict:
    if isinstance(item, dict):
        max_tokens = item.get("max_tokens", max_tokens)
        prompt, messages = item.get("prompt"), item.get("messages")
    else:
        prompt, messages = item, None
    body = {"model": model, "max_tokens": max_tokens, "temperature": cfg.temperature, "stream": True,
            "stream_options": {"include_usage": True}}
    if cfg.endpoint == "chat":
        body["messages"] = messages or [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt if prompt is not None else "\n".join(m["content"] for m in messages)
    return body


def _text_of(chunk: dict) -> str:
    out = ""
    for c in chunk.get("choices") or []:
        out += (c.get("delta") or {}).get("content") or c.get("text") or ""
    return out


async def _one(client, cfg: LoadConfig, url: str, body: dict, i: int, t_sched: float, t0: float) -> dict:
    rec = {"id": i, "scheduled_s": t_sched, "sent_s": time.perf_counter() - t0, "ttft_s": None, "tpot_s": None,
           "e2e_s": None, "prompt_tokens": None, "output_tokens": 0, "chunks": 0, "max_tokens": body["max_tokens"], "status": "ok",
           "http_status": None, "finish_reason": None, "retry_after": None, "error": ""}
    seen = {"first": None, "last": None, "usage": None}
    try:
        await asyncio.wait_for(_stream(client, url, body, rec, seen, t0), cfg.timeout)
    except asyncio.TimeoutError:
        rec["status"], rec["error"] = "timeout", f"no complete answer within {cfg.timeout} s"
    except Exception as e:  # network errors are results too
        rec["status"], rec["error"] = "error", f"{type(e).__name__}: {e}"[:200]
    end = time.perf_counter() - t0
    first, last = seen["first"], seen["last"]
    if rec["status"] == "ok" and rec["finish_reason"] is None and first is None:
        rec["status"], rec["error"] = "error", "stream ended without a token or a finish reason"
    rec["output_tokens"] = (seen["usage"] or {}).get("completion_tokens") or rec["chunks"]
    rec["prompt_tokens"] = (seen["usage"] or {}).get("prompt_tokens")
    if first is not None:
        rec["ttft_s"] = first - t_sched
        if rec["output_tokens"] > 1:
            rec["tpot_s"] = (last - first) / (rec["output_tokens"] - 1)
    rec["e2e_s"] = end - t_sched
    return rec


async def _stream(client, url: str, body: dict, rec: dict, seen: dict, t0: float) -> None:
    async with client.stream("POST", url, json=body) as r:
        rec["http_status"] = r.status_code
        if r.status_code != 200:
            raw = (await r.aread()).decode(errors="replace")
            rec["status"] = "rejected" if r.status_code in (429, 503) else "error"
            rec["retry_after"] = r.headers.get("retry-after")
            rec["error"] = f"HTTP {r.status_code}: {raw[:200]}"
            return
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            chunk = json.loads(data)
            if "error" in chunk:
                err = chunk["error"]
                rec["status"], rec["error"] = "error", str(err.get("message", err) if isinstance(err, dict) else err)[:200]
                return
            now = time.perf_counter() - t0
            if _text_of(chunk):
                seen["first"] = now if seen["first"] is None else seen["first"]
                seen["last"] = now
                rec["chunks"] += 1
            for c in chunk.get("choices") or []:
                rec["finish_reason"] = c.get("finish_reason") or rec["finish_reason"]
            seen["usage"] = chunk.get("usage") or seen["usage"]


async def run_async(cfg: LoadConfig, progress=None) -> tuple[list[dict], dict]:
    """Run one load test; returns the per-request records and run info (model, wall time, URL)."""
    import httpx

    base = base_url(cfg.url)
    limit = cfg.concurrency or 1000
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
                                 timeout=cfg.timeout) as client:
        model = cfg.model
        if model is None:
            r = await client.get(base + "/v1/models")
            r.raise_for_status()
            model = r.json()["data"][0]["id"]
        times = arrivals(cfg.rate, cfg.duration, cfg.seed, cfg.requests)
        rng = random.Random(cfg.seed + 1)
        url = base + ("/v1/chat/completions" if cfg.endpoint == "chat" else "/v1/completions")
        sem = asyncio.Semaphore(limit)
        t0 = time.perf_counter()

        async def launch(i: int, t: float):
            mt = cfg.max_tokens if isinstance(cfg.max_tokens, int) else rng.randint(*cfg.max_tokens)
            body = _body(cfg, model, rng.choice(cfg.prompts), mt)
            delay = t - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            async with sem:
                rec = await _one(client, cfg, url, body, i, t, t0)
            if progress:
                progress(rec)
            return rec

        tasks = [asyncio.create_task(launch(i, t)) for i, t in enumerate(times)]
        records = await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    return list(records), {"url": base, "model": model, "endpoint": cfg.endpoint, "rate": cfg.rate,
                           "duration": cfg.duration, "concurrency": cfg.concurrency, "wall_s": wall,
                           "requests": len(times)}


def run(cfg: LoadConfig, progress=None) -> tuple[list[dict], dict]:
    """:func:`run_async` from synchronous code — also inside a notebook, whose own event loop is running
    (then the test runs in a thread with a loop of its own)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_async(cfg, progress))
    box: dict = {}

    def target():
        try:
            box["out"] = asyncio.run(run_async(cfg, progress))
        except BaseException as e:
            box["err"] = e

    th = threading.Thread(target=target)
    th.start()
    th.join()
    if "err" in box:
        raise box["err"]
    return box["out"]


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation between order statistics), None for no values."""
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def summarize(records: list[dict], wall_s: float, slo_ttft: float = 1.0, slo_tpot: float = 0.1) -> dict:
    """Counts by status, p50/p90/p99 of TTFT, TPOT and latency (completed requests), throughput and goodput
    (completed requests per second with TTFT ≤ ``slo_ttft`` s and TPOT ≤ ``slo_tpot`` s)."""
    ok = [r for r in records if r["status"] == "ok"]
    good = [r for r in ok if r["ttft_s"] is not None and r["ttft_s"] <= slo_ttft
            and (r["tpot_s"] is None or r["tpot_s"] <= slo_tpot)]
    out = {"requests": len(records), "ok": len(ok)}
    for s in ("rejected", "error", "timeout"):
        out[s] = sum(r["status"] == s for r in records)
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        for q in (50, 90, 99):
            out[f"{key[:-2]}_p{q}_s"] = percentile([r[key] for r in ok], q)
    tokens = sum(r["output_tokens"] for r in ok)
    out.update({"wall_s": wall_s, "output_tokens": tokens, "output_tok_s": tokens / wall_s if wall_s else None,
                "throughput_req_s": len(ok) / wall_s if wall_s else None,
                "goodput_req_s": len(good) / wall_s if wall_s else None,
                "good_fraction": len(good) / len(records) if records else None,
                "slo_ttft_s": slo_ttft, "slo_tpot_s": slo_tpot})
    return out


def sweep(url: str, rates: list[float], duration: float | None = None, requests: int | None = None,
          label: str | None = None, slo_ttft: float = 1.0, slo_tpot: float = 0.1, **options):
    """One load run per arrival rate (lowest first) against ``url``: ``(summaries, records)`` as DataFrames, one
    summary row per rate (with its wall-clock ``t_start``/``t_end``), one record row per request, both tagged
    with ``label`` and the rate. Each rate has its
    own seed, the same for every server, so different servers meet the same arrival schedule and prompts.
    ``requests`` fixes the number of arrivals per rate instead of ``duration`` (the run then lasts about
    ``requests / rate`` seconds)."""
    import pandas as pd

    if duration is None and not requests:
        raise ValueError("give a duration or a number of requests")
    rows, recs = [], []
    for i, rate in enumerate(sorted(rates)):
        t_start = time.time()
        span = duration if duration is not None else 10 * requests / rate  # the request limit stops it first
        records, info = run(LoadConfig(url, rate=rate, duration=span, requests=requests, seed=100 + i, **options))
        rows.append({"server": label or info["model"], "rate": rate, "t_start": t_start, "t_end": time.time(),
                     **summarize(records, info["wall_s"], slo_ttft, slo_tpot)})
        recs += [{**r, "server": label or info["model"], "rate": rate} for r in records]
    return pd.DataFrame(rows), pd.DataFrame(recs)


def write_csv(records: list[dict], path: str | Path) -> Path:
    """The per-request records as CSV, written atomically (a temporary file in the same folder, renamed)."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(records[0].keys()) if records else ["id"]
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(records)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def report(summary: dict, info: dict) -> str:
    """The summary as a few lines of text."""
    def ms(x):
        return "   -   " if x is None else f"{x * 1e3:7.1f}"

    s = summary
    lines = [f"{info['model']} at {info['url']} ({info['endpoint']}): {s['requests']} requests, {s['ok']} ok, "
             f"{s['rejected']} rejected (429/503), {s['error']} errors, {s['timeout']} timed out, in "
             f"{s['wall_s']:.1f} s",
             f"{'':14s}{'p50':>8s}{'p90':>8s}{'p99':>8s}"]
    for key, name in (("ttft", "TTFT (ms)"), ("tpot", "TPOT (ms)"), ("e2e", "latency (ms)")):
        lines.append(f"{name:14s}" + "".join(f" {ms(s[f'{key}_p{q}_s'])}" for q in (50, 90, 99)))
    if s["output_tok_s"] is not None:
        lines.append(f"throughput: {s['output_tok_s']:.1f} output tokens/s, {s['throughput_req_s']:.2f} requests/s")
        lines.append(f"goodput (TTFT <= {s['slo_ttft_s'] * 1e3:.0f} ms and TPOT <= {s['slo_tpot_s'] * 1e3:.0f} ms): "
                     f"{s['goodput_req_s']:.2f} requests/s, {100 * (s['good_fraction'] or 0):.0f}% of requests")
    return "\n".join(lines)


def _max_tokens(text: str):
    if ":" in text:
        lo, hi = (int(x) for x in text.split(":", 1))
        if not 1 <= lo <= hi:
            raise argparse.ArgumentTypeError(f"need 1 <= LO <= HI, got {text}")
        return lo, hi
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"max tokens must be >= 1, got {n}")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``loadtest`` command's options."""
    p.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8000 (or .../v1)")
    p.add_argument("--rate", type=float, required=True, help="mean arrival rate, requests/s (0: all at once)")
    p.add_argument("--duration", type=float, required=True, help="seconds of arrivals")
    p.add_argument("--concurrency", type=int, default=None, help="most requests in flight (default: no cap)")
    p.add_argument("--requests", type=int, default=None, help="stop after this many arrivals")
    p.add_argument("--prompts", default=None, help="prompts file: text (one per line) or .jsonl")
    p.add_argument("--model", default=None, help="model name (default: the server's first in /v1/models)")
    p.add_argument("--endpoint", choices=("chat", "completions"), default="chat", help="default chat")
    p.add_argument("--max-tokens", type=_max_tokens, default=64, help="N, or LO:HI drawn per request (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="default 0 (greedy)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a request may take in all (default 120)")
    p.add_argument("--slo-ttft", type=float, default=1.0, help="goodput SLO on TTFT, seconds (default 1)")
    p.add_argument("--slo-tpot", type=float, default=0.1, help="goodput SLO on TPOT, seconds (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the arrivals and prompt choice (default 0)")
    p.add_argument("--out", default="loadtest.csv", help="per-request CSV (default loadtest.csv)")


def main(args: argparse.Namespace) -> int:
    """``python -m secbook loadtest``: run, print the summary, write the CSV."""
    prompts = load_prompts(args.prompts) if args.prompts else list(DEFAULT_PROMPTS)
    cfg = LoadConfig(args.url, rate=args.rate, duration=args.duration, concurrency=args.concurrency,
                     requests=args.requests, max_tokens=args.max_tokens, endpoint=args.endpoint, model=args.model,
                     prompts=prompts, temperature=args.temperature, timeout=args.timeout, seed=args.seed)
    records, info = run(cfg)
    summary = summarize(records, info["wall_s"], args.slo_ttft, args.slo_tpot)
    print(report(summary, info))
    path = write_csv(records, args.out)
    print(f"per-request records: {path}")
    return 0 if summary["ok"] else 1

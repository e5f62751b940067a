"""``python -m secbook bench --suite engines``: every engine × precision × model timed in turn, on one machine, in one run.

The protocol (the same as the rest of the book's timings, :mod:`secbook.measure`): the same prompt ids for every
engine (32 tokens of the held-out text by default), greedy, batch 1, the same number of threads; each entry is
loaded, warmed up (its first full generation also gives its tokens, compared with HF ``generate``'s), and then timed
in *rounds*: every round runs every entry of one process (:data:`PROCESS_GROUPS`) once — a one-token call (time to first token, TTFT: the prefill) and an
``n``-token call — before the next round begins (A, B, C, A, B, C, ...), with a short pause between entries so
one engine's spinning thread pool does not steal the next one's cores. A change in a shared machine's load thus hits
all entries alike. Reported: medians over rounds, TPOT = (median n-token latency − median TTFT) / (n − 1), decode
tokens/s = 1 / TPOT, the spread of the per-round decode speeds ((n − 1) ÷ (that round's n-token latency − the median
TTFT); comparisons of two entries use their ratio round by round, :func:`secbook.claims.compare`), the weight bytes one decode step reads, the bandwidth
that implies, and MBU against the read bandwidth measured at the start of the same run
(:data:`secbook.measure.METRICS`). Memory: the peak resident memory the process gained while the entry was loaded
(converted, where a runner converts at load time) and ran its first generation, and what it still held afterwards. Quality: whether the greedy tokens equal HF ``generate``'s on the fp32 weights, token
agreement with them, and (for a chat model) the accuracy on the book's question set (:mod:`secbook.tasks`).
"""
from __future__ import annotations

import gc
import statistics
import time

from . import missing as missing_engines
from .runners import ENTRIES, Runner, cpu_vector_isa, default_threads, make_runner, needs

RESULTS = "engines"  # data/results/engines.csv
MODELS = ("smollm2-135m-instruct", "tiny")
# Engines that share one process are timed in turn; these groups each get a process of their own, because an engine's
# runtime can slow the others down just by being loaded beside them (its own OpenMP and BLAS libraries): on a 2-core
# Xeon, with CTranslate2 loaded in the same process, llama.cpp's Q8_0 decode fell from 68 to 29 tokens/s and our C++
# int8 step from 110 to 67. The head-to-head comparisons (our step against llama.cpp and HF generate) stay in turn.
PROCESS_GROUPS = (("HF generate", "secbook C++ step", "llama.cpp"), ("CTranslate2",), ("ONNX Runtime GenAI",))


def process_groups(entries) -> list[list[tuple[str, str]]]:
    """``entries`` split by :data:`PROCESS_GROUPS` (an engine in no group gets one of its own), in that order."""
    groups = [[e for e in entries if e[0] in g] for g in PROCESS_GROUPS]
    groups += [[e for e in entries if e[0] == name] for name in dict.fromkeys(e[0] for e in entries)
               if not any(name in g for g in PROCESS_GROUPS)]
    return [g for g in groups if g]


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _timed(fn, *args) -> tuple[list[int], float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def question_accuracy(runner: Runner, tokenizer, questions=None, max_new_tokens: int = 32) -> tuple[int, int]:
    """(correct, total) on the book's question set (:data:`secbook.tasks.QUESTIONS`), each question asked as a chat
    turn, greedy, up to ``max_new_tokens`` tokens or the end-of-sequence token; replies checked by
    :func:`secbook.tasks.is_correct`."""
    from ..pretrained import chat_ids
    from ..tasks import QUESTIONS, is_correct

    questions = QUESTIONS if questions is None else questions
    correct = 0
    for q in questions:
        ids = chat_ids(tokenizer, q.prompt)[0].tolist()
        reply = tokenizer.decode(runner.generate(ids, max_new_tokens, eos=tokenizer.eos_token_id),
                                 skip_special_tokens=True).strip()
        correct += is_correct(reply, q.answers)
    return correct, len(questions)


def _available(entries, log) -> list[tuple[str, str]]:
    gone = set(missing_engines())
    kept = []
    for engine, precision in entries:
        if needs(engine) in gone:
            log(f"skipped {engine} {precision}: not installed (make engines)")
        elif engine == "secbook C++ step" and not _cpp_available():
            from .. import kernels

            log(f"skipped {engine} {precision}: {kernels.unavailable_reason()}")
        else:
            kept.append((engine, precision))
    return kept


def _cpp_available() -> bool:
    from .. import kernels

    return kernels.available()


def run_model(model: str, entries=ENTRIES, rounds: int = 5, warmup: int = 1, prompt_len: int = 32,
              new_tokens: int = 64, threads: int | None = None, questions: bool = True, pause_s: float = 0.1,
              bandwidth: float | None = None, progress: bool = True, isolate: bool = True) -> list[dict]:
    """Time every available entry of ``entries`` on ``model``; one result row per entry. Entries of one
    :data:`PROCESS_GROUPS` group are timed in turn; with ``isolate`` each group runs in a fresh process of its own
    (spawned), one group after the other. Each row's ``timed_with`` names the engines it was timed in turn with."""
    import torch

    log = (lambda s: print(f"[engines] {s}", flush=True)) if progress else (lambda s: None)
    if rounds < 1 or warmup < 0 or new_tokens < 2 or prompt_len < 1:
        raise ValueError(f"need rounds >= 1, warmup >= 0, new_tokens >= 2 and prompt_len >= 1; got rounds={rounds}, "
                         f"warmup={warmup}, new_tokens={new_tokens}, prompt_len={prompt_len}")
    threads = threads or default_threads()
    entries = _available(list(entries), log)
    groups = process_groups(entries)
    if isolate and len(groups) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from .. import roofline

        if bandwidth is None:  # one MBU denominator for every group
            bandwidth = roofline.measure_machine().bandwidth
        rows = []
        for group in groups:
            log(f"{model}: a process for {', '.join(dict.fromkeys(e[0] for e in group))}")
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                rows += pool.submit(_in_child, (model, group, rounds, warmup, prompt_len, new_tokens, threads,
                                                questions, pause_s, bandwidth, progress, False), progress).result()
        return rows
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows = _run_model(model, entries, rounds, warmup, prompt_len, new_tokens, threads, questions, pause_s,
                          bandwidth, log)
    finally:
        torch.set_num_threads(before)
    together = ", ".join(dict.fromkeys(r["engine"] for r in rows))
    return [{**r, "timed_with": together} for r in rows]


def _in_child(args: tuple, progress: bool) -> list[dict]:
    """:func:`run_model` in a spawned process. Without ``progress`` its standard output and error go to the null
    device (library import warnings and loading bars would otherwise land in the caller's notebook); an exception
    still reaches the caller through the process pool."""
    if not progress:
        import os

        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
    return run_model(*args)


def _run_model(model, entries, rounds, warmup, prompt_len, new_tokens, threads, questions, pause_s, bandwidth,
               log) -> list[dict]:
    """The timing itself, on ``entries`` already checked available (:func:`_available`), all in this process."""
    from .. import roofline
    from ..measure import peak_memory, prompt_ids, token_agreement
    from . import formats

    if bandwidth is None:
        bandwidth = roofline.measure_machine().bandwidth
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(formats.source_dir(model))
    ids = prompt_ids(tok, prompt_len)[0].tolist()
    chat = bool(getattr(tok, "chat_template", None)) and questions
    max_len = max(512, prompt_len + new_tokens + 8)

    runners: dict[tuple[str, str], Runner] = {}
    first: dict[tuple[str, str], list[int]] = {}
    memory: dict[tuple[str, str], tuple[int, int]] = {}
    for key in entries:
        log(f"{model}: loading {key[0]} {key[1]}")

        def load_and_run(key=key):
            r = make_runner(*key, model, threads, max_len)
            out = r.generate(ids, new_tokens)
            for _ in range(max(warmup, 1) - 1):
                r.generate(ids, 1)
                r.generate(ids, new_tokens)
            return r, out

        base, t0 = _rss(), time.perf_counter()
        (runners[key], first[key]), peak = peak_memory(load_and_run)
        gc.collect()
        memory[key] = (peak - base, _rss() - base)
        log(f"{model}: {key[0]} {key[1]} ready in {time.perf_counter() - t0:.1f} s")

    ref_key = ("HF generate", "fp32")
    if ref_key in first:
        reference = first[ref_key]
    else:  # the reference tokens come from HF generate on the fp32 weights, even when it is not timed
        hf = make_runner(*ref_key, model, threads, max_len)
        reference = hf.generate(ids, new_tokens)
        del hf
        gc.collect()

    ttft: dict = {k: [] for k in runners}
    latency: dict = {k: [] for k in runners}
    for i in range(rounds):
        log(f"{model}: round {i + 1}/{rounds}")
        for key, r in runners.items():
            ttft[key].append(_timed(r.generate, ids, 1)[1])
            time.sleep(pause_s)
            out, seconds = _timed(r.generate, ids, new_tokens)
            latency[key].append(seconds)
            time.sleep(pause_s)
            if out != first[key]:
                raise AssertionError(f"{key[0]} {key[1]} changed its greedy tokens between calls")

    rows = []
    for key, r in runners.items():
        acc = (None, None)
        if chat:
            log(f"{model}: question set on {key[0]} {key[1]}")
            acc = question_accuracy(r, tok)
        t, lat = statistics.median(ttft[key]), statistics.median(latency[key])
        tpot = (lat - t) / (new_tokens - 1) if lat > t else float("nan")  # NaN: too few tokens to see the decode
        # each round's decode speed: its n-token call less the median prefill (one round's own one-token call is
        # too short to subtract alone on a busy machine)
        per_round = [(new_tokens - 1) / (b - t) if b > t else float("nan") for b in latency[key]]
        finite = [x for x in per_round if x == x] or [float("nan")]  # NaN: a round faster than the median prefill
        rows.append({
            "model": model, "engine": key[0], "precision": key[1], "bits": r.bits, "label": r.label,
            "engine_version": r.version, "threads": threads, "batch": 1, "prompt_len": prompt_len,
            "new_tokens": new_tokens, "rounds": rounds,
            "ttft_s": t, "ttft_min_s": min(ttft[key]), "ttft_max_s": max(ttft[key]),
            "latency_s": lat, "tpot_s": tpot, "decode_tok_s": 1 / tpot,
            "decode_tok_s_min": min(finite), "decode_tok_s_max": max(finite),
            "decode_tok_s_rounds": ";".join(f"{x:.3f}" for x in per_round),
            "weight_bytes_per_token": r.read_bytes, "implied_GB_s": r.read_bytes / tpot / 1e9,
            "read_bandwidth_GB_s": bandwidth / 1e9, "mbu": r.read_bytes / tpot / bandwidth,
            "peak_mem_added_bytes": memory[key][0], "mem_held_bytes": memory[key][1],
            "tokens_match_hf": first[key] == reference, "token_agreement": token_agreement(first[key], reference),
            "task_correct": acc[0], "task_total": acc[1],
            "task_accuracy": None if acc[0] is None else acc[0] / acc[1],
            "vector_path": r.vector_path, "cpu_isa": cpu_vector_isa(), "notes": r.notes,
        })
    for r in runners.values():
        r.close()
    runners.clear()
    gc.collect()
    return rows


def run(models=MODELS, entries=ENTRIES, rounds: int = 5, warmup: int = 1, prompt_len: int = 32,
        new_tokens: int = 64, threads: int | None = None, questions: bool = True, progress: bool = True):
    """The whole comparison: :func:`run_model` for each model, one tidy DataFrame with the machine in every row
    (:func:`secbook.measure.results_frame`). The read bandwidth is measured once, first, for all models."""
    from .. import roofline
    from ..measure import results_frame

    bandwidth = roofline.measure_machine().bandwidth
    rows = []
    for model in models:
        rows += run_model(model, entries, rounds=rounds, warmup=warmup, prompt_len=prompt_len, new_tokens=new_tokens,
                          threads=threads, questions=questions, bandwidth=bandwidth, progress=progress)
    return results_frame(rows)


def prepare(models=MODELS, entries=ENTRIES, progress: bool = True) -> None:
    """Convert every model for every installed engine now (each conversion once, cached), timing nothing."""
    from . import formats

    log = (lambda s: print(f"[engines] {s}", flush=True)) if progress else (lambda s: None)
    for model in models:
        for engine, precision in _available(list(entries), log):
            if engine == "llama.cpp":
                formats.gguf_file(model, precision)
            elif engine == "CTranslate2":
                formats.ct2_dir(model, precision)
            elif engine == "ONNX Runtime GenAI":
                formats.ort_dir(model, precision)


def table(df):
    """The human view of a results frame: one row per model and entry, sorted by decode speed within a model."""
    view = df.copy()
    view["entry"] = view["engine"] + " " + view["precision"]
    view["decode tok/s"] = view["decode_tok_s"].round(1)
    view["spread"] = [f"{a:.1f}-{b:.1f}" for a, b in zip(view["decode_tok_s_min"], view["decode_tok_s_max"])]
    view["TTFT ms"] = (view["ttft_s"] * 1e3).round(1)
    view["MB/token"] = (view["weight_bytes_per_token"] / 1e6).round(1)
    view["GB/s"] = view["implied_GB_s"].round(1)
    view["MBU %"] = (view["mbu"] * 100).round(1)
    view["+memory MB"] = (view["peak_mem_added_bytes"] / 1e6).round(0)
    view["= HF tokens"] = view["tokens_match_hf"]
    view["agreement"] = view["token_agreement"].round(3)
    cols = ["model", "entry", "decode tok/s", "spread", "TTFT ms", "MB/token", "GB/s", "MBU %", "+memory MB",
            "= HF tokens", "agreement"]
    if "task_accuracy" in view and view["task_accuracy"].notna().any():
        view["questions"] = [("" if c != c or c is None else f"{int(c)}/{int(t)}")
                             for c, t in zip(view["task_correct"], view["task_total"])]
        cols.append("questions")
    view = view.sort_values(["model", "decode_tok_s"], ascending=[True, False])
    return view[cols].reset_index(drop=True)

"""The optimization ladder: the same model decoded by HF ``generate`` and by every rung of our own loops.

Each :class:`Rung` is a weight transform (:func:`apply_transform`: bf16, int8 and int4 weight-only, our C++ int8
kernel, torch.ao dynamic int8), a loop (HF ``generate``, HF with a static cache + compile, our static-cache loop
of :mod:`secbook.generate` with or without fused projections and ``torch.compile``, the whole-step C++ decoder,
speculative decoding with a draft model or prompt lookup) and its options. :func:`run_generate_suite` measures
every rung side by side (``python -m secbook bench --suite generate``): tokens/s, speed-up over HF ``generate``,
token agreement with it, memory-bandwidth utilisation, compile time, and the tiny model's perplexity change
under the same transform; :func:`save_ladder`, :func:`plot_ladder` and :func:`ladder_summary` keep, draw and
summarise the rows. :func:`interleaved_tok_s` compares close variants round by round, :func:`gemv_layouts` and
:func:`int8_gemv_rates` time the matrix-vector products underneath. Chapter 3.2 shows the results.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .generate import FastGenerator, hf_generate
from .linears import FusedLinear, Int8WeightOnlyFused


def gemv_layouts(out_features: int = 16384, in_features: int = 1024, repeats: int = 20,
                 dtype: torch.dtype = torch.float32) -> dict:
    """Batch-1 matrix-vector product over the same weights stored two ways: ``nn.Linear``'s ``[out, in]``
    (``F.linear(x, W)``) and transposed ``[in, out]`` (``x @ W_t``, what :class:`FusedLinear` keeps).

    The default matrix (64 MiB in fp32) is larger than a server CPU's last-level cache, so the weights stream
    from memory as they do in decoding. Returns the median seconds and weight GB/s of each layout and their
    ratio; the two results are checked to agree.
    """
    from .hardware import median_seconds

    if out_features < 1 or in_features < 1 or repeats < 1:
        raise ValueError("out_features, in_features and repeats must be >= 1")
    w = torch.randn(out_features, in_features, dtype=dtype)
    w_t = w.t().contiguous()
    x = torch.randn(1, in_features, dtype=dtype)
    torch.testing.assert_close(x @ w_t, F.linear(x, w), rtol=1e-3, atol=1e-3)
    out = {}
    for name, fn in (("[out, in]  F.linear(x, W)", lambda: F.linear(x, w)), ("[in, out]  x @ W_t", lambda: x @ w_t)):
        med = median_seconds(fn, warmup=3, repeats=repeats)
        out[name] = {"seconds": med, "GB/s": w.numel() * w.element_size() / med / 1e9}
    a, b = out.values()
    return {"layouts": out, "speedup_transposed": a["seconds"] / b["seconds"],
            "matrix_MiB": w.numel() * w.element_size() / 2**20}




def int8_gemv_rates(rows: int = 8192, in_features: int = 576, n_weights: int = 16, repeats: int = 5,
                    compiled: bool = True) -> dict:
    """Is the int8 weight-only product limited by memory or by arithmetic? Time it, as compiled for decoding
    (:class:`Int8WeightOnlyFused`), over ONE ``[rows, in_features]`` int8 matrix again and again (it stays in
    the CPU's cache) and over ``n_weights`` different ones in turn (together larger than the cache, so they
    stream from memory); the same for fp32 ``x @ W_t`` (:class:`FusedLinear`) and, where it builds, our C++
    int8 kernel (:class:`secbook.kernels.Int8Linear`). Returns weight GB/s per (kind, source). A memory-bound
    product is much faster from cache; a compute-bound one is not. ``compiled=False`` leaves out the compiled
    product (``torch.compile`` takes tens of seconds on a small CPU).
    """
    from . import kernels
    from .hardware import median_seconds
    from .quantize import QuantLinear

    if min(rows, in_features, n_weights, repeats) < 1:
        raise ValueError("rows, in_features, n_weights and repeats must be >= 1")
    lin = torch.nn.Linear(in_features, rows, bias=False)
    q = QuantLinear.from_linear(lin, 8, None)
    int8 = Int8WeightOnlyFused([q])
    fp32 = FusedLinear([lin])
    layers = {"int8 weight-only (compiled)": (int8, "weight", torch.compile(int8))} if compiled else {}
    layers["fp32 x @ W_t"] = (fp32, "weight_t", fp32)  # (layer, its weight's attribute, what to call)
    if kernels.available():
        k = kernels.Int8Linear.from_quant_linear(q)
        layers["int8 C++ kernel"] = (k, "weight", k)
    x = torch.randn(1, 1, in_features)
    out = {}
    for kind, (layer, name, step) in layers.items():
        w0 = getattr(layer, name)
        many = [w0.clone() for _ in range(n_weights)]
        for source, ws in (("from cache (one matrix)", [w0] * n_weights), ("from memory (many)", many)):
            def one_round(ws=ws):
                for w in ws:
                    setattr(layer, name, w)
                    step(x)

            seconds = median_seconds(one_round, warmup=1, repeats=repeats) / len(ws)  # the warm-up compiles
            out[(kind, source)] = w0.numel() * w0.element_size() / seconds / 1e9
        setattr(layer, name, w0)
    if compiled:
        torch._dynamo.reset()
    return out


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: a weight transform, a loop (``hf``, ``hf_static``, ``ours``, ``cpp`` for our loop
    with the whole step in C++, ``spec`` with the draft model, ``lookup`` for prompt lookup), compile, whether our
    loop fuses its projections (``fuse=False``: it calls the model's modules one by one), and the draft length
    ``gamma``, draft model (``draft_for``), draft loop (``"ours"``, or ``"cpp"``: int8 on the whole-step C++
    decoder) and target loop (``"ours"`` or ``"cpp"``: the target's own weights on the C++ decoder) of the
    speculative loops."""
    name: str
    transform: str = "none"
    loop: str = "ours"
    compile: bool = False
    tiny_only: bool = False
    fuse: bool = True
    gamma: int = 4
    draft: str = "student"
    draft_loop: str = "ours"
    target_loop: str = "ours"

    @property
    def cpu_only(self) -> bool:
        """Whether the rung needs the CPU: our C++ int8 kernel or C++ step, or torch.ao's dynamic int8 (whose
        quantized kernels exist for the CPU only). Skipped on a GPU."""
        return self.transform in ("int8k", "dyn8") or "cpp" in (self.loop, self.draft_loop, self.target_loop)


LADDER = (  # cheap and essential rungs first: results are saved after every rung
    Rung("HF generate fp32 (baseline)", "none", "hf"),
    Rung("our loop fp32, module calls", "none", "ours", fuse=False),
    Rung("our loop fp32, fused weights", "none", "ours"),
    Rung("our loop fp32 + compile", "none", "ours", True),
    Rung("speculative, student draft, gamma=1", "none", "spec", tiny_only=True, gamma=1),
    Rung("speculative, student draft, gamma=4", "none", "spec", tiny_only=True, gamma=4),
    Rung("speculative, int8 self-draft, gamma=4", "none", "spec", gamma=4, draft="int8-self"),
    Rung("prompt lookup, gamma=4", "none", "lookup", gamma=4),
    Rung("speculative, int8 student on the C++ step, gamma=2", "none", "spec", tiny_only=True, gamma=2,
         draft_loop="cpp"),
    Rung("speculative, int8 self-draft on the C++ step, gamma=8", "none", "spec", gamma=8, draft="int8-self",
         draft_loop="cpp"),
    Rung("fp32, whole decode step in C++", "none", "cpp"),
    Rung("speculative, all on the C++ step: fp32 target, int8 self-draft, gamma=8", "none", "spec", gamma=8,
         draft="int8-self", draft_loop="cpp", target_loop="cpp"),
    Rung("our loop bf16", "bf16", "ours"),
    Rung("our loop bf16 + compile", "bf16", "ours", True),
    Rung("our loop dynamic int8 (torch.ao)", "dyn8", "ours"),
    Rung("our loop dynamic int8 + compile", "dyn8", "ours", True),
    Rung("our loop int8 weight-only + compile", "int8wo", "ours", True),
    Rung("our loop int8 weight-only", "int8wo", "ours"),
    Rung("our loop int8, C++ kernel + compile", "int8k", "ours", True),
    Rung("our loop int8, C++ kernel", "int8k", "ours"),
    Rung("int8, whole decode step in C++", "int8k", "cpp"),
    Rung("HF generate fp32 static cache + compile", "none", "hf_static", True),
    Rung("our loop int4 weight-only + compile", "int4wo", "ours", True),
)
TRANSFORMS = ("none", "bf16", "int8wo", "int8k", "int4wo", "dyn8")
AB_VARIANTS = TRANSFORMS + ("int8k-cpp",)  # what interleaved_tok_s compares: a transform, or int8k on the C++ step
LADDER_QUESTION = "Explain how a bicycle works, step by step."  # the chat model's ladder prompt


def ladder_prompt(tokenizer, prompt_len: int = 32) -> tuple[torch.Tensor, str]:
    """The ladder's fixed prompt ``[1, T]`` and a line saying what it is. A chat model (its tokenizer has a chat
    template) gets one user turn asking :data:`LADDER_QUESTION`, ready for the reply (``prompt_len`` does not
    apply); any other model the first ``prompt_len`` tokens of the held-out text.

    Every rung generates exactly the requested number of tokens: HF ``generate`` is told
    ``min_new_tokens=max_new_tokens`` (it masks the end-of-sequence token) and our loops never stop early. The
    question asks for a reply longer than a ladder run (64 tokens), so the chat model's greedy reply never reaches
    its end-of-sequence token there: our lossless loops, which do not mask it, still give HF's exact tokens."""
    if getattr(tokenizer, "chat_template", None):
        from .speculative import task_ids

        ids = task_ids(tokenizer, LADDER_QUESTION)
        return ids, f"chat turn {LADDER_QUESTION!r} ({ids.shape[-1]} tokens)"
    from .measure import prompt_ids

    return prompt_ids(tokenizer, prompt_len), f"held-out text ({prompt_len} tokens)"


def own_loop(rung: Rung, rungs=LADDER) -> str | None:
    """For a speculative rung, the name of the rung that runs the same target loop without speculation (our
    fused fp32 loop, or the fp32 C++ step with ``target_loop="cpp"``): speculation's own gain is its speed ÷
    that rung's, apart from whatever the faster loop underneath brings. None for every other rung."""
    if rung.loop not in ("spec", "lookup"):
        return None
    loop = "cpp" if rung.target_loop == "cpp" else "ours"
    for r in rungs:
        if r.loop == loop and r.transform == rung.transform and not r.compile and r.fuse:
            return r.name
    return None


def with_own_loop_speedup(df, rungs=LADDER):
    """``df`` with ``own_loop`` and ``speedup_vs_own_loop`` filled in for its speculative rows: the rung's tokens/s
    ÷ the tokens/s of its :func:`own_loop` measured in the same run (same model and ``timestamp``). Values already
    there are kept; a row whose own loop was not measured in its run stays empty."""
    import pandas as pd

    df = df.copy()
    by_name = {r.name: r for r in rungs}
    if "own_loop" not in df:
        df["own_loop"] = None
    df["own_loop"] = df["own_loop"].astype(object)
    missing = df["own_loop"].isna()
    df.loc[missing, "own_loop"] = [own_loop(by_name[n], rungs) if n in by_name else None
                                   for n in df.loc[missing, "rung"]]
    if "speedup_vs_own_loop" not in df:
        df["speedup_vs_own_loop"] = float("nan")
    run = ["model", "timestamp"] if "timestamp" in df else ["model"]
    for i in df.index[df["own_loop"].notna() & df["speedup_vs_own_loop"].isna()]:
        same = (df[run] == df.loc[i, run]).all(axis=1) & (df["rung"] == df.loc[i, "own_loop"])
        base = pd.to_numeric(df.loc[same, "tok_s"], errors="coerce").dropna()
        if len(base):
            df.loc[i, "speedup_vs_own_loop"] = float(df.loc[i, "tok_s"]) / float(base.iloc[0])
    return df


def apply_transform(model, transform: str):
    """The model with its weights transformed: ``bf16`` cast, weight-only ``QuantLinear`` (``secbook.quantize``,
    RTN): ``int8wo`` int8 with a scale per output row, LM head included (our decoder runs it as
    :class:`Int8WeightOnlyFused`), ``int8k`` the same int8 weights on our C++ kernel (``secbook.kernels``:
    activations rounded to int16 per 256 inputs), ``int4wo`` int4 in groups of 32, LM head kept; or torch.ao
    dynamic int8 (``dyn8``: int8 weights with a scale per output row, activations quantized per call)."""
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; choose from {TRANSFORMS}")
    if transform == "none":
        return model
    if transform == "bf16":
        return model.to(torch.bfloat16)
    if transform in ("int8wo", "int8k", "int4wo"):
        from .quantize import quantize

        if transform == "int8wo":  # one scale per output row, LM head included: what our decoder fuses
            return quantize(model, bits=8, group_size=None, skip=())[0]
        if transform == "int8k":  # the same int8 weights, multiplied by our C++ kernel (secbook.kernels)
            from .kernels import use_int8_kernel

            return use_int8_kernel(quantize(model, bits=8, group_size=None, skip=())[0])
        return quantize(model, bits=4, group_size=32)[0]  # 32 divides 576 (SmolLM2) and 256
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        from .quantize import linearize  # GPT-2's Conv1D layers as nn.Linear, which torch.ao quantizes

        return quantize_dynamic(linearize(model), {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def draft_for(target, name: str = "student", loop: str = "ours"):
    """The draft model for speculative decoding, returned with a label saying which: ``"int8-self"`` is the
    target's own int8 copy (nearly always right, and cheaper where reading weights dominates); otherwise
    ``data/models/<name>`` if it exists, else a copy of the target truncated to its first two layers. With
    ``loop="cpp"`` the draft's weights are our int8 ``Int8Linear`` (``"int8k"``), ready for the whole-step C++
    decoder; otherwise the int8 self-draft is torch.ao's dynamic int8 on the CPU, our int8 weight-only layers
    (``"int8wo"``) on a GPU, and a student stays fp32."""
    import copy

    from .models import load, local_models

    if loop not in ("ours", "cpp"):
        raise ValueError(f"draft loop must be 'ours' or 'cpp', got {loop!r}")
    if name == "int8-self":
        if loop == "cpp":
            return apply_transform(copy.deepcopy(target), "int8k"), "the target's own int8 copy, C++ step"
        if next(target.parameters()).device.type != "cpu":  # torch.ao's dynamic int8 has CPU kernels only
            return apply_transform(copy.deepcopy(target), "int8wo"), "the target's own int8 weight-only copy"
        return apply_transform(copy.deepcopy(target), "dyn8"), "the target's own dynamic-int8 copy"
    if name in local_models():
        d, label = load(name)[0], name
    else:
        d, label = copy.deepcopy(target), "target truncated to 2 layers (no student yet)"
        d.model.layers = d.model.layers[:2]
        d.config.num_hidden_layers = 2
    if loop == "cpp":
        return apply_transform(d, "int8k"), f"{label}, int8 on the C++ step"
    return d, label


def tiny_perplexity_change(transform: str, max_tokens: int = 4096, _cache: dict = {}) -> float:
    """Relative held-out perplexity change of the tiny model under ``transform`` (0.01 = +1%)."""
    if transform not in _cache:
        from .corpus import heldout_text
        from .measure import perplexity
        from .models import load

        model, tok = load("tiny")
        text = heldout_text(max_chars=max_tokens * 8)
        base = perplexity(model, tok, text, max_tokens=max_tokens)
        ppl = perplexity(apply_transform(model, transform), tok, text, max_tokens=max_tokens)
        _cache[transform] = ppl / base - 1
    return _cache[transform]


def _generate_fn(rung: Rung, model, max_len: int):
    if rung.loop == "hf":
        return lambda ids, n: hf_generate(model, ids, n)
    if rung.loop == "hf_static":
        from transformers import CompileConfig

        cc = CompileConfig()
        cc._compile_all_devices = True  # transformers auto-compiles only on accelerators unless told to
        return lambda ids, n: hf_generate(model, ids, n, cache_implementation="static", compile_config=cc)
    if rung.loop in ("spec", "lookup"):
        from .speculative import SpeculativeDecoder

        draft, label = draft_for(model, rung.draft, rung.draft_loop) if rung.loop == "spec" else ("lookup", "")
        spec = SpeculativeDecoder(model, draft, gamma=rung.gamma, max_len=max_len, cpp_draft=rung.draft_loop == "cpp",
                                  cpp_target=rung.target_loop == "cpp")

        def run(ids, n):
            res = spec.generate(ids, n)
            run.info.update(acceptance_rate=res.acceptance_rate, tokens_per_call=res.tokens_per_call,
                            judged=res.judged, accepted=res.accepted)
            return res.ids

        run.info = {"note": label}
        return run
    gen = FastGenerator(model, max_len=max_len, compile=rung.compile, fuse=rung.fuse, cpp=rung.loop == "cpp")
    return gen.generate


def run_generate_suite(args, rungs=LADDER, save: bool = True):
    """The optimization ladder for ``args.model``: one row per rung (tokens/s, speed-up over HF generate,
    token agreement with it, MBU, compile time, tiny-model perplexity change of the same technique). The read
    bandwidth is measured after every rung; MBU divides each rung's weight bytes per second by the highest of
    those measurements (the machine's ceiling in this run, so a momentary dip never flatters a rung).

    ``args`` has ``model``, ``prompt_len``, ``new_tokens``, ``repeats`` (``device`` optional). Rows are merged
    into ``data/results/generate_ladder.csv`` (rows of the same model replaced) when ``save`` — or, measured on
    a GPU, into ``generate_ladder_cuda.csv``, so a GPU's rows never mix with the CPU's. The model is built once
    and each rung transforms its own copy (a 1B replica takes seconds to build).
    """
    import copy
    import gc

    from .hardware import pick_device, read_bandwidth
    from .measure import decode_read_bytes, model_bytes, time_generation, token_agreement
    from .models import load

    device = getattr(args, "device", "cpu") or "cpu"
    if getattr(args, "threads", None):
        torch.set_num_threads(int(args.threads))
    only = getattr(args, "rungs", None)
    if only:  # a partial re-run still measures the baseline beside it (and a speculative rung its own loop)
        own = {own_loop(r, rungs) for r in rungs if r.name in only}
        rungs = [rungs[0]] + [r for r in rungs[1:] if r.name in only or r.name in own]
    rows, reference = [], None
    kind = pick_device(device).type
    on_cpu = kind == "cpu"
    ladder_name = "generate_ladder" if on_cpu else f"generate_ladder_{kind}"
    base, tok = load(args.model, device=device)
    ids, prompt = ladder_prompt(tok, args.prompt_len)
    prompt_len = ids.shape[-1]
    max_len = prompt_len + args.new_tokens
    print(f"{args.model:>24} | prompt: {prompt}, {args.new_tokens} new tokens", flush=True)
    for rung in rungs:
        if rung.tiny_only and args.model != "tiny":
            continue
        if rung.cpu_only and not on_cpu:
            print(f"{args.model:>24} | {rung.name:<42} skipped: CPU only (our C++ kernel or step, torch.ao int8)",
                  flush=True)
            continue
        model = copy.deepcopy(base)
        fn, last = None, {}
        try:
            model = apply_transform(model, rung.transform)
            fn = _generate_fn(rung, model, max_len)

            def timed(x, n, fn=fn, last=last):
                out = fn(x, n)
                if n == args.new_tokens:
                    last["ids"] = out
                return out

            t = time_generation(model, tok, new_tokens=args.new_tokens, repeats=args.repeats, generate_fn=timed,
                                input_ids=ids)
        except Exception as e:  # one failing rung (e.g. a compiler error) must not lose the others
            print(f"{args.model:>24} | {rung.name:<42} FAILED: {e.__class__.__name__}: {str(e)[:200]}", flush=True)
            rows.append({"model": args.model, "rung": rung.name, "transform": rung.transform, "loop": rung.loop,
                         "compiled": rung.compile, "prompt": prompt,
                         "note": f"failed: {e.__class__.__name__}: {str(e)[:200]}"})
            continue
        new = last["ids"][:, prompt_len:]
        reference = new if reference is None else reference
        nbytes, read = model_bytes(model), decode_read_bytes(model)
        # read bandwidth measured after every rung: on a shared machine it moves (28-56 GB/s within one run
        # here); MBU divides by the highest value the run saw (_frame), the machine's ceiling, never a dip
        bandwidth = read_bandwidth(device)
        rows.append({"model": args.model, "rung": rung.name, "transform": rung.transform, "loop": rung.loop,
                     "compiled": rung.compile, "tok_s": t.tokens_per_s, "tpot_s": t.tpot_s, "ttft_s": t.ttft_s,
                     "first_call_s": t.first_call_s, "weight_bytes": nbytes,
                     "read_bytes_per_token": read, "achieved_GBs": read / t.tpot_s / 1e9,
                     "bandwidth_GBs": bandwidth / 1e9,
                     "token_agreement": token_agreement(reference, new),
                     "tiny_ppl_change": tiny_perplexity_change(rung.transform),
                     "threads": torch.get_num_threads(), "prompt_len": prompt_len, "prompt": prompt,
                     "new_tokens": args.new_tokens, "repeats": args.repeats, "own_loop": own_loop(rung),
                     "note": "", **getattr(fn, "info", {})})
        if "tokens_per_call" in rows[-1]:  # speculation: the target reads its weights once per call, not per token
            rows[-1]["achieved_GBs"] /= rows[-1]["tokens_per_call"]
        print(f"{args.model:>24} | {rung.name:<42} {t.tokens_per_s:7.1f} tok/s  agree "
              f"{rows[-1]['token_agreement']:.3f}", flush=True)
        del model, fn
        if rung.compile:  # dynamo's cache keeps the compiled step and with it this rung's model alive
            torch._dynamo.reset()
        gc.collect()
        df = _frame(rows)
        if only:  # keep the full run's baseline row; this one belongs to the partial re-run
            df.loc[0, "rung"] = f"{rungs[0].name[:-1]}, re-measured beside {', '.join(only)})"
        if save:  # after every rung, so a long run that is stopped keeps what it measured
            save_ladder(df, ladder_name, whole_model=not only)
    return _frame(rows)


def interleaved_tok_s(model_name: str, transforms=("int8wo", "int8k"), rounds: int = 7, prompt_len: int = 32,
                      new_tokens: int = 64, compile: bool = True, device: str = "cpu"):
    """Decode speed of our loop under several weight ``transforms`` of one model, measured *in turn*: each round
    runs every transform once, so a change in a shared machine's load hits all of them alike (the ladder runs
    its rungs minutes apart, and two close rungs can swap places between runs). One row per transform: median
    tok/s over the rounds (new tokens ÷ the whole ``generate`` call, prompt included), ``ratio`` = the median over
    rounds of its tok/s ÷ the first transform's in the same round, and token agreement with the first transform's
    output. ``transforms`` come from :data:`AB_VARIANTS`: ``"int8k-cpp"`` is the ``int8k`` weights run by the
    whole-step C++ decoder (:class:`secbook.kernels.CppDecoder`, never compiled by torch.compile). The prompt is the
    ladder's (:func:`ladder_prompt`: a chat turn for a chat model, else ``prompt_len`` tokens of held-out text)."""
    from tqdm.auto import tqdm

    from .measure import results_frame, tok_s_in_turn, token_agreement
    from .models import load

    if rounds < 1 or not transforms:
        raise ValueError("need rounds >= 1 and at least one transform")
    _, tok = load(model_name, device=device)
    ids = ladder_prompt(tok, prompt_len)[0]
    prompt_len = ids.shape[-1]
    gens, outs = {}, {}
    for t in tqdm(transforms, desc="build + compile", leave=False):
        cpp = t == "int8k-cpp"
        model = apply_transform(load(model_name, device=device)[0], "int8k" if cpp else t)
        gens[t] = FastGenerator(model, max_len=prompt_len + new_tokens, compile=compile and not cpp, cpp=cpp)
        outs[t] = gens[t].generate(ids, new_tokens)[:, prompt_len:]  # also the warm-up (compiles)
    speed = tok_s_in_turn({t: g.generate for t, g in gens.items()}, ids, new_tokens, rounds=rounds, warmup=0)
    first = transforms[0]
    rows = [{"model": model_name, "transform": t, "compiled": gens[t].compiled,
             "tok_s": float(np.median(speed[t])),
             "ratio": float(np.median(np.array(speed[t]) / np.array(speed[first]))),
             "token_agreement": token_agreement(outs[first], outs[t]), "rounds": rounds,
             "prompt_len": prompt_len, "new_tokens": new_tokens, "threads": torch.get_num_threads()}
            for t in transforms]
    torch._dynamo.reset()
    return results_frame(rows)


def _frame(rows):
    from .measure import results_frame

    df = results_frame(rows)
    df["speedup"] = df["tok_s"] / df["tok_s"].iloc[0]
    df = with_own_loop_speedup(df)
    if "achieved_GBs" in df:  # weight bytes read per second ÷ the best read bandwidth measured in this run
        df["bandwidth_max_GBs"] = df["bandwidth_GBs"].astype(float).max()
        df["mbu"] = df["achieved_GBs"].astype(float) / df["bandwidth_max_GBs"]
    return df


def save_ladder(df, name: str = "generate_ladder", whole_model: bool = False, key=("model", "rung")):
    """Merge ``df`` into ``data/results/<name>.csv``: rows with the same ``key`` (model, rung) are replaced — or,
    with ``whole_model`` (a full run), every earlier row of the same model. Each row's speed-up is against the
    baseline measured in its own run (``timestamp`` tells the runs apart)."""
    import pandas as pd

    from .measure import load_results, save_results

    try:
        old = load_results(name)
        if whole_model:
            old = old[~old["model"].isin(set(df["model"]))]
        new_keys = set(zip(*(df[k] for k in key)))
        old = old[[k not in new_keys for k in zip(*(old[k] for k in key))]]
        df = pd.concat([old, df], ignore_index=True)
    except (FileNotFoundError, OSError, KeyError):
        pass
    if {"rung", "tok_s"} <= set(df.columns):
        df = with_own_loop_speedup(df)
    return save_results(df, name)


GPU_QUICK_RUNGS = ("our loop fp32 + compile", "our loop bf16 + compile")  # chapter 3.2's GPU cell: a few minutes


def _kind(row) -> str:
    """Which of four colours a ladder bar gets: the HF baseline, a lossless rung of ours (fp32 weights, every
    token equal to the baseline's), speculation (lossless too: the target checks every token), or a rung that
    changes the weights (bf16, int8, int4)."""
    loop, transform = row.get("loop", ""), row.get("transform", "none")
    if loop in ("hf", "hf_static") or "baseline" in str(row.get("rung", "")):
        return "HF generate"
    if loop in ("spec", "lookup"):
        return "speculation (same tokens)"
    if transform == "none":
        return "our loops, fp32 (same tokens)"
    return "other weights (bf16, int8, int4)"


KIND_COLOURS = {"HF generate": "grey", "our loops, fp32 (same tokens)": "tab:blue",
                "speculation (same tokens)": "tab:green", "other weights (bf16, int8, int4)": "tab:orange"}


def plot_ladder(ladder, title: str | None = None, models=None, width: float = 9.0):
    """The optimization ladder as horizontal bars, one panel per model stacked top to bottom, rungs sorted by
    speed (fastest on top): the speed-up of each rung over the model's HF ``generate`` baseline on a log axis,
    coloured by kind (:data:`KIND_COLOURS`), each bar labelled with that speed-up, its decode tokens/s and its
    token agreement (a speculative rung also with its speed-up over its own loop without speculation).
    ``models`` picks and orders the panels (default: every model in the rows); ``width`` is the figure's width in
    inches (long rung names are wrapped), so that the labels stay readable when the figure is shown at page
    width. ``title`` defaults to the date and the machine the rows were recorded on (its GPU if it had one).
    Returns the figure."""
    import textwrap

    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    from matplotlib.patches import Patch

    d_all = with_own_loop_speedup(ladder.dropna(subset=["tok_s"]))
    names = list(dict.fromkeys(d_all["model"])) if models is None else list(models)
    missing = [m for m in names if m not in set(d_all["model"])]
    if missing or not names:
        raise ValueError(f"no measured rows (tok_s) for {missing or 'any model'}; the rows have "
                         f"{sorted(set(d_all['model']))}")
    groups = [(m, d_all[d_all["model"] == m].sort_values("speedup", ascending=False)) for m in names]
    heights = [0.32 * len(d) + 0.7 for _, d in groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(width, sum(heights) + 0.6), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (name, d) in zip(axes[:, 0], groups):
        rungs = d["rung"].str.replace(r"\(baseline, re-measured beside .*\)", "(baseline, re-measured)", regex=True)
        y = np.arange(len(d))
        ax.barh(y, d["speedup"], color=[KIND_COLOURS[_kind(r)] for _, r in d.iterrows()], height=0.7)
        ax.set_yticks(y, [textwrap.fill(r, 38) for r in rungs], fontsize=8.5, linespacing=0.9)
        ax.set_xscale("log")
        lo, hi = min(d["speedup"].min(), 1.0) / 1.25, d["speedup"].max()
        ax.set_xlim(lo, lo * (hi / lo) ** (1 / 0.5))  # the longest bar ends half-way: room for its label
        for yy, r in zip(y, d.itertuples()):
            own = f", {r.speedup_vs_own_loop:.2f}x own loop" if pd.notna(r.speedup_vs_own_loop) else ""
            ax.text(r.speedup * 1.06, yy, f"{r.speedup:.2f}x · {r.tok_s:,.0f} tok/s · agree {r.token_agreement:.2f}"
                    f"{own}", va="center", fontsize=8.5)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=10, loc="left")
        ax.tick_params(axis="x", labelsize=8.5)
        ax.set_xlabel("decode speed-up over HF generate (log scale)", fontsize=8.5)
        present = [k for k in KIND_COLOURS if k in {_kind(r) for _, r in d.iterrows()}]
        ax.legend(handles=[Patch(color=KIND_COLOURS[k], label=k) for k in present], loc="lower right",
                  fontsize=8, frameon=False)
    if title is None:
        r = d_all[d_all["model"] == names[0]].iloc[0]
        gpu = str(r.get("gpu", "none"))
        when = f" {str(r['timestamp'])[:10]}" if "timestamp" in r and pd.notna(r["timestamp"]) else ""
        title = f"recorded{when} on " + (gpu if gpu.lower() not in ("none", "nan", "") else
                                         f"{r.get('cpu', '?')}, {r.get('cores', '?')} cores")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _cached_mb(row) -> float:
    """The MB one step of a ladder row reads (``read_bytes_per_token``), NaN where the row does not record it."""
    if "read_bytes_per_token" in row and row["read_bytes_per_token"] == row["read_bytes_per_token"]:
        return float(row["read_bytes_per_token"]) / 1e6
    return float("nan")


def _mbu_words(row, zh: bool = False) -> str:
    """MBU as the summary prints it. Above 100% the rung read its weights faster than the run's best memory
    bandwidth: they came from the CPU's caches (a model of a few MB), and MBU — a share of *memory* bandwidth —
    does not apply; the summary says so instead of printing a share above one. ``zh``: in Chinese."""
    mbu = float(row["mbu"])
    if mbu > 1:
        mb = _cached_mb(row)
        if zh:
            size = f"它的 {mb:.0f} MB 权重" if mb == mb else "它的权重"
            return f"读取速度超过了这次运行的最佳内存带宽：{size}来自 CPU 的缓存，因此 MBU 不适用"
        size = f"its {mb:.0f} MB of weights" if mb == mb else "its weights"
        return (f"read faster than the run's best memory bandwidth: {size} came from the CPU's caches, so MBU "
                "does not apply")
    return f"MBU {mbu:.1%}"


def ladder_summary(ladder) -> str:
    """The ladder's verdict per model, computed from its rows: HF ``generate``'s tokens/s, the best lossless
    loop of ours (fp32 weights, every token equal to the baseline's), the best rung within a 1% tiny-model
    perplexity budget, each with speed-up and MBU (:func:`_mbu_words`: not a share above 100%), and the
    speculative rungs with their speed-up over HF ``generate`` and over their own loop without speculation. A
    speculative row's acceptance rate is printed only where the row records the drafts the target judged
    (``judged``): α = accepted ÷ judged drafts (:func:`secbook.speculative.acceptance_rate`), which a row
    without that count cannot be checked to follow."""
    return _ladder_summary(ladder, zh=False)


def ladder_summary_zh(ladder) -> str:
    """:func:`ladder_summary` in Chinese, from the same rows and with the same numbers (for the Chinese sentence
    of ``secbook.claims.say(..., zh=...)``); rung names stay as recorded."""
    return _ladder_summary(ladder, zh=True)


def _ladder_summary(ladder, zh: bool) -> str:
    import pandas as pd

    lines = []
    for name, d in with_own_loop_speedup(ladder.dropna(subset=["tok_s"])).groupby("model", sort=False):
        ours = d["loop"].isin(["ours", "cpp"])
        lossless = d[(d["token_agreement"] == 1.0) & (d["transform"] == "none") & ours]
        budget = d[(d["tiny_ppl_change"].abs() <= 0.01) & ours]
        lines.append(f"{name}：HF generate {d['tok_s'].iloc[0]:.1f} 词元/秒" if zh else
                     f"{name}: HF generate {d['tok_s'].iloc[0]:.1f} tok/s")
        if len(lossless):
            a = lossless.loc[lossless["speedup"].idxmax()]
            lines.append(f"  最快的无损循环：{a['rung']} {a['speedup']:.2f} 倍（{_mbu_words(a, zh)}）" if zh else
                         f"  best lossless loop: {a['rung']} {a['speedup']:.2f}x ({_mbu_words(a)})")
        if len(budget):
            b = budget.loc[budget["speedup"].idxmax()]
            if zh:
                bw = f"，以 {b['bandwidth_max_GBs']:.1f} GB/s 为基准" if float(b["mbu"]) <= 1 else ""
                lines.append(f"  困惑度变化在 1% 以内的最快梯级：{b['rung']} {b['speedup']:.2f} 倍（困惑度 "
                             f"{b['tiny_ppl_change']:+.2%}，词元一致率 {b['token_agreement']:.2f}，"
                             f"{_mbu_words(b, zh)}{bw}）")
            else:
                bw = f" of {b['bandwidth_max_GBs']:.1f} GB/s" if float(b["mbu"]) <= 1 else ""
                lines.append(f"  best within 1% ppl: {b['rung']} {b['speedup']:.2f}x (ppl {b['tiny_ppl_change']:+.2%}, "
                             f"agreement {b['token_agreement']:.2f}, {_mbu_words(b)}{bw})")
        for r in d[d["loop"].isin(["spec", "lookup"])].itertuples():
            own = pd.notna(r.speedup_vs_own_loop)
            judged = getattr(r, "judged", float("nan"))
            if zh:
                own = f"自身循环（{r.own_loop}）的 {r.speedup_vs_own_loop:.2f} 倍，" if own else ""
                alpha = f"，接受率 {r.acceptance_rate:.2f}" if pd.notna(judged) else ""
                lines.append(f"  {r.rung}：HF 的 {r.speedup:.2f} 倍，{own}词元一致率 {r.token_agreement:.2f}{alpha}")
            else:
                own = f"{r.speedup_vs_own_loop:.2f}x its own loop ({r.own_loop}), " if own else ""
                alpha = f", acceptance {r.acceptance_rate:.2f}" if pd.notna(judged) else ""
                lines.append(f"  {r.rung}: {r.speedup:.2f}x HF, {own}agreement {r.token_agreement:.2f}{alpha}")
    return "\n".join(lines)


def recorded_ratio(ladder, model: str, rung: str, baseline: str) -> tuple[float, dict]:
    """The speed of ``rung`` ÷ the speed of ``baseline`` in the recorded ladder of ``model``, both from one run
    (the rung's ``timestamp``), with a label of that run: ``{"machine": ..., "date": ...}``. Raises a
    ``ValueError`` naming the rungs recorded if either is missing."""
    d = ladder[ladder["model"] == model].dropna(subset=["tok_s"])
    row = d[d["rung"] == rung]
    if not len(row):
        raise ValueError(f"no recorded row {rung!r} for {model!r}; recorded: {sorted(d['rung'])}")
    row = row.iloc[0]
    same = d[d["timestamp"] == row["timestamp"]] if "timestamp" in d else d
    base = same[same["rung"] == baseline]
    if not len(base):
        raise ValueError(f"no recorded row {baseline!r} for {model!r} in the run of {row.get('timestamp')}")
    gpu = str(row.get("gpu", "none"))
    machine = gpu if gpu.lower() not in ("none", "nan", "") else f"{row.get('cpu', '?')}, {row.get('cores', '?')} cores"
    return float(row["tok_s"]) / float(base.iloc[0]["tok_s"]), {"machine": machine,
                                                                 "date": str(row.get("timestamp", "?"))[:10]}


def versus_record(ladder, model: str, rung: str, baseline: str, live, tolerance: float = 0.25,
                  max_spread: float = 1.5) -> str:
    """A sentence that sets a ratio measured now beside the recorded one: ``live`` is a
    :class:`secbook.claims.Comparison` of ``rung`` against ``baseline`` timed in turn on this machine, the record
    is :func:`recorded_ratio`. They agree when the recorded ratio lies within the live rounds' range widened by
    ``tolerance`` either way; otherwise the sentence says which way they differ. Rounds that scatter by more
    than ``max_spread`` (highest ÷ lowest ratio) can neither confirm nor contradict the record, and the sentence
    says that instead. A different machine, its load, and a different protocol (the ladder times decode steps; a
    comparison in turn usually whole calls, prompt included) all move the ratio, so disagreement is reported,
    not hidden."""
    from .claims import times

    r, label, verdict = _versus(ladder, model, rung, baseline, live, tolerance, max_spread)
    head = (f"The recorded ladder ({label['machine']}, {label['date']}) has {rung} at {times(r)} the speed of "
            f"{baseline}; this run measured {times(live.median)} ({times(live.low)}-{times(live.high)} over "
            f"{len(live.ratios)} rounds in turn)")
    return head + {"scatter": ": its rounds scatter too widely to confirm or contradict the record (the machine "
                              "was busy with other work; run it again on a quiet machine).",
                   "agree": ": the two agree.", "larger": ": a larger gain than recorded.",
                   "smaller": ": a smaller gain than recorded."}[verdict]


def versus_record_zh(ladder, model: str, rung: str, baseline: str, live, tolerance: float = 0.25,
                     max_spread: float = 1.5) -> str:
    """:func:`versus_record`'s sentence in Chinese, with the same numbers and the same verdict (for
    ``secbook.claims.say(..., zh=...)``)."""
    from .claims import times_zh

    r, label, verdict = _versus(ladder, model, rung, baseline, live, tolerance, max_spread)
    head = (f"记录下来的阶梯（{label['machine']}，{label['date']}）中，{rung} 的速度是 {baseline} 的 "
            f"{times_zh(r)}；本次运行测得 {times_zh(live.median)}（轮流测量 {len(live.ratios)} 轮，"
            f"{times_zh(live.low)}–{times_zh(live.high)}）")
    return head + {"scatter": "：各轮结果过于分散，既不能证实也不能否定这一记录（机器正忙于其他工作；请在空闲的"
                              "机器上再运行一次）。",
                   "agree": "：两者一致。", "larger": "：收益比记录的更大。", "smaller": "：收益比记录的更小。"}[verdict]


def _versus(ladder, model: str, rung: str, baseline: str, live, tolerance: float,
            max_spread: float) -> tuple[float, dict, str]:
    """The recorded ratio and its label (:func:`recorded_ratio`), and how the live rounds stand to it:
    ``"scatter"``, ``"agree"``, ``"larger"`` or ``"smaller"`` (:func:`versus_record`)."""
    r, label = recorded_ratio(ladder, model, rung, baseline)
    lo, hi = live.low / (1 + tolerance), live.high * (1 + tolerance)
    if live.high / live.low > max_spread:
        return r, label, "scatter"
    if lo <= r <= hi:
        return r, label, "agree"
    return r, label, "larger" if live.median > r else "smaller"

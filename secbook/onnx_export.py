"""Greedy decoding with ONNX Runtime: export a Llama-layout model *with past keys/values* and run it on CPU.

ONNX Runtime (named by the source as an inference tool) runs a static graph: no Python between operators,
graph optimisations such as operator fusion, and pluggable execution providers. To decode with a KV cache
the exported graph must take the cache as input and return the grown cache as output:

    (input_ids [1, T], past_keys [L, 1, kv_heads, P, D], past_values [...]) ->
    (logits [1, T, V], present_keys [L, 1, kv_heads, P + T, D], present_values [...])

with T (new tokens) and P (cached positions) dynamic, so one graph serves both the prefill (P = 0) and every
decode step (T = 1). The graph is built from the Hugging Face modules of the model (``q_proj``, ``mlp``,
``rotary_emb``...), attention written out as matmul + softmax, exported with ``torch.onnx.export``'s
dynamo exporter. ``secbook.toolkit.export_forward`` exports the cache-less forward; this is the decoding loop.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .generate import check_supported


class CachedLM(torch.nn.Module):
    """The decoder as a pure function of (ids, past K, past V) -> (logits, present K, present V)."""

    def __init__(self, model):
        super().__init__()
        check_supported(model)
        self.model = model
        cfg = model.config
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    def forward(self, input_ids, past_keys, past_values):
        m = self.model.model
        B, T = input_ids.shape
        P = past_keys.shape[3]
        x = m.embed_tokens(input_ids)
        pos = torch.arange(T, device=x.device) + P
        cos, sin = m.rotary_emb(x, pos[None])
        cos, sin = cos[:, None], sin[:, None]
        k_pos = torch.arange(P + T, device=x.device)
        mask = torch.where(k_pos[None, :] <= pos[:, None], 0.0, float("-inf")).to(x.dtype)
        rep = self.n_heads // self.n_kv
        keys, values = [], []
        for i, layer in enumerate(m.layers):
            a = layer.self_attn
            h = layer.input_layernorm(x)
            q = a.q_proj(h).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
            k = a.k_proj(h).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
            v = a.v_proj(h).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
            q = q * cos + torch.cat((-q[..., self.head_dim // 2:], q[..., :self.head_dim // 2]), -1) * sin
            k = k * cos + torch.cat((-k[..., self.head_dim // 2:], k[..., :self.head_dim // 2]), -1) * sin
            k = torch.cat([past_keys[i], k], dim=2)
            v = torch.cat([past_values[i], v], dim=2)
            keys.append(k)
            values.append(v)
            qg = q.reshape(B, self.n_kv, rep * T, self.head_dim)  # GQA: query heads sharing a KV head
            s = qg @ k.transpose(-1, -2) * a.scaling + mask.repeat(rep, 1)
            o = torch.softmax(s, dim=-1) @ v
            o = o.reshape(B, self.n_heads, T, self.head_dim).transpose(1, 2).reshape(B, T, -1)
            x = x + a.o_proj(o)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        logits = self.model.lm_head(m.norm(x))
        return logits, torch.stack(keys), torch.stack(values)

    def empty_cache(self, batch: int = 1, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        L = len(self.model.model.layers)
        z = torch.zeros(L, batch, self.n_kv, 0, self.head_dim, dtype=dtype)
        return z, z.clone()


def export_with_cache(model, path: str | Path | None = None) -> Path:
    """Export ``CachedLM(model)`` (fp32, CPU) with dynamic new-token and past lengths; return the path."""
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="secbook_onnx_kv_")) / "model_kv.onnx"
    path = Path(path)
    wrapped = CachedLM(model.float().cpu().eval()).eval()
    L = len(model.model.layers)
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
        self.layers, self.kv = cfg.num_hidden_layers, cfg.num_key_value_heads
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

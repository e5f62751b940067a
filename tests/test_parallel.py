"""Tensor parallelism: 2 gloo ranks started by torchrun give the single-process logits; bad world sizes fail."""
import pytest
import torch

from secbook import parallel as P


def test_two_rank_tensor_parallel_matches_one_process(tiny):
    model, tok = tiny
    if P.available_devices("gloo") < 2:
        pytest.skip("needs 2 CPU cores for 2 gloo ranks")
    r = P.launch(2, "tiny", new_tokens=4, timeout=150)
    ids = tok(P.PROMPT, return_tensors="pt", add_special_tokens=False).input_ids
    logits, tokens, _ = P.greedy(model, ids, 4)
    assert r["world"] == 2 and r["backend"] == "gloo"
    assert torch.allclose(r["logits"], logits, atol=1e-4, rtol=0)
    assert torch.equal(r["tokens"], tokens)
    assert r["allreduce_calls_per_token"] == 2 * model.config.num_hidden_layers
    # each rank holds half of every q/k/v/o and MLP matrix, full embeddings and norms
    assert r["gate_proj_shape_per_rank"] == (model.config.intermediate_size // 2, model.config.hidden_size)
    assert r["params_per_rank"] < sum(p.numel() for p in model.parameters())


def test_world_size_larger_than_devices_is_refused():
    n = P.available_devices("nccl" if torch.cuda.is_available() else "gloo")
    with pytest.raises(ValueError, match="available"):
        P.launch(n + 1)
    with pytest.raises(ValueError, match="mode"):
        P.launch(1, mode="pipeline")


def test_heads_must_divide_by_world_size(small_llama):
    model, _ = small_llama  # SmolLM2 shape: 9 heads, 3 KV heads
    with pytest.raises(ValueError, match="num_attention_heads=9, num_key_value_heads=3"):
        P.check_divisible(model.config, 2)
    P.check_divisible(model.config, 3)

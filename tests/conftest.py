"""Shared fixtures: the tiny model and small replicas, loaded once per test session."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the committed tiny model, fp32 on CPU, eval mode."""
    import secbook

    torch.manual_seed(0)
    return secbook.load("tiny")


@pytest.fixture(scope="session")
def small_llama():
    """A 2-layer SmolLM2-shaped replica: real layer shapes, quick to run."""
    import secbook

    return secbook.load("replica:smollm2-135m", num_hidden_layers=2)


@pytest.fixture(scope="session")
def small_qwen():
    """A 2-layer Qwen2.5-0.5B-shaped replica (a second architecture, with q/k/v biases)."""
    import secbook

    return secbook.load("replica:qwen2.5-0.5b", num_hidden_layers=2)

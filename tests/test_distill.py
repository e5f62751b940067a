"""Distillation: the loss, the student's shape and tokenizer, the loss decreasing, bad input."""
import pytest
import torch

from secbook import distill as D


def test_loss_zero_kl_when_equal():
    t = torch.randn(2, 5, 11)
    labels = torch.randint(0, 11, (2, 5))
    ce = torch.nn.functional.cross_entropy(t.reshape(-1, 11), labels.reshape(-1))
    assert torch.allclose(D.distill_loss(t, t, labels, 2.0, 0.5), 0.5 * ce, atol=1e-5)
    assert D.distill_loss(t + torch.randn_like(t), t, labels, 2.0, 1.0) > 0


def test_student_from_teacher(tiny):
    teacher, tok = tiny
    cfg = D.DistillConfig(layers=2)
    s = D.make_student(teacher, cfg)
    assert s.config.num_hidden_layers == 2 and s.config.vocab_size == teacher.config.vocab_size
    assert torch.equal(s.model.layers[1].mlp.up_proj.weight, teacher.model.layers[5].mlp.up_proj.weight)
    assert D.teacher_layers(6, 3) == [0, 2, 5]


def test_distillation_loss_decreases(tiny):
    teacher, tok = tiny
    stream = torch.randint(0, 4096, (5000,), generator=torch.Generator().manual_seed(0))
    stream[::2] = 7  # a learnable pattern
    cfg = D.DistillConfig(layers=1, hidden_size=64, intermediate_size=128, heads=2, kv_heads=1, steps=12,
                          batch_size=4, seq_len=32, lr=3e-3, warmup=2, init="random")
    s, hist = D.train_student(teacher, stream, cfg, use_teacher=True, progress=False)
    first = sum(h["loss"] for h in hist[:3]) / 3
    last = sum(h["loss"] for h in hist[-3:]) / 3
    assert last < 0.9 * first


def test_bad_input(tiny):
    teacher, _ = tiny
    t = torch.randn(1, 2, 5)
    with pytest.raises(ValueError, match="temperature"):
        D.distill_loss(t, t, torch.zeros(1, 2, dtype=torch.long), temperature=0)
    with pytest.raises(ValueError, match="alpha"):
        D.distill_loss(t, t, torch.zeros(1, 2, dtype=torch.long), alpha=1.5)
    with pytest.raises(ValueError, match="init"):
        D.make_student(teacher, D.DistillConfig(init="copy"))
    with pytest.raises(ValueError, match="width"):
        D.make_student(teacher, D.DistillConfig(hidden_size=128))
    with pytest.raises(ValueError, match="deeper"):
        D.make_student(teacher, D.DistillConfig(layers=8))

"""Timing in turn for chapter 3.1: every model (or kernel) once per round, so a change of load hits all alike; the
results have one entry per round and feed claims.compare."""
import pytest
import torch

from secbook import prune as P
from secbook.claims import compare
from secbook.compress import forward_speed_in_turn


def test_forward_speed_in_turn_gives_one_figure_per_round_and_model(tiny):
    model, _ = tiny
    speeds = forward_speed_in_turn({"a": model, "b": model}, tokens=16, batch=1, rounds=3)
    assert set(speeds) == {"a", "b"} and all(len(v) == 3 and min(v) > 0 for v in speeds.values())
    assert compare(speeds, "a", "b").verdict  # words come from the rounds
    with pytest.raises(ValueError, match="at least one model"):
        forward_speed_in_turn({}, rounds=3)


def test_sparse_speed_rounds_times_every_variant_each_round():
    df = P.sparse_speed_rounds(out=64, inp=64, tokens=4, sparsities=(0.0, 0.5), rounds=2, repeats=2)
    assert len(df) == 2 * 4  # per round: dense and CSR, at 0 % and at 50 % zeros
    assert set(df.kernel) == {"dense", "csr"} and (df.ms > 0).all()
    assert sorted(df[df.kernel == "csr"].sparsity.unique()) == [0.0, 0.5]

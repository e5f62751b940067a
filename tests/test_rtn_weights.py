"""quantize.rtn_weights: an unpacked copy that computes exactly what the packed QuantLinear model computes (so the
book can score a quantized model's answers quickly), and leaves the original alone."""
import pytest
import torch

from secbook import quantize as Q


@pytest.mark.parametrize("bits,group,scheme", [(4, 32, "asym"), (8, None, "sym"), (3, 64, "sym")])
def test_rtn_weights_compute_what_quantlinear_computes(tiny, bits, group, scheme):
    model, _ = tiny
    x = torch.tensor([[5, 17, 99, 3, 250, 11, 42, 7]])
    before = model.model.layers[0].mlp.down_proj.weight.clone()
    fake = Q.rtn_weights(model, bits, group, scheme)
    packed, _ = Q.quantize(model, bits, group, scheme, inplace=False)
    with torch.no_grad():
        a, b, ref = fake(input_ids=x).logits, packed(input_ids=x).logits, model(input_ids=x).logits
    assert torch.equal(a, b)
    assert not torch.equal(a, ref)  # it did quantize
    assert torch.equal(model.model.layers[0].mlp.down_proj.weight, before)  # the original is untouched


def test_rtn_weights_refuses_a_group_that_does_not_divide(tiny):
    with pytest.raises(ValueError, match="divide"):
        Q.rtn_weights(tiny[0], 4, 96)

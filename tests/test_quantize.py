"""ops.quantize.finish, the last step of every attack, on small exact cases."""
import pytest
import torch
from torch import nn

from sparseattack.ops.quantize import finish, on_grid, quantize


class Linear2(nn.Module):
    """Two classes; logit_1 - logit_0 = sum(x) - bias."""

    def __init__(self, bias: float):
        super().__init__()
        self.bias = bias

    def forward(self, x):
        s = x.flatten(1).sum(1, keepdim=True)
        return torch.cat([torch.zeros_like(s), s - self.bias], 1)


def _case(b: int = 1):
    x = torch.full((b, 1, 2, 2), 128 / 255)
    model = Linear2(bias=4 * 128 / 255 + 1e-3).eval()  # at x: margin -1e-3 (class 0)
    adv = x + 1e-3                                      # each entry +1e-3 < half a grey level: margin +3e-3
    return model, x, adv, torch.ones(b, dtype=torch.long)


def test_nearest_rounding_loses_the_success_and_the_finish_keeps_it():
    model, x, adv, t = _case()
    assert model(adv).argmax(1).item() == 1 and model(quantize(adv)).argmax(1).item() == 0
    out = finish(model, x, adv, t, targeted=True)
    assert model(out).argmax(1).item() == 1 and bool(on_grid(out).all())
    assert (out != x).sum() <= (adv != x).sum()


def test_the_grid_repair_alone_keeps_it_with_fewer_entries():
    model, x, adv, t = _case()
    assert torch.equal(finish(model, x, adv, t, targeted=True, scales=(), repair_steps=0), x)
    out = finish(model, x, adv, t, targeted=True, scales=())
    assert model(out).argmax(1).item() == 1
    assert int((out != x).sum()) == 1 and torch.allclose((out - x).abs().max(), torch.tensor(1 / 255))


def test_caps_box_and_failures():
    model, x, adv, t = _case(3)
    # an l_inf cap below one grey level leaves no grid point to move to: failure, the input unchanged
    assert torch.equal(finish(model, x, adv, t, targeted=True, linf_cap=0.5 / 255), x)
    # an l2 cap: candidates above it are refused
    out = finish(model, x, adv, t, targeted=True, l2_cap=1.01 / 255)
    assert ((out - x).flatten(1).norm(dim=1) <= 1.01 / 255 + 1e-7).all()
    assert (model(out).argmax(1) == 1).all()
    # NaN or a non-adversarial output: the input unchanged
    bad = adv.clone()
    bad[0, 0, 0, 0] = float("nan")
    bad[1] = x[1]
    out = finish(model, x, bad, t, targeted=True)
    assert torch.equal(out[:2], x[:2]) and not torch.equal(out[2], x[2])
    # the box: values outside [0, 1] are clipped before anything else
    out = finish(model, x, x + 5.0, t, targeted=True, quantize=False)
    assert out.max() <= 1


def test_float_mode_and_off_grid_inputs():
    model, x, adv, t = _case()
    assert torch.equal(finish(model, x, adv, t, targeted=True, quantize=False), adv)
    with pytest.raises(ValueError, match="not 8-bit images"):
        finish(model, x + 1e-3, adv, t, targeted=True)

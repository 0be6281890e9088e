"""SAPF, SAPF-GS and SAPF-VI on the shipped Fashion-MNIST net (and EfficientNet-Lite0 once).

Outputs end with `ops.quantize.finish`: with quantize=True (the default; the Fashion-MNIST images
are 8-bit) they are exactly on the 8-bit grid with at most k changed entries, and a failure is the
input bit for bit. Short schedules: what is asserted is structural (l0 <= k, groups touched, caps,
the grid) on every output, and rates only on 16 pairs with a wide margin (at least half where
13-16 of 16 typically succeed). Comparisons between runs on different batches run in float64,
where a batch gives exactly the result of one example at a time."""
import copy
import math

import pytest
import torch

from sparseattack import models, run_attack
from sparseattack.attacks import sapf, sapf_gs, sapf_min_k, sapf_vi
from sparseattack.attacks.sapf import PRESETS, imperceptibility_weights

from conftest import NeverFooled, assert_bad_calls_refused, check_finished, succeeds
from sparseattack.ops.groups import grid_segments, groups_touched, segment_sq_sums

SHORT = dict(outer_iters=2, delta_steps=30, g_steps=40, refine_steps=60, search_steps=4)
LEAN = dict(outer_iters=1, delta_steps=30, g_steps=40, refine_steps=60, search_steps=3)
TINY = dict(outer_iters=1, delta_steps=5, g_steps=5, refine_steps=5, search_steps=2)
SEG = grid_segments(28, 28, 4)  # 49 groups of 4x4 = 16 pixels


_succeeds, _check_finished = succeeds, check_finished


@pytest.fixture(scope="module")
def pairs16(fmnist_pairs):
    """16 (image, target) pairs: the 8 images toward label + 1 and toward label + 3."""
    x, y, t = fmnist_pairs
    return torch.cat([x, x]), torch.cat([y, y]), torch.cat([t, (y + 3) % 10])


@pytest.fixture(scope="module")
def element_uniform(fmnist_model, pairs16):
    x, y, t = pairs16
    return run_attack("sapf", fmnist_model, x, y, targets=t, k=80, **SHORT)


@pytest.fixture(scope="module")
def pixel_plain(fmnist_model, pairs16):
    """SAPF with k = 128 pixels and lambda2 = 0 (the groups are given but unused)."""
    x, _, t = pairs16
    return sapf(fmnist_model, x, t, targeted=True, k=128, granularity="pixel", groups=SEG, **SHORT)


def test_sapf_succeeds_with_exactly_k_or_fewer(fmnist_model, pairs16, element_uniform, pixel_plain):
    x, y, t = pairs16
    res = element_uniform
    assert res.quantized and res.success.float().mean() >= 0.5  # typically 15 of 16
    assert (res.norms["l0"] <= 80).all()
    assert torch.equal(_check_finished(fmnist_model, x, res.adv, t, k=80), res.success)
    ok = _check_finished(fmnist_model, x, pixel_plain, t, k=128, pixels=True)
    assert ok.float().mean() >= 0.5  # typically all 16


def test_untargeted_pixels_and_linf_cap(fmnist_model, fmnist_test):
    x, y = fmnist_test
    x, y = x[:64], y[:64]
    with torch.no_grad():
        right = fmnist_model(x).argmax(1) == y
    x, y = x[right][:16], y[right][:16]
    caps = torch.linspace(0.3, 0.6, 16)  # a per-example cap
    adv = sapf(fmnist_model, x, y, k=60, granularity="pixel", eps=caps, **SHORT)
    ok = _check_finished(fmnist_model, x, adv, y, targeted=False, k=60, pixels=True, linf=caps)
    assert ok.float().mean() >= 0.5  # typically all 16


def test_same_seed_same_result_and_batch_equals_single(fmnist_model, fmnist_pairs):
    """No coupling between the pairs of a batch, the finish included. In float32 a batch and
    one-at-a-time runs differ by rounding (logits ~1e-6) that the discrete top-k step and the grid
    can amplify, so the exact comparison runs in float64, where it must hold bit for bit."""
    x, y, t = fmnist_pairs
    model64 = copy.deepcopy(fmnist_model).double()
    x, t = (x[:3].double() * 255).round() / 255, t[:3]
    a = sapf(model64, x, t, targeted=True, k=80, **LEAN)
    b = sapf(model64, x, t, targeted=True, k=80, **LEAN)
    assert torch.equal(a, b) and a.dtype == torch.float64
    single = torch.cat([sapf(model64, x[i:i + 1], t[i:i + 1], targeted=True, k=80, **LEAN) for i in range(3)])
    assert torch.equal(a, single)
    assert (a != x).any()
    _check_finished(model64, x, a, t, k=80)


def test_group_sparsity_concentrates_perturbation(fmnist_model, pairs16, pixel_plain):
    """SAPF-GS (Eq. 16) on a 4x4 grid picks its support as whole groups (`group_topk_mask`):
    k = 128 pixels touch at most ceil(128 / 16) + 1 groups in every output, where plain SAPF's
    128 pixels spread over many more."""
    x, y, t = pairs16
    bound = math.ceil(128 / 16) + 1
    grouped = sapf_gs(fmnist_model, x, t, targeted=True, k=128, granularity="pixel", groups=SEG, lambda2=1.0,
                      **SHORT)
    ok_grouped = _check_finished(fmnist_model, x, grouped, t, k=128, pixels=True)
    ok_plain = _check_finished(fmnist_model, x, pixel_plain, t, k=128, pixels=True)
    touched_grouped = groups_touched(grouped - x, SEG)
    touched_plain = groups_touched(pixel_plain - x, SEG)
    assert (touched_grouped <= bound).all(), touched_grouped  # every output, structurally
    assert ok_grouped.float().mean() >= 0.5  # typically 14 of 16 (8 whole blocks is a harder support)
    assert ok_plain.float().mean() >= 0.5
    assert touched_plain[ok_plain].float().mean() >= 2 * bound  # typically about 25 of 49 groups

    def top_group_share(adv):  # share of ||delta||^2 inside the `bound` strongest groups
        sq = segment_sq_sums(adv - x, SEG)
        return sq.topk(bound, dim=1).values.sum(1) / sq.sum(1).clamp_min(1e-12)
    assert (top_group_share(grouped)[ok_grouped] > 1 - 1e-6).all()  # all of it, structurally


def test_visual_imperceptibility_moves_mass_to_textured_regions(fmnist_model, pairs16, element_uniform):
    x, y, t = pairs16
    w = imperceptibility_weights(x, "variance")
    assert w.min() >= 0 and w.max() <= 1
    textured = w < w.flatten(1).median(1).values.view(-1, 1, 1, 1)  # high local variance

    def share(adv, ok):
        d2 = (adv - x).pow(2)
        return ((d2 * textured).flatten(1).sum(1) / d2.flatten(1).sum(1).clamp_min(1e-12))[ok].mean()
    adv = sapf_vi(fmnist_model, x, t, targeted=True, k=80, weights="variance", **SHORT)
    ok = _check_finished(fmnist_model, x, adv, t, k=80)
    assert ok.float().mean() >= 0.5  # typically 15 of 16
    uniform = element_uniform
    # typically 0.89 against 0.56: means over about 15 pairs each
    assert share(adv, ok) > share(uniform.adv, uniform.success) + 0.1


def test_min_k_bisection(fmnist_model, fmnist_pairs):
    """In float64, so that rerunning SAPF at k - 1 on this batch repeats the bisection's probe
    (which ran on another batch) bit for bit."""
    x, y, t = fmnist_pairs
    model64 = copy.deepcopy(fmnist_model).double()
    x, t = (x[:2].double() * 255).round() / 255, t[:2]
    adv, k = sapf_min_k(model64, x, t, targeted=True, k_max=120, **LEAN)
    assert ((k > 0) | (k == -1)).all() and (k <= 120).all()
    assert (k > 0).any()  # typically both, at k about 80 and 50
    ok = _check_finished(model64, x, adv, t)
    assert torch.equal(ok, k > 0)  # failures (k = -1) are returned unchanged
    assert ((adv - x).flatten(1).ne(0).sum(1) <= k.clamp_min(0)).all()
    # one entry fewer than the found k no longer suffices for the same schedule (after the finish)
    fewer = sapf(model64, x, t, targeted=True, k=(k - 1).clamp_min(1), **LEAN)
    assert torch.equal(fewer[k > 1], x[k > 1])


@pytest.mark.parametrize("quantize", [True, False])
def test_failures_return_the_input_bit_for_bit(fmnist_model, fmnist_pairs, quantize):
    x, y, _ = fmnist_pairs
    x, t = x[:2], torch.tensor([3, 7])
    never = NeverFooled(fmnist_model)
    kw = dict(targeted=True, quantize=quantize, **TINY)
    assert torch.equal(sapf(never, x, t, k=40, **kw), x)
    assert torch.equal(sapf(never, x, t, k=40, eps=0.2, **kw), x)
    assert torch.equal(sapf_gs(never, x, t, k=32, granularity="pixel", groups=SEG, **kw), x)
    assert torch.equal(sapf_vi(never, x, t, k=40, **kw), x)
    adv, k = sapf_min_k(never, x, t, k_max=60, **kw)
    assert torch.equal(adv, x) and (k == -1).all()


def test_bad_arguments(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    with pytest.raises(ValueError, match="k must be in"):
        sapf(fmnist_model, x, t, targeted=True, k=785)
    with pytest.raises(ValueError, match="granularity"):
        sapf(fmnist_model, x, t, targeted=True, k=5, granularity="blob")
    with pytest.raises(ValueError, match="preset"):
        sapf(fmnist_model, x, t, targeted=True, k=5, preset="slow")
    with pytest.raises(TypeError, match="unexpected SAPF argument"):
        sapf(fmnist_model, x, t, targeted=True, k=5, stepz=3)
    with pytest.raises(ValueError, match="eps"):
        sapf(fmnist_model, x, t, targeted=True, k=5, eps=0.0)
    assert PRESETS["paper"].delta_steps == 2000 and PRESETS["paper"].search_steps == 6


def test_bad_calls_are_refused_before_any_step(fmnist_model, fmnist_pairs):
    x, _, t = fmnist_pairs
    x, t = x[:2], t[:2]
    for attack in (sapf, sapf_gs, sapf_vi, sapf_min_k):
        def call(model, x, t):
            kw = dict(k_max=40) if attack is sapf_min_k else dict(k=40)
            return attack(model, x, t, targeted=True, **kw, **TINY)
        assert_bad_calls_refused(call, fmnist_model, x, t)


@pytest.mark.slow
def test_demo_attacks_efficientnet_lite0_photo(tmp_path, capsys):
    """`sparseattack demo`: SAPF on EfficientNet-Lite0 and scikit-image's cat, toward espresso."""
    import json

    from sparseattack.cli import DEMO_PARAMS, main

    assert main(["demo", "--out", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "demo_report.json").read_text())["pairs"][0]
    assert rec["success"] and rec["target_name"] == "espresso" and rec["adv_pred"] == 967
    assert rec["l0"] <= DEMO_PARAMS["sapf"]["k"]
    adv = torch.load(tmp_path / "demo_adv.pt")
    with torch.no_grad():
        assert models.load("efficientnet-lite0")(adv).argmax(1).item() == 967
    assert (tmp_path / "demo_perturbation.png").stat().st_size > 10_000
    assert "Outputs in" in capsys.readouterr().out

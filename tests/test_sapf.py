"""SAPF, SAPF-GS and SAPF-VI on the shipped Fashion-MNIST net (and EfficientNet-Lite0 once)."""
import pytest
import torch

from sparseattack import models, run_attack
from sparseattack.attacks import sapf, sapf_gs, sapf_min_k
from sparseattack.attacks.sapf import PRESETS, imperceptibility_weights
from sparseattack.ops.groups import grid_segments, groups_touched, segment_sq_sums

SHORT = dict(outer_iters=2, delta_steps=30, g_steps=40, refine_steps=60, search_steps=4)
MEDIUM = dict(outer_iters=2, delta_steps=40, g_steps=60, refine_steps=100, search_steps=5)


def test_sapf_succeeds_with_exactly_k_or_fewer(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    for granularity, k in (("element", 80), ("pixel", 80)):
        res = run_attack("sapf", fmnist_model, x, y, targets=t, k=k, granularity=granularity)
        assert res.success.float().mean() >= 0.75, (granularity, res.success)
        key = "l0" if granularity == "element" else "l0_pixels"
        assert (res.norms[key] <= k).all(), res.norms[key]
        assert res.adv.min() >= 0 and res.adv.max() <= 1
        # only successes change the image
        assert (res.norms["l0"][~res.success] == 0).all()


def test_untargeted_and_linf_cap(fmnist_model, fmnist_pairs):
    x, y, _ = fmnist_pairs
    res = run_attack("sapf", fmnist_model, x, y, k=80, eps=0.5, **SHORT)
    assert res.success.float().mean() >= 0.75
    assert (res.norms["linf"] <= 0.5 + 1e-6).all() and (res.norms["l0"] <= 80).all()


def test_same_seed_same_result_and_batch_equals_single(fmnist_model, fmnist_pairs):
    """No coupling between the pairs of a batch. In float32 a batch and one-at-a-time runs differ
    by rounding (logits ~1e-6) that the discrete top-k step can amplify, so the exact comparison
    runs in float64, where it must hold bit for bit."""
    import copy

    x, y, t = fmnist_pairs
    model64 = copy.deepcopy(fmnist_model).double()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        x, t = x[:3].double(), t[:3]
        a = sapf(model64, x, t, targeted=True, k=80, **SHORT)
        b = sapf(model64, x, t, targeted=True, k=80, **SHORT)
        assert torch.equal(a, b)
        single = torch.cat([sapf(model64, x[i:i + 1], t[i:i + 1], targeted=True, k=80, **SHORT)
                            for i in range(3)])
        assert torch.equal(a, single)
        assert (a != x).any()
    finally:
        torch.set_default_dtype(old)


def test_group_sparsity_concentrates_perturbation(fmnist_model, fmnist_pairs):
    """SAPF-GS (Eq. 16) on a 4x4 grid puts the same k pixels into fewer groups than lambda2 = 0."""
    x, y, t = fmnist_pairs
    seg = grid_segments(28, 28, 4)
    plain = sapf(fmnist_model, x, t, targeted=True, k=80, granularity="pixel", groups=seg, **MEDIUM)
    grouped = sapf_gs(fmnist_model, x, t, targeted=True, k=80, granularity="pixel", groups=seg,
                      lambda2=10.0, **MEDIUM)
    with torch.no_grad():
        ok_plain = fmnist_model(plain).argmax(1) == t
        ok_grouped = fmnist_model(grouped).argmax(1) == t
    assert ok_grouped.float().mean() >= 0.5  # a support of 5 whole 4x4 blocks is harder than any 80 pixels
    both = ok_plain & ok_grouped
    assert both.sum() >= 4
    touched_plain = groups_touched(plain - x, seg)[both].float()
    touched_grouped = groups_touched(grouped - x, seg)[both].float()
    assert touched_grouped.mean() < 0.5 * touched_plain.mean()
    assert (touched_grouped <= 80 // 16 + 1).all()  # whole groups of 16 pixels, at most one partial

    def top_group_share(adv):  # share of ||delta||^2 inside the 5 strongest groups
        sq = segment_sq_sums(adv - x, seg)
        return (sq.topk(5, dim=1).values.sum(1) / sq.sum(1).clamp_min(1e-12))[both].mean()
    assert top_group_share(grouped) > top_group_share(plain)


def test_visual_imperceptibility_moves_mass_to_textured_regions(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    w = imperceptibility_weights(x, "variance")
    assert w.min() >= 0 and w.max() <= 1
    textured = w < w.flatten(1).median(1).values.view(-1, 1, 1, 1)  # high local variance
    shares = {}
    for strategy in ("uniform", "variance"):
        res = run_attack("sapf", fmnist_model, x, y, targets=t, k=80, weights=strategy, **MEDIUM)
        ok = res.success
        d2 = res.delta.pow(2)
        shares[strategy] = ((d2 * textured).flatten(1).sum(1) / d2.flatten(1).sum(1).clamp_min(1e-12))[ok].mean()
    assert shares["variance"] > shares["uniform"]


def test_min_k_bisection(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    adv, k = sapf_min_k(fmnist_model, x[:2], t[:2], targeted=True, k_max=120, **SHORT)
    assert (k > 0).all() and (k <= 120).all()
    with torch.no_grad():
        assert (fmnist_model(adv).argmax(1) == t[:2]).all()
    assert ((adv - x[:2]).flatten(1).ne(0).sum(1) <= k).all()
    # one entry fewer than the found k no longer suffices for the same schedule
    fewer = sapf(fmnist_model, x[:2], t[:2], targeted=True, k=(k - 1).clamp_min(1), **SHORT)
    with torch.no_grad():
        still = fmnist_model(fewer).argmax(1) == t[:2]
    assert not still[k > 1].any()


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
    assert PRESETS["paper"].delta_steps == 2000 and PRESETS["paper"].search_steps == 6


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

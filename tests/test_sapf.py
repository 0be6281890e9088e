"""SAPF, SAPF-GS and SAPF-VI on the shipped Fashion-MNIST net (and EfficientNet-Lite0 once).

Outputs end with `ops.quantize.finish`: with quantize=True (the default; the Fashion-MNIST images
are 8-bit) they are exactly on the 8-bit grid with at most k changed entries, and a failure is the
input bit for bit. Short schedules: what is asserted is structural (l0 <= k, groups touched, caps,
the grid) on every output, and rates only on 16 pairs with a wide margin (at least half where
13-16 of 16 typically succeed). Comparisons between runs on different batches run in float64,
where a batch gives exactly the result of one example at a time."""
import copy
import math
import re
import warnings

import pytest
import torch

from sparseattack import models, run_attack
from torch import nn

from sparseattack.attacks.sapf import (PRESETS, SAPFSchedule, _Carried, _Objective, _Pairs, _step2_g, find_min_k,
                                       imperceptibility_weights, sapf, sapf_gs, sapf_min_k, sapf_vi)

from conftest import NeverFooled, assert_bad_calls_refused, check_finished, succeeds
from sparseattack.ops.groups import grid_segments, groups_touched, segment_sq_sums
from sparseattack.ops.losses import cw_margin_loss

# the ADMM schedule (Algorithm 1) at short lengths
SHORT = dict(preset="fast", steps=2, delta_steps=30, g_steps=40, refine_steps=60, binary_search_steps=4)
LEAN = dict(preset="fast", steps=1, delta_steps=30, g_steps=40, refine_steps=60, binary_search_steps=3)
TINY = dict(preset="fast", steps=1, delta_steps=5, g_steps=5, refine_steps=5, binary_search_steps=2)
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
    adv = sapf(fmnist_model, x, y, k=60, granularity="pixel", linf_cap=caps, **SHORT)
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
    res = find_min_k(model64, x, t, targeted=True, k_max=120, **LEAN)
    adv, k = res.adv, res.budget
    assert k.dtype == torch.long and torch.equal(res.found, k > 0)
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
    assert torch.equal(sapf(never, x, t, k=40, linf_cap=0.2, **kw), x)
    assert torch.equal(sapf_gs(never, x, t, k=32, granularity="pixel", groups=SEG, **kw), x)
    assert torch.equal(sapf_vi(never, x, t, k=40, **kw), x)
    res = find_min_k(never, x, t, k_max=60, **kw)
    assert torch.equal(res.adv, x) and (res.budget == -1).all()
    adv = sapf_min_k(never, x, t, k_max=60, **kw)  # only the tensor
    assert isinstance(adv, torch.Tensor) and torch.equal(adv, x)


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
    with pytest.raises(ValueError, match="linf_cap"):
        sapf(fmnist_model, x, t, targeted=True, k=5, linf_cap=0.0)
    with pytest.raises(ValueError, match="optimizer"):
        sapf(fmnist_model, x, t, targeted=True, k=5, optimizer="rmsprop")
    with pytest.raises(ValueError, match="k must be in"):
        find_min_k(fmnist_model, x, t, targeted=True, k_max=785)
    assert PRESETS["paper"].delta_steps == 2000 and PRESETS["paper"].binary_search_steps == 6


def test_bad_calls_are_refused_before_any_step(fmnist_model, fmnist_pairs):
    x, _, t = fmnist_pairs
    x, t = x[:2], t[:2]
    for attack in (sapf, sapf_gs, sapf_vi, sapf_min_k, find_min_k):
        def call(model, x, t):
            kw = dict(k_max=40) if attack in (sapf_min_k, find_min_k) else dict(k=40)
            return attack(model, x, t, targeted=True, **kw, **TINY)
        assert_bad_calls_refused(call, fmnist_model, x, t)


# --- Step 2 against the paper's equations ---------------------------------------------------------

def _literal_step2(W, bias, x, t, delta, G, k, lam, w2, rho, step0, sched, *, lambda2=0.0, segments=None,
                   rho_g=None):
    """Step 2 of Algorithm 1 (Eq. 11-15) for ONE example of a linear classifier z = W u + bias on
    u = clip(x + delta * G), written as the paper prints it, with the library's documented choices:
    the duals updated with Y (Eq. 15 prints Z), eta_G = min(decayed step, 1 / (rho1 + rho2 + rho3 N
    [+ rho_g])), rho <- min(growth * rho, rho_max), the duals starting at 0. SAPF-GS (lambda2 > 0):
    the split G = Y3 with the group soft-thresholding prox. G is (C, H, W) (an entry each) or
    (1, H, W) (a pixel's G multiplies all its channels). Returns G, rho, rho_g."""
    N = G.numel()
    rho1, rho2, rho3 = rho
    Z1, Z2, z3 = torch.zeros_like(G), torch.zeros_like(G), 0.0
    Z3 = torch.zeros_like(G)
    G = G.clone()
    for it in range(sched.g_steps):
        Y1 = torch.clamp(G + Z1 / rho1, 0, 1)                              # (11): P_Sb
        a_bar = G + Z2 / rho2 - 0.5
        Y2 = math.sqrt(N) / 2 * a_bar / a_bar.norm() + 0.5                # (13): P_Sp
        if lambda2 > 0:                                                    # SAPF-GS: Y3 = prox
            a = G + Z3 / rho_g
            Y3 = torch.zeros_like(G)
            for gid in segments.unique():
                m = (segments == gid).expand_as(G)
                Y3[m] = max(0.0, 1 - (lambda2 / rho_g) / a[m].norm().item()) * a[m]
        # dL/dG of ||w * delta * G||^2 + lambda_1 L(f(clip(x + delta * G)), t), L = C&W's margin
        u = x + delta * G
        z = W @ u.clamp(0, 1).flatten() + bias
        others = z.clone()
        others[t] = -math.inf
        j = int(others.argmax())
        dL_du = (W[j] - W[t]).view_as(u) * ((u > 0) & (u < 1)) if z[j] - z[t] > 0 else torch.zeros_like(u)
        dL = 2 * w2 * delta * delta * G + lam * dL_du * delta
        if G.shape[0] == 1:
            dL = dL.sum(0, keepdim=True)
        dL = (dL + rho1 * (G - Y1) + rho2 * (G - Y2) + (z3 + rho3 * (G.sum() - k)) + Z1 + Z2)   # (14)
        curvature = rho1 + rho2 + rho3 * N
        if lambda2 > 0:
            dL = dL + Z3 + rho_g * (G - Y3)
            curvature = curvature + rho_g
        step = sched.step_size * sched.step_size_decay ** ((step0 + it) // sched.decay_every)
        eta = min(max(step, sched.step_size_min), 1 / curvature)
        G = G - eta * dL
        Z1 = Z1 + rho1 * (G - Y1)                                          # (15), with Y
        Z2 = Z2 + rho2 * (G - Y2)
        z3 = z3 + rho3 * (G.sum() - k)
        rho1, rho2, rho3 = (min(sched.rho_growth * r, m) for r, m in zip((rho1, rho2, rho3), sched.rho_max))
        if lambda2 > 0:
            Z3 = Z3 + rho_g * (G - Y3)
            rho_g = min(sched.rho_growth * rho_g, sched.rho_group_max)
    return G, (rho1, rho2, rho3), rho_g


@pytest.mark.parametrize("granularity,lambda2", [("element", 0.0), ("pixel", 0.0), ("element", 0.3)])
def test_g_step_matches_literal_equations(granularity, lambda2):
    """`_step2_g` (batched) against `_literal_step2` (one example at a time), in float64, over two
    Step 2 calls: the duals restart, rho and the step-size decay carry over (`_Carried`)."""
    torch.manual_seed(0)
    b, c, h, w = 2, 2, 3, 3
    lin = nn.Linear(c * h * w, 3).double()
    with torch.no_grad():
        lin.weight.mul_(5)
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = torch.rand(b, c, h, w, dtype=torch.float64) * 0.8 + 0.1
    t = torch.tensor([1, 2])
    gshape = (c, h, w) if granularity == "element" else (1, h, w)
    k = torch.tensor([7, 4])
    lam = torch.tensor([2.0, 5.0], dtype=torch.float64)
    w2 = torch.rand(b, c, h, w, dtype=torch.float64)             # SAPF-VI weights, squared
    segments = torch.tensor([[0, 0, 1], [0, 2, 1], [2, 2, 1]]).expand(b, h, w) if lambda2 else None
    sched = SAPFSchedule(g_steps=20, step_size=0.1, step_size_decay=0.9, decay_every=6, step_size_min=0.03,
                         rho_growth=1.3, rho_init=(0.05, 0.04, 0.002), rho_max=(2.0, 1.5, 0.01), rho_group_max=0.5)
    objective = _Objective(model, cw_margin_loss, True, 0.0, lambda2)
    pairs = _Pairs.start(x=x, labels=t, k=k, w2=w2, lo=-x, hi=1 - x, lam=lam, segments=segments)
    carried = _Carried(rho=[torch.full((b,), r, dtype=torch.float64) for r in sched.rho_init],
                       rho_group=torch.full((b,), sched.rho_group_init, dtype=torch.float64))
    deltas = [(torch.rand(b, c, h, w, dtype=torch.float64) - 0.5) * 0.6 for _ in range(2)]
    G = torch.ones(b, *gshape, dtype=torch.float64)
    got = []
    for delta in deltas:
        G = _step2_g(objective, pairs, delta, G, sched, carried)
        got.append(G)
    for i in range(b):
        Gi, rho, rho_g, step0 = torch.ones(*gshape, dtype=torch.float64), sched.rho_init, sched.rho_group_init, 0
        for call, delta in enumerate(deltas):
            Gi, rho, rho_g = _literal_step2(lin.weight.detach(), lin.bias.detach(), x[i], int(t[i]), delta[i], Gi,
                                            int(k[i]), float(lam[i]), w2[i], rho, step0, sched, lambda2=lambda2,
                                            segments=None if segments is None else segments[i], rho_g=rho_g)
            step0 += sched.g_steps
            torch.testing.assert_close(got[call][i], Gi, atol=1e-10, rtol=1e-9, msg=f"pair {i}, call {call + 1}")
        torch.testing.assert_close(torch.stack([r[i] for r in carried.rho]), torch.tensor(rho, dtype=torch.float64))
    assert carried.g_steps == 2 * sched.g_steps
    assert (got[-1] - 1).abs().max() > 0.1  # G moved


# --- 0.1 names ---------------------------------------------------------------------------------------

OLD_TINY = dict(preset="fast", outer_iters=1, delta_steps=5, g_steps=5, refine_steps=5, search_steps=2)


def _old_names(record):
    """The 0.1 parameter names the DeprecationWarnings of `record` name."""
    return {re.search(r"parameter '(\w+)' is now", str(w.message)).group(1) for w in record}


def test_old_names_still_work_with_a_warning(fmnist_model, fmnist_pairs):
    x, _, t = fmnist_pairs
    x, t = x[:2], t[:2]
    new = sapf(fmnist_model, x, t, targeted=True, k=60, linf_cap=0.5, step_size=0.05, step_size_decay=0.8,
               step_size_min=0.01, **TINY)
    with pytest.warns(DeprecationWarning) as record:
        old = sapf(fmnist_model, x, t, targeted=True, k=60, eps=0.5, lr=0.05, lr_decay=0.8, lr_min=0.01, **OLD_TINY)
    assert torch.equal(old, new)
    assert _old_names(record) == {"eps", "lr", "lr_decay", "lr_min", "outer_iters", "search_steps"}
    for attack in (sapf_gs, sapf_vi):
        with pytest.warns(DeprecationWarning) as record:
            attack(fmnist_model, x, t, targeted=True, k=40, granularity="pixel", groups=SEG, quantize=False,
                   eps=0.5, **OLD_TINY)
        assert _old_names(record) == {"eps", "outer_iters", "search_steps"}
    for attack in (find_min_k, sapf_min_k):
        with pytest.warns(DeprecationWarning) as record:
            attack(NeverFooled(fmnist_model), x, t, targeted=True, k_max=40, eps=0.5, **OLD_TINY)
        assert _old_names(record) == {"eps", "outer_iters", "search_steps"}
    with pytest.warns(DeprecationWarning) as record:
        sched = SAPFSchedule(outer_iters=3, lr=0.2)
    assert sched.steps == 3 and sched.step_size == 0.2 and _old_names(record) == {"outer_iters", "lr"}
    with pytest.warns(DeprecationWarning, match="search_steps"):
        assert PRESETS["paper"].search_steps == 6


def test_old_and_new_name_together_is_an_error(fmnist_model, fmnist_pairs):
    x, _, t = fmnist_pairs
    x, t = x[:2], t[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for attack, budget in ((sapf, dict(k=40)), (sapf_gs, dict(k=40)), (sapf_vi, dict(k=40)),
                               (find_min_k, dict(k_max=40)), (sapf_min_k, dict(k_max=40))):
            with pytest.raises(TypeError, match="both 'eps'"):
                attack(fmnist_model, x, t, targeted=True, eps=0.5, linf_cap=0.5, **budget, **TINY)
            with pytest.raises(TypeError, match="both 'lr'"):
                attack(fmnist_model, x, t, targeted=True, lr=0.1, step_size=0.1, **budget, **TINY)
        with pytest.raises(TypeError, match="both"):
            SAPFSchedule(outer_iters=3, steps=3)


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


# --- The continuation preset (G by shrinking support, delta by a minimal-l2 solve) ----------------

CONT = dict(preset="continuation", stages=6, stage_steps=30, max_stages=14, polish_steps=60)


def test_minimal_l2_on_support_moves_only_the_support(fmnist_model, pairs16):
    """ops.minimal_norm on a real net: only the support's entries move, inside their bounds, and
    every pair it reports found is adversarial at the reported norm (re-checked here)."""
    from sparseattack.ops.minimal_norm import minimal_l2_on_support
    from sparseattack.ops.projections import topk_mask
    x, _, t = pairs16
    support = topk_mask(torch.rand_like(x), 300)  # a random support of 300 of 784 entries
    lo, hi = torch.maximum(-x, torch.tensor(-0.5)), torch.minimum(1 - x, torch.tensor(0.5))
    sol = minimal_l2_on_support(fmnist_model, x, t, targeted=True, support=support, delta=torch.zeros_like(x),
                                steps=80, lo=lo, hi=hi)
    assert sol.found.float().mean() >= 0.5  # typically all 16
    d = sol.delta[sol.found]
    assert (d * (1 - support[sol.found]) == 0).all()
    assert (d >= lo[sol.found]).all() and (d <= hi[sol.found]).all()
    assert torch.allclose(d.flatten(1).norm(dim=1), sol.norm[sol.found])
    with torch.no_grad():
        assert (fmnist_model(x[sol.found] + d).argmax(1) == t[sol.found]).all()
    assert (sol.norm[~sol.found] == math.inf).all() and (sol.delta[~sol.found] == 0).all()


@pytest.fixture(scope="module")
def continuation_80(fmnist_model, pairs16):
    x, _, t = pairs16
    return sapf(fmnist_model, x, t, targeted=True, k=80, **CONT)


def test_continuation_succeeds_within_k_with_lower_l2_than_admm(fmnist_model, pairs16, continuation_80,
                                                               element_uniform):
    """On 16 pairs: at least as many successes as the ADMM schedule, exactly-k sparsity, and a
    lower mean l2 on the pairs both fool (typically about 0.75x; asserted below 0.95x)."""
    x, _, t = pairs16
    ok = _check_finished(fmnist_model, x, continuation_80, t, k=80)
    assert ok.float().mean() >= 0.75  # 15 of 16 here
    both = ok & element_uniform.success
    assert both.sum() >= 8
    l2 = (continuation_80 - x).flatten(1).norm(dim=1)
    assert l2[both].mean() < 0.95 * element_uniform.norms["l2"][both].mean()


def test_continuation_below_k_keeps_the_best_judged_output(fmnist_model, pairs16, monkeypatch):
    """below_k (on in the continuation preset): every candidate judged has at most k entries, the
    support goes on shrinking past k, and what sapf returns is, per pair, the judged output of
    smallest l2 (the judge finishes candidates as sapf does, so the last finish keeps it), on the
    grid with l0 <= k. Structural: no rate near a threshold."""
    import importlib
    module = importlib.import_module("sparseattack.attacks.sapf")
    assert PRESETS["continuation"].below_k and not PRESETS["paper"].below_k
    x, _, t = pairs16
    judged = []
    original = module._finished_judge

    def logging_judge(*args):
        judge = original(*args)

        def wrapped(rows, xs, labels, delta):
            out, ok, norm = judge(rows, xs, labels, delta)
            judged.append((rows.clone(), delta.flatten(1).ne(0).sum(1), out.clone(), ok.clone(), norm.clone()))
            return out, ok, norm
        return wrapped

    monkeypatch.setattr(module, "_finished_judge", logging_judge)
    adv = sapf(fmnist_model, x, t, targeted=True, k=80, **CONT)
    ok = _check_finished(fmnist_model, x, adv, t, k=80)
    assert judged and all((sizes <= 80).all() for _, sizes, *_ in judged)
    assert any((sizes < 60).any() for _, sizes, *_ in judged)  # shrunk well past k
    best = torch.full((len(x),), math.inf, dtype=x.dtype)
    best_out = x.clone()
    for rows, _, out, good, norm in judged:
        for j, r in enumerate(rows.tolist()):
            if good[j] and norm[j] < best[r]:
                best[r], best_out[r] = norm[j], out[j]
    judged_ok = torch.isfinite(best)  # a pair without a judged success falls back to its float best
    assert judged_ok.sum() >= 8 and ok[judged_ok].all()
    assert torch.equal(adv[judged_ok], best_out[judged_ok])
    # a judge that keeps nothing: every pair falls back to its float best, finished (and repaired)
    # by sapf's last step, as without below_k
    monkeypatch.setattr(module, "_finished_judge", lambda *args: lambda rows, xs, labels, delta: (
        xs.clone(), torch.zeros(len(rows), dtype=torch.bool), torch.full((len(rows),), math.inf, dtype=xs.dtype)))
    fallback = sapf(fmnist_model, x, t, targeted=True, k=80, **CONT)
    assert _check_finished(fmnist_model, x, fallback, t, k=80).float().mean() >= 0.75  # typically 16 of 16
    monkeypatch.undo()
    # float research mode: judged as clipped floats, l0 <= k all the same
    adv = sapf(fmnist_model, x[:8], t[:8], targeted=True, k=80, quantize=False, **CONT)
    changed = (adv != x[:8]).flatten(1).any(1)
    assert changed.any() and ((adv - x[:8]).flatten(1).ne(0).sum(1) <= 80).all()
    assert torch.equal(_succeeds(fmnist_model, adv[changed], t[:8][changed]), torch.ones(int(changed.sum()), dtype=torch.bool))


def test_continuation_pixels_groups_weights_and_cap(fmnist_model, pairs16):
    x, _, t = pairs16
    x, t = x[:8], t[:8]
    adv = sapf(fmnist_model, x, t, targeted=True, k=60, granularity="pixel", linf_cap=0.5, **CONT)
    assert _check_finished(fmnist_model, x, adv, t, k=60, pixels=True, linf=0.5).float().mean() >= 0.5
    adv = sapf_gs(fmnist_model, x, t, k=64, granularity="pixel", groups=SEG, lambda2=1.0, targeted=True, **CONT)
    ok = _check_finished(fmnist_model, x, adv, t, k=64, pixels=True)
    assert ok.float().mean() >= 0.5
    # whole groups first: at most one partially used 16-pixel group, so at most 64 / 16 + 1 groups touched
    touched = groups_touched((adv - x)[ok], SEG)
    assert (touched <= 5).all()
    # weighted continuation: the structural guarantees (l0 <= k, finished, re-checked); its success
    # rate is the known weakness that keeps SAPF-VI on the 'fast' preset (3 of these 8 pairs on
    # the 90.89% net, 13 of 18 benchmark pairs on the 88.81% one), so only "some" is asserted
    adv = sapf_vi(fmnist_model, x, t, k=80, targeted=True, **CONT)
    assert _check_finished(fmnist_model, x, adv, t, k=80).any()


def test_continuation_min_k_in_one_run(fmnist_model, pairs16):
    """find_min_k with the continuation: one shrinking run, k found per pair, l0 <= k, and the
    k found is well below the fixed budget where every pair succeeds (typically median ~30)."""
    x, _, t = pairs16
    res = find_min_k(fmnist_model, x, t, targeted=True, k_max=200, **CONT)
    k = res.budget
    ok = _check_finished(fmnist_model, x, res.adv, t)
    assert torch.equal(ok, k > 0)
    assert ok.float().mean() >= 0.75
    assert ((res.adv - x).flatten(1).ne(0).sum(1) <= k.clamp_min(0)).all()
    assert k[ok].float().median() < 80


def test_continuation_refuses_admm_fields(fmnist_model, fmnist_pairs):
    x, _, t = fmnist_pairs
    with pytest.raises(ValueError, match="support"):
        sapf(fmnist_model, x, t, targeted=True, k=5, support="random")
    with pytest.raises(ValueError, match="delta_steps.*admm"):
        sapf(fmnist_model, x, t, targeted=True, k=5, preset="continuation", delta_steps=10)
    with pytest.raises(ValueError, match="stage_steps.*continuation"):
        sapf(fmnist_model, x, t, targeted=True, k=5, preset="paper", stage_steps=10)
    assert PRESETS["paper"].support == "admm" and PRESETS["continuation"].support == "continuation"


def test_k_growth_retries_only_failures_until_success(fmnist_model, pairs16):
    """k_growth (Sec. 4.1's protocol): from k = 5, which few pairs survive, every failed pair is
    retried at a doubled k; the outputs are finished, each l0 is within the ladder 5, 10, 20, ...
    of budgets, and the success rate is at least the fixed-k run's (8 of 8 here, against 0 of 8 at
    a fixed k = 5)."""
    x, _, t = pairs16
    x, t = x[:8], t[:8]
    fixed = _check_finished(fmnist_model, x, sapf(fmnist_model, x, t, targeted=True, k=5, **CONT), t, k=5)
    adv = sapf(fmnist_model, x, t, targeted=True, k=5, k_growth=2, **CONT)
    ok = _check_finished(fmnist_model, x, adv, t, k=784)
    assert ok.sum() >= max(int(fixed.sum()), 6)
    l0 = (adv - x).flatten(1).ne(0).sum(1)
    assert (l0[ok] > 5).any()  # some pair needed a larger budget than the first
    # a model no attack fools: the ladder ends at N = 784 and every input comes back unchanged
    never = NeverFooled(fmnist_model).eval()
    short = dict(CONT, stages=2, stage_steps=5, max_stages=3, polish_steps=5)
    assert torch.equal(sapf(never, x[:2], t[:2], targeted=True, k=100, k_growth=4, **short), x[:2])
    for bad in (1.0, 0.5, True, "2"):
        with pytest.raises(ValueError, match="k_growth"):
            sapf(fmnist_model, x[:1], t[:1], targeted=True, k=5, k_growth=bad, **CONT)


def test_k_slack_spends_the_budget_where_it_is_needed(fmnist_model, pairs16):
    """k_slack: find_min_k's support m per pair, then SAPF at min(k, ceil(k_slack m)), keeping the
    smaller-norm success: l0 <= k holds exactly, every pair find_min_k fools is fooled, with an l2
    no larger than find_min_k's, and the slack spends fewer than k entries on the pairs that need
    few."""
    x, _, t = pairs16
    x, t = x[:8], t[:8]
    mink = find_min_k(fmnist_model, x, t, targeted=True, k_max=120, **CONT)
    adv = sapf(fmnist_model, x, t, targeted=True, k=120, k_slack=1.5, **CONT)
    ok = _check_finished(fmnist_model, x, adv, t, k=120)
    found = mink.budget > 0
    assert found.sum() >= 6 and (ok | ~found).all()
    l2 = (adv - x).flatten(1).norm(dim=1)
    l2_min = (mink.adv - x).flatten(1).norm(dim=1)
    assert (l2[found] <= l2_min[found] * (1 + 1e-6)).all()
    l0 = (adv - x).flatten(1).ne(0).sum(1)
    assert (l0[found] <= torch.ceil(1.5 * mink.budget[found]).clamp(max=120)).all()
    for bad in (0.5, True, "2"):
        with pytest.raises(ValueError, match="k_slack"):
            sapf(fmnist_model, x[:1], t[:1], targeted=True, k=5, k_slack=bad, **CONT)
    with pytest.raises(ValueError, match="k_slack needs a continuation"):
        sapf(fmnist_model, x[:1], t[:1], targeted=True, k=5, k_slack=1.5, **TINY)

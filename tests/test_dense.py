"""Dense baselines of StrAttack's tables: FGM/FGSM, the minimal-eps grid search (with FGM and
IFGSM), C&W-l2 and C&W-l_inf. Short schedules on the shipped Fashion-MNIST net."""
import pytest
import torch

from sparseattack import run_attack
from sparseattack.attacks import get, ifgsm
from sparseattack.attacks.dense import cw_l2, cw_linf, default_eps_grid, fgm, fgsm, min_eps_search
from sparseattack.eval import CountingModel


def _succeeds(model, adv, labels, targeted=True):
    with torch.no_grad():
        pred = model(adv).argmax(1)
    return pred == labels if targeted else pred != labels


def test_one_step_attacks_bounds_and_one_gradient(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    res = run_attack("fgm", fmnist_model, x, y, targets=t, eps=2.0)
    assert (res.norms["l2"] <= 2.0 + 1e-5).all() and res.adv.min() >= 0 and res.adv.max() <= 1
    assert res.gradients == len(x)
    res = run_attack("fgsm", fmnist_model, x, y, eps=0.1)  # untargeted
    assert (res.norms["linf"] <= 0.1 + 1e-6).all() and res.gradients == len(x)
    eps = torch.linspace(0.05, 0.4, len(x))
    adv = fgsm(fmnist_model, x, y, eps=eps)
    assert ((adv - x).abs().flatten(1).amax(1) <= eps + 1e-6).all()
    with pytest.raises(ValueError, match="norm"):
        fgm(fmnist_model, x, y, norm="l1")


def test_fgsm_scan_finds_the_first_grid_eps_with_one_gradient(fmnist_model, fmnist_pairs):
    x, y, _ = fmnist_pairs
    counter = CountingModel(fmnist_model)
    adv, eps = min_eps_search(counter, x, y, attack="fgsm", search="scan", return_eps=True)
    assert counter.gradients == len(x)  # one gradient, then forward passes only
    ok = torch.isfinite(eps)
    assert ok.sum() >= 6
    step, _ = default_eps_grid("linf", x)
    assert torch.equal(_succeeds(fmnist_model, adv, y, targeted=False), ok)
    assert torch.allclose(adv[ok], fgsm(fmnist_model, x[ok], y[ok], eps=eps[ok]), atol=1e-6)
    below = ok & (eps > step * 1.5)
    prev = fgsm(fmnist_model, x[below], y[below], eps=eps[below] - step)
    assert not _succeeds(fmnist_model, prev, y[below], targeted=False).any()  # the first success


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_ifgsm_bisection_is_minimal_on_the_grid(fmnist_model, fmnist_pairs, norm):
    x, y, t = fmnist_pairs
    x, y, t = x[:4], y[:4], t[:4]
    adv, eps = min_eps_search(fmnist_model, x, t, targeted=True, attack="ifgsm", norm=norm, return_eps=True,
                              eps_init=0.05 if norm == "linf" else 1.0)
    ok = torch.isfinite(eps)
    assert ok.sum() >= 3
    assert torch.equal(_succeeds(fmnist_model, adv, t), ok)
    dist = (adv - x).flatten(1)
    dist = dist.abs().amax(1) if norm == "linf" else dist.norm(dim=1)
    assert (dist[ok] <= eps[ok] + 1e-5).all()
    step, _ = default_eps_grid(norm, x)
    below = ok & (eps > step * 1.5)
    prev = ifgsm(fmnist_model, x[below], t[below], targeted=True, eps=eps[below] - step, norm=norm)
    assert not _succeeds(fmnist_model, prev, t[below]).any()  # one grid step less fails


def test_registered_searches(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    x, y, t = x[:4], y[:4], t[:4]
    res = run_attack("ifgsm-search", fmnist_model, x, y, targets=t, eps_init=0.05)
    assert res.success.sum() >= 3 and res.gradients < 2 * 12 * 10 * len(x)  # ~2 log2(K) attacks
    res = run_attack("fgm-search", fmnist_model, x, y, targets=t, eps_max=10.0)  # the authors' l2 grid
    assert res.gradients == len(x)
    assert (res.norms["l2"] <= 10.0 + 1e-4).all()
    assert get("ifgsm-search").defaults == {"attack": "ifgsm", "norm": "linf", "search": "bisect"}
    assert get("fgm-search").defaults["search"] == "scan" and get("cw-l2").fn is cw_l2
    with pytest.raises(ValueError, match="unknown attack"):
        min_eps_search(fmnist_model, x, y, attack="nope")


def test_cw_l2_binary_search_grows_c_until_success(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    x, y, t = x[:4], y[:4], t[:4]
    steps, iters = 5, 100  # lr 0.1: black pixels sit at tanh-saturated w, too slow to move at 0.01
    res = run_attack(cw_l2, fmnist_model, x, y, targets=t, initial_const=1e-2, binary_search_steps=steps,
                     max_iterations=iters, learning_rate=0.1)
    assert res.success.sum() >= 3  # c grew from 1e-2 (too small) until success
    assert res.adv.min() >= 0 and res.adv.max() <= 1
    assert res.gradients < steps * iters * len(x)  # abort early: finished examples leave
    assert (res.delta[~res.success] == 0).all()


def test_cw_linf_shrinks_the_bound(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    x, y, t = x[:4], y[:4], t[:4]
    res = run_attack(cw_linf, fmnist_model, x, y, targets=t, initial_const=0.1, max_iterations=60,
                     tau_min=0.1, decrease_factor=0.7, learning_rate=0.05)
    assert res.success.sum() >= 3
    assert (res.norms["linf"][res.success] < 0.5).all()  # t shrank well below its start of 1
    assert res.adv.min() >= 0 and res.adv.max() <= 1

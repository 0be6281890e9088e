"""Dense baselines of StrAttack's tables: FGM/FGSM, the minimal-eps grid search (with FGM and
IFGSM), C&W-l2 and C&W-l_inf. Short schedules on the shipped Fashion-MNIST net.

Every attack ends with `ops.quantize.finish`: with quantize=True (the default; the Fashion-MNIST
images are 8-bit) outputs are exactly on the 8-bit grid and a failure is the input bit for bit.
Assertions that compare runs on different batches (the eps a search found vs. the attack rerun at
that eps) run in float64, where a batch gives exactly the result of one example at a time; rates
are asserted with a wide margin (at least half where all pairs typically succeed)."""
import copy

import pytest
import torch

from sparseattack import run_attack
from sparseattack.attacks import get, ifgsm
from sparseattack.attacks.dense import cw_l2, cw_linf, default_eps_grid, find_min_eps, fgm, fgsm, min_eps_search
from sparseattack.eval import CountingModel

from conftest import NeverFooled, assert_bad_calls_refused, check_finished, succeeds


_succeeds, _check_finished = succeeds, check_finished


def _fails_as_float_or_8bit(attack, model, x, labels, **kw):
    """Per example: the attack fails at these arguments, as floats or after its 8-bit finish (what
    min_eps_search counts as a failure at a grid eps): one of the two outputs is the input."""
    same = lambda adv: (adv == x).flatten(1).all(1)  # noqa: E731
    return same(attack(model, x, labels, **kw)) | same(attack(model, x, labels, quantize=False, **kw))


def _grid64(x):
    """float64 copy of 8-bit images, exactly k/255 in float64."""
    return (x.double() * 255).round() / 255


@pytest.fixture(scope="module")
def model64(fmnist_model):
    return copy.deepcopy(fmnist_model).double()


def test_one_step_attacks_bounds_and_one_gradient(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    res = run_attack("fgm", fmnist_model, x, y, targets=t, eps=2.0)
    assert res.gradients == len(x)
    _check_finished(fmnist_model, x, res.adv, t, l2=2.0)
    res = run_attack("fgsm", fmnist_model, x, y, eps=0.1)  # untargeted
    assert res.gradients == len(x)
    _check_finished(fmnist_model, x, res.adv, y, targeted=False, linf=0.1)
    eps = torch.linspace(0.05, 0.4, len(x))
    _check_finished(fmnist_model, x, fgsm(fmnist_model, x, y, eps=eps), y, targeted=False, linf=eps)
    _check_finished(fmnist_model, x, ifgsm(fmnist_model, x, t, targeted=True, eps=0.3), t, linf=0.3)
    _check_finished(fmnist_model, x, ifgsm(fmnist_model, x, t, targeted=True, eps=3.0, norm="l2"), t, l2=3.0)
    # float research mode: not on the grid, the ball and the box all the same, failures unchanged
    adv = fgsm(fmnist_model, x, y, eps=eps, quantize=False)
    changed = (adv != x).flatten(1).any(1)
    assert torch.equal(changed, _succeeds(fmnist_model, adv, y, targeted=False))
    assert ((adv - x).abs().flatten(1).amax(1) <= eps + 1e-6).all() and adv.min() >= 0 and adv.max() <= 1
    with pytest.raises(ValueError, match="norm"):
        fgm(fmnist_model, x, y, norm="l1")


def test_fgsm_scan_finds_the_first_grid_eps_with_one_gradient(fmnist_model, fmnist_pairs):
    x, y, _ = fmnist_pairs
    counter = CountingModel(fmnist_model)
    res = find_min_eps(counter, x, y, attack="fgsm", search="scan", eps_max=0.1)
    adv, eps = res.adv, res.budget
    assert counter.gradients == len(x)  # one gradient, then forward passes only
    ok = torch.isfinite(eps)
    assert ok.float().mean() >= 0.5  # typically 7 of 8 (one needs eps 0.18)
    assert torch.equal(_check_finished(fmnist_model, x, adv, y, targeted=False, linf=torch.where(ok, eps, 0)), ok)
    # the output is what FGSM returns at that eps (finished on the grid inside the eps-ball; on the
    # whole batch, so that the gradient is the scan's bit for bit) ...
    step, _ = default_eps_grid("linf", x)
    at = fgsm(fmnist_model, x, y, eps=torch.where(ok, eps, step))
    assert torch.equal(at[ok], adv[ok])
    # ... and one grid step less, FGSM fails as floats or after the finish (it returns the input)
    below = ok & (eps > step * 1.5)
    assert _fails_as_float_or_8bit(fgsm, fmnist_model, x, y, eps=torch.where(below, eps - step, step))[below].all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_ifgsm_bisection_is_minimal_on_the_grid(model64, fmnist_pairs, norm):
    """In float64: the reruns below take other batches than the search's probes."""
    x, _, t = fmnist_pairs
    x, t = _grid64(x[:4]), t[:4]
    res = find_min_eps(model64, x, t, targeted=True, attack="ifgsm", norm=norm,
                       eps_init=0.05 if norm == "linf" else 1.0)
    adv, eps = res.adv, res.budget
    ok = torch.isfinite(eps)
    assert ok.sum() >= 2  # typically all 4
    cap = {norm: torch.where(ok, eps, 0)}
    assert torch.equal(_check_finished(model64, x, adv, t, **cap), ok)
    assert torch.equal(adv[ok], ifgsm(model64, x[ok], t[ok], targeted=True, eps=eps[ok], norm=norm))
    step, _ = default_eps_grid(norm, x)
    below = ok & (eps > step * 1.5)  # one grid step less fails as floats or after the finish
    assert _fails_as_float_or_8bit(ifgsm, model64, x[below], t[below], targeted=True, eps=eps[below] - step,
                                   norm=norm).all()


def test_registered_searches(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    res = run_attack("ifgsm-search", fmnist_model, x, y, targets=t, eps_init=0.05)
    assert res.success.float().mean() >= 0.5  # typically all 8
    assert res.gradients < 2 * 12 * 10 * len(x)  # ~2 log2(K) attacks
    _check_finished(fmnist_model, x, res.adv, t)
    # targeted FGM mostly fails below l2 = 2: those examples come back unchanged, not at eps_max
    res = run_attack("fgm-search", fmnist_model, x[:4], y[:4], targets=t[:4], eps_max=2.0)
    assert res.gradients == 4
    _check_finished(fmnist_model, x[:4], res.adv, t[:4], l2=2.0)
    assert get("ifgsm-search").defaults == {"attack": "ifgsm", "norm": "linf", "search": "bisect"}
    assert get("fgm-search").defaults["search"] == "scan" and get("cw-l2").fn is cw_l2
    with pytest.raises(ValueError, match="unknown attack"):
        min_eps_search(fmnist_model, x, y, attack="nope")
    with pytest.raises(TypeError, match="unexpected argument"):
        min_eps_search(fmnist_model, x, y, attack="ifgsm", stepz=3)


def test_cw_l2_binary_search_grows_c_until_success(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    x, y, t = x[:4], y[:4], t[:4]
    searches, iters = 5, 100  # step 0.1: black pixels sit at tanh-saturated w, too slow to move at 0.01
    res = run_attack(cw_l2, fmnist_model, x, y, targets=t, initial_const=1e-2, binary_search_steps=searches,
                     steps=iters, step_size=0.1)
    assert res.success.sum() >= 2  # c grew from 1e-2 (too small) until success; typically all 4
    assert res.gradients < searches * iters * len(x)  # abort early: finished examples leave
    _check_finished(fmnist_model, x, res.adv, t)


def test_cw_linf_shrinks_the_bound(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    x, y, t = x[:4], y[:4], t[:4]
    res = run_attack(cw_linf, fmnist_model, x, y, targets=t, initial_const=0.1, steps=60,
                     tau_min=0.1, decrease_factor=0.7, step_size=0.05)
    assert res.success.sum() >= 2  # typically all 4
    assert (res.norms["linf"][res.success] < 0.5).all()  # t shrank well below its start of 1
    _check_finished(fmnist_model, x, res.adv, t)


def _dense_calls(x, labels, targeted):
    """Every dense attack with a short schedule, as (name, call(model, x, labels, **kw))."""
    kw = dict(targeted=targeted)
    return [
        ("ifgsm", lambda m, x, l, **q: ifgsm(m, x, l, eps=0.2, **kw, **q)),
        ("ifgm-l2", lambda m, x, l, **q: ifgsm(m, x, l, eps=2.0, norm="l2", **kw, **q)),
        ("fgm", lambda m, x, l, **q: fgm(m, x, l, eps=3.0, **kw, **q)),
        ("fgsm", lambda m, x, l, **q: fgsm(m, x, l, eps=0.2, **kw, **q)),
        ("fgsm-scan", lambda m, x, l, **q: min_eps_search(m, x, l, attack="fgsm", search="scan", eps_max=0.05,
                                                          **kw, **q)),
        ("ifgsm-bisect", lambda m, x, l, **q: min_eps_search(m, x, l, attack="ifgsm", eps_max=0.3, eps_init=0.02,
                                                             steps=4, **kw, **q)),
        ("cw-l2", lambda m, x, l, **q: cw_l2(m, x, l, initial_const=1.0, binary_search_steps=2,
                                             steps=15, step_size=0.1, **kw, **q)),
        ("cw-linf", lambda m, x, l, **q: cw_linf(m, x, l, initial_const=1.0, largest_const=4.0, steps=8,
                                                 step_size=0.05, **kw, **q)),
    ]


@pytest.mark.parametrize("quantize", [True, False])
def test_failures_return_the_input_bit_for_bit(fmnist_model, fmnist_pairs, quantize):
    x, y, _ = fmnist_pairs
    x = x[:2]
    never = NeverFooled(fmnist_model)
    targets = torch.tensor([3, 7])
    for targeted, labels in ((True, targets), (False, torch.zeros(2, dtype=torch.long))):
        for name, call in _dense_calls(x, labels, targeted):
            adv = call(never, x, labels, quantize=quantize)
            assert torch.equal(adv, x), (name, targeted)
    res = find_min_eps(never, x, targets, targeted=True, attack="fgsm", search="scan", eps_max=0.02,
                       quantize=quantize)
    assert torch.isinf(res.budget).all() and not res.found.any() and torch.equal(res.adv, x)


def test_batch_equals_one_at_a_time_in_float64(model64, fmnist_pairs):
    """No coupling between the examples of a batch, the finish included (untargeted: most of
    these short runs succeed, so the finish's grid candidates are compared too)."""
    x, y, _ = fmnist_pairs
    x, y = _grid64(x[:3]), y[:3]
    changed = 0
    for name, call in _dense_calls(x, y, False):
        batch = call(model64, x, y)
        single = torch.cat([call(model64, x[i:i + 1], y[i:i + 1]) for i in range(3)])
        assert torch.equal(batch, single), name
        assert batch.dtype == torch.float64 and torch.equal((batch * 255).round() / 255, batch)
        changed += int((batch != x).flatten(1).any(1).sum())
    assert changed >= 6  # of 24 outputs; typically about 20


def test_bad_calls_are_refused_before_any_step(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    x, t = x[:2], t[:2]
    for name, call in _dense_calls(x, t, True):
        assert_bad_calls_refused(call, fmnist_model, x, t)


def test_old_names_still_work_with_a_deprecation_warning(fmnist_model, fmnist_pairs):
    """0.1's max_iterations / learning_rate of cw_l2 and cw_linf map to steps / step_size (same
    result, a DeprecationWarning); giving both names is a TypeError. return_eps is gone."""
    x, _, t = fmnist_pairs
    x, t = x[:2], t[:2]
    for fn, kw in ((cw_l2, dict(initial_const=1.0, binary_search_steps=1)),
                   (cw_linf, dict(initial_const=1.0, largest_const=2.0))):
        new = fn(fmnist_model, x, t, targeted=True, steps=6, step_size=0.1, quantize=False, **kw)
        with pytest.warns(DeprecationWarning) as warned:
            old = fn(fmnist_model, x, t, targeted=True, max_iterations=6, learning_rate=0.1, quantize=False, **kw)
        assert torch.equal(old, new), fn.__name__
        said = " ".join(str(w.message) for w in warned)
        assert "'max_iterations' is now 'steps'" in said and "'learning_rate' is now 'step_size'" in said
        with pytest.raises(TypeError, match="both"):
            fn(fmnist_model, x, t, targeted=True, max_iterations=6, steps=6, **kw)
    with pytest.raises(TypeError, match="return_eps"):
        min_eps_search(fmnist_model, x, t, targeted=True, attack="fgsm", return_eps=True)


def test_min_eps_search_is_find_min_eps_adv(fmnist_model, fmnist_pairs):
    x, y, _ = fmnist_pairs
    kw = dict(attack="fgsm", search="bisect", eps_max=0.1, quantize=False)
    res = find_min_eps(fmnist_model, x, y, **kw)
    adv = min_eps_search(fmnist_model, x, y, **kw)
    assert isinstance(adv, torch.Tensor) and torch.equal(adv, res.adv)
    assert torch.equal(res.found, torch.isfinite(res.budget)) and res.found.any()


def test_ifgsm_keeps_no_private_copies_of_shared_helpers():
    """The tensor helpers live in ops.tensors; the I-FGSM loop is public for the eps searches."""
    import importlib

    module = importlib.import_module("sparseattack.attacks.ifgsm")
    for name in ("_per_example", "_l2_normalize", "_project_l2", "_check_norm", "_ball_cap", "_ifgsm"):
        assert not hasattr(module, name), name
    assert callable(module.ifgsm_iterations) and module.ifgsm_iterations.__doc__

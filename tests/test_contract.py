"""The contract every registered attack keeps (`attacks.available()`), on the shipped Fashion-MNIST net.

For each attack, with short settings: output shape, dtype and [0, 1] range; 8-bit outputs by
default with entries left unchanged bit-identical; targeted and untargeted semantics (a changed
output is adversarial, an unchanged one is the input itself: failure returns the input);
l0 <= k where a budget is given; batch == one at a time exactly in float64; clear errors on bad
labels before any gradient step; a model that cannot be fooled gives back the inputs.
"""
from __future__ import annotations

import copy
import inspect
import re

import pytest
import torch
from torch import nn

from sparseattack.attacks import available, get

# Short settings per attack: the contract is structural, not about strength. Every registered
# attack must have an entry (test_every_attack_is_covered).
FAST = {
    "sapf": dict(k=60, stages=3, stage_steps=15, max_stages=6, polish_steps=20),
    "sapf-gs": dict(k=60, preset="fast", steps=1, delta_steps=15, g_steps=20, refine_steps=30,
                    binary_search_steps=2, groups="grid", lambda2=1.0),
    "sapf-vi": dict(k=60, steps=1, delta_steps=15, g_steps=20, refine_steps=30, binary_search_steps=2),
    "strattack": dict(binary_search_steps=2, steps=20),
    "strattack-overlap": dict(binary_search_steps=2, steps=20),
    "strattack-refined": dict(binary_search_steps=2, steps=20, refine_binary_search_steps=1, refine_steps=20),
    "cw-l0": dict(steps=30, max_rounds=2),
    "one-pixel": dict(k=3, popsize=30, steps=3),
    "sparsefool": dict(steps=3, deepfool_steps=10),
    "corner-search": dict(k=8, steps=30, eval_batch=128),
    "pgd-l0-linf": dict(k=12, steps=10, restarts=1),
    "cw-l2": dict(binary_search_steps=2, steps=30),
    "cw-linf": dict(steps=30),
    "fgm": dict(eps=2.0),
    "fgsm": dict(eps=0.1),
    "ifgsm": dict(eps=0.15),
    "ifgm-l2": dict(eps=2.0),
    "fgm-search": dict(grid_step=0.1),
    "fgsm-search": dict(grid_step=0.01),
    "ifgsm-search": dict(),
    "ifgm-l2-search": dict(),
}
METHODS = sorted(FAST)
# The attacks with a sparsity budget: every one takes `k` and `granularity` (the glossary).
BUDGETED = ("sapf", "sapf-gs", "sapf-vi", "one-pixel", "corner-search", "pgd-l0-linf")
# Names of 0.1 that the glossary replaced: no registered attack may take them (only as deprecated aliases).
OLD_NAMES = ("max_iterations", "max_iter", "n_iter", "iterations", "outer_iters", "learning_rate", "lr",
             "search_steps", "refine_search_steps", "refine_iterations", "pixels", "return_eps")
# `eps` is only a threat-model radius: the attacks inside an eps-ball, and the searches over eps.
EPS_BALLS = ("fgm", "fgsm", "ifgsm", "ifgm-l2", "pgd-l0-linf")


def _call(name, model, x, labels, **kw):
    spec = get(name)
    return spec.fn(model, x, labels, **{**spec.defaults, **FAST[name], **kw})


def _pred(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def test_every_attack_is_covered():
    assert set(available()) == set(FAST), "add short settings for every registered attack to FAST"


@pytest.mark.parametrize("name", METHODS)
def test_targeted_contract(name, fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    x, t = x[:6], t[:6]
    adv = _call(name, fmnist_model, x, t, targeted=True)
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
    assert adv.min() >= 0 and adv.max() <= 1
    assert torch.equal((adv * 255).round() / 255, adv), "quantize=True output must be 8-bit"
    changed = (adv != x).flatten(1).any(1)
    # a changed output is adversarial toward its target; an unchanged one is the input itself
    assert (_pred(fmnist_model, adv)[changed] == t[changed]).all()
    # entries that were not perturbed are bit-identical to the input
    assert torch.equal(torch.where(adv != x, x, adv), x)
    if name in BUDGETED:
        resolved = get(name).resolve(FAST[name])
        d = adv - x
        count = d.ne(0).flatten(1).sum(1) if resolved["granularity"] == "element" else d.ne(0).any(1).flatten(1).sum(1)
        assert (count <= resolved["k"]).all(), count


@pytest.mark.parametrize("name", METHODS)
def test_parameters_follow_the_glossary(name):
    """One vocabulary (attacks/__init__.py): k + granularity for budgets, eps only for a radius,
    linf_cap for a cap, steps / binary_search_steps / step_size; every parameter documented."""
    spec = get(name)
    params = spec.parameters()
    assert not set(params) & set(OLD_NAMES), sorted(set(params) & set(OLD_NAMES))
    assert ("k" in params and "granularity" in params) == (name in BUDGETED)
    if "eps" in params:
        assert name in EPS_BALLS or name.endswith("-search"), f"{name}: eps is only a threat-model radius"
    doc = inspect.getdoc(spec.fn) or ""
    forwarded = inspect.getdoc(spec.fn.__wrapped__ if hasattr(spec.fn, "__wrapped__") else spec.fn) or ""
    if name.startswith("sapf"):
        from sparseattack.attacks.sapf import SAPFSchedule, sapf
        forwarded += (inspect.getdoc(SAPFSchedule) or "") + (inspect.getdoc(sapf) or "")
    if name.endswith("-search"):
        from sparseattack.attacks import fgm, ifgsm
        forwarded += (inspect.getdoc(fgm) or "") + (inspect.getdoc(ifgsm) or "")
    undocumented = [p for p in params if not re.search(rf"^\s*{p}\b.*:", doc + "\n" + forwarded, re.M)]
    assert not undocumented, f"{name}: parameters missing from the numpy-style docstring: {undocumented}"


@pytest.mark.parametrize("name", METHODS)
def test_untargeted_contract(name, fmnist_model, fmnist_pairs):
    x, y, _ = fmnist_pairs
    x, y = x[:4], y[:4]
    adv = _call(name, fmnist_model, x, y, targeted=False)
    changed = (adv != x).flatten(1).any(1)
    assert (_pred(fmnist_model, adv)[changed] != y[changed]).all()
    assert torch.equal(adv[~changed], x[~changed])


@pytest.mark.parametrize("name", METHODS)
def test_batch_equals_one_at_a_time_in_float64(name, fmnist_model, fmnist_pairs):
    """No coupling between the pairs of a batch (shared generators, batch-wide stops or steps)."""
    x, _, t = fmnist_pairs
    model64 = copy.deepcopy(fmnist_model).double()
    x, t = x[:3].double(), t[:3]
    batch = _call(name, model64, x, t, targeted=True)
    single = torch.cat([_call(name, model64, x[i:i + 1], t[i:i + 1], targeted=True) for i in range(3)])
    assert batch.dtype == torch.float64
    assert torch.equal(batch, single)


class _GradientSteps(nn.Module):
    """Counts forward passes that build a graph (an attack step), passing everything through."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.steps = 0
        self.train(model.training)

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            self.steps += 1
        return self.model(x)


@pytest.mark.parametrize("name", METHODS)
def test_bad_labels_are_clear_errors_before_any_step(name, fmnist_model, fmnist_pairs):
    x, _, t = fmnist_pairs
    x, t = x[:3], t[:3]
    for labels, error, match in ((t[:2], ValueError, r"shape \(3,\)"), (t.float(), TypeError, "integer"),
                                 (t + 10, ValueError, "10 classes"), (t - 20, ValueError, "negative")):
        counting = _GradientSteps(fmnist_model)
        with pytest.raises(error, match=match):
            _call(name, counting, x, labels, targeted=True)
        assert counting.steps == 0
    with pytest.raises(ValueError, match="training mode"):
        _call(name, copy.deepcopy(fmnist_model).train(), x, t, targeted=True)
    with pytest.raises(TypeError, match="float64"):
        _call(name, fmnist_model, x.double(), t, targeted=True)
    with pytest.raises(ValueError, match="not 8-bit images"):
        _call(name, fmnist_model, (x + 0.3 / 255).clamp(0, 1), t, targeted=True)


class _Unfoolable(nn.Module):
    """Logits that do not depend on the input (zero gradients): no attack can succeed."""

    def __init__(self, label: int = 3, classes: int = 10):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.register_buffer("logits", torch.nn.functional.one_hot(torch.tensor(label), classes).float() * 5)

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1) + 0 * x.flatten(1).sum(1, keepdim=True) * self.weight


@pytest.mark.parametrize("name", METHODS)
def test_failure_returns_the_input_unchanged(name, fmnist_pairs):
    x, _, _ = fmnist_pairs
    x = x[:2]
    model = _Unfoolable().eval()
    targets = torch.tensor([5, 7])
    adv = _call(name, model, x, targets, targeted=True)
    assert torch.equal(adv, x)
    adv = _call(name, model, x, torch.tensor([3, 3]), targeted=False)
    assert torch.equal(adv, x)

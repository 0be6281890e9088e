"""The sparse baselines of SAPF's Table 1 (C&W-l0, One-Pixel, SparseFool, CornerSearch, PGD l0+l_inf)
on the shipped Fashion-MNIST net.

What is asserted, and why it holds on any CPU:
- the contract of `ops.quantize.finish` is structural: the output lies exactly on the 8-bit grid,
  every changed example succeeds (one forward pass) and every other one is its input
  bit-identical, the l0 budget and the l_inf cap hold;
- batch independence is exact: in float64 a batch returns what its examples return one at a time
  and in reverse order (per-example generators, `ops.rng`);
- success rates are measured on enough pairs and asserted well below what is measured (the
  margins are in the comments, measured with 20 seeds where the attack is random), so no
  assertion rests on one or two pairs near a threshold.
Schedules are short so the module runs in seconds."""
import copy
import itertools

import pytest
import torch
from torch import nn

from sparseattack.attacks import available, get
from sparseattack.attacks.corner_search import corner_search
from sparseattack.attacks.cw_l0 import cw_l0
from sparseattack.attacks.one_pixel import one_pixel
from sparseattack.attacks.pgd_l0 import _project, pgd_l0_linf
from sparseattack.attacks.sparsefool import linear_solver, sparsefool
from sparseattack.eval import CountingModel
from sparseattack.ops.losses import is_adversarial, logit_margin
from sparseattack.ops.projections import project_l0_box
from sparseattack.ops.quantize import quantize
from sparseattack.ops.rng import example_generators
from sparseattack.ops.search import TradeoffSearch

NAMES = ("cw-l0", "one-pixel", "sparsefool", "corner-search", "pgd-l0-linf")
ATTACKS = {"cw-l0": cw_l0, "one-pixel": one_pixel, "sparsefool": sparsefool,
           "corner-search": corner_search, "pgd-l0-linf": pgd_l0_linf}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny batches on a shared 2-core machine run far faster on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def easy(fmnist_model, fmnist_test):
    """The 24 correctly classified test images (of the first 200) with the smallest margins, in
    increasing order (easy pairs: margins 0.008 to 1.22), their labels and runner-up classes
    (easy targets). The tests use the first 1, 6, 13 or 24 and ranks 0, 1, 2, 3, 5: each cut
    and rank lies at a gap of at least 0.019 in the margins, far above float rounding (1e-5), so
    the same images are chosen on any CPU."""
    x, y = fmnist_test
    x, y = x[:200], y[:200]
    with torch.no_grad():
        logits = fmnist_model(x)
    margin = logit_margin(logits, y, targeted=False)
    margin[logits.argmax(1) != y] = float("inf")
    idx = margin.argsort()[:24]
    runner_up = logits.scatter(1, y[:, None], float("-inf")).argmax(1)
    return x[idx].clone(), y[idx].clone(), runner_up[idx].clone()


@pytest.fixture(scope="module")
def model64(fmnist_model):
    """A float64 copy of the shipped net (the session's model stays float32)."""
    return copy.deepcopy(fmnist_model).double().eval()


def _finished(model, x, adv, labels, *, targeted, k=None, linf=None):
    """Assert the contract of `ops.quantize.finish` on an attack's output; return the successes.

    The inputs must be correctly classified (untargeted) or not yet the target (targeted), so an
    example succeeds exactly when it was changed."""
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert torch.equal(adv, quantize(adv)), "output is not exactly on the 8-bit grid"
    with torch.no_grad():
        assert not is_adversarial(model(x), labels, targeted=targeted).any()
        success = is_adversarial(model(adv), labels, targeted=targeted)
    changed = (adv != x).flatten(1).any(1)
    # a changed example is a success; a failure is its input, bit-identical
    assert torch.equal(success, changed)
    diff = (adv - x).abs()
    assert (diff[adv != x] >= 1 / 255 - 1e-6).all()      # grid steps, no float residue
    if k is not None:
        assert ((adv != x).any(1).flatten(1).sum(1) <= k).all()
    if linf is not None:
        assert (diff.flatten(1).amax(1) <= linf + 1e-6).all()
    return success


def test_registered_with_defaults():
    for name in NAMES:
        spec = get(name)
        assert name in available() and spec.sparse and spec.defaults
        assert spec.fn is ATTACKS[name]
        assert spec.fn.__doc__ and spec.fn.__module__.startswith("sparseattack.attacks.")
        assert "quantize" in spec.fn.__doc__


def _brute_force_l0_projection(delta, lb, ub, k, mask_shape):
    """The nearest point of {lb <= d <= ub, at most k nonzero units} per example, by trying every
    set of k kept units (a unit: one entry of a mask of `mask_shape`, broadcast over the rest)."""
    units = torch.Size(mask_shape).numel()
    out = []
    for i in range(delta.shape[0]):
        best = None
        for keep in itertools.combinations(range(units), k):
            m = torch.zeros(units)
            m[list(keep)] = 1
            cand = torch.maximum(torch.minimum(delta[i], ub[i]), lb[i]) * m.view(mask_shape)
            d = (cand - delta[i]).pow(2).sum()
            best = (d, cand) if best is None or d < best[0] else best
        out.append(best[1])
    return torch.stack(out)


def test_project_l0_box_is_the_exact_projection():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, 2, 2, generator=g)
    delta = torch.randn(2, 2, 2, 2, generator=g)
    lb, ub = (-x).clamp_min(-0.3), (1 - x).clamp_max(0.3)
    proj = project_l0_box(delta, 2, lb, ub)
    torch.testing.assert_close(proj, _brute_force_l0_projection(delta, lb, ub, 2, (1, 2, 2)))   # pixels
    assert ((proj.abs().sum(1) > 0).flatten(1).sum(1) <= 2).all()


def test_linear_solver_matches_the_greedy_loop():
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.rand(1, 1, 4, 4, generator=g)
        w = torch.randn(1, 1, 4, 4, generator=g)
        xb = x + 0.4 * w / w.norm()
        lo, hi = torch.zeros_like(x), torch.ones_like(x)
        ours = linear_solver(x, w, xb, lo, hi)
        # the authors' one-coordinate-at-a-time loop (f < 0 side)
        xi, cv = x.clone().flatten(), w.clone().flatten()
        f = lambda z: torch.dot(w.flatten(), z - xb.flatten())  # noqa: E731
        sign0 = f(xi).sign()
        while f(xi).sign() == sign0 and (cv != 0).any():
            j = cv.abs().argmax()
            step = ((f(xi) + 1e-3 * sign0).abs() / cv[j].abs()).clamp_min(1e-4) * cv[j].sign() * -sign0
            xi[j] = (xi[j] + step).clamp(0, 1)
            cv[j] = 0
        torch.testing.assert_close(ours.flatten(), xi, atol=1e-5, rtol=0)


def test_tradeoff_search_restart_and_exhausted():
    s = TradeoffSearch(1.0, 3, upper_bound=4.0, scale_up=2.0)
    rows = torch.tensor([0, 2])
    s.update(torch.tensor([False, False]), rows)
    assert s.const.tolist() == [2.0, 1.0, 2.0]
    s.update(torch.tensor([False, True]), rows)
    assert s.const[0] == 4.0 and s.exhausted(rows).tolist() == [True, False]
    s.restart(torch.tensor([2]))
    assert s.upper[2] == 4.0 and s.lower[2] == 0.0


# --- per-example generators -------------------------------------------------------------------

def test_example_generators_follow_the_example_not_the_batch():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (4, 1, 5, 5), generator=g).float() / 255
    y = torch.tensor([0, 1, 2, 1])

    def first(gens):
        return torch.stack([torch.rand(6, generator=gi) for gi in gens])

    batch = first(example_generators(x, y, seed=7))
    alone = torch.cat([first(example_generators(x[i:i + 1], y[i:i + 1], seed=7)) for i in range(4)])
    assert torch.equal(batch, alone)
    assert torch.equal(first(example_generators(x.flip(0), y.flip(0), seed=7)), batch.flip(0))
    # a float64 copy of the same values draws alike; seed, label and image each change the draws
    assert torch.equal(first(example_generators(x.double(), y, seed=7)), batch)
    assert not torch.equal(first(example_generators(x, y, seed=8)), batch)
    assert not torch.equal(first(example_generators(x, (y + 1) % 3, seed=7)), batch)
    assert len({tuple(r.tolist()) for r in batch}) == 4
    with pytest.raises(TypeError, match="seed"):
        example_generators(x, y, seed=0.5)


# --- argument checks ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_bad_labels_and_off_grid_inputs_are_refused(fmnist_model, fmnist_batch, name):
    x, y = fmnist_batch
    x, y = x[:2], y[:2]
    attack = ATTACKS[name]
    with pytest.raises(ValueError, match="shape"):
        attack(fmnist_model, x, y[:1])
    with pytest.raises(TypeError, match="integer"):
        attack(fmnist_model, x, y.float())
    with pytest.raises(ValueError, match="10 classes"):
        attack(fmnist_model, x, torch.tensor([3, 10]))
    with pytest.raises(ValueError, match="negative"):
        attack(fmnist_model, x, torch.tensor([-1, 3]))
    with pytest.raises(ValueError, match="8-bit"):
        attack(fmnist_model, (x + 0.3 / 255).clamp(0, 1), y)                 # quantize=True needs the grid


# --- each attack: the finish's contract and success rates (quantize=True, the default) ----------

def test_sparsefool_untargeted_and_targeted(fmnist_model, easy, fmnist_pairs):
    x, y, t = easy
    x, y, t = x[:13], y[:13], t[:13]
    # untargeted on the 13 easiest pairs: 13/13 succeed (also in float64 and with perturbed
    # weights), with a median of 2 pixels (at most 35)
    adv = sparsefool(fmnist_model, x, y, num_candidates=3)
    ok = _finished(fmnist_model, x, adv, y, targeted=False)
    assert ok.sum() >= 10
    assert (adv != x).any(1).flatten(1).sum(1)[ok].float().median() <= 10
    # targeted, l_inf cap 0.5, 3 outer steps: the easy pairs toward the runner-up (11/13 succeed,
    # likewise in float64 and with perturbed weights) and 2 hard pairs toward (label + 1) mod 10:
    # the first fails even with 20 outer steps (its input comes back unchanged), the second
    # succeeds with 451 pixels
    xs, ts = torch.cat([x, fmnist_pairs[0][:2]]), torch.cat([t, fmnist_pairs[2][:2]])
    adv = sparsefool(fmnist_model, xs, ts, targeted=True, linf_cap=0.5, steps=3, deepfool_steps=20)
    ok = _finished(fmnist_model, xs, adv, ts, targeted=True, linf=0.5)
    assert ok[:13].sum() >= 8 and not ok[13]


def test_one_pixel_respects_pixel_count(fmnist_model, easy, fmnist_pairs):
    x, y, t = easy
    counter = CountingModel(fmnist_model)
    # untargeted, one pixel: the 6 easiest pairs succeed for each of 20 seeds; the hard pair
    # cannot succeed (no single pixel of 11 values in [0, 1] brings its margin below 1.86)
    xs, ys = torch.cat([x[:6], fmnist_pairs[0][:1]]), torch.cat([y[:6], fmnist_pairs[1][:1]])
    adv = one_pixel(counter, xs, ys, k=1, popsize=40, steps=10)
    ok = _finished(fmnist_model, xs, adv, ys, targeted=False, k=1)
    assert ok[:6].sum() >= 4 and not ok[6] and counter.gradients == 0
    # targeted, three pixels: 6/6 for each of 20 seeds
    adv = one_pixel(fmnist_model, x[:6], t[:6], targeted=True, k=3, popsize=40, steps=10)
    ok = _finished(fmnist_model, x[:6], adv, t[:6], targeted=True, k=3)
    assert ok.sum() >= 4


def test_corner_search_respects_k_and_linf_cap(fmnist_model, easy):
    """l0 + l_inf (linf_cap 0.5; the values x +- 0.5 go onto the grid inside the cap): the easiest
    image toward its top 4 other classes (the one-pixel stage, H * W * 2^C forward passes, is
    shared by an image's pairs). Two succeed in the one-pixel stage, deterministically and with
    target margins 0.29 and 0.46; the other two (best one-pixel margin -5.4) fail after sampling
    every level, for each of 3 seeds. The l0 threat model (box corners) is checked on the small
    net below."""
    x, y, _ = easy
    counter = CountingModel(fmnist_model)
    with torch.no_grad():
        tops = fmnist_model(x[:1]).scatter(1, y[:1, None], float("-inf")).topk(4, 1).indices
    xs, ts = x[:1].expand(4, -1, -1, -1).clone(), tops.flatten()
    adv = corner_search(counter, xs, ts, targeted=True, k=6, steps=50, linf_cap=0.5, eval_batch=128)
    ok = _finished(fmnist_model, xs, adv, ts, targeted=True, k=6, linf=0.5)
    assert ok.sum() >= 1 and not ok.all() and counter.gradients == 0


def test_corner_search_float_output_is_already_8_bit(fmnist_model, easy):
    """Without an l_inf cap CornerSearch sets pixels to box corners (0 or 1 per channel, on the grid
    at any image size) and leaves the rest bit-identical: its float output is its 8-bit output, so
    every float success survives the 8-bit round trip by construction (why the 8-bit survival
    benchmark needs no ImageNet run of it: its one-pixel stage ranks all 401,408 corner images)."""
    x, y, _ = easy
    with torch.no_grad():
        tops = fmnist_model(x[:1]).scatter(1, y[:1, None], float("-inf")).topk(4, 1).indices
    xs, ts = x[:1].expand(4, -1, -1, -1).clone(), tops.flatten()
    kwargs = dict(targeted=True, k=8, steps=30, eval_batch=128)
    floats = corner_search(fmnist_model, xs, ts, quantize=False, **kwargs)
    changed = floats != xs
    assert changed.any()
    assert torch.equal(quantize(floats), floats)
    assert set(floats[changed].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(corner_search(fmnist_model, xs, ts, **kwargs), floats)


def test_pgd_l0_linf_respects_both_balls(fmnist_model, easy):
    x, y, t = easy
    counter = CountingModel(fmnist_model)
    adv = pgd_l0_linf(counter, x, t, targeted=True, k=8, eps=[0.2, 0.5], steps=20, restarts=1)
    ok = _finished(fmnist_model, x, adv, t, targeted=True, k=8, linf=0.5)
    # 19 or 20 of the 24 succeed for each of 20 seeds
    assert ok.sum() >= 15
    # examples that succeed leave the working set: far fewer gradients than 2 radii x 20 steps
    # per pair (960; measured 190 to 230 over 10 seeds)
    assert counter.gradients < 0.5 * 2 * 20 * len(x)


def test_cw_l0_shrinks_to_a_sparse_success(fmnist_model, easy):
    x, _, t = easy
    x, t = x[[0, 1, 2, 5]], t[[0, 1, 2, 5]]
    adv = cw_l0(fmnist_model, x, t, targeted=True, steps=30, initial_const=1.0)
    ok = _finished(fmnist_model, x, adv, t, targeted=True)
    # 4/4 succeed with one pixel each (also with 100 iterations), far below the 784 pixels the
    # first l2 solve may touch
    assert ok.sum() >= 3
    l0 = (adv != x).any(1).flatten(1).sum(1)
    assert (l0[ok] <= 20).all()


# --- batch independence: exact in float64 ---------------------------------------------------------

class _Tiny(nn.Module):
    """A seeded 3-channel net on 6 x 6 images: CornerSearch's one-pixel stage is H * W * 2^C
    forward passes per image, affordable here in float64 (the 28 x 28 net needs seconds)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 4 * 4, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _grid64(x):
    return (x.double() * 255).round() / 255


BATCH_SETTINGS = {  # (attack keywords, l0 budget in pixels, l_inf cap)
    "cw-l0": (dict(steps=5, initial_const=1.0, largest_const=4.0, max_rounds=2), None, None),
    "one-pixel": (dict(k=2, popsize=8, steps=2), 2, None),
    "sparsefool": (dict(num_candidates=3, steps=2, deepfool_steps=5, linf_cap=0.3), None, 0.3),
    "corner-search": (dict(k=4, steps=10), 4, None),
    "pgd-l0-linf": (dict(k=6, eps=[0.2, 0.4], steps=5, restarts=2), 6, 0.4),
}


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_one_at_a_time_in_float64(model64, easy, fmnist_pairs, name):
    """A batch mixing easy and hard pairs (successes at different steps, failures) and a repeated
    pair returns exactly what each pair returns alone, and the same in reverse order (the same
    seed gives the same output). The finish's contract holds in float64 too."""
    attack, (kw, k, linf) = ATTACKS[name], BATCH_SETTINGS[name]
    if name == "corner-search":
        model = _Tiny().double().eval()
        g = torch.Generator().manual_seed(1)
        x = torch.randint(0, 256, (5, 3, 6, 6), generator=g).double() / 255      # 1 fails, 4 succeed
        with torch.no_grad():
            y = model(x).argmax(1)
        x, y = torch.cat([x, x[:1]]), torch.cat([y, y[:1]])
        t = (y + 1) % 5
    else:
        model = model64
        pick = lambda easy_part, hard_part: torch.cat([easy_part[[0, 3]], hard_part[:1], easy_part[:1]])  # noqa: E731
        x = _grid64(pick(easy[0], fmnist_pairs[0]))
        y, t = pick(easy[1], fmnist_pairs[1]), pick(easy[2], fmnist_pairs[2])
    for targeted, labels in ((False, y), (True, t)):
        batch = attack(model, x, labels, targeted=targeted, **kw)
        alone = torch.cat([attack(model, x[i:i + 1], labels[i:i + 1], targeted=targeted, **kw)
                           for i in range(len(x))])
        assert torch.equal(batch, alone), f"{name} targeted={targeted}: batch differs from one at a time"
        back = attack(model, x.flip(0), labels.flip(0), targeted=targeted, **kw)
        assert torch.equal(back.flip(0), batch)
        _finished(model, x, batch, labels, targeted=targeted, k=k, linf=linf)


# --- the 0.1 names (deprecated) and the granularity of the budget ----------------------------------

DEPRECATED = {  # name: (0.1 keywords, the same call with the new names)
    "cw-l0": (dict(max_iterations=3, learning_rate=0.02), dict(steps=3, step_size=0.02)),
    "one-pixel": (dict(pixels=2, max_iter=1), dict(k=2, steps=1)),
    "sparsefool": (dict(max_iter=1, eps=0.3), dict(steps=1, linf_cap=0.3)),
    "corner-search": (dict(n_iter=2, eps=0.3), dict(steps=2, linf_cap=0.3)),
}
SMALL = {"cw-l0": dict(initial_const=1.0, max_rounds=1), "one-pixel": dict(popsize=8),
         "sparsefool": dict(num_candidates=3, deepfool_steps=3), "corner-search": dict(k=3)}


def _tiny_pairs():
    model = _Tiny().eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (3, 3, 6, 6), generator=g).float() / 255
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize("name", list(DEPRECATED))
def test_old_names_warn_and_do_what_the_new_names_do(name):
    model, x, y = _tiny_pairs()
    attack, (old, new) = ATTACKS[name], DEPRECATED[name]
    with pytest.warns(DeprecationWarning, match="is now"):
        before = attack(model, x, y, **old, **SMALL[name])
    assert torch.equal(before, attack(model, x, y, **new, **SMALL[name]))
    old_key = next(iter(old))
    new_key = attack.__renamed__[old_key]
    with pytest.raises(TypeError, match="both"):
        attack(model, x, y, **{old_key: old[old_key], new_key: new[new_key]}, **SMALL[name])


@pytest.mark.parametrize("name", ["one-pixel", "corner-search"])
def test_pixel_only_attacks_refuse_element_budgets(name):
    model, x, y = _tiny_pairs()
    with pytest.raises(ValueError, match="granularity"):
        ATTACKS[name](model, x, y, granularity="element", **SMALL[name])


def test_pgd_l0_linf_element_budget(fmnist_model, easy):
    """granularity='element' counts entries: on a one-channel image it is the pixel attack (the
    same numbers); on three channels the changed entries stay within k, and the projection is
    the exact one (brute force)."""
    x, _, t = easy
    kw = dict(targeted=True, k=4, eps=0.5, steps=5, restarts=1)
    assert torch.equal(pgd_l0_linf(fmnist_model, x[:4], t[:4], granularity="element", **kw),
                       pgd_l0_linf(fmnist_model, x[:4], t[:4], **kw))
    model, x3, y3 = _tiny_pairs()
    kw = dict(targeted=True, k=5, eps=0.4, steps=5, restarts=1)
    # measured: 2 of the 3 pairs succeed with 5 entries; with k = 5 pixels, with 15 entries
    entries = (pgd_l0_linf(model, x3, (y3 + 1) % 5, granularity="element", **kw) != x3).flatten(1).sum(1)
    assert (entries <= 5).all() and (entries > 0).sum() >= 1
    assert (pgd_l0_linf(model, x3, (y3 + 1) % 5, **kw) != x3).flatten(1).sum(1).max() > 5
    with pytest.raises(ValueError, match="granularity"):
        pgd_l0_linf(model, x3, y3, granularity="channel")

    g = torch.Generator().manual_seed(4)
    xb = torch.rand(2, 2, 1, 2, generator=g)
    delta = torch.randn(2, 2, 1, 2, generator=g)
    lb, ub = (-xb).clamp_min(-0.3), (1 - xb).clamp_max(0.3)
    torch.testing.assert_close(_project(delta, 2, lb, ub, "element"),
                               _brute_force_l0_projection(delta, lb, ub, 2, (2, 1, 2)))    # entries

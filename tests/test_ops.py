"""Shared building blocks: projections, top-k, groups, trade-off search, losses."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparseattack.ops import TradeoffSearch, cw_margin_loss, project_l2_sphere, topk_mask
from sparseattack.ops.groups import (grid_segments, group_norms, group_topk_mask, groups_touched,
                                     grow_support_by_windows, sliding_window_groups, superpixel_segments,
                                     window_sq_sums)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(2, 50), st.integers(0, 10_000))
def test_sphere_projection_lands_on_sphere(b, n, seed):
    x = torch.randn(b, n, generator=torch.Generator().manual_seed(seed))
    y = project_l2_sphere(x)
    torch.testing.assert_close((y - 0.5).pow(2).sum(1), torch.full((b,), n / 4), rtol=1e-4, atol=1e-4)
    # binary vectors are fixed points
    v = (x > 0).float()
    torch.testing.assert_close(project_l2_sphere(v), v)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 60), st.data())
def test_topk_mask_has_exactly_k(b, n, data):
    scores = torch.randn(b, n)
    k = data.draw(st.integers(1, n))
    mask = topk_mask(scores, k)
    assert (mask.sum(1) == k).all()
    ks = torch.tensor(data.draw(st.lists(st.integers(0, n), min_size=b, max_size=b)))
    mask = topk_mask(scores, ks)
    assert (mask.sum(1) == ks).all()
    # the kept entries are the largest ones
    for i in range(b):
        if 0 < ks[i] < n:
            assert scores[i][mask[i] > 0].min() >= scores[i][mask[i] == 0].max()


def test_tradeoff_search_grows_then_bisects():
    s = TradeoffSearch(0.01, 2, upper_bound=100.0)
    s.update(torch.tensor([False, True]))
    assert torch.allclose(s.const, torch.tensor([0.1, 0.005]))
    s.update(torch.tensor([True, False]))
    assert torch.allclose(s.const, torch.tensor([0.055, 0.0075]))  # (0.01 + 0.1) / 2


def test_groups_as_index_tensors():
    seg = grid_segments(4, 4, 2)
    assert seg.max() == 3 and (seg[:2, :2] == 0).all()
    win = sliding_window_groups(5, 5, 3, 2)
    assert win.shape == (4, 9)
    x = torch.zeros(1, 3, 4, 4)
    x[0, :, 0, 0] = 1.0
    assert groups_touched(x, seg).item() == 1
    torch.testing.assert_close(group_norms(x, seg)[0], torch.tensor([3 ** 0.5, 0, 0, 0]))
    x5 = torch.zeros(1, 1, 5, 5)
    x5[0, 0, 2, 2] = 1.0  # the centre lies in all four overlapping windows
    assert groups_touched(x5, win).item() == 4


def test_superpixels_cover_image():
    img = torch.rand(2, 3, 32, 32)
    seg = superpixel_segments(img, n_segments=16)
    assert seg.shape == (2, 32, 32)
    for s in seg:
        assert s.min() == 0 and len(torch.unique(s)) == s.max() + 1


def test_cw_margin_loss_zero_exactly_at_success():
    logits = torch.tensor([[1.0, 3.0, 0.0], [2.0, 1.0, 0.0]])
    loss = cw_margin_loss(logits, torch.tensor([1, 1]), targeted=True)
    assert loss[0] == 0 and loss[1] == 1.0
    loss = cw_margin_loss(logits, torch.tensor([1, 1]), targeted=True, kappa=1.0)
    assert loss[0] == 0 and loss[1] == 2.0


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 2), st.sampled_from([1, 2, 4]), st.data())
def test_group_topk_mask_fills_whole_groups_first(b, c, size, data):
    h = w = 8  # groups of equal size
    seg = grid_segments(h, w, size)
    n_groups = int(seg.max()) + 1
    group_len = c * int((seg == 0).sum())
    k = data.draw(st.integers(1, c * h * w))
    seed = data.draw(st.integers(0, 10_000))
    scores = torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))
    mask = group_topk_mask(scores, seg, k)
    assert (mask.flatten(1).sum(1) == k).all()
    # it touches the fewest groups possible (full groups, at most one partial) ...
    touched = groups_touched(mask, seg)
    assert (touched == -(-k // group_len)).all()
    # ... and those with the largest mean score
    means = torch.zeros(b, n_groups).scatter_add_(1, seg.flatten().expand(b, -1), scores.sum(1).flatten(1))
    full = k // group_len
    if full:
        best = means.topk(full, dim=1).indices
        per_group = torch.zeros(b, n_groups).scatter_add_(1, seg.flatten().expand(b, -1), mask.sum(1).flatten(1))
        assert (per_group.gather(1, best) == group_len).all()


def test_group_topk_mask_with_singleton_groups_is_topk():
    scores = torch.rand(2, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    seg = torch.arange(25).view(5, 5)
    assert torch.equal(group_topk_mask(scores, seg, 7), topk_mask(scores, 7))


class _CountCalls(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0
        self.eval()

    def forward(self, x):
        self.calls += 1
        return self.model(x)


@pytest.mark.parametrize("name,short,long", [
    ("sapf", dict(k=60, stages=3, stage_steps=15, max_stages=6, polish_steps=20),
     dict(k=60, stages=3, stage_steps=45, max_stages=6, polish_steps=60)),
    ("strattack", dict(binary_search_steps=2, steps=40), dict(binary_search_steps=2, steps=160))])
def test_inner_loops_do_not_wait_for_the_device(name, short, long, fmnist_model, fmnist_pairs):
    """Host synchronisations (what would stall a GPU's queue: .item(), bool(tensor), nonzero,
    boolean indexing) do not grow with the iterations: the extra model calls of a longer schedule
    add far fewer than one each. Counted on the CPU by ops.syncs.HostSyncCounter; the loss's
    one_hot (4 per call in SAPF) and the best-so-far update's .any() (StrAttack, 1 in 2) were the
    sources this bounds. (A run's fixed checks, validation and the 8-bit finish, are not per step.)"""
    from sparseattack.attacks import get
    from sparseattack.ops.syncs import HostSyncCounter

    x, _, t = fmnist_pairs
    spec = get(name)
    counts = []
    for params in (short, long):
        model = _CountCalls(fmnist_model)
        with HostSyncCounter() as syncs:
            spec.fn(model, x, t, targeted=True, **{**spec.defaults, **params})
        counts.append((syncs.count, model.calls))
    (s1, c1), (s2, c2) = counts
    assert c2 - c1 >= 40, counts
    assert (s2 - s1) / (c2 - c1) < 0.1, counts


def test_host_sync_counter_sees_item_and_nonzero():
    from sparseattack.ops.syncs import HostSyncCounter

    a = torch.arange(6.0)
    with HostSyncCounter(where=False) as syncs:
        a.sum().item()
        a.nonzero()
        bool((a > 2).any())
        a * 2 + 1
    assert syncs.count == 3


def test_grow_support_by_windows():
    """The untouched windows of the largest gradient energy join the support with all their channels;
    a touched window never counts, and count is capped by the untouched windows."""
    windows = sliding_window_groups(6, 6, 2, 2)                       # 9 windows of 2x2
    support = torch.zeros(2, 3, 6, 6)
    support[0, 1, 0, 0] = 1                                           # touches window 0 (one channel)
    support[1] = 1                                                    # touches every window
    gradient = torch.zeros(2, 3, 6, 6)                                # energy = squared norm per window
    gradient[:, 2, 0, 1] = -10.0                                      # in window 0: touched, never chosen
    gradient[:, 0, 4, 4] = 5.0 ** 0.5                                 # window 8
    gradient[:, 1, 2, 3] = -(3.0 ** 0.5)                              # window 4
    gradient[:, 0, 0, 4] = 1.0                                        # window 2
    grown = grow_support_by_windows(support, gradient, windows, torch.tensor([2, 3]))
    assert ((grown >= support).all() and set(grown.unique().tolist()) <= {0.0, 1.0})
    touched = window_sq_sums(grown, windows) > 0
    assert touched[0].nonzero().flatten().tolist() == [0, 4, 8]       # the two best untouched windows
    assert grown[0, :, 4:6, 4:6].eq(1).all() and grown[0, :, 2:4, 2:4].eq(1).all()  # all channels
    assert grown[0].sum() == 1 + 2 * 12                               # nothing else
    assert torch.equal(grown[1], support[1])                          # no untouched window to add

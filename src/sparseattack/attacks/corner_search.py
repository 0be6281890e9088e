"""CornerSearch (Croce & Hein, "Sparse and Imperceivable Adversarial Attacks", ICCV 2019, Sec. 3.1),
batched, for the l0 threat model (pixels set to corners of the [0, 1] box) and l0 + l_inf (pixels
moved by +-linf_cap per channel, clipped to the box); a black-box attack using only logits.

The algorithm, per example, with a budget of k pixels:

1. One-pixel perturbations: every pixel set to each of its 2^C corners (l0) or x +- linf_cap per
   channel (l0 + l_inf), H * W * 2^C images per clean image. If one is adversarial, done.
2. Ranking: the one-pixel perturbations are ordered by how much they help: untargeted, one
   ordering per class j (by f_y - f_j, and by the margin f_y - max_{j != y} f_j for j = y) as in
   the authors' code; targeted, one ordering by the target margin max_{j != t} f_j - f_t.
3. Sampling: for sparsity levels n = 2, 2 + size_incr, ..., k and for each ordering, `steps`
   random n-pixel perturbations are drawn from the top `n_max` one-pixel perturbations, rank r
   (0 = best) with probability proportional to 2 (n_max - r) - 1 (the paper's linearly decreasing
   distribution, sampled as in the code: n_max - 1 - floor(sqrt(U{0..n_max^2 - 1}))), with
   replacement. The first adversarial sample of the lowest level that has one is returned.

Choices where the paper leaves room: the targeted ordering above (the paper and code are
untargeted); the levels include k itself (the code's range(2, k, size_incr) stops before k);
size_incr defaults to max(1, k // 10) (= the code's 1 for its k = 10) and n_max to max(100, 2 k)
(the code's N = 100 is sized for k <= 10; drawing k ~ 100 pixels needs a longer list), so that
matched-sparsity runs stay affordable; when a sampled pixel is drawn twice with different
corners the later one wins. The one-pixel stage depends only on the image, so pairs of the batch
that share an image (the targeted protocol's 9 targets) share it.
Every level costs `steps` forward passes per remaining example (untargeted: per ordering); the
examples not yet fooled are a working set (`ops.working_set.WorkingSet`).

The samples are drawn per example (`ops.rng.example_generators`): each example's generator is
seeded from `seed` and a hash of its own image and label, so an example returns the same alone or
in any batch. The result goes through `ops.quantize.finish` (l_inf cap `linf_cap`): with
`quantize=True` (default) the changed pixels are put on the 8-bit grid (box corners already are)
and success is re-checked there; failures return the clean input unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..ops import rng
from ..ops.losses import is_adversarial, logit_margin
from ..ops.quantize import finish
from ..ops.tensors import budget_count
from ..ops.working_set import WorkingSet
from ..validation import ValidationError, check_attack_call
from ._renames import renamed


@dataclass
class _Pairs(WorkingSet):
    """The pairs not yet fooled."""
    x: Tensor            # clean images
    labels: Tensor
    image: Tensor        # index of the pair's image among the distinct images (its one-pixel stage)
    order: Tensor        # (n, R, n_max): the top one-pixel perturbations of each ordering


def _corner_values(x: Tensor, linf_cap: float | None) -> Tensor:
    """Per image the values of every corner at every pixel: (n, 2^C, C, H, W)."""
    n, c, h, w = x.shape
    bits = ((torch.arange(2 ** c, device=x.device)[:, None] >> torch.arange(c, device=x.device)) & 1).to(x.dtype)
    corners = bits.view(1, 2 ** c, c, 1, 1)
    if linf_cap is None:
        return corners.expand(n, 2 ** c, c, h, w)
    return (x[:, None] + (2 * corners - 1) * linf_cap).clamp(0, 1)


def _logits(model: nn.Module, imgs: Tensor, eval_batch: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(imgs[i:i + eval_batch]) for i in range(0, imgs.shape[0], eval_batch)])


def _one_pixel_logits(model: nn.Module, x: Tensor, corners: Tensor, eval_batch: int) -> Tensor:
    """Logits of all one-pixel perturbations of one image x (C, H, W): (H * W * 2^C, K), ordered
    by (pixel, corner) -> index pixel * 2^C + corner."""
    c, h, w = x.shape
    nc = corners.shape[0]
    out = []
    step = max(1, eval_batch // nc)
    for p0 in range(0, h * w, step):
        pix = torch.arange(p0, min(p0 + step, h * w), device=x.device)
        imgs = x.expand(len(pix), nc, c, h, w).clone().view(len(pix), nc, c, h * w)
        vals = corners.reshape(nc, c, h * w)[:, :, pix].permute(2, 0, 1)          # (pix, nc, c)
        imgs[torch.arange(len(pix)), :, :, pix] = vals
        out.append(_logits(model, imgs.view(-1, c, h, w), eval_batch))
    return torch.cat(out)


@renamed(n_iter="steps", eps="linf_cap")
def corner_search(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
                  k: int | float = 10, granularity: str = "pixel", steps: int = 1000, n_max: int | None = None,
                  size_incr: int | None = None, linf_cap: float | None = None, seed: int = 0,
                  eval_batch: int = 4096, quantize: bool = True) -> Tensor:
    """CornerSearch (Croce & Hein 2019, Sec. 3.1), batched: rank every one-pixel perturbation,
    then sample k-pixel perturbations from the top of the rankings (the steps are in the module
    docstring).

    Parameters
    ----------
    model : nn.Module
        Queried for logits only (no gradients): H * W * 2^C one-pixel images per distinct input,
        then `steps` images per level and ordering for each pair not yet fooled.
    inputs : Tensor
        Clean images (B, C, H, W) in [0, 1]; pairs with the same image share the one-pixel stage.
    labels : Tensor
        The classes the orderings move away from (untargeted) or toward (targeted), (B,).
    targeted : bool, default False
        One ordering by the target margin (True) instead of one per class (False).
    k : int or float, default 10
        Changed pixels at most: an int count, or a float fraction in (0, 1] of the pixels.
    granularity : str, default "pixel"
        What `k` counts; only "pixel" (a position with all its channels) is supported.
    steps : int, default 1000
        Random samples per sparsity level and ordering (the paper's N_iter; was `n_iter`).
    n_max : int or None, default None
        Samples are drawn from the top n_max one-pixel perturbations (None: max(100, 2 k), at
        most H * W * 2^C).
    size_incr : int or None, default None
        Step between sparsity levels 2, 2 + size_incr, ..., k (None: max(1, k // 10)).
    linf_cap : float or None, default None
        None: the l0 threat model (pixels set to corners of the [0, 1] box); else the l_inf radius
        of the l0 + l_inf one (values x +- linf_cap per channel, also the finish's l_inf cap)
        (was `eps`).
    seed : int, default 0
        The sampling of stage 3 draws from a generator per example, seeded by `seed` and a hash
        of its image and label (`ops.rng.example_generators`): the same alone or in any batch.
    eval_batch : int, default 4096
        Images per forward pass.
    quantize : bool, default True
        End on the 8-bit grid (`ops.quantize.finish`: rounding, no gradient repair; box corners are
        on it already); inputs must then be 8-bit images (k/255); False for float inputs.

    Returns
    -------
    Tensor
        The first adversarial sample of the lowest level per example; an example that does not
        succeed (or whose success does not survive the grid) is its input unchanged.

    Notes
    -----
    The paper and code are untargeted; the targeted ordering ranks by the target margin. The
    levels include k itself (the code's range(2, k, size_incr) stops before k). The defaults of
    size_incr and n_max equal the code's for its k = 10 and grow with k so that matched-sparsity
    runs stay affordable. A pixel sampled twice with different corners takes the later one.
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    x = inputs.detach()
    b, c, h, w = x.shape
    k = budget_count(k, granularity, x.shape, supported=("pixel",))
    if linf_cap is not None and not linf_cap > 0:
        raise ValidationError(f"linf_cap must be positive or None, got {linf_cap}")
    if steps < 1:
        raise ValidationError(f"steps must be >= 1, got {steps}")
    nc = 2 ** c
    n_one = h * w * nc
    n_max = min(n_one, max(100, 2 * k) if n_max is None else int(n_max))
    size_incr = max(1, k // 10) if size_incr is None else int(size_incr)
    levels = sorted(set(list(range(2, k + 1, size_incr)) + [k])) if k >= 2 else []
    dev = x.device
    gens = rng.example_generators(x, labels, seed)
    out = x.clone()

    # 1. one-pixel perturbations, shared by the pairs with the same image
    uniq, inv = torch.unique(x.flatten(1), dim=0, return_inverse=True)
    uniq = uniq.view(-1, c, h, w)
    corner_vals = _corner_values(uniq, linf_cap)                              # (U, nc, C, H, W)
    logits1 = torch.stack([_one_pixel_logits(model, uniq[u], corner_vals[u], eval_batch)
                           for u in range(len(uniq))])                        # (U, n_one, K)
    num_classes = logits1.shape[-1]

    def one_pixel_image(i: int, j: int) -> Tensor:
        img = x[i].clone().view(c, h * w)
        img[:, j // nc] = corner_vals[inv[i], j % nc].view(c, h * w)[:, j // nc]
        return img.view(c, h, w)

    # 2. the orderings of the one-pixel perturbations (a success here ends the pair's attack)
    orderings = []                                                            # per pair: (R, n_one)
    fooled = torch.zeros(b, dtype=torch.bool, device=dev)
    for i in range(b):
        lg = logits1[inv[i]]
        lab = labels[i].expand(n_one)
        if targeted:
            scores = logit_margin(lg, lab, targeted=True)[None]
        else:
            real = lg[:, labels[i]]
            scores = real[None] - lg.T                                        # f_y - f_j per class j
            scores[labels[i]] = logit_margin(lg, lab, targeted=False)
        ok = is_adversarial(lg, lab, targeted=targeted)
        if ok.any():
            j = int(torch.where(ok, scores.min(0).values, torch.inf).argmin())
            out[i] = one_pixel_image(i, j)
            fooled[i] = True
        orderings.append(scores.argsort(dim=1, stable=True)[:, :n_max])
    ws = _Pairs.start(x=x, labels=labels, image=inv, order=torch.stack(orderings))   # order: (B, R, n_max)
    ws.keep(~fooled)
    n_orders = ws.order.shape[1]
    cvals = corner_vals.view(len(uniq), nc, c, h * w)

    # 3. sampling n-pixel perturbations from the top of the rankings, level by level
    for n in levels:
        for o in range(n_orders):
            if ws.empty:
                break
            m = len(ws)
            u = rng.randint([gens[i] for i in ws.rows.tolist()], 0, n_max * n_max, (steps, n), device=dev)
            ranks = n_max - 1 - u.double().sqrt().floor().long()
            chosen = ws.order[:, o].gather(1, ranks.view(m, -1)).view(m, steps, n)   # one-pixel ids
            pix, corner = chosen // nc, chosen % nc
            imgs = ws.x[:, None].expand(m, steps, c, h, w).reshape(m, steps, c, h * w).clone()
            src = cvals[ws.image]                                             # (m, nc, C, HW)
            vals = src.permute(0, 3, 1, 2)[torch.arange(m, device=dev)[:, None, None], pix, corner]  # (m, it, n, C)
            imgs.scatter_(3, pix[:, :, None, :].expand(m, steps, c, n), vals.permute(0, 1, 3, 2))
            logits = _logits(model, imgs.view(-1, c, h, w), eval_batch).view(m, steps, num_classes)
            ok = is_adversarial(logits.view(m * steps, num_classes), ws.labels.repeat_interleave(steps),
                                targeted=targeted).view(m, steps)
            won = ok.any(1)
            if won.any():
                first = ok.float().argmax(1)
                rows = won.nonzero().flatten()
                out[ws.rows[rows]] = imgs[rows, first[rows]].view(-1, c, h, w)
                ws.keep(~won)
    # gradient-free (queries only): the finish rounds but does not repair with gradients
    return finish(model, x, out, labels, targeted=targeted, quantize=quantize, linf_cap=linf_cap, repair_steps=0)

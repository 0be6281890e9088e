"""CornerSearch (Croce & Hein, "Sparse and Imperceivable Adversarial Attacks", ICCV 2019, Sec. 3.1),
batched, for the l0 threat model (pixels set to corners of the [0, 1] box) and l0 + l_inf (pixels
moved by +-eps per channel, clipped to the box); a black-box attack using only logits.

1. One-pixel perturbations: every pixel set to each of its 2^C corners (l0) or x +- eps per
   channel (l0 + l_inf), H * W * 2^C images per clean image. If one is adversarial, done.
2. Ranking: the one-pixel perturbations are ordered by how much they help: untargeted, one
   ordering per class j (by f_y - f_j, and by the margin f_y - max_{j != y} f_j for j = y) as in
   the authors' code; targeted, one ordering by the target margin max_{j != t} f_j - f_t.
3. Sampling: for sparsity levels n = 2, 2 + size_incr, ..., k and for each ordering, `n_iter`
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
Every level costs n_iter forward passes per remaining example (untargeted: per ordering).

The samples are drawn per example (`ops.rng.example_generators`): each example's generator is
seeded from `seed` and a hash of its own image and label, so an example returns the same alone or
in any batch. The result goes through `ops.quantize.finish` (l_inf cap `eps`): with
`quantize=True` (default) the changed pixels are put on the 8-bit grid (box corners already are)
and success is re-checked there; failures return the clean input unchanged.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ops import rng
from ..ops.losses import is_adversarial, logit_margin
from ..ops.quantize import finish
from ..validation import check_attack_call, resolve_k


def _corner_values(x: Tensor, eps: float | None) -> Tensor:
    """Per image the values of every corner at every pixel: (n, 2^C, C, H, W)."""
    n, c, h, w = x.shape
    bits = ((torch.arange(2 ** c, device=x.device)[:, None] >> torch.arange(c, device=x.device)) & 1).to(x.dtype)
    corners = bits.view(1, 2 ** c, c, 1, 1)
    if eps is None:
        return corners.expand(n, 2 ** c, c, h, w)
    return (x[:, None] + (2 * corners - 1) * eps).clamp(0, 1)


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


def corner_search(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
                  k: int | float = 10, n_iter: int = 1000, n_max: int | None = None, size_incr: int | None = None,
                  eps: float | None = None, seed: int = 0, eval_batch: int = 4096,
                  quantize: bool = True) -> Tensor:
    """Batched CornerSearch with at most `k` changed pixels (see the module docstring).

    k: pixels (an int), or a fraction of the pixels in (0, 1]. eps: None for the l0 threat model
    (corners of the [0, 1] box), else the l_inf radius of the l0 + l_inf one (also the l_inf cap
    of the finish). seed: seeds each example's sampling generator together with a hash of its
    image and label (`ops.rng.example_generators`), so the result does not depend on the batch.
    quantize: end on the 8-bit grid via `ops.quantize.finish`; inputs must then be 8-bit images
    (k/255); False for float inputs. Failures return the input unchanged."""
    check_attack_call(model, inputs, labels, quantize=quantize)
    x = inputs.detach()
    b, c, h, w = x.shape
    k = resolve_k(k, h * w, what="pixels")
    if eps is not None and not eps > 0:
        raise ValueError(f"eps must be positive or None, got {eps}")
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}")
    nc = 2 ** c
    n_one = h * w * nc
    n_max = min(n_one, max(100, 2 * k) if n_max is None else int(n_max))
    size_incr = max(1, k // 10) if size_incr is None else int(size_incr)
    levels = sorted(set(list(range(2, k + 1, size_incr)) + [k])) if k >= 2 else []
    dev = x.device
    gens = rng.example_generators(x, labels, seed)
    out = x.clone()
    active = torch.ones(b, dtype=torch.bool, device=dev)

    # 1. one-pixel perturbations, shared by the pairs with the same image
    uniq, inv = torch.unique(x.flatten(1), dim=0, return_inverse=True)
    uniq = uniq.view(-1, c, h, w)
    corner_vals = _corner_values(uniq, eps)                                   # (U, nc, C, H, W)
    logits1 = torch.stack([_one_pixel_logits(model, uniq[u], corner_vals[u], eval_batch)
                           for u in range(len(uniq))])                        # (U, n_one, K)
    num_classes = logits1.shape[-1]

    def one_pixel_image(i: int, j: int) -> Tensor:
        img = x[i].clone().view(c, h * w)
        img[:, j // nc] = corner_vals[inv[i], j % nc].view(c, h * w)[:, j // nc]
        return img.view(c, h, w)

    orderings = []                                                            # per pair: (R, n_one)
    for i in range(b):
        lg = logits1[inv[i]]
        lab = labels[i].expand(n_one)
        if targeted:
            scores = logit_margin(lg, lab, targeted=True)[None]
            ok = is_adversarial(lg, lab, targeted=True)
        else:
            real = lg[:, labels[i]]
            scores = real[None] - lg.T                                        # f_y - f_j per class j
            scores[labels[i]] = logit_margin(lg, lab, targeted=False)
            ok = is_adversarial(lg, lab, targeted=False)
        if ok.any():
            j = int(torch.where(ok, scores.min(0).values, torch.inf).argmin())
            out[i] = one_pixel_image(i, j)
            active[i] = False
        orderings.append(scores.argsort(dim=1, stable=True)[:, :n_max])
    order = torch.stack(orderings)                                            # (B, R, n_max)
    n_orders = order.shape[1]
    cvals = corner_vals.view(len(uniq), nc, c, h * w)

    # 3. sampling k-pixel perturbations from the top of the rankings, level by level
    for n in levels:
        for o in range(n_orders):
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            m = len(idx)
            u = rng.randint([gens[i] for i in idx.tolist()], 0, n_max * n_max, (n_iter, n), device=dev)
            ranks = n_max - 1 - u.double().sqrt().floor().long()
            chosen = order[idx, o].gather(1, ranks.view(m, -1)).view(m, n_iter, n)   # one-pixel ids
            pix, corner = chosen // nc, chosen % nc
            imgs = x[idx, None].expand(m, n_iter, c, h, w).reshape(m, n_iter, c, h * w).clone()
            src = cvals[inv[idx]]                                             # (m, nc, C, HW)
            vals = src.permute(0, 3, 1, 2)[torch.arange(m, device=dev)[:, None, None], pix, corner]  # (m, it, n, C)
            imgs.scatter_(3, pix[:, :, None, :].expand(m, n_iter, c, n), vals.permute(0, 1, 3, 2))
            logits = _logits(model, imgs.view(-1, c, h, w), eval_batch).view(m, n_iter, num_classes)
            ok = is_adversarial(logits.view(m * n_iter, num_classes), labels[idx].repeat_interleave(n_iter),
                                targeted=targeted).view(m, n_iter)
            won = ok.any(1)
            if won.any():
                first = ok.float().argmax(1)
                rows = won.nonzero().flatten()
                out[idx[rows]] = imgs[rows, first[rows]].view(-1, c, h, w)
                active[idx[rows]] = False
    # gradient-free (queries only): the finish rounds but does not repair with gradients
    return finish(model, x, out, labels, targeted=targeted, quantize=quantize, linf_cap=eps, repair_steps=0)

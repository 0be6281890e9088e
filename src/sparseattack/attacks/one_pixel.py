"""One-Pixel attack (Su, Vargas & Sakurai, "One pixel attack for fooling deep neural networks",
IEEE TEVC 2019), batched: differential evolution over candidates of `pixels` (row, column, value)
tuples, targeted or untargeted, using only the model's probabilities (a black-box attack).

As in the paper (Sec. 3-4): a population of `popsize` candidates (400), at most `max_iter`
generations (100); DE/rand/1 mutation x_r1 + F (x_r2 - x_r3) with F = 0.5 and r1, r2, r3 distinct
(and different from the parent); no crossover; a child replaces its parent when it is at least as
fit (a child that writes the same image as its parent counts as equally fit without comparing
floats). Fitness: the probability of the target class (targeted) or minus that of the true class
(untargeted). Initial rows/columns are uniform over the image; values are drawn from
N(0.5, 0.5) per channel (the paper's N(128, 127) on [0, 255]). Each example stops at the first
generation where one of its candidates is adversarial (the paper's early stop, with success =
the target wins / the true class loses instead of a probability threshold).

Choices where the paper leaves room: out-of-range mutants are clipped to the bounds (rows/columns
to the image, values to [0, 1]); a candidate's row/column is its coordinate rounded down; when
several of its pixels land on the same position the last one wins; r1, r2, r3 are drawn uniformly
among the distinct others directly (no rejection loop). All examples' populations are evaluated
together in chunks of `eval_batch` images; a finished example leaves the working set.

Randomness is per example (`ops.rng.example_generators`): each example's generator is seeded from
`seed` and a hash of its own image and label, so an example draws (and returns) the same alone
or in any batch. The result goes through `ops.quantize.finish`: with `quantize=True` (default)
the changed pixels are moved onto the 8-bit grid and success is re-checked there; an example
without a success (or whose success does not survive the grid) is returned unchanged (not as
its fittest candidate).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ops import rng
from ..ops.losses import is_adversarial
from ..ops.quantize import finish
from ..validation import check_attack_call


def _apply(x: Tensor, cand: Tensor) -> Tensor:
    """Images x (n, C, H, W) with the candidates (n, P, d, 2 + C) written in: (n * P, C, H, W)."""
    n, c, h, w = x.shape
    p, d = cand.shape[1], cand.shape[2]
    rows = cand[..., 0].floor().long().clamp(0, h - 1)
    cols = cand[..., 1].floor().long().clamp(0, w - 1)
    pos = (rows * w + cols).view(n * p, 1, d).expand(n * p, c, d)
    vals = cand[..., 2:].reshape(n * p, d, c).transpose(1, 2)
    imgs = x[:, None].expand(n, p, c, h, w).reshape(n * p, c, h * w).clone()
    return imgs.scatter_(2, pos, vals.to(x.dtype)).view(n * p, c, h, w)


def _same_image(a: Tensor, b: Tensor, h: int, w: int) -> Tensor:
    """Whether candidates a, b (n, P, d, 2 + C) write the same pixels with the same values (the
    same image): (n, P). Such a child is exactly as fit as its parent; deciding it by the floats
    of two forward passes would let rounding noise (batch composition) steer the evolution."""
    pos = lambda cand: torch.stack([cand[..., 0].floor().clamp(0, h - 1),  # noqa: E731
                                    cand[..., 1].floor().clamp(0, w - 1)], -1)
    return ((pos(a) == pos(b)).all(-1) & (a[..., 2:] == b[..., 2:]).all(-1)).all(-1)


def _fitness(model: nn.Module, imgs: Tensor, labels: Tensor, targeted: bool, eval_batch: int) -> tuple[Tensor, Tensor]:
    """Fitness (higher is better) and success of each image; `labels` has one entry per image."""
    fit, ok = [], []
    with torch.no_grad():
        for i in range(0, imgs.shape[0], eval_batch):
            logits = model(imgs[i:i + eval_batch])
            lab = labels[i:i + eval_batch]
            prob = logits.softmax(1).gather(1, lab[:, None]).squeeze(1)
            fit.append(prob if targeted else -prob)
            ok.append(is_adversarial(logits, lab, targeted=targeted))
    return torch.cat(fit), torch.cat(ok)


def _distinct_others(p: int, gen: torch.Generator) -> Tensor:
    """For each parent i of one population of p, three indices r1, r2, r3 uniform among the
    p - 1 others and distinct from each other: (p, 3). Exact, without rejection: a draw in
    [0, p - 1 - m) skips the m indices already taken (in increasing order)."""
    dev = gen.device
    parent = torch.arange(p, device=dev)
    a = torch.randint(0, p - 1, (p,), generator=gen, device=dev)
    b = torch.randint(0, p - 2, (p,), generator=gen, device=dev)
    c = torch.randint(0, p - 3, (p,), generator=gen, device=dev)
    r1 = a + (a >= parent).long()
    taken = torch.stack([parent, r1], 1).sort(1).values
    r2 = b
    for j in range(2):
        r2 = r2 + (r2 >= taken[:, j]).long()
    taken = torch.stack([parent, r1, r2], 1).sort(1).values
    r3 = c
    for j in range(3):
        r3 = r3 + (r3 >= taken[:, j]).long()
    return torch.stack([r1, r2, r3], 1)


def one_pixel(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
              pixels: int = 1, popsize: int = 400, max_iter: int = 100, mutation: float = 0.5,
              seed: int = 0, eval_batch: int = 4096, quantize: bool = True) -> Tensor:
    """Batched One-Pixel attack changing at most `pixels` pixels per image (all channels of a
    pixel may change); see the module docstring.

    seed: seeds each example's generator together with a hash of its image and label
    (`ops.rng.example_generators`), so the result does not depend on the batch.
    quantize: end on the 8-bit grid via `ops.quantize.finish`; inputs must then be 8-bit images
    (k/255); False for float inputs.
    Returns the adversarial images; an example that does not succeed is its input unchanged."""
    check_attack_call(model, inputs, labels, quantize=quantize)
    if pixels < 1:
        raise ValueError(f"pixels must be >= 1, got {pixels}")
    if popsize < 4:
        raise ValueError(f"popsize must be >= 4 (DE/rand/1 needs three others), got {popsize}")
    if max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter}")
    x = inputs.detach()
    b, c, h, w = x.shape
    dev, dt = x.device, x.dtype
    gens = rng.example_generators(x, labels, seed)
    high = torch.tensor([h - 1e-4, w - 1e-4] + [1.0] * c, device=dev, dtype=dt)

    def clip(cand: Tensor) -> Tensor:
        return torch.minimum(cand.clamp_min(0.0), high)

    pop = torch.empty(b, popsize, pixels, 2 + c, device=dev, dtype=dt)
    pop[..., 0] = rng.rand(gens, (popsize, pixels), dtype=dt, device=dev) * h
    pop[..., 1] = rng.rand(gens, (popsize, pixels), dtype=dt, device=dev) * w
    pop[..., 2:] = 0.5 + 0.5 * rng.randn(gens, (popsize, pixels, c), dtype=dt, device=dev)
    pop = clip(pop)
    out = x.clone()
    active = torch.ones(b, dtype=torch.bool, device=dev)

    def evaluate(idx: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
        imgs = _apply(x[idx], cand)
        fit, ok = _fitness(model, imgs, labels[idx].repeat_interleave(popsize), targeted, eval_batch)
        return fit.view(-1, popsize), ok.view(-1, popsize)

    def record(idx: Tensor, cand: Tensor, ok: Tensor) -> None:
        """Examples with an adversarial candidate keep their first one and stop."""
        won = ok.any(1)
        if won.any():
            first = ok.float().argmax(1)
            rows = won.nonzero().flatten()
            sel = cand[rows, first[rows]][:, None]
            out[idx[rows]] = _apply(x[idx[rows]], sel)
            active[idx[rows]] = False

    idx = torch.arange(b, device=dev)
    fitness, ok = evaluate(idx, pop)
    record(idx, pop, ok)
    for _ in range(max_iter):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        p = pop[idx]
        r = torch.stack([_distinct_others(popsize, gens[i]) for i in idx.tolist()])
        r1, r2, r3 = (p.gather(1, r[..., j].view(len(idx), popsize, 1, 1).expand_as(p)) for j in range(3))
        child = clip(r1 + mutation * (r2 - r3))
        fit_c, ok_c = evaluate(idx, child)
        better = (fit_c >= fitness[idx]) | _same_image(child, p, h, w)
        pop[idx] = torch.where(better[..., None, None], child, p)
        fitness[idx] = torch.where(better, fit_c, fitness[idx])
        record(idx, child, ok_c)
    # gradient-free (queries only): the finish rounds but does not repair with gradients
    return finish(model, x, out, labels, targeted=targeted, quantize=quantize, repair_steps=0)

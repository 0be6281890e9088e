"""One-Pixel attack (Su, Vargas & Sakurai, "One pixel attack for fooling deep neural networks",
IEEE TEVC 2019), batched: differential evolution over candidates of `k` (row, column, value)
tuples, targeted or untargeted, using only the model's probabilities (a black-box attack).

The algorithm (Sec. 3-4), per example:

    population <- popsize candidates, each k pixels (row, column, value per channel):
                  rows/columns uniform over the image, values N(0.5, 0.5) per channel
    for generation = 1, ..., steps
        stop if a candidate is adversarial (keep the first one)
        for each parent i: child_i = x_r1 + F (x_r2 - x_r3), r1, r2, r3 distinct and != i
                                     (DE/rand/1 with F = `mutation` = 0.5, no crossover)
        child_i replaces parent i when it is at least as fit
    fitness: the probability of the target class (targeted), minus that of the true class
             (untargeted)

The paper's defaults: `popsize` 400, `steps` 100 generations; values N(128, 127) on [0, 255] are
N(0.5, 0.5) here. The early stop's success is the target winning / the true class losing
(`ops.losses.is_adversarial`) instead of a probability threshold; a child that writes the same
image as its parent counts as equally fit without comparing floats.

Choices where the paper leaves room: out-of-range mutants are clipped to the bounds (rows/columns
to the image, values to [0, 1]); a candidate's row/column is its coordinate rounded down; when
several of its pixels land on the same position the last one wins; r1, r2, r3 are drawn uniformly
among the distinct others directly (no rejection loop). All examples' populations are evaluated
together in chunks of `eval_batch` images; a finished example leaves the working set
(`ops.working_set.WorkingSet`).

Randomness is per example (`ops.rng.example_generators`): each example's generator is seeded from
`seed` and a hash of its own image and label, so an example draws (and returns) the same alone
or in any batch. The result goes through `ops.quantize.finish`: with `quantize=True` (default)
the changed pixels are moved onto the 8-bit grid and success is re-checked there; an example
without a success (or whose success does not survive the grid) is returned unchanged (not as
its fittest candidate).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..ops import rng
from ..ops.losses import is_adversarial
from ..ops.quantize import finish
from ..ops.tensors import budget_count
from ..ops.working_set import WorkingSet
from ..validation import ValidationError, check_attack_call
from ._renames import renamed


@dataclass
class _Populations(WorkingSet):
    """The examples still evolving: their images and populations."""
    x: Tensor            # clean images
    labels: Tensor
    pop: Tensor          # (n, popsize, k, 2 + C): per candidate k (row, column, value per channel)
    fitness: Tensor      # (n, popsize)


def _apply(x: Tensor, cand: Tensor) -> Tensor:
    """Images x (n, C, H, W) with the candidates (n, P, k, 2 + C) written in: (n * P, C, H, W)."""
    n, c, h, w = x.shape
    p, d = cand.shape[1], cand.shape[2]
    rows = cand[..., 0].floor().long().clamp(0, h - 1)
    cols = cand[..., 1].floor().long().clamp(0, w - 1)
    pos = (rows * w + cols).view(n * p, 1, d).expand(n * p, c, d)
    vals = cand[..., 2:].reshape(n * p, d, c).transpose(1, 2)
    imgs = x[:, None].expand(n, p, c, h, w).reshape(n * p, c, h * w).clone()
    return imgs.scatter_(2, pos, vals.to(x.dtype)).view(n * p, c, h, w)


def _same_image(a: Tensor, b: Tensor, h: int, w: int) -> Tensor:
    """Whether candidates a, b (n, P, k, 2 + C) write the same pixels with the same values (the
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


@renamed(pixels="k", max_iter="steps")
def one_pixel(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
              k: int | float = 1, granularity: str = "pixel", popsize: int = 400, steps: int = 100,
              mutation: float = 0.5, seed: int = 0, eval_batch: int = 4096, quantize: bool = True) -> Tensor:
    """One-Pixel attack (Su et al. 2019, Sec. 3-4), batched: differential evolution (DE/rand/1,
    no crossover) over candidates of `k` pixels, using only the model's probabilities.

    Parameters
    ----------
    model : nn.Module
        Queried for class probabilities only (a black-box attack: no gradients).
    inputs : Tensor
        Clean images (B, C, H, W) in [0, 1], whose pixels the candidates overwrite.
    labels : Tensor
        One class per image, (B,): the true one (untargeted) or the target (targeted).
    targeted : bool, default False
        Fitness is the target's probability (True) or minus the true class's (False).
    k : int or float, default 1
        Pixels a candidate changes (all channels of a pixel may change): an int count, or a float
        fraction in (0, 1] of the pixels (was `pixels`).
    granularity : str, default "pixel"
        What `k` counts; only "pixel" (a position with all its channels) is supported.
    popsize : int, default 400
        Candidates per population (at least 4: DE/rand/1 needs three others).
    steps : int, default 100
        Generations at most (was `max_iter`); 0 evaluates the initial population only.
    mutation : float, default 0.5
        DE's scale factor F in x_r1 + F (x_r2 - x_r3).
    seed : int, default 0
        With a hash of the example's image and label, the seed of its own generator for the
        initial population and the DE draws (`ops.rng.example_generators`): batch-independent.
    eval_batch : int, default 4096
        Candidate images per forward pass (all examples' populations together).
    quantize : bool, default True
        Move the changed pixels onto the 8-bit grid and re-check success there
        (`ops.quantize.finish`, rounding only: no gradient repair); inputs must then be 8-bit
        images (k/255). False for float inputs.

    Returns
    -------
    Tensor
        The first adversarial candidate image per example; an example that does not succeed (or
        whose success does not survive the grid) is its input unchanged, not its fittest candidate.

    Notes
    -----
    The paper's bounds handling is unspecified: out-of-range mutants are clipped (rows/columns to
    the image, values to [0, 1]) and a coordinate is rounded down. Success (the early stop) is the
    top-1 criterion of `ops.losses.is_adversarial`, not a probability threshold.
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    x = inputs.detach()
    b, c, h, w = x.shape
    k = budget_count(k, granularity, x.shape, supported=("pixel",))
    if popsize < 4:
        raise ValidationError(f"popsize must be >= 4 (DE/rand/1 needs three others), got {popsize}")
    if steps < 0:
        raise ValidationError(f"steps must be >= 0, got {steps}")
    dev, dt = x.device, x.dtype
    gens = rng.example_generators(x, labels, seed)
    high = torch.tensor([h - 1e-4, w - 1e-4] + [1.0] * c, device=dev, dtype=dt)

    def clip(cand: Tensor) -> Tensor:
        return torch.minimum(cand.clamp_min(0.0), high)

    def evaluate(images: Tensor, classes: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
        """Fitness and success of every candidate on its image: (n, popsize) each."""
        fit, ok = _fitness(model, _apply(images, cand), classes.repeat_interleave(popsize), targeted, eval_batch)
        return fit.view(-1, popsize), ok.view(-1, popsize)

    def stop_if_adversarial(cand: Tensor, ok: Tensor) -> None:
        """Examples with an adversarial candidate keep their first one and leave the working set."""
        won = ok.any(1)
        if won.any():
            first = ok.float().argmax(1)
            rows = won.nonzero().flatten()
            out[ws.rows[rows]] = _apply(ws.x[rows], cand[rows, first[rows]][:, None])
            ws.keep(~won)

    # the initial population: uniform positions, values N(0.5, 0.5) per channel
    pop = torch.empty(b, popsize, k, 2 + c, device=dev, dtype=dt)
    pop[..., 0] = rng.rand(gens, (popsize, k), dtype=dt, device=dev) * h
    pop[..., 1] = rng.rand(gens, (popsize, k), dtype=dt, device=dev) * w
    pop[..., 2:] = 0.5 + 0.5 * rng.randn(gens, (popsize, k, c), dtype=dt, device=dev)
    pop = clip(pop)
    fitness, ok = evaluate(x, labels, pop)
    ws = _Populations.start(x=x, labels=labels, pop=pop, fitness=fitness)
    out = x.clone()
    stop_if_adversarial(pop, ok)
    for _ in range(steps):
        if ws.empty:
            break
        # DE/rand/1: child_i = x_r1 + F (x_r2 - x_r3), clipped to the bounds
        p = ws.pop
        r = torch.stack([_distinct_others(popsize, gens[i]) for i in ws.rows.tolist()])
        r1, r2, r3 = (p.gather(1, r[..., j].view(len(ws), popsize, 1, 1).expand_as(p)) for j in range(3))
        child = clip(r1 + mutation * (r2 - r3))
        # selection: a child at least as fit replaces its parent
        fit_c, ok_c = evaluate(ws.x, ws.labels, child)
        better = (fit_c >= ws.fitness) | _same_image(child, p, h, w)
        ws.update(pop=torch.where(better[..., None, None], child, p),
                  fitness=torch.where(better, fit_c, ws.fitness))
        stop_if_adversarial(child, ok_c)
    # gradient-free (queries only): the finish rounds but does not repair with gradients
    return finish(model, x, out, labels, targeted=targeted, quantize=quantize, repair_steps=0)

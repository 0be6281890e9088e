"""The smallest (weighted) l2 perturbation on a fixed support that fools the model, batched.

`minimal_l2_on_support` is the delta-step of SAPF's continuation preset: with the positions G fixed
(a 0/1 mask), it solves

    min_delta ||w * delta * G||_2   s.t.  f(x + delta * G) adversarial,  x + delta * G in [lo, hi]

per pair, by the adaptive-radius scheme of fast minimum-norm attacks (Pintor et al., NeurIPS 2021,
written from its paper): a normalised gradient step on the logit margin, then a projection onto an
l2 ball of radius r, where r shrinks by (1 - gamma) after every adversarial iterate and grows by
(1 + gamma) otherwise; before the first success r is the linear estimate of the distance to the
decision boundary. The radius plays the part of SAPF's lambda_1 search, per pair and within one run.
Step length alpha and gamma decay along a cosine. Two changes to that scheme, both measured on
Fashion-MNIST (benchmarks/SAPF_TUNING.md):

- the step only uses gradient components that can move (an entry at 0 cannot decrease, one at 1
  cannot increase), so that on images with a saturated background the normalised step is not
  spent on entries the box holds still (k = 39 on 54 tuning pairs: 74% -> 89% ASR);
- the linear estimate of the boundary is enlarged by (1 + gamma), since the margin is not linear
  and an estimate that is always a little short keeps the iterate just outside the target region.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .losses import is_adversarial, logit_margin
from .tensors import as_column, project_l2_ball

__all__ = ["MinimalL2", "minimal_l2_on_support"]

_TINY = 1e-12


@dataclass
class MinimalL2:
    """Per pair: the best adversarial delta found (zeros where none), its weighted l2 norm (inf where
    none) and the gradient of the margin there (for choosing the next support)."""
    delta: Tensor
    norm: Tensor
    gradient: Tensor

    @property
    def found(self) -> Tensor:
        return torch.isfinite(self.norm)


def minimal_l2_on_support(model: nn.Module, x: Tensor, labels: Tensor, *, targeted: bool, support: Tensor,
                          delta: Tensor, steps: int, lo: Tensor, hi: Tensor, weights: Tensor | None = None,
                          kappa: float = 0.0, alpha: tuple[float, float] = (1.0, 0.01),
                          gamma: tuple[float, float] = (0.05, 0.001)) -> MinimalL2:
    """Minimal weighted-l2 adversarial delta on `support`, started from `delta` (see the module).

    Parameters
    ----------
    model : nn.Module
        Classifier in eval mode, taking [0, 1] images.
    x : Tensor
        Inputs (B, C, H, W).
    labels : Tensor
        (B,) targets (targeted) or true labels.
    targeted : bool
        Reach `labels` or leave them.
    support : Tensor
        0/1 mask broadcastable to `x` (G of SAPF): only these entries move.
    delta : Tensor
        Starting perturbation, shaped like `x` (it is masked by `support`).
    steps : int
        Gradient evaluations (one per step, for every pair).
    lo, hi : Tensor
        Bounds of delta (x + delta in the box, and any l_inf cap), shaped like `x`.
    weights : Tensor or None, default None
        Positive per-entry weights w of the norm ||w * delta|| (SAPF-VI); None: plain l2.
    kappa : float, default 0.0
        Success needs the margin beyond kappa (`ops.losses.is_adversarial`).
    alpha : tuple of float, default (1.0, 0.01)
        First and last step length (cosine decay), in the weighted norm times the RMS weight on
        the support (so plain l2 units when w = 1).
    gamma : tuple of float, default (0.05, 0.001)
        First and last factor of the radius updates (cosine decay).

    Returns
    -------
    MinimalL2
        The smallest adversarial iterate of each pair (judged on the model's output for it).
    """
    b = x.shape[0]
    w = None if weights is None else weights.clamp_min(1e-4)  # None: plain l2, no multiplications by 1
    support = support.expand_as(x).to(x.dtype)
    delta = torch.maximum(torch.minimum(delta * support, hi), lo)
    best = MinimalL2(torch.zeros_like(x), torch.full((b,), math.inf, device=x.device, dtype=x.dtype),
                     torch.zeros_like(x))
    # step lengths are in units of the box's l2 geometry: scaled by the RMS weight on the support
    scale = 1.0 if w is None else \
        as_column(((w * support).pow(2).flatten(1).sum(1) / support.flatten(1).sum(1).clamp_min(1)).sqrt(), x)
    radius = torch.full((b,), math.inf, device=x.device, dtype=x.dtype)
    reached = torch.zeros(b, dtype=torch.bool, device=x.device)
    for step in range(steps):
        decay = 0.5 * (1 + math.cos(math.pi * step / steps))
        a = alpha[1] + (alpha[0] - alpha[1]) * decay
        g_ = gamma[1] + (gamma[0] - gamma[1]) * decay
        d = delta.requires_grad_(True)
        logits = model(x + d)
        margin = logit_margin(logits, labels, targeted=targeted) + kappa
        grad, = torch.autograd.grad(margin.sum(), d)
        with torch.no_grad():
            d = d.detach()
            adversarial = is_adversarial(logits, labels, targeted=targeted, kappa=kappa)
            wd = d if w is None else w * d                      # u = w * delta
            norm = wd.flatten(1).norm(dim=1)
            better = adversarial & (norm < best.norm)
            best.norm = torch.where(better, norm, best.norm)
            best.delta[better], best.gradient[better] = d[better], grad[better]
            # only the entries on the support that can move along -grad (an entry with grad = 0
            # adds nothing to the step whichever way it is counted)
            movable = support * torch.where(grad > 0, d > lo, d < hi)
            step_dir = grad * movable if w is None else grad * movable / w   # the gradient in u
            step_norm = step_dir.flatten(1).norm(dim=1).clamp_min(_TINY)
            boundary = (norm + margin.abs() / step_norm) * (1 + g_)
            radius = torch.where(adversarial, torch.minimum(radius * (1 - g_), norm),
                                 torch.where(reached, radius * (1 + g_), boundary))
            radius = torch.where(adversarial, torch.minimum(radius, best.norm), radius)
            reached |= adversarial
            unit = step_dir / as_column(step_norm, x)          # l2_normalize(step_dir), its norm reused
            u = project_l2_ball(wd - (a * scale) * unit, as_column(radius, x))
            delta = torch.maximum(torch.minimum(u * support if w is None else u / w * support, hi), lo)
    return best

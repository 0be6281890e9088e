"""Batched optimisation plumbing shared by the iterative attacks: Adam with per-row state, a step-size
decay, and C&W's abort-early rule.

Every attack here advances many (image, target) pairs together, each with its own trade-off constant
and early stop, so optimiser state is per row (the batch's first dimension): a row can restart
(`reset`), step alone (`rows=`), or leave the working set (`keep`) without touching the others.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .tensors import as_column

__all__ = ["BatchAdam", "AbortEarly", "decayed_step_size"]


class BatchAdam:
    """Adam (Kingma & Ba 2015) on per-row parameters, with per-row moments and step counts.

    Parameters
    ----------
    like : Tensor
        A tensor shaped like the parameters (B, ...): the moments start as zeros of this shape.
    step_size : float, default 0.01
        The learning rate; `step(..., step_size=)` overrides it per call (a decayed schedule).
    betas : tuple of float, default (0.9, 0.999)
        Decay rates of the first and second moments.
    eps : float, default 1e-8
        Added to the root of the second moment (the paper's epsilon-hat).
    """

    def __init__(self, like: Tensor, step_size: float = 0.01, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)
        self.t = torch.zeros(like.shape[0], device=like.device, dtype=like.dtype)
        self.step_size, (self.b1, self.b2), self.eps = step_size, betas, eps

    def _moments(self, grad: Tensor, rows: Tensor | None) -> tuple[Tensor, Tensor]:
        """Advance the moments of `rows` (all rows when None; `grad` holds just those rows) by one
        step; returns the bias-corrected first moment and the denominator sqrt(v_hat) + eps."""
        if rows is None:
            self.t += 1
            self.m.mul_(self.b1).add_(grad, alpha=1 - self.b1)
            self.v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
            m, v, t = self.m, self.v, self.t
        else:
            self.t[rows] += 1
            self.m[rows] = self.b1 * self.m[rows] + (1 - self.b1) * grad
            self.v[rows] = self.b2 * self.v[rows] + (1 - self.b2) * grad * grad
            m, v, t = self.m[rows], self.v[rows], self.t[rows]
        t = t.double()  # the bias corrections 1 - beta^t in float64 (1 - 0.999 is off by 1e-5 in float32)
        return (m / as_column((1 - self.b1 ** t).to(m.dtype), m),
                (v / as_column((1 - self.b2 ** t).to(v.dtype), v)).sqrt() + self.eps)

    def direction(self, grad: Tensor, rows: Tensor | None = None) -> Tensor:
        """One step's bias-corrected direction m_hat / (sqrt(v_hat) + eps) (advances the moments)."""
        m_hat, denom = self._moments(grad, rows)
        return m_hat / denom

    def step(self, params: Tensor, grad: Tensor, rows: Tensor | None = None,
             step_size: float | Tensor | None = None) -> Tensor:
        """params - step_size * m_hat / (sqrt(v_hat) + eps), a new tensor; `rows` as in `direction`.
        (Evaluated as (step_size * m_hat) / denominator, the order of C&W's reference code.)"""
        lr = self.step_size if step_size is None else step_size
        m_hat, denom = self._moments(grad, rows)
        return params - lr * m_hat / denom

    def reset(self, rows: Tensor) -> None:
        """Restart `rows` (indices or a mask): zero moments and step counts."""
        self.m[rows] = 0
        self.v[rows] = 0
        self.t[rows] = 0

    def keep(self, mask: Tensor) -> None:
        """Drop the rows where `mask` is False (they left the working set)."""
        self.m, self.v, self.t = self.m[mask], self.v[mask], self.t[mask]


def decayed_step_size(step_size: float, step: int, *, decay: float = 1.0, every: int = 1,
                      minimum: float = 0.0) -> float:
    """A step size decayed by `decay` every `every` steps, floored at `minimum` (SAPF Sec. 4.1:
    0.9 every 50 steps)."""
    return max(step_size * decay ** (step // every), minimum)


class AbortEarly:
    """C&W's abort-early rule (Carlini & Wagner 2017, their code's `abort_early`), per row.

    Every `steps // checks` iterations a row's loss is compared with its value at the previous
    check (or, with `running_min`, the smallest value seen at any check); a row whose loss did not
    fall below `tolerance` times that reference has stalled, and one that stalled at `patience`
    consecutive checks should stop. The caller decides what stopping means (leave the working set,
    give up at this constant, ...).

    Parameters
    ----------
    steps : int
        The iteration budget the checks divide (at least one check every `steps // checks`).
    batch_size : int
        Rows tracked.
    device : torch.device, optional
    checks : int, default 10
        Checks per `steps` (C&W: 10).
    tolerance : float, default 0.9999
        A loss must fall below tolerance x reference to count as progress.
    patience : int, default 1
        Consecutive stalled checks before a row stops (C&W: 1).
    running_min : bool, default False
        Compare with the smallest loss of all checks instead of the previous check's.
    """

    def __init__(self, steps: int, batch_size: int, *, device=None, checks: int = 10, tolerance: float = 0.9999,
                 patience: int = 1, running_min: bool = False):
        self.every = max(1, steps // checks)
        self.tolerance, self.patience, self.running_min = tolerance, patience, running_min
        self.reference = torch.full((batch_size,), float("inf"), device=device)
        self.idle = torch.zeros(batch_size, dtype=torch.long, device=device)

    def due(self, step: int | Tensor) -> bool | Tensor:
        """Whether iteration `step` (an int, or per-row counts (B,)) is a check."""
        if isinstance(step, Tensor):
            return (step > 0) & (step % self.every == 0)
        return step > 0 and step % self.every == 0

    def check(self, step: int | Tensor, loss: Tensor, rows: Tensor | None = None) -> Tensor:
        """Record `loss` (B,) for the rows due at `step` (`rows`: their indices, when only some rows
        are given) and return which of them should stop."""
        idx = slice(None) if rows is None else rows
        due = self.due(step)
        due = torch.full_like(loss, bool(due), dtype=torch.bool) if not isinstance(due, Tensor) else due
        loss = loss.detach()
        if self.reference.dtype != loss.dtype:  # compare in the loss's precision (float64 runs)
            self.reference = self.reference.to(loss.dtype)
        ref, idle = self.reference[idx], self.idle[idx]
        stalled = due & ~(loss < self.tolerance * ref)
        new_ref = torch.minimum(ref, loss) if self.running_min else loss
        self.reference[idx] = torch.where(due, new_ref, ref)
        idle = torch.where(due, torch.where(stalled, idle + 1, torch.zeros_like(idle)), idle)
        self.idle[idx] = idle
        return stalled & (idle >= self.patience)

    def reset(self, rows: Tensor) -> None:
        """Restart the rule for `rows` (a new problem)."""
        self.reference[rows] = float("inf")
        self.idle[rows] = 0

    def keep(self, mask: Tensor) -> None:
        self.reference, self.idle = self.reference[mask], self.idle[mask]

"""Batched searches: over a trade-off constant (`TradeoffSearch`), over an integer budget
(`IntegerSearch`), and best-result bookkeeping (`BestAdversarial`).

Every C&W-style attack here (C&W-l2/l_inf, SAPF's lambda_1, StrAttack's c) weighs the adversarial
loss by a constant c and searches it per example: multiply c by `scale_up` until a first success,
then bisect between the largest failing and the smallest succeeding value (C&W 2017, Sec. V-A;
SAPF Sec. 4.1). Each example of the batch has its own constant and bounds.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from ..validation import ValidationError


class TradeoffSearch:
    """Per-example search state for a loss weight c in [lower_bound, upper_bound].

    Larger c favours the adversarial loss, so success -> try a smaller c, failure -> larger c.
    """

    def __init__(self, initial: float | Tensor, batch_size: int, *, device=None,
                 lower_bound: float = 0.0, upper_bound: float = 1e10, scale_up: float = 10.0):
        if isinstance(initial, Tensor):
            self.const = initial.detach().to(device=device, dtype=torch.float32).clone()
        else:
            if not initial > 0:
                raise ValidationError(f"initial trade-off constant must be positive, got {initial}")
            self.const = torch.full((batch_size,), float(initial), device=device)
        self.lower = torch.full_like(self.const, lower_bound)
        self.upper = torch.full_like(self.const, upper_bound)
        self.lower_bound = lower_bound
        self.upper_bound = upper_bound
        self.scale_up = scale_up

    def update(self, success: Tensor, rows: Tensor | None = None) -> None:
        """Move each example's constant after one search step, given its success (bool); with
        `rows`, only those examples of the batch took the step and `success` is theirs."""
        idx = slice(None) if rows is None else rows
        success = success.to(self.const.device)
        const, lower, upper = self.const[idx], self.lower[idx], self.upper[idx]
        upper = torch.where(success, torch.minimum(upper, const), upper)
        lower = torch.where(success, lower, torch.maximum(lower, const))
        grow = torch.clamp(const * self.scale_up, max=self.upper_bound)
        self.const[idx] = torch.where(upper < self.upper_bound, (lower + upper) / 2, grow)
        self.lower[idx], self.upper[idx] = lower, upper

    def restart(self, rows: Tensor) -> None:
        """Begin a new search for `rows` from their current constants (bounds reset), for when
        their problem changed (C&W-l0 after shrinking the allowed set)."""
        self.lower[rows] = self.lower_bound
        self.upper[rows] = self.upper_bound

    def exhausted(self, rows: Tensor | None = None) -> Tensor:
        """Whether each row (of `rows`) never succeeded and its constant reached the upper bound."""
        idx = slice(None) if rows is None else rows
        return (self.upper[idx] >= self.upper_bound) & (self.const[idx] >= self.upper_bound)


class BestAdversarial:
    """Keeps, per example, the successful adversarial input with the smallest distortion."""

    def __init__(self, inputs: Tensor):
        self.adv = inputs.detach().clone()
        self.norm = torch.full((inputs.shape[0],), float("inf"), device=inputs.device)

    @property
    def found(self) -> Tensor:
        return torch.isfinite(self.norm)

    def update(self, candidates: Tensor, success: Tensor, norm: Tensor,
               index: Tensor | None = None) -> Tensor:
        """Adopt candidates that succeed with a smaller norm; `index` maps rows of the candidates
        into the full batch when only a subset is active. Returns the improved mask (subset).
        Sync-free (no host round trip per step on a GPU): every row of the subset is rewritten
        with `torch.where` instead of selecting the improved rows with a boolean mask."""
        idx = torch.arange(self.norm.shape[0], device=self.norm.device) if index is None else index
        better = success & (norm < self.norm[idx])
        rows = better.view(-1, *([1] * (candidates.dim() - 1)))
        self.adv[idx] = torch.where(rows, candidates.detach().to(self.adv.dtype), self.adv[idx])
        self.norm[idx] = torch.where(better, norm.detach().to(self.norm.dtype), self.norm[idx])
        return better


class IntegerSearch:
    """Per-pair search for the smallest integer budget in [1, top] at which a test succeeds
    (a minimal k for SAPF, a grid index of eps for the eps searches), assuming success is monotone.

    State per pair: `lo`, the largest value known to fail (0: none), and `hi`, the smallest known to
    succeed (top + 1: none). `proposals()` gives the pairs still searching and the value each tries
    next; `update(rows, values, success)` records the verdicts.

    Parameters
    ----------
    batch_size : int
    top : int
        The largest value (the grid's last index, the largest k).
    mode : {'bisect', 'scan'}, default 'bisect'
        'bisect': until a first success, try `start`, then double (2 lo, capped at top); a pair
        that fails at top stops; then bisect between lo and hi. 'scan': try lo + 1, lo + 2, ... up
        to the first success (a fine grid's exact minimum; every value costs one test).
    start : int, optional
        The first value tried in 'bisect' mode (default: top, so a pair that fails at its whole
        budget costs one test).
    device : torch.device, optional
    """

    def __init__(self, batch_size: int, top: int, *, mode: str = "bisect", start: int | None = None, device=None):
        if mode not in ("bisect", "scan"):
            raise ValidationError(f"search mode must be 'bisect' or 'scan', got {mode!r}")
        if top < 1:
            raise ValidationError(f"the search range [1, {top}] is empty")
        self.top, self.mode = top, mode
        self.start = top if start is None else max(1, min(top, start))
        self.lo = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.hi = torch.full((batch_size,), top + 1, dtype=torch.long, device=device)

    @property
    def found(self) -> Tensor:
        """Whether each pair succeeded at some value."""
        return self.hi <= self.top

    def proposals(self) -> tuple[Tensor, Tensor]:
        """(rows still searching, the value each tries next); empty when the search is over."""
        unknown = ~self.found
        if self.mode == "scan":
            nxt = self.lo + 1
            active = unknown & (nxt <= self.top)
        else:
            first = torch.where(self.lo == 0, torch.full_like(self.lo, self.start), (2 * self.lo).clamp(max=self.top))
            nxt = torch.where(unknown, first, (self.lo + self.hi) // 2)
            active = torch.where(unknown, self.lo < self.top, self.hi - self.lo > 1)
        rows = active.nonzero().flatten()
        return rows, nxt[rows]

    def update(self, rows: Tensor, values: Tensor, success: Tensor) -> None:
        self.hi[rows[success]] = values[success]
        self.lo[rows[~success]] = values[~success]

    def result(self, missing: int = -1) -> Tensor:
        """The smallest succeeding value per pair (`missing` where none succeeded)."""
        return torch.where(self.found, self.hi, torch.full_like(self.hi, missing))


@dataclass
class MinimalBudget:
    """The result of a minimal-budget search (`sapf.find_min_k`, `dense.find_min_eps`): the
    adversarial inputs at each pair's smallest succeeding budget, and that budget per pair (k: -1,
    eps: inf where the pair failed at every budget tried; its input is then returned unchanged)."""
    adv: Tensor
    budget: Tensor

    @property
    def found(self) -> Tensor:
        return (self.budget >= 0) & torch.isfinite(self.budget.to(torch.float64))

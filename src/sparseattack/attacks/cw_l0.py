"""C&W-l0 (Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", S&P 2017,
Sec. V-B), batched, targeted or untargeted.

The algorithm (Sec. V-B and the authors' l0_attack.py), per example:

    allowed <- every pixel; start <- x; c <- initial_const
    repeat                                                   (one round per allowed set)
        solve C&W-l2 restricted to `allowed`, from `start`:
            minimise ||x' - x||_2^2 + c max(margin(x') + kappa, 0)
            over x' = allowed * (tanh(w) + 1) / 2 + (1 - allowed) * x        (Sec. V-A, V-B)
            with Adam (step_size 0.01) on w, for at most `steps` steps
        if the solve fails: c <- const_factor * c and solve again from `start`,
                            unless c reached largest_const: stop
        else: start <- x' (keep it: the last success);
              g <- gradient of the logit margin at x';
              fix (remove from `allowed`) the pixels of smallest contribution sum_c |g_c delta_c|
    return the last success (the clean input when the very first solve fails)

Details from the authors' code: several pixels go per round - every pixel up to the first one
whose contribution exceeds `change_tol` (0.01), at most ceil(`shrink_rate` * sqrt(#changed pixels))
(0.3) - and a pixel is "changed" when some channel moved by more than 1e-4. Each solve is
warm-started from the previous solution with fresh Adam moments, kappa = 0.01 (the code's margin);
it returns as soon as an iterate is adversarial with that margin (the code's abort-early). The
constant is kept from one round to the next (the code's REDUCE_CONST = False); its growth is
driven by `ops.search.TradeoffSearch` (restarted per round).

Choices where the paper leaves room (or deviates from the code on purpose):
- the solve keeps the first adversarial iterate (the code restores the step before it, which
  need not be adversarial);
- g is the gradient of the unclamped logit margin (`ops.losses.logit_margin`), which stays
  informative at success (the code's gradient of the hinge total loss is not);
- a pixel's contribution is sum_c |g_c| |delta_c| (the code multiplies |sum_c delta_c| by
  sum_c |g_c|; identical for one channel);
- a failing solve also stops when the loss has not decreased by 0.01% since the smallest loss of
  the previous checks, checked every tenth of `steps` (C&W-l2's abort-early rule,
  `ops.optim.AbortEarly(running_min=True)`; `abort_early=False` restores the code's full runs),
  which makes the final, failing round affordable;
- `independent_channels=True` fixes single entries instead of pixels (the code's option).

Batched: the pairs still attacking are a working set (`ops.working_set.WorkingSet`), each with its
own allowed set, constant, Adam state and step counter; a pair leaves it when its attack is over,
so it costs no more model evaluations. One gradient evaluation per pair and step. The attack
draws no random numbers, so an example returns the same alone or in any batch.

The last successful solution goes through `ops.quantize.finish`: with `quantize=True` (default)
its changed entries are put on the 8-bit grid and success (the top-1 class) is re-checked there;
an example without a success that survives the grid is returned unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..ops.losses import logit_margin
from ..ops.optim import AbortEarly, BatchAdam
from ..ops.projections import box_to_tanh, tanh_to_box
from ..ops.quantize import finish
from ..ops.search import TradeoffSearch
from ..ops.working_set import WorkingSet
from ..validation import ValidationError, check_attack_call
from ._renames import renamed

CHANGED = 1e-4   # an entry "changed" when it moved by more than this (the authors' code)


@dataclass
class _Attack(WorkingSet):
    """The pairs still attacking: the allowed set and the restricted C&W-l2 solve in progress."""
    x: Tensor            # clean inputs
    labels: Tensor
    allowed: Tensor      # (n, 1 or C, H, W) bool: entries the solve may change
    x_start: Tensor      # the solve's start: the last success (the clean input at first)
    w: Tensor            # the solve's iterate in tanh space
    rounds: Tensor       # successful solves so far
    adam: BatchAdam      # its `t` counts the solve's steps
    abort: AbortEarly


def _contribution(delta: Tensor, grad: Tensor, independent_channels: bool) -> tuple[Tensor, Tensor]:
    """Per pixel (entry) its contribution sum_c |g_c| |delta_c| and whether it changed: (n, P) each."""
    if independent_channels:
        return (grad.abs() * delta.abs()).flatten(1), (delta.abs() > CHANGED).flatten(1)
    return (grad.abs().sum(1) * delta.abs().sum(1)).flatten(1), (delta.abs() > CHANGED).any(1).flatten(1)


def _shrink(allowed: Tensor, score: Tensor, changed: Tensor, *, shrink_rate: float, change_tol: float) -> Tensor:
    """Remove allowed positions as C&W's l0_attack.py does: in the order of increasing score,
    every position up to the first whose score exceeds `change_tol`, at most
    ceil(shrink_rate * sqrt(#changed)) (at least one). allowed/score/changed: (n, P)."""
    p = allowed.shape[1]
    s = torch.where(allowed, score, torch.full_like(score, math.inf))
    ss, order = s.sort(dim=1, stable=True)
    n_allowed = allowed.sum(1)
    cap = torch.ceil(shrink_rate * changed.sum(1).float().sqrt()).long().clamp_min(1)
    big = (ss > change_tol) & torch.isfinite(ss)
    first_big = torch.where(big.any(1), big.float().argmax(1), torch.full_like(n_allowed, p))
    n_remove = torch.minimum(torch.minimum(first_big + 1, cap), n_allowed)
    drop = torch.arange(p, device=allowed.device)[None] < n_remove[:, None]
    removed = torch.zeros_like(allowed).scatter(1, order, drop)
    return allowed & ~removed


@renamed(max_iterations="steps", learning_rate="step_size")
def cw_l0(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
          steps: int = 1000, step_size: float = 1e-2, initial_const: float = 1e-3,
          largest_const: float = 2e6, const_factor: float = 2.0, kappa: float = 0.01,
          shrink_rate: float = 0.3, change_tol: float = 0.01, abort_early: bool = True,
          independent_channels: bool = False, max_rounds: int | None = None,
          quantize: bool = True) -> Tensor:
    """C&W-l0 (Carlini & Wagner 2017, Sec. V-B): C&W-l2 solves on a shrinking allowed set of
    pixels, batched (the algorithm box is in the module docstring).

    Parameters
    ----------
    model : nn.Module
        The classifier (logits), in eval mode; each step back-propagates its logit margin.
    inputs : Tensor
        Clean images x, (B, C, H, W) in [0, 1].
    labels : Tensor
        The classes to leave (untargeted) or to reach (targeted), (B,).
    targeted : bool, default False
        Make the margin of `labels` over the other classes negative (True) or theirs over it.
    steps : int, default 1000
        Adam steps of one restricted C&W-l2 solve at most (was `max_iterations`).
    step_size : float, default 0.01
        Adam's learning rate on the tanh-space variable (was `learning_rate`).
    initial_const : float, default 0.001
        The first trade-off constant c (the registry's `cw-l0` starts at 1.0).
    largest_const : float, default 2e6
        A pair gives up when a solve fails at this c (C&W's l0 code: LARGEST_CONST = 2e6; with 20,
        the earlier default, 2 of the 180 benchmark pairs failed, and both succeed with 2e6).
    const_factor : float, default 2.0
        c is multiplied by this after a failed solve.
    kappa : float, default 0.01
        Confidence margin: a solve succeeds when the margin is below -kappa.
    shrink_rate : float, default 0.3
        At most ceil(shrink_rate * sqrt(#changed pixels)) pixels are fixed per round.
    change_tol : float, default 0.01
        Pixels are fixed up to the first one whose contribution exceeds this.
    abort_early : bool, default True
        Stop a failing solve when its loss stalls (see Notes); False runs every solve for `steps`.
    independent_channels : bool, default False
        Fix single entries (channels) instead of whole pixels.
    max_rounds : int or None, default None
        Stop a pair after this many successful rounds (None: until its allowed set is empty or a
        solve fails).
    quantize : bool, default True
        Put the changed entries of the result on the 8-bit grid and re-check success there
        (`ops.quantize.finish`, with its gradient repair); inputs must then be 8-bit images
        (k/255). False for float inputs.

    Returns
    -------
    Tensor
        The last successful solution per example; an example that never succeeds (or whose
        success does not survive the 8-bit grid) is returned unchanged (`ops.quantize.finish`).

    Notes
    -----
    The paper leaves the inner solver's details to the code; here, as there, a solve is
    warm-started with fresh Adam moments and returns at its first adversarial iterate. A failing
    solve also stops when its loss has not fallen by 0.01% below the smallest loss of its
    previous checks, one check every `steps // 10` steps (`ops.optim.AbortEarly(running_min=True)`).
    Pixels are ranked by sum_c |g_c| |delta_c| with g the gradient of the unclamped logit margin.
    One gradient evaluation per pair and step; no random numbers.
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    if steps < 1:
        raise ValidationError(f"steps must be >= 1, got {steps}")
    if not 0 < initial_const < largest_const:
        raise ValidationError("need 0 < initial_const < largest_const")
    x = inputs.detach()
    b, c, h, w = x.shape
    dev = x.device
    mask_shape = (b, c, h, w) if independent_channels else (b, 1, h, w)
    search = TradeoffSearch(initial_const, b, device=dev, lower_bound=0.0, upper_bound=largest_const,
                            scale_up=const_factor)
    ws = _Attack.start(x=x, labels=labels, allowed=torch.ones(mask_shape, dtype=torch.bool, device=dev),
                       x_start=x.clone(), w=box_to_tanh(x), rounds=torch.zeros(b, dtype=torch.long, device=dev),
                       adam=BatchAdam(x, step_size), abort=AbortEarly(steps, b, device=dev, running_min=True))
    out = x.clone()

    def restart_solve(rows: Tensor, start: Tensor) -> None:
        """A new solve for `rows` from `start`: the tanh variable, fresh Adam moments and abort rule."""
        ws.x_start[rows] = start
        ws.w[rows] = box_to_tanh(start)
        ws.adam.reset(rows)
        ws.abort.reset(rows)

    while not ws.empty:
        # one step of every pair's restricted solve: the iterate x', its margin and gradient
        allowed = ws.allowed.to(x.dtype)
        with torch.no_grad():
            adv = allowed * tanh_to_box(ws.w) + (1 - allowed) * ws.x
        adv.requires_grad_(True)
        margin = logit_margin(model(adv), ws.labels, targeted=targeted)
        grad, = torch.autograd.grad(margin.sum(), adv)
        adv, margin = adv.detach(), margin.detach()
        const = search.const[ws.rows]
        delta = adv - ws.x
        loss = delta.flatten(1).pow(2).sum(1) + const * (margin + kappa).clamp_min(0)
        success = margin + kappa <= 0
        over = torch.zeros_like(success)

        # a solve succeeded: keep it, fix the pixels of smallest contribution, start the next round
        if success.any():
            rows = success.nonzero().flatten()
            out[ws.rows[rows]] = adv[rows]
            score, changed = _contribution(delta[rows], grad[rows], independent_channels)
            shrunk = _shrink(ws.allowed[rows].flatten(1), score, changed, shrink_rate=shrink_rate,
                             change_tol=change_tol)
            ws.allowed[rows] = shrunk.view(-1, *mask_shape[1:])
            ws.rounds[rows] += 1
            search.restart(ws.rows[rows])
            restart_solve(rows, adv[rows])
            done = shrunk.sum(1) == 0
            if max_rounds is not None:
                done |= ws.rounds[rows] >= max_rounds
            over[rows[done]] = True

        # a solve failed (out of steps, or stalled): c <- const_factor * c and solve again from the
        # start, or give up at largest_const
        stalled = ws.abort.check(ws.adam.t, loss) if abort_early else torch.zeros_like(success)
        failed = ~success & ((ws.adam.t >= steps) | stalled)
        if failed.any():
            rows = failed.nonzero().flatten()
            search.update(torch.zeros(len(rows), dtype=torch.bool, device=dev), ws.rows[rows])
            give_up = search.exhausted(ws.rows[rows])
            over[rows[give_up]] = True
            again = rows[~give_up]
            restart_solve(again, ws.x_start[again].clone())

        # an Adam step for the others: gradient of the loss in w (hinge: c * grad margin while short)
        step = ~success & ~failed
        if step.any():
            rows = step.nonzero().flatten()
            with torch.no_grad():
                grad_x = const[rows].view(-1, 1, 1, 1) * grad[rows] + 2 * delta[rows]
                wv = ws.w[rows]
                grad_w = grad_x * allowed[rows] * (1 - torch.tanh(wv).pow(2)) / 2
                ws.w[rows] = ws.adam.step(wv, grad_w, rows=rows)
        ws.keep(~over)
    return finish(model, x, out, labels, targeted=targeted, quantize=quantize)

"""C&W-l0 (Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", S&P 2017,
Sec. V-B), batched, targeted or untargeted.

The l0 attack repeatedly solves a C&W-l2 problem restricted to an *allowed set* of pixels and
shrinks that set: after a successful solve delta, with g = the gradient of the logit margin at
x + delta, pixels are fixed (removed from the allowed set, reset to their clean value) in the order
of increasing sum_c |g_c delta_c| (their contribution). As in the authors' code (l0_attack.py):
several pixels go per round - every pixel up to the first one whose contribution exceeds
`change_tol` (0.01), at most ceil(`shrink_rate` * sqrt(#changed pixels)) (0.3) - and a pixel is
"changed" when some channel moved by more than 1e-4. The attack stops when a restricted solve
fails and returns the last successful solution (the clean input if the very first solve fails).

Each restricted solve is C&W-l2 in tanh space: minimise ||x' - x||_2^2 + c max(margin + kappa, 0)
over the allowed pixels with Adam (lr 0.01), warm-started from the previous solution with fresh
Adam moments, kappa = 0.01 (the code's margin); it returns as soon as an iterate is adversarial
with that margin (the code's abort-early) or fails after `max_iterations` (1000) steps. On failure
c is multiplied by 2 and the solve is repeated from the same start, up to c = 20; the constant
is kept from one round to the next (the code's REDUCE_CONST = False). The constant's growth is
driven by `ops.search.TradeoffSearch` (restarted per round).

Choices where the paper leaves room (or deviates from the code on purpose):
- the solve keeps the first adversarial iterate (the code restores the step before it, which
  need not be adversarial);
- g is the gradient of the unclamped logit margin (`ops.losses.logit_margin`), which stays
  informative at success (the code's gradient of the hinge total loss is not);
- a pixel's contribution is sum_c |g_c| |delta_c| (the code multiplies |sum_c delta_c| by
  sum_c |g_c|; identical for one channel);
- a failing solve also stops when the loss has not decreased by 0.01% over a tenth of
  max_iterations (C&W-l2's abort-early; `abort_early=False` restores the code's full runs), which
  makes the final, failing round affordable;
- `independent_channels=True` fixes single entries instead of pixels (the code's option).
Batched: every example has its own allowed set, constant, Adam state and step counter; an
example leaves the working set when its attack is over, so it costs no more model evaluations.
One gradient evaluation per example and step. The attack draws no random numbers, so an example
returns the same alone or in any batch.

The last successful solution goes through `ops.quantize.finish`: with `quantize=True` (default)
its changed entries are put on the 8-bit grid and success (the top-1 class) is re-checked there;
an example without a success that survives the grid is returned unchanged.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..ops.losses import logit_margin
from ..ops.quantize import finish
from ..ops.search import TradeoffSearch
from ..validation import check_attack_call


def _to_tanh(img: Tensor) -> Tensor:
    return torch.atanh((2 * img - 1).clamp(-1, 1) * 0.999999)


def _from_tanh(w: Tensor) -> Tensor:
    return (torch.tanh(w) + 1) / 2


def _shrink(valid: Tensor, score: Tensor, changed: Tensor, *, shrink_rate: float, change_tol: float) -> Tensor:
    """Remove allowed positions as C&W's l0_attack.py does. valid/score/changed: (n, P)."""
    p = valid.shape[1]
    s = torch.where(valid, score, torch.full_like(score, math.inf))
    ss, order = s.sort(dim=1, stable=True)
    n_valid = valid.sum(1)
    cap = torch.ceil(shrink_rate * changed.sum(1).float().sqrt()).long().clamp_min(1)
    big = (ss > change_tol) & torch.isfinite(ss)
    first_big = torch.where(big.any(1), big.float().argmax(1), torch.full_like(n_valid, p))
    n_remove = torch.minimum(torch.minimum(first_big + 1, cap), n_valid)
    drop = torch.arange(p, device=valid.device)[None] < n_remove[:, None]
    removed = torch.zeros_like(valid).scatter(1, order, drop)
    return valid & ~removed


def cw_l0(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
          max_iterations: int = 1000, learning_rate: float = 1e-2, initial_const: float = 1e-3,
          largest_const: float = 2e1, const_factor: float = 2.0, kappa: float = 0.01,
          shrink_rate: float = 0.3, change_tol: float = 0.01, abort_early: bool = True,
          independent_channels: bool = False, max_rounds: int | None = None,
          quantize: bool = True) -> Tensor:
    """Batched C&W-l0 (see the module docstring). Returns the last successful solution per
    example (the clean input when none succeeded).

    quantize: end on the 8-bit grid via `ops.quantize.finish`; inputs must then be 8-bit images
    (k/255); False for float inputs."""
    check_attack_call(model, inputs, labels, quantize=quantize)
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    if not 0 < initial_const < largest_const:
        raise ValueError("need 0 < initial_const < largest_const")
    x = inputs.detach()
    b, c, h, w = x.shape
    dev = x.device
    mshape = (b, c, h, w) if independent_channels else (b, 1, h, w)
    valid = torch.ones(mshape, dtype=torch.bool, device=dev)
    prev = x.clone()
    wvar = _to_tanh(prev)
    m1 = torch.zeros_like(x)
    m2 = torch.zeros_like(x)
    t = torch.zeros(b, dtype=torch.long, device=dev)
    best_loss = torch.full((b,), math.inf, device=dev, dtype=x.dtype)
    search = TradeoffSearch(initial_const, b, device=dev, lower_bound=0.0, upper_bound=largest_const,
                            scale_up=const_factor)
    out = x.clone()
    rounds = torch.zeros(b, dtype=torch.long, device=dev)
    active = torch.ones(b, dtype=torch.bool, device=dev)
    beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
    check_every = max(1, max_iterations // 10)

    def restart_from(rows: Tensor, start: Tensor) -> None:
        prev[rows] = start
        wvar[rows] = _to_tanh(start)
        m1[rows] = 0
        m2[rows] = 0
        t[rows] = 0
        best_loss[rows] = math.inf

    while True:
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        x0, val = x[idx], valid[idx].to(x.dtype)
        with torch.no_grad():
            img = _from_tanh(wvar[idx])
            adv = val * img + (1 - val) * x0
        adv.requires_grad_(True)
        logits = model(adv)
        margin = logit_margin(logits, labels[idx], targeted=targeted)
        gm, = torch.autograd.grad(margin.sum(), adv)
        adv = adv.detach()
        margin = margin.detach()
        const = search.const[idx]
        delta = adv - x0
        total = (delta.flatten(1).pow(2).sum(1) + const * (margin + kappa).clamp_min(0))
        success = margin + kappa <= 0

        # a restricted solve succeeded: keep it, shrink the allowed set, start the next round
        if success.any():
            rows = success.nonzero().flatten()
            gi = idx[rows]
            d, g = delta[rows], gm[rows]
            out[gi] = adv[rows]
            if independent_channels:
                score = (g.abs() * d.abs()).flatten(1)
                changed = (d.abs() > 1e-4).flatten(1)
            else:
                score = (g.abs().sum(1) * d.abs().sum(1)).flatten(1)
                changed = (d.abs() > 1e-4).any(1).flatten(1)
            new_valid = _shrink(valid[gi].flatten(1), score, changed, shrink_rate=shrink_rate,
                                change_tol=change_tol)
            valid[gi] = new_valid.view(-1, *mshape[1:])
            rounds[gi] += 1
            search.restart(gi)
            restart_from(gi, adv[rows])
            over = new_valid.sum(1) == 0
            if max_rounds is not None:
                over |= rounds[gi] >= max_rounds
            active[gi[over]] = False

        # failing solves: out of steps or (abort-early) no progress -> double c and start over
        stalled = torch.zeros_like(success)
        if abort_early:
            check = (t[idx] > 0) & (t[idx] % check_every == 0)
            stalled = check & ~(total < best_loss[idx] * 0.9999)
            best_loss[idx] = torch.where(check, torch.minimum(best_loss[idx], total), best_loss[idx])
        failed = ~success & ((t[idx] >= max_iterations) | stalled)
        if failed.any():
            rows = failed.nonzero().flatten()
            gi = idx[rows]
            search.update(torch.zeros(len(gi), dtype=torch.bool, device=dev), gi)
            give_up = search.exhausted(gi)
            active[gi[give_up]] = False
            again = gi[~give_up]
            restart_from(again, prev[again].clone())

        # Adam step for the rest (hinge gradient c * grad margin while the margin is short)
        step = ~success & ~failed
        if step.any():
            rows = step.nonzero().flatten()
            gi = idx[rows]
            with torch.no_grad():
                gx = const[rows].view(-1, 1, 1, 1) * gm[rows] + 2 * delta[rows]
                wv = wvar[gi]
                gw = gx * val[rows] * (1 - torch.tanh(wv).pow(2)) / 2
                t[gi] += 1
                tt = t[gi].to(x.dtype).view(-1, 1, 1, 1)
                m1[gi] = beta1 * m1[gi] + (1 - beta1) * gw
                m2[gi] = beta2 * m2[gi] + (1 - beta2) * gw * gw
                mhat = m1[gi] / (1 - beta1 ** tt)
                vhat = m2[gi] / (1 - beta2 ** tt)
                wvar[gi] = wv - learning_rate * mhat / (vhat.sqrt() + adam_eps)
    return finish(model, x, out, labels, targeted=targeted, quantize=quantize)

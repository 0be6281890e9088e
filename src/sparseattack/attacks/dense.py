"""The dense baselines of StrAttack's Tables 1-2 (Xu et al., ICLR 2019, Sec. 5 and Appendix F).

FGM / FGSM (Goodfellow et al. 2015), `fgm`, `fgsm`: one step on the attacker's loss L (cross-entropy
toward the target, away from the label)

    d   = grad_x L(x) / ||grad_x L(x)||_2   (FGM, l2)   or   sign(grad_x L(x))   (FGSM, l_inf)
    adv = clip_[0,1](x - eps * d)

Minimal eps on a fine grid (Appendix F's "fine-grained grid search"), `min_eps_search` /
`find_min_eps`: the bound grows until success, on the grid of the authors' fgm.py

    eps_j = j * grid_step,  j = 1 .. J = eps_max / grid_step
    grid_step = 1e-3 (l_inf) / 1e-2 (l2);  eps_max = 1 (l_inf) / sqrt(n) (l2, the box diameter;
    the authors' fgm.py stops at 10)
    per pair, the smallest j at which attack(x, eps_j), finished, succeeds (`ops.search.IntegerSearch`):
      search='scan':   j = 1, 2, ... up to the first success (the authors' fgm.py)
      search='bisect': j = eps_init / grid_step, doubled until a first success, then bisection between
                       the last failure and the first success (about 2 log2 J attacks instead of up
                       to J; assumes success is monotone in eps)

FGM's direction does not depend on eps, so for `fgm` / `fgsm` the search takes one gradient and then
only forward passes. IFGSM / IFGM is `attacks.ifgsm` (10 iterations of eps/10, Appendix F).

C&W-l2 (Carlini & Wagner 2017), `cw_l2`, with x' = (tanh(w) + 1) / 2 (`ops.projections.tanh_to_box`):

    for each of binary_search_steps values of c (`ops.search.TradeoffSearch`: x10 until a first
    success, then bisection; Appendix F: 9 steps of at most 1000 iterations, c0 = 1e-3):
        w = arctanh(2x - 1); up to `steps` Adam steps (lr 0.01) on ||x' - x||_2^2 + c * f(x'),
        f the margin (3); every steps/10 iterations a pair whose loss fell by less than 0.01% leaves
        (C&W's abort early, `ops.optim.AbortEarly`)
    keep each pair's smallest-l2 success

C&W-l_inf, `cw_linf`: Adam (lr 5e-3) on tanh-space w of c * f(x') + sum_i max(|x'_i - x_i| - t, 0)

    t = 1, c = initial_const (1e-5)
    repeat, per pair, each subproblem at most `steps` iterations warm-started from the last success:
        solved (loss < 1e-4 c and success): record x'; t <- decrease_factor * min(t, ||x' - x||_inf),
            c <- c / 2; stop once t < tau_min (1/256)
        not solved within `steps`: c <- const_factor * c (x2); stop once c > largest_const (20)

This is C&W's own search on c (doubling/halving tied to the t schedule), not a bisection, which would
need a full solve per c for every t. Every attack here is batched; pairs that are done leave the
working set (`ops.working_set.WorkingSet`).

Every attack ends with `ops.quantize.finish` (its own constraint as the cap: the l2 / l_inf ball of
fgm, fgsm and the searches, none for C&W): with `quantize=True` (default) the perturbed entries end
on the 8-bit grid and success is re-checked there; a pair that does not succeed is returned
unchanged. The eps searches judge success at each grid eps on what they would return there: the
attack's float output must succeed and, with quantize=True, so must its 8-bit finish (inside that
eps-ball); a float success lost on the grid is a failure at that eps. (A float failure is not
finished: a grid point costs one forward pass, not the finish's up to nine, and a lucky rounding of
a failed attack is not counted.)
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ..ops.losses import adversarial_loss, cw_margin_loss, is_adversarial
from ..ops.optim import AbortEarly, BatchAdam
from ..ops.projections import box_to_tanh, tanh_to_box
from ..ops.quantize import finish, finish_candidate, report_float_success, succeeds
from ..ops.search import BestAdversarial, IntegerSearch, MinimalBudget, TradeoffSearch
from ..ops.tensors import ball_cap, check_norm, l2_normalize, per_example
from ..ops.working_set import WorkingSet
from ..validation import ValidationError, ValidationTypeError, check_attack_call
from ._renames import renamed
from .ifgsm import ifgsm, ifgsm_iterations

__all__ = ["fgm", "fgsm", "min_eps_search", "find_min_eps", "cw_l2", "cw_linf", "default_eps_grid"]


def _direction(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool, norm: str,
               loss: str) -> Tensor:
    """The fast-gradient direction d: the step x - eps * d decreases the attacker's loss."""
    loss_fn = adversarial_loss(loss)
    x = inputs.detach().clone().requires_grad_(True)
    grad, = torch.autograd.grad(loss_fn(model(x), labels, targeted=targeted).sum(), x)
    return grad.sign() if norm == "linf" else l2_normalize(grad)


def fgm(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
        eps: float | Tensor = 1.0, norm: str = "l2", loss: str = "ce", quantize: bool = True) -> Tensor:
    """Fast gradient method (Goodfellow et al. 2015): one step x - eps * d, clipped to [0, 1]
    (module docstring; StrAttack's FGM baseline).

    Parameters
    ----------
    model : nn.Module
        The classifier (logits), in eval mode.
    inputs : Tensor
        Images x (B, C, H, W) in [0, 1]; with `quantize`, 8-bit images (k/255).
    labels : Tensor
        Target classes (targeted) or true classes (untargeted), (B,) integers.
    targeted : bool, default False
        The step descends the loss toward `labels` (True) or away from them (False).
    eps : float or Tensor, default 1.0
        The threat-model radius (the step length in `norm`); a scalar or one per pair (B,).
    norm : {'l2', 'linf'}, default 'l2'
        d = the gradient over its l2 norm (FGM) or its sign (FGSM).
    loss : {'ce', 'cw'}, default 'ce'
        The attacker's loss (`ops.losses.adversarial_loss`).
    quantize : bool, default True
        End on the 8-bit grid inside the eps-ball via `ops.quantize.finish`; False for float inputs.

    Returns
    -------
    Tensor
        Adversarial inputs (B, C, H, W); a pair that does not succeed is returned unchanged.

    Notes
    -----
    One gradient evaluation per pair: the finish rounds onto the grid but does not repair a
    rounding failure with gradient steps (`repair_steps=0`).
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    check_norm(norm)
    adversarial_loss(loss)
    x = inputs.detach()
    radius = per_example(eps, x)
    d = _direction(model, x, labels, targeted=targeted, norm=norm, loss=loss)
    return finish(model, x, x - radius * d, labels, targeted=targeted, quantize=quantize, repair_steps=0,
                  **ball_cap(norm, radius))


def fgsm(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
         eps: float | Tensor = 0.1, loss: str = "ce", quantize: bool = True) -> Tensor:
    """FGSM (Goodfellow et al. 2015): `fgm` with the sign of the gradient, an l_inf step of eps.

    Parameters
    ----------
    model : nn.Module
    inputs, labels : Tensor
    targeted : bool, default False
        As in `fgm`.
    eps : float or Tensor, default 0.1
        The l_inf radius (the step is eps * sign(gradient)); a scalar or one per pair (B,).
    loss : {'ce', 'cw'}, default 'ce'
    quantize : bool, default True
        As in `fgm` (the finish's cap is the l_inf ball).

    Returns
    -------
    Tensor
        Adversarial inputs (B, C, H, W); a pair that does not succeed is returned unchanged.
    """
    return fgm(model, inputs, labels, targeted=targeted, eps=eps, norm="linf", loss=loss, quantize=quantize)


def default_eps_grid(norm: str, inputs: Tensor) -> tuple[float, float]:
    """The fine eps grid of Appendix F for images like `inputs` (module docstring).

    Parameters
    ----------
    norm : {'linf', 'l2'}
        The threat model.
    inputs : Tensor
        Images (B, C, H, W); n = C * H * W sets the l2 grid's end.

    Returns
    -------
    tuple of float
        (grid_step, eps_max): (1e-3, 1) for l_inf, (1e-2, sqrt(n)) for l2.
    """
    check_norm(norm)
    return (1e-3, 1.0) if norm == "linf" else (1e-2, math.sqrt(inputs[0].numel()))


_ATTACKS = {"fgm": fgm, "fgsm": fgsm, "ifgsm": ifgsm}
_IFGSM_OPTIONS = {"steps": 10, "step_size": None, "loss": "ce", "early_stop": True}

_SEARCH_DOC = """{summary}

    Parameters
    ----------
    model : nn.Module
        The classifier (logits), in eval mode: the attack's model.
    inputs : Tensor
        Images x (B, C, H, W) in [0, 1]; with `quantize`, 8-bit images (k/255).
    labels : Tensor
        Target classes (targeted) or true classes (untargeted), (B,) integers.
    targeted : bool, default False
        Passed to the attack: toward `labels` (True) or away from them (False).
    attack : {{'ifgsm', 'fgm', 'fgsm'}} or callable, default 'ifgsm'
        The attack run at each grid eps: a name, or any function
        `fn(model, inputs, labels, *, targeted, eps, **attack_kwargs)` taking a (B,) tensor `eps`
        (given quantize=False when it has that keyword: the search finishes its float output).
    norm : {{'linf', 'l2'}}, default 'linf'
        The threat model: sets the grid and the ball (the finish's cap) and is passed to fgm and
        ifgsm; fgsm is always l_inf.
    search : {{'bisect', 'scan'}}, default 'bisect'
        'scan' tries j = 1, 2, ...; 'bisect' doubles j from `eps_init` until a first success, then
        bisects (module docstring, `ops.search.IntegerSearch`).
    grid_step : float, optional
        The grid's spacing; default 1e-3 (l_inf) / 1e-2 (l2) (`default_eps_grid`).
    eps_max : float, optional
        The grid's end; default 1 (l_inf) / sqrt(C*H*W) (l2).
    eps_init : float, optional
        'bisect' only: the first eps tried (rounded to the grid); default 16 grid steps.
    quantize : bool, default True
        End on the 8-bit grid via `ops.quantize.finish`; False for float inputs. Success at a grid
        eps is judged on what would be returned there (module docstring).
    **attack_kwargs
        Passed to the attack: fgm/fgsm take `loss`; ifgsm takes `steps` (10), `step_size` (eps/10),
        `loss` ('ce') and `early_stop` (True).

    Returns
    -------
    {returns}

    Notes
    -----
    Appendix F does not say how the grid is searched; 'scan' is the authors' fgm.py, 'bisect' our
    cheaper choice for the iterative attack (it assumes success is monotone in eps and returns the
    smallest successful eps it tried). Only float successes are finished on the 8-bit grid, and a
    float success that does not survive the finish is a failure at that eps.
    """


def find_min_eps(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
                 attack: str | Callable = "ifgsm", norm: str = "linf", search: str = "bisect",
                 grid_step: float | None = None, eps_max: float | None = None,
                 eps_init: float | None = None, quantize: bool = True, **attack_kwargs) -> MinimalBudget:
    check_attack_call(model, inputs, labels, quantize=quantize)
    fn, norm, spacing, top = _resolve_search(inputs, attack, norm, search, grid_step, eps_max, attack_kwargs)
    x = inputs.detach()
    run = _AttackAt(fn, model, x, labels, targeted=targeted, norm=norm, attack_kwargs=attack_kwargs)
    x_adv = succeeds(model, x, labels, targeted)  # an unchanged input is judged as itself

    if fn is fgm and search == "scan":
        out, index, float_ok = _fgm_scan(model, x, labels, run.direction, spacing, top, targeted=targeted,
                                         quantize=quantize, norm=norm, inputs_adversarial=x_adv)
    else:
        grid = IntegerSearch(x.shape[0], top, mode=search, start=round((eps_init or 16 * spacing) / spacing),
                             device=x.device)
        out = x.clone()
        float_ok = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        while True:
            rows, index = grid.proposals()
            if rows.numel() == 0:
                break
            eps = index.to(x.dtype) * spacing
            cand, ok, f_ok = finish_candidate(model, x[rows], run(rows, eps), labels[rows], targeted=targeted,
                                               quantize=quantize, inputs_adversarial=x_adv[rows],
                                               **ball_cap(norm, eps))
            grid.update(rows, index, ok)
            out[rows[ok]] = cand[ok]      # the finished candidate at the smallest succeeding eps so far
            float_ok[rows] |= f_ok
        index = grid.hi                   # top + 1 where none succeeded
    report_float_success(model, float_ok)  # float success at some eps tried (eval.CountingModel's float_success)
    eps = torch.where(index <= top, index.to(x.dtype) * spacing,
                      torch.full_like(index, float("inf"), dtype=x.dtype))
    return MinimalBudget(out, eps)


def min_eps_search(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
                   attack: str | Callable = "ifgsm", norm: str = "linf", search: str = "bisect",
                   grid_step: float | None = None, eps_max: float | None = None,
                   eps_init: float | None = None, quantize: bool = True, **attack_kwargs) -> Tensor:
    return find_min_eps(model, inputs, labels, targeted=targeted, attack=attack, norm=norm, search=search,
                        grid_step=grid_step, eps_max=eps_max, eps_init=eps_init, quantize=quantize,
                        **attack_kwargs).adv


find_min_eps.__doc__ = _SEARCH_DOC.format(
    summary="The smallest eps of a fine grid at which `attack` succeeds, per pair, and the adversarial\n"
            "    input there (Appendix F's grid search; module docstring).",
    returns="MinimalBudget\n"
            "        `adv`: (B, C, H, W), each pair's finished adversarial input at its smallest succeeding\n"
            "        grid eps, the input unchanged where none succeeded; `budget`: that eps per pair (B,),\n"
            "        inf where none succeeded.")
min_eps_search.__doc__ = _SEARCH_DOC.format(
    summary="The adversarial inputs of `find_min_eps` alone: each pair attacked at the smallest eps of a\n"
            "    fine grid at which `attack` succeeds (Appendix F's grid search; module docstring).",
    returns="Tensor\n"
            "        (B, C, H, W): each pair's finished adversarial input at its smallest succeeding grid\n"
            "        eps; a pair that succeeds at no eps tried is returned unchanged.")


def _resolve_search(inputs: Tensor, attack: str | Callable, norm: str, search: str, grid_step: float | None,
                    eps_max: float | None, attack_kwargs: dict) -> tuple[Callable, str, float, int]:
    """The checked arguments of an eps search: (attack function, norm, grid spacing, J)."""
    if "return_eps" in attack_kwargs:
        raise ValidationTypeError("return_eps was removed in 0.2: find_min_eps returns the adversarial inputs and each eps")
    check_norm(norm)
    if search not in ("scan", "bisect"):
        raise ValidationError(f"search must be 'scan' or 'bisect', got {search!r}")
    fn = _ATTACKS.get(attack, None) if isinstance(attack, str) else attack
    if fn is None:
        raise ValidationError(f"unknown attack {attack!r} for min_eps_search; use one of {sorted(_ATTACKS)} or a function")
    if fn is fgsm:
        fn, norm = fgm, "linf"
    known = {"loss"} if fn is fgm else set(_IFGSM_OPTIONS) if fn is ifgsm else None
    if known is not None and set(attack_kwargs) - known:
        raise ValidationTypeError(f"unexpected argument(s) for {getattr(fn, '__name__', fn)} in min_eps_search: "
                        f"{', '.join(sorted(set(attack_kwargs) - known))}")
    adversarial_loss(attack_kwargs.get("loss", "ce"))
    step0, max0 = default_eps_grid(norm, inputs)
    spacing = grid_step or step0
    top = int(math.floor((eps_max or max0) / spacing + 1e-9))
    if spacing <= 0 or top < 1:
        raise ValidationError(f"the eps grid is empty: grid_step={spacing}, eps_max={eps_max or max0}")
    return fn, norm, spacing, top


class _AttackAt:
    """`attack` at a grid eps for some rows of the batch: `run(rows, eps)` -> float adversarial
    inputs. For FGM the direction is computed once (`direction`), then each eps is a forward step."""

    def __init__(self, fn: Callable, model: nn.Module, x: Tensor, labels: Tensor, *, targeted: bool, norm: str,
                 attack_kwargs: dict):
        self.fn, self.model, self.x, self.labels, self.targeted, self.norm = fn, model, x, labels, targeted, norm
        self.direction = None
        if fn is fgm:      # one gradient, then forward passes only
            self.direction = _direction(model, x, labels, targeted=targeted, norm=norm,
                                        loss=attack_kwargs.get("loss", "ce"))
        elif fn is ifgsm:
            self.opts = {**_IFGSM_OPTIONS, **attack_kwargs}
            if self.opts["steps"] < 1:
                raise ValidationError(f"steps must be >= 1, got {self.opts['steps']}")
            size = self.opts["step_size"]
            self.step_size = None if size is None else per_example(size, x, name="step_size")
        else:              # a user's attack: its float output (its own finish, if any, without quantization)
            self.kwargs = dict(attack_kwargs)
            if "quantize" in inspect.signature(fn).parameters:
                self.kwargs["quantize"] = False

    def __call__(self, rows: Tensor, eps: Tensor) -> Tensor:
        x, labels = self.x[rows], self.labels[rows]
        if self.fn is fgm:
            return x - eps.view(-1, 1, 1, 1) * self.direction[rows]
        if self.fn is ifgsm:
            radius = eps.view(-1, 1, 1, 1)
            steps = self.opts["steps"]
            size = radius / steps if self.step_size is None else self.step_size[rows]
            return ifgsm_iterations(self.model, x, labels, targeted=self.targeted, eps=radius, norm=self.norm,
                                    steps=steps, step_size=size, loss=self.opts["loss"],
                                    early_stop=self.opts["early_stop"])
        return self.fn(self.model, x, labels, targeted=self.targeted, eps=eps, **self.kwargs).detach()



def _fgm_scan(model: nn.Module, inputs: Tensor, labels: Tensor, direction: Tensor, spacing: float, top: int,
              *, targeted: bool, quantize: bool, norm: str, inputs_adversarial: Tensor,
              entries_per_pass: int = 1 << 22) -> tuple[Tensor, Tensor, Tensor]:
    """Ascending scan of x - j * spacing * direction, j = 1..top, several grid points per pass (16
    per pair, then twice as many each pass), each judged by `finish_candidate`: one forward pass
    judges the float images of a pass, then the float successes are finished (inside their
    eps-ball) in ascending eps until one survives; each pair keeps its first success (the input
    if none).
    Returns (adv, grid index j, float success at some j), with j = top + 1 where none succeeded."""
    b = inputs.shape[0]
    out = inputs.clone()
    found = torch.full((b,), top + 1, dtype=torch.long, device=inputs.device)
    float_ok = torch.zeros(b, dtype=torch.bool, device=inputs.device)
    idx = torch.arange(b, device=inputs.device)
    images_per_pass = max(1, min(2048, entries_per_pass // inputs[0].numel()))
    first, span = 1, 16  # the grid points per pair of a pass double, so few are tried past a first success
    with torch.no_grad():
        while idx.numel() and first <= top:
            grid = torch.arange(first, min(first + max(1, min(span, images_per_pass // idx.numel())), top + 1),
                                device=inputs.device)
            span *= 2
            n, m = idx.numel(), grid.numel()
            eps = grid.to(inputs.dtype) * spacing
            imgs = inputs[idx, None] - eps.view(1, -1, 1, 1, 1) * direction[idx, None]   # (n, m, C, H, W)
            rep = lambda t: t.repeat_interleave(m, dim=0)  # noqa: E731  rows (pair i, grid point j)
            cand, ok, f_ok = finish_candidate(model, rep(inputs[idx]), imgs.flatten(0, 1), rep(labels[idx]),
                                               targeted=targeted, quantize=False,
                                               inputs_adversarial=rep(inputs_adversarial[idx]),
                                               **ball_cap(norm, eps.repeat(n)))    # float verdicts
            cand, ok = cand.view(n, m, *inputs.shape[1:]), ok.view(n, m)
            float_ok[idx] |= f_ok.view(n, m).any(1)
            if quantize:  # finish the float successes in ascending eps until one survives the grid
                pending, ok = ok, torch.zeros_like(ok)
                while True:
                    rows = (pending.any(1) & ~ok.any(1)).nonzero().flatten()
                    if rows.numel() == 0:
                        break
                    j = pending[rows].to(torch.int8).argmax(1)
                    cand[rows, j], ok[rows, j], _ = finish_candidate(
                        model, inputs[idx[rows]], imgs[rows, j], labels[idx[rows]], targeted=targeted, quantize=True,
                        inputs_adversarial=inputs_adversarial[idx[rows]], **ball_cap(norm, eps[j]))
                    pending[rows, j] = False
            hit = ok.any(1)
            j = ok.to(torch.int8).argmax(1)
            out[idx[hit]] = cand[hit, j[hit]]
            found[idx[hit]] = grid[j[hit]]
            idx = idx[~hit]
            first += m
    return out, found, float_ok


@dataclass
class _CWL2Solve(WorkingSet):
    """The pairs of one C&W-l2 solve at fixed c that have not aborted early."""
    x: Tensor              # the inputs
    labels: Tensor
    const: Tensor          # c
    w: Tensor              # tanh-space variable: x' = (tanh(w) + 1) / 2
    loss: Tensor           # the loss at the last iteration (the abort-early rule's input)
    adam: BatchAdam
    abort: AbortEarly


@renamed(max_iterations="steps", learning_rate="step_size")
def cw_l2(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
          initial_const: float = 1e-3, binary_search_steps: int = 9, steps: int = 1000,
          step_size: float = 0.01, kappa: float = 0.0, abort_early: bool = True,
          quantize: bool = True) -> Tensor:
    """Batched C&W-l2 (Carlini & Wagner 2017): Adam on ||x' - x||_2^2 + c * f(x') in tanh space with
    a binary search on c (module docstring; StrAttack's Appendix F settings by default).

    Parameters
    ----------
    model : nn.Module
        The classifier (logits Z of the margin f), in eval mode.
    inputs : Tensor
        Images x (B, C, H, W) in [0, 1]; with `quantize`, 8-bit images (k/255).
    labels : Tensor
        Target classes (targeted) or true classes (untargeted), (B,) integers.
    targeted : bool, default False
        f is C&W's targeted margin max(max_{j != t} Z_j - Z_t, -kappa) toward `labels`, or its
        untargeted form away from them.
    initial_const : float, default 1e-3
        c of the first search step (C&W's default).
    binary_search_steps : int, default 9
        Steps of the search over c (x10 until a first success, then bisection).
    steps : int, default 1000
        Adam iterations per value of c (at most; see `abort_early`).
    step_size : float, default 0.01
        Adam's learning rate.
    kappa : float, default 0.0
        Confidence margin kappa of f (C&W's f6, StrAttack's (3)); a success needs a margin > kappa.
    abort_early : bool, default True
        Every steps/10 iterations, a pair whose loss fell by less than 0.01% since the last check
        stops at this c (`ops.optim.AbortEarly`).
    quantize : bool, default True
        End on the 8-bit grid via `ops.quantize.finish`; False for float inputs.

    Returns
    -------
    Tensor
        Each pair's smallest-l2 success (B, C, H, W); a pair that never succeeds is returned unchanged.
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    if binary_search_steps < 1 or steps < 1:
        raise ValidationError("binary_search_steps and steps must be >= 1")
    b, dev = inputs.shape[0], inputs.device
    search = TradeoffSearch(initial_const, b, device=dev, scale_up=10.0)
    best = BestAdversarial(inputs)
    w0 = box_to_tanh(inputs)
    for _ in range(binary_search_steps):
        found = torch.zeros(b, dtype=torch.bool, device=dev)
        ws = _CWL2Solve.start(x=inputs, labels=labels, const=search.const.clone(), w=w0.clone(),
                              loss=torch.full((b,), float("inf"), device=dev), adam=BatchAdam(w0, step_size),
                              abort=AbortEarly(steps, b, device=dev))
        for it in range(steps):
            if abort_early and ws.abort.due(it):
                ws.keep(~ws.abort.check(it, ws.loss))
                if ws.empty:
                    break
            w = ws.w.detach().requires_grad_(True)
            adv = tanh_to_box(w)
            logits = model(adv)
            l2sq = (adv - ws.x).flatten(1).pow(2).sum(1)
            loss = l2sq + ws.const * cw_margin_loss(logits, ws.labels, targeted=targeted, kappa=kappa)
            grad, = torch.autograd.grad(loss.sum(), w)
            with torch.no_grad():
                ok = is_adversarial(logits, ws.labels, targeted=targeted, kappa=kappa)
                best.update(adv, ok, l2sq.sqrt(), index=ws.rows)
                found[ws.rows[ok]] = True
                ws.update(loss=loss.detach(), w=ws.adam.step(ws.w, grad))
        search.update(found)
    return finish(model, inputs, best.adv, labels, targeted=targeted, quantize=quantize)


@dataclass
class _CWLinfSolve(WorkingSet):
    """The pairs of C&W-l_inf still shrinking t."""
    x: Tensor              # the inputs
    labels: Tensor
    w: Tensor              # tanh-space variable
    const: Tensor          # c
    tau: Tensor            # C&W's t, the l_inf level above which entries are penalized
    its: Tensor            # iterations in the current subproblem
    adam: BatchAdam


@renamed(max_iterations="steps", learning_rate="step_size")
def cw_linf(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
            initial_const: float = 1e-5, largest_const: float = 20.0, const_factor: float = 2.0,
            reduce_const: bool = True, decrease_factor: float = 0.9, tau_min: float = 1 / 256,
            steps: int = 1000, step_size: float = 5e-3, kappa: float = 0.0,
            quantize: bool = True) -> Tensor:
    """Batched C&W-l_inf (Carlini & Wagner 2017): Adam on c * f(x') + sum_i max(|x'_i - x_i| - t, 0)
    with t shrinking after each solved subproblem and C&W's own schedule on c (module docstring).

    Parameters
    ----------
    model : nn.Module
    inputs, labels : Tensor
    targeted : bool, default False
        As in `cw_l2`.
    initial_const : float, default 1e-5
        c of the first subproblem.
    largest_const : float, default 20.0
        A pair whose c grows above this stops (its last success, if any, is returned).
    const_factor : float, default 2.0
        c is multiplied by this (> 1) after a subproblem that was not solved in `steps` iterations.
    reduce_const : bool, default True
        Halve c after each solved subproblem (C&W's code).
    decrease_factor : float, default 0.9
        After a solved subproblem, t <- decrease_factor * min(t, ||x' - x||_inf); in (0, 1).
    tau_min : float, default 1/256
        A pair stops once t falls below this.
    steps : int, default 1000
        Adam iterations per subproblem (at most; warm-started from the last success).
    step_size : float, default 5e-3
        Adam's learning rate.
    kappa : float, default 0.0
    quantize : bool, default True
        As in `cw_l2`.

    Returns
    -------
    Tensor
        Each pair's last success (the smallest t reached), (B, C, H, W); a pair that never
        succeeds is returned unchanged.

    Notes
    -----
    A subproblem counts as solved when its loss is below 1e-4 c and x' succeeds (C&W's code).
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    if steps < 1 or not 0 < decrease_factor < 1 or const_factor <= 1:
        raise ValidationError("need steps >= 1, 0 < decrease_factor < 1 and const_factor > 1")
    b, dev = inputs.shape[0], inputs.device
    out = inputs.detach().clone()
    w0 = box_to_tanh(inputs)
    ws = _CWLinfSolve.start(x=inputs, labels=labels, w=w0,
                            const=torch.full((b,), float(initial_const), device=dev, dtype=inputs.dtype),
                            tau=torch.ones(b, device=dev, dtype=inputs.dtype),
                            its=torch.zeros(b, dtype=torch.long, device=dev), adam=BatchAdam(w0, step_size))
    while not ws.empty:
        w = ws.w.detach().requires_grad_(True)
        adv = tanh_to_box(w)
        logits = model(adv)
        excess = ((adv - ws.x).abs() - ws.tau.view(-1, 1, 1, 1)).clamp_min(0).flatten(1).sum(1)
        loss = ws.const * cw_margin_loss(logits, ws.labels, targeted=targeted, kappa=kappa) + excess
        with torch.no_grad():
            works = (loss < 1e-4 * ws.const) & is_adversarial(logits, ws.labels, targeted=targeted, kappa=kappa)
        grad, = torch.autograd.grad(loss.sum(), w)
        with torch.no_grad():
            stepped = ws.adam.step(ws.w, grad)
            ws.update(w=torch.where(works.view(-1, 1, 1, 1), ws.w, stepped))
            done = torch.zeros_like(works)
            if works.any():  # a solved subproblem: record, then a smaller t and (optionally) c
                sel = works.nonzero().flatten()
                out[ws.rows[sel]] = adv[sel].detach()
                actual = (adv[sel] - ws.x[sel]).abs().flatten(1).amax(1)
                ws.tau[sel] = torch.minimum(ws.tau[sel], actual) * decrease_factor
                if reduce_const:
                    ws.const[sel] = ws.const[sel] / 2
                ws.its[sel] = 0
                ws.adam.reset(sel)
                done |= works & (ws.tau < tau_min)
            its = ws.its + (~works).long()
            failed = its >= steps       # subproblem unsolved: a larger c
            const = torch.where(failed, ws.const * const_factor, ws.const)
            ws.update(const=const, its=torch.where(failed, torch.zeros_like(its), its))
            done |= failed & (const > largest_const)
            ws.keep(~done)
    return finish(model, inputs, out, labels, targeted=targeted, quantize=quantize)

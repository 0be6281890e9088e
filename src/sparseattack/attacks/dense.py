"""The dense baselines of StrAttack's Tables 1-2 (Xu et al., ICLR 2019, Sec. 5 and Appendix F).

- `fgm` / `fgsm`: one fast gradient step of size eps, l2 (FGM) or sign (FGSM) (Goodfellow et
  al. 2015), on the cross-entropy toward the target (away from the label), clipped to [0, 1].
- `min_eps_search`: Appendix F's "fine-grained grid search" over eps, so that the bound grows
  until success: the grid is eps_k = k * grid_step, k = 1..K, K = eps_max / grid_step, with
  grid_step 1e-3 (l_inf) / 1e-2 (l2) and eps_max = 1 (l_inf) / sqrt(n) (l2, the box diameter;
  the authors' fgm.py stops at 10) -- the authors' fgm.py grid. search="scan" tries k = 1, 2, ...
  and keeps each example's first success (the authors' fgm.py); search="bisect" doubles k from
  `eps_init` until a first success, then bisects between the last failure and the first success
  down to one grid step (about 2 log2 K attacks instead of up to K; it assumes success is
  monotone in eps and returns the smallest successful eps it tried). FGM's direction does not
  depend on eps, so for `fgm`/`fgsm` the search takes one gradient and then only forward passes.
  IFGSM/IFGM is `attacks.ifgsm` (10 iterations of eps/10, Appendix F).
- `cw_l2`: Carlini & Wagner's l2 attack (2017): Adam (lr 0.01) on w with x' = (tanh(w) + 1)/2,
  loss ||x' - x||^2 + c * margin (3), 9 binary-search steps on c (x10 until a first success, then
  bisection; `ops.search.TradeoffSearch`) of at most 1000 iterations (Appendix F), c0 = 1e-3, and
  C&W's abort early per example (every max_iterations/10 iterations, stop when the loss fell by
  less than 0.01%). Keeps the smallest-l2 success.
- `cw_linf`: Carlini & Wagner's l_inf attack: Adam (lr 5e-3) on tanh-space w of the loss
  c * margin + sum_i max(|x'_i - x_i| - t, 0). Per example, c doubles (from 1e-5, up to 20) until
  the loss reaches < 1e-4 c with success, then c halves and t shrinks to 0.9 * min(t, ||delta||_inf)
  from t = 1 until t < 1/256 or c exceeds its maximum; each subproblem runs at most 1000 iterations
  warm-started from the last success. This is C&W's own search on c (doubling/halving tied to the
  t schedule), not a bisection, which would need a full solve per c for every t.
Every attack here is batched; examples that are done leave the working set.

Every attack ends with `ops.quantize.finish` (its own constraint as the cap: the l2 / l_inf ball of
fgm, fgsm and the searches, none for C&W): with `quantize=True` (default) the perturbed entries end
on the 8-bit grid and success is re-checked there; an example that does not succeed is returned
unchanged. `min_eps_search` judges success at each grid eps on what it would return there: the
attack's float output must succeed and, with quantize=True, so must its 8-bit finish (inside that
eps-ball); a float success lost on the grid is a failure at that eps. (A float failure is not
finished: a grid point costs one forward pass, not the finish's up to nine, and a lucky rounding of
a failed attack is not counted.)
"""
from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
from torch import Tensor, nn

from ..ops.losses import adversarial_loss, cw_margin_loss, is_adversarial
from ..ops.projections import box_to_tanh, tanh_to_box
from ..ops.quantize import finish, finish_candidate, report_float_success, succeeds
from ..ops.search import BestAdversarial, TradeoffSearch
from ..validation import check_attack_call
from .ifgsm import _ball_cap, _check_norm, _ifgsm, _l2_normalize, _per_example, ifgsm

__all__ = ["fgm", "fgsm", "min_eps_search", "cw_l2", "cw_linf", "default_eps_grid"]


def _direction(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool, norm: str,
               loss: str) -> Tensor:
    """The fast-gradient direction: the step x - eps * direction decreases the attacker's loss."""
    loss_fn = adversarial_loss(loss)
    x = inputs.detach().clone().requires_grad_(True)
    grad, = torch.autograd.grad(loss_fn(model(x), labels, targeted=targeted).sum(), x)
    return grad.sign() if norm == "linf" else _l2_normalize(grad)


def fgm(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
        eps: float | Tensor = 1.0, norm: str = "l2", loss: str = "ce", quantize: bool = True) -> Tensor:
    """One fast gradient step of l2 size (or l_inf size, norm='linf') eps, scalar or (B,), clipped
    to [0, 1]; examples that do not succeed are returned unchanged.

    quantize: end on the 8-bit grid via `ops.quantize.finish` (inside the eps-ball); inputs must
    then be 8-bit images (k/255); False for float inputs.
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    _check_norm(norm)
    adversarial_loss(loss)
    x = inputs.detach()
    e = _per_example(eps, x)
    d = _direction(model, x, labels, targeted=targeted, norm=norm, loss=loss)
    # a one-step attack stays one gradient: its finish rounds but does not repair with gradients
    return finish(model, x, x - e * d, labels, targeted=targeted, quantize=quantize, repair_steps=0,
                  **_ball_cap(norm, e))


def fgsm(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
         eps: float | Tensor = 0.1, loss: str = "ce", quantize: bool = True) -> Tensor:
    """FGSM: `fgm` with the sign of the gradient (l_inf step eps).

    quantize: end on the 8-bit grid via `ops.quantize.finish` (inside the l_inf ball); inputs must
    then be 8-bit images (k/255); False for float inputs.
    """
    return fgm(model, inputs, labels, targeted=targeted, eps=eps, norm="linf", loss=loss, quantize=quantize)


def default_eps_grid(norm: str, inputs: Tensor) -> tuple[float, float]:
    """(grid_step, eps_max) of the fine grid for images like `inputs` (module docstring)."""
    _check_norm(norm)
    return (1e-3, 1.0) if norm == "linf" else (1e-2, math.sqrt(inputs[0].numel()))


_ATTACKS = {"fgm": fgm, "fgsm": fgsm, "ifgsm": ifgsm}
_IFGSM_OPTIONS = {"steps": 10, "step_size": None, "loss": "ce", "early_stop": True}


def min_eps_search(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
                   attack: str | Callable = "ifgsm", norm: str = "linf", search: str = "bisect",
                   grid_step: float | None = None, eps_max: float | None = None,
                   eps_init: float | None = None, return_eps: bool = False, quantize: bool = True,
                   **attack_kwargs) -> Tensor | tuple[Tensor, Tensor]:
    """Smallest eps on a fine grid at which `attack` (fgm, fgsm, ifgsm or any function with an
    `eps` keyword taking a (B,) tensor) succeeds, per example; returns that adversarial input, and
    the input unchanged for an example that succeeds at no eps it tried. Grid and modes: module
    docstring. `norm` sets the grid and the ball (the finish's cap) and is passed to fgm/ifgsm (fgsm
    is always l_inf); other keywords go to the attack (fgm/fgsm: loss; ifgsm: steps, step_size,
    loss, early_stop). With `return_eps`, also returns each example's eps (inf where none succeeded).

    quantize: end on the 8-bit grid via `ops.quantize.finish`; inputs must then be 8-bit images
    (k/255); False for float inputs. Success at a grid eps is judged on what would be returned:
    the attack's float output there must succeed and, with quantize=True, so must its finish
    (inside that eps-ball); a float success that does not survive the finish is a failure at that
    eps, and only float successes are finished.
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    _check_norm(norm)
    if search not in ("scan", "bisect"):
        raise ValueError(f"search must be 'scan' or 'bisect', got {search!r}")
    fn = _ATTACKS.get(attack, None) if isinstance(attack, str) else attack
    if fn is None:
        raise ValueError(f"unknown attack {attack!r} for min_eps_search; use one of {sorted(_ATTACKS)} or a function")
    if fn is fgsm:
        fn, norm = fgm, "linf"
    known = {"loss"} if fn is fgm else set(_IFGSM_OPTIONS) if fn is ifgsm else None
    if known is not None and set(attack_kwargs) - known:
        raise TypeError(f"unexpected argument(s) for {getattr(fn, '__name__', fn)} in min_eps_search: "
                        f"{', '.join(sorted(set(attack_kwargs) - known))}")
    adversarial_loss(attack_kwargs.get("loss", "ce"))
    step0, max0 = default_eps_grid(norm, inputs)
    step = grid_step or step0
    top = int(math.floor((eps_max or max0) / step + 1e-9))
    if step <= 0 or top < 1:
        raise ValueError(f"the eps grid is empty: grid_step={step}, eps_max={eps_max or max0}")
    x = inputs.detach()
    b, dev = x.shape[0], x.device
    if fn is ifgsm:
        opts = {**_IFGSM_OPTIONS, **attack_kwargs}
        if opts["steps"] < 1:
            raise ValueError(f"steps must be >= 1, got {opts['steps']}")
        step_size = None if opts["step_size"] is None else _per_example(opts["step_size"], x)
    x_adv = succeeds(model, x, labels, targeted)  # an unchanged input is judged as itself

    if fn is fgm:  # one gradient, then forward passes only
        direction = _direction(model, x, labels, targeted=targeted, norm=norm,
                               loss=attack_kwargs.get("loss", "ce"))

        def run(idx: Tensor, eps: Tensor) -> Tensor:
            return x[idx] - eps.view(-1, 1, 1, 1) * direction[idx]
    elif fn is ifgsm:
        def run(idx: Tensor, eps: Tensor) -> Tensor:
            e = eps.view(-1, 1, 1, 1)
            alpha = e / opts["steps"] if step_size is None else step_size[idx]
            return _ifgsm(model, x[idx], labels[idx], targeted=targeted, eps=e, norm=norm, steps=opts["steps"],
                          alpha=alpha, loss=opts["loss"], early_stop=opts["early_stop"])
    else:  # a user's attack: its float output (its own finish, if any, without quantization)
        kw = dict(attack_kwargs)
        if "quantize" in inspect.signature(fn).parameters:
            kw["quantize"] = False

        def run(idx: Tensor, eps: Tensor) -> Tensor:
            return fn(model, x[idx], labels[idx], targeted=targeted, eps=eps, **kw).detach()

    if fn is fgm and search == "scan":
        out, k_hi, float_ok = _fgm_scan(model, x, labels, direction, step, top, targeted=targeted,
                                        quantize=quantize, norm=norm, inputs_adversarial=x_adv)
    else:
        out = x.clone()
        float_ok = torch.zeros(b, dtype=torch.bool, device=dev)
        k_lo = torch.zeros(b, dtype=torch.long, device=dev)             # largest failing grid index
        k_hi = torch.full((b,), top + 1, dtype=torch.long, device=dev)  # smallest succeeding one
        k_start = max(1, min(top, round((eps_init or 16 * step) / step)))
        while True:
            if search == "scan":
                nxt = k_lo + 1
                active = (k_hi > top) & (nxt <= top)
            else:
                unknown = k_hi > top
                nxt = torch.where(unknown, torch.where(k_lo == 0, torch.full_like(k_lo, k_start),
                                                       (2 * k_lo).clamp(max=top)), (k_lo + k_hi) // 2)
                active = torch.where(unknown, k_lo < top, k_hi - k_lo > 1)
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            k = nxt[idx]
            eps = k.to(x.dtype) * step
            cand, ok, f_ok = finish_candidate(model, x[idx], run(idx, eps), labels[idx], targeted=targeted,
                                               quantize=quantize, inputs_adversarial=x_adv[idx],
                                               **_ball_cap(norm, eps))
            k_hi[idx[ok]] = k[ok]
            k_lo[idx[~ok]] = k[~ok]
            out[idx[ok]] = cand[ok]      # the finished candidate at the smallest succeeding eps so far
            float_ok[idx] |= f_ok
    report_float_success(model, float_ok)  # float success at some eps tried (eval.CountingModel's float_success)
    if return_eps:
        eps = torch.where(k_hi <= top, k_hi.to(x.dtype) * step, torch.full_like(k_hi, float("inf"), dtype=x.dtype))
        return out, eps
    return out


def _fgm_scan(model: nn.Module, inputs: Tensor, labels: Tensor, direction: Tensor, step: float, top: int,
              *, targeted: bool, quantize: bool, norm: str, inputs_adversarial: Tensor,
              entries_per_pass: int = 1 << 22) -> tuple[Tensor, Tensor, Tensor]:
    """Ascending scan of x - k*step*direction, k = 1..top, several grid points per pass (16 per
    example, then twice as many each pass), each judged by `finish_candidate`: one forward pass
    judges the float images of a pass, then the float successes are finished (inside their
    eps-ball) in ascending eps until one survives; each example keeps its first success (the input
    if none).
    Returns (adv, k, float success at some k), with k = top + 1 where none succeeded."""
    b = inputs.shape[0]
    out = inputs.clone()
    found_k = torch.full((b,), top + 1, dtype=torch.long, device=inputs.device)
    float_ok = torch.zeros(b, dtype=torch.bool, device=inputs.device)
    idx = torch.arange(b, device=inputs.device)
    images_per_pass = max(1, min(2048, entries_per_pass // inputs[0].numel()))
    k0, span = 1, 16  # the grid points per example of a pass double, so few are tried past a first success
    with torch.no_grad():
        while idx.numel() and k0 <= top:
            ks = torch.arange(k0, min(k0 + max(1, min(span, images_per_pass // idx.numel())), top + 1),
                              device=inputs.device)
            span *= 2
            n, kk = idx.numel(), ks.numel()
            eps = ks.to(inputs.dtype) * step
            imgs = inputs[idx, None] - eps.view(1, -1, 1, 1, 1) * direction[idx, None]   # (n, kk, C, H, W)
            rep = lambda t: t.repeat_interleave(kk, dim=0)  # noqa: E731  rows (example i, grid point j)
            cand, ok, f_ok = finish_candidate(model, rep(inputs[idx]), imgs.flatten(0, 1), rep(labels[idx]),
                                               targeted=targeted, quantize=False,
                                               inputs_adversarial=rep(inputs_adversarial[idx]),
                                               **_ball_cap(norm, eps.repeat(n)))    # float verdicts
            cand, ok = cand.view(n, kk, *inputs.shape[1:]), ok.view(n, kk)
            float_ok[idx] |= f_ok.view(n, kk).any(1)
            if quantize:  # finish the float successes in ascending eps until one survives the grid
                pending, ok = ok, torch.zeros_like(ok)
                while True:
                    rows = (pending.any(1) & ~ok.any(1)).nonzero().flatten()
                    if rows.numel() == 0:
                        break
                    j = pending[rows].to(torch.int8).argmax(1)
                    cand[rows, j], ok[rows, j], _ = finish_candidate(
                        model, inputs[idx[rows]], imgs[rows, j], labels[idx[rows]], targeted=targeted, quantize=True,
                        inputs_adversarial=inputs_adversarial[idx[rows]], **_ball_cap(norm, eps[j]))
                    pending[rows, j] = False
            hit = ok.any(1)
            first = ok.to(torch.int8).argmax(1)
            out[idx[hit]] = cand[hit, first[hit]]
            found_k[idx[hit]] = ks[first[hit]]
            idx = idx[~hit]
            k0 += kk
    return out, found_k, float_ok


class _Adam:
    """Adam (Kingma & Ba 2015) on per-example rows with per-example step counts, so rows can
    restart or leave independently."""

    def __init__(self, like: Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)
        self.t = torch.zeros(like.shape[0], device=like.device)
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps

    def step(self, w: Tensor, grad: Tensor) -> Tensor:
        self.t += 1
        self.m.mul_(self.b1).add_(grad, alpha=1 - self.b1)
        self.v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        shape = (-1,) + (1,) * (w.dim() - 1)
        mhat = self.m / (1 - self.b1 ** self.t).view(shape)
        vhat = self.v / (1 - self.b2 ** self.t).view(shape)
        return w - self.lr * mhat / (vhat.sqrt() + self.eps)

    def reset(self, rows: Tensor) -> None:
        self.m[rows] = 0
        self.v[rows] = 0
        self.t[rows] = 0

    def keep(self, mask: Tensor) -> None:
        self.m, self.v, self.t = self.m[mask], self.v[mask], self.t[mask]


def cw_l2(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
          initial_const: float = 1e-3, binary_search_steps: int = 9, max_iterations: int = 1000,
          learning_rate: float = 0.01, kappa: float = 0.0, abort_early: bool = True,
          quantize: bool = True) -> Tensor:
    """Batched C&W-l2 (module docstring). Examples without a success are returned unchanged.

    quantize: end on the 8-bit grid via `ops.quantize.finish`; inputs must then be 8-bit images
    (k/255); False for float inputs.
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    if binary_search_steps < 1 or max_iterations < 1:
        raise ValueError("binary_search_steps and max_iterations must be >= 1")
    b = inputs.shape[0]
    search = TradeoffSearch(initial_const, b, device=inputs.device, scale_up=10.0)
    best = BestAdversarial(inputs)
    w0 = box_to_tanh(inputs)
    check = max(1, max_iterations // 10)
    for _ in range(binary_search_steps):
        found = torch.zeros(b, dtype=torch.bool, device=inputs.device)
        rows = torch.arange(b, device=inputs.device)
        x, lab, const, w = inputs, labels, search.const.clone(), w0.clone()
        opt = _Adam(w, learning_rate)
        prev = torch.full((b,), float("inf"), device=inputs.device)
        last = prev.clone()
        for it in range(max_iterations):
            if abort_early and it > 0 and it % check == 0:
                stop = last > 0.9999 * prev
                prev = last
                if stop.any():
                    keep = ~stop
                    rows, x, lab, const, w, prev = rows[keep], x[keep], lab[keep], const[keep], w[keep], prev[keep]
                    opt.keep(keep)
                if rows.numel() == 0:
                    break
            wv = w.detach().requires_grad_(True)
            adv = tanh_to_box(wv)
            logits = model(adv)
            l2sq = (adv - x).flatten(1).pow(2).sum(1)
            loss = l2sq + const * cw_margin_loss(logits, lab, targeted=targeted, kappa=kappa)
            grad, = torch.autograd.grad(loss.sum(), wv)
            with torch.no_grad():
                ok = is_adversarial(logits, lab, targeted=targeted, kappa=kappa)
                best.update(adv, ok, l2sq.sqrt(), index=rows)
                found[rows[ok]] = True
                last = loss.detach()
                w = opt.step(w, grad)
        search.update(found)
    return finish(model, inputs, best.adv, labels, targeted=targeted, quantize=quantize)


def cw_linf(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
            initial_const: float = 1e-5, largest_const: float = 20.0, const_factor: float = 2.0,
            reduce_const: bool = True, decrease_factor: float = 0.9, tau_min: float = 1 / 256,
            max_iterations: int = 1000, learning_rate: float = 5e-3, kappa: float = 0.0,
            quantize: bool = True) -> Tensor:
    """Batched C&W-l_inf (module docstring). Returns each example's last success (the smallest
    t reached); examples that never succeed are returned unchanged.

    quantize: end on the 8-bit grid via `ops.quantize.finish`; inputs must then be 8-bit images
    (k/255); False for float inputs.
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    if max_iterations < 1 or not 0 < decrease_factor < 1 or const_factor <= 1:
        raise ValueError("need max_iterations >= 1, 0 < decrease_factor < 1 and const_factor > 1")
    b, dev = inputs.shape[0], inputs.device
    out = inputs.detach().clone()
    rows = torch.arange(b, device=dev)
    x, lab = inputs, labels
    w = box_to_tanh(inputs)
    const = torch.full((b,), float(initial_const), device=dev, dtype=inputs.dtype)
    tau = torch.ones(b, device=dev, dtype=inputs.dtype)
    its = torch.zeros(b, dtype=torch.long, device=dev)   # iterations in the current subproblem
    opt = _Adam(w, learning_rate)
    while rows.numel():
        wv = w.detach().requires_grad_(True)
        adv = tanh_to_box(wv)
        logits = model(adv)
        excess = ((adv - x).abs() - tau.view(-1, 1, 1, 1)).clamp_min(0).flatten(1).sum(1)
        loss = const * cw_margin_loss(logits, lab, targeted=targeted, kappa=kappa) + excess
        with torch.no_grad():
            works = (loss < 1e-4 * const) & is_adversarial(logits, lab, targeted=targeted, kappa=kappa)
        grad, = torch.autograd.grad(loss.sum(), wv)
        with torch.no_grad():
            step = opt.step(w, grad)
            w = torch.where(works.view(-1, 1, 1, 1), w, step)
            done = torch.zeros_like(works)
            if works.any():  # a solved subproblem: record, then a smaller t and (optionally) c
                sel = works.nonzero().flatten()
                out[rows[sel]] = adv[sel].detach()
                actual = (adv[sel] - x[sel]).abs().flatten(1).amax(1)
                tau[sel] = torch.minimum(tau[sel], actual) * decrease_factor
                if reduce_const:
                    const[sel] = const[sel] / 2
                its[sel] = 0
                opt.reset(sel)
                done |= works & (tau < tau_min)
            its += (~works).long()
            failed = its >= max_iterations       # subproblem unsolved: a larger c
            const = torch.where(failed, const * const_factor, const)
            its = torch.where(failed, torch.zeros_like(its), its)
            done |= failed & (const > largest_const)
            keep = ~done
            if not keep.all():
                rows, x, lab, w, const, tau, its = (t[keep] for t in (rows, x, lab, w, const, tau, its))
                opt.keep(keep)
    return finish(model, inputs, out, labels, targeted=targeted, quantize=quantize)

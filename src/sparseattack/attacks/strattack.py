"""StrAttack: structured (group-sparse) adversarial perturbations by linearized ADMM
(Xu et al., "Structured Adversarial Attack", ICLR 2019; equation numbers refer to that paper).

Problem (2): min_delta c*f(x0 + delta) + gamma*||delta||_2^2 + tau*sum_i ||delta_{D_i}||_2
s.t. x0 + delta in [0, 1]^n, ||delta||_inf <= eps, with f the C&W margin loss (3) with confidence
kappa (`ops.losses.cw_margin_loss`). Split as (4) and solved by ADMM with the closed-form steps of
Proposition 1: delta-step (10), w-step (11) (box and eps), y-step group soft-thresholding (12),
the linearized z-step (15) with Bregman weight eta_k, and the dual steps (9). Overlapping groups
follow (16)-(18), refinement on a fixed support (19)-(22). c is searched per example by
`ops.search.TradeoffSearch`; the best success (smallest l2, as in the authors' code) is kept
by `ops.search.BestAdversarial`.

Choices the paper leaves open (all parameters below):
- eta_k = eta * sqrt(k), k = 1, 2, ... restarting with each c (Sec. 3: "eta_k = alpha sqrt(k)",
  Appendix F: eta_1 = 5); ADMM variables restart from zero for each c (the authors' code).
- Defaults (Appendix F): rho = 1, eta_1 = 5, tau = 2, gamma = 1; c0 = 0.5 for 1-channel images
  up to 64 px (MNIST-like), 0.25 for 3-channel ones (CIFAR-like), 2.5 above (ImageNet-like);
  groups 2x2 stride 2 (overlap: 3x3 stride 2) up to 64 px, 13x13 stride 13 above (overlap: 13x13
  stride 6, our choice). Groups are `ops.groups.sliding_window_groups`: a last window is aligned
  with the border so every pixel is covered (the paper's P = (W - r)/S + 1 leaves a remainder).
- eps = 1 (only the [0, 1] box binds; the paper gives no eps for Table 1).
- 9 binary-search steps of at most 1000 iterations (Appendix F's C&W budget; the authors' code
  runs 1000 + 1000*step); c grows x5 until a first success (authors' code), then bisection.
- The candidate adversarial example at iteration k is the group-sparse y^{k+1} (for overlapping
  groups the average of the copies covering each entry), projected on the box and eps-ball
  (this keeps its zeros), as the authors' code evaluates y.
- Abort early (C&W's rule, per example): every max_iterations/10 iterations, an example that has
  succeeded at this c and whose best candidate objective so far, c f + gamma ||.||^2 + tau g,
  fell by less than 0.01% in `patience` (2) consecutive checks leaves the loop. A running minimum
  and a patience because the ADMM iterates oscillate; not before a first success, since y may
  stay 0 while the duals grow.
- Overlapping groups (16)-(18) keep only each group's own entries (B, C, G, M): off-group entries
  of the copies y_i are unregularized consensus copies of z whose c'_i equals z^k exactly, so
  `overlap_z_step="copies"` reproduces (18) with the term (PQ - n_j) rho z^k_j; the default
  "entrywise" drops those redundant constraints: denominator eta + 2 rho + n_j rho where n_j is
  the number of groups covering entry j, which equals (15) for non-overlapping groups.
- Refinement (Sec. 4.2): sigma = the `sigma_quantile` (3%) quantile of the nonzero |delta*| per
  example (the authors' code pools the batch), S_sigma = {j : |delta*_j| <= sigma}; ADMM (21)-(22)
  from z = delta*, u = 0, with a new search over c starting at the smallest successful c of the
  main search; `refine_search_steps` x `refine_iterations` (default 4 x 400; the authors' code
  8 x 400). A refined result replaces delta* whenever it succeeds (its support is a subset).
- Where the authors' code departs from the equations we follow the equations: its z-step weighs
  a' twice over eta_k + 4 rho, and its refinement uses rho/(rho + gamma/100), a constant eta and
  the gradient at delta instead of z (adv-lib's `str_attack` copies the code).

The result goes through `ops.quantize.finish` with `eps` as its l_inf cap: with `quantize=True`
(default) the perturbed entries end on the 8-bit grid (zeros stay zeros, so the group support never
grows) and success is re-checked there; an example that does not succeed is returned unchanged.
With refinement, an example whose refined result does not survive the finish falls back to its
unrefined result, finished the same way.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from ..ops.groups import groups_touched, sliding_window_groups, window_sq_sums
from ..ops.losses import cw_margin_loss, is_adversarial
from ..ops.quantize import SilentModel, finish, report_float_success
from ..ops.search import BestAdversarial, TradeoffSearch
from ..validation import check_attack_call, check_images
from .ifgsm import _per_example

__all__ = ["strattack", "strattack_refine", "group_index", "group_grid_shape", "group_map",
           "nonzero_groups", "sigma_threshold", "default_groups", "default_const"]

SMALL_SIDE = 64  # images up to this side use Appendix F's MNIST/CIFAR settings


def default_groups(height: int, width: int, overlap: bool = False) -> tuple[int, int]:
    """(group size, stride) of Appendix F for an image of this size."""
    if max(height, width) <= SMALL_SIDE:
        return (3, 2) if overlap else (2, 2)
    return (13, 6) if overlap else (13, 13)


def default_const(channels: int, height: int, width: int) -> float:
    """Initial c of Appendix F: 0.5 MNIST-like, 0.25 CIFAR-like, 2.5 ImageNet-like."""
    if max(height, width) > SMALL_SIDE:
        return 2.5
    return 0.5 if channels == 1 else 0.25


def group_index(height: int, width: int, *, group_size: int | None = None, stride: int | None = None,
                overlap: bool = False, device=None) -> Tensor:
    """The StrAttack groups as a (G, M) index tensor of flat pixel positions (`ops.groups`);
    usable as `groups=` of `eval.run_attack`/`perturbation_norms` and in `eval.evaluate`."""
    size, step = default_groups(height, width, overlap)
    size = group_size or size
    stride = stride or (step if group_size is None else size)
    return sliding_window_groups(height, width, size, stride, device=device)


def group_grid_shape(height: int, width: int, group_size: int, stride: int) -> tuple[int, int]:
    """(P, Q): windows per column and row, as `ops.groups.sliding_window_groups` places them."""
    return (math.ceil((height - group_size) / stride) + 1, math.ceil((width - group_size) / stride) + 1)


def group_map(delta: Tensor, *, group_size: int | None = None, stride: int | None = None,
              overlap: bool = False, reduce: str = "l2") -> Tensor:
    """Per-group strength of a perturbation (B, C, H, W) as a (B, P, Q) map: 'l2' = ||delta_G||_2
    (Fig. 1), 'mean_abs' = mean |delta| over the group's entries (Fig. 2, times 255 for its scale)."""
    h, w = delta.shape[-2:]
    size, step = default_groups(h, w, overlap)
    size = group_size or size
    stride = stride or (step if group_size is None else size)
    windows = sliding_window_groups(h, w, size, stride, device=delta.device)
    delta = delta.detach()
    if reduce == "l2":
        vals = window_sq_sums(delta, windows).sqrt()
    elif reduce == "mean_abs":
        vals = delta.abs().flatten(2)[:, :, windows].mean(dim=(1, 3))
    else:
        raise ValueError(f"reduce must be 'l2' or 'mean_abs', got {reduce!r}")
    return vals.view(delta.shape[0], *group_grid_shape(h, w, size, stride))


def nonzero_groups(delta: Tensor, *, group_size: int | None = None, stride: int | None = None,
                   overlap: bool = False, tol: float = 0.0) -> Tensor:
    """Number of groups with an entry |delta| > tol, per example (B,)."""
    h, w = delta.shape[-2:]
    return groups_touched(delta.detach(), group_index(h, w, group_size=group_size, stride=stride,
                                                      overlap=overlap, device=delta.device), tol)


def sigma_threshold(delta: Tensor, quantile: float = 0.03) -> Tensor:
    """sigma of (19): the `quantile` quantile (linear interpolation, as numpy.percentile) of the
    nonzero |delta| of each example, (B,); 0 for an all-zero perturbation."""
    a = delta.detach().abs().flatten(1)
    nnz = (a > 0).sum(1)
    srt = torch.where(a > 0, a, torch.full_like(a, float("inf"))).sort(1).values
    pos = quantile * (nnz - 1).clamp_min(0).to(a.dtype)
    lo, hi = pos.floor().long(), pos.ceil().long()
    v0, v1 = srt.gather(1, lo[:, None]).squeeze(1), srt.gather(1, hi[:, None]).squeeze(1)
    sigma = v0 + (v1 - v0).nan_to_num(0.0) * (pos - lo.to(a.dtype))
    return torch.where(nnz > 0, sigma, torch.zeros_like(sigma))


def _bounds(inputs: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """Entrywise bounds of w in (11): max(-x0, -eps) <= w <= min(1 - x0, eps); eps (B, 1, 1, 1)
    from `_per_example`."""
    return torch.maximum(-inputs, -eps), torch.minimum(1 - inputs, eps)


class _Rows:
    """The working set of one solve: per-example state tensors and their rows in the batch.
    Examples that abort early are dropped from every tensor so they cost no more evaluations."""

    def __init__(self, rows: Tensor, **state: Tensor):
        self.rows = rows
        self.state = state

    def __getattr__(self, name: str) -> Tensor:
        try:
            return self.__dict__["state"][name]
        except KeyError:
            raise AttributeError(name) from None

    def set(self, **state: Tensor) -> None:
        self.state.update(state)

    def keep(self, mask: Tensor) -> None:
        self.rows = self.rows[mask]
        self.state = {k: v[mask] for k, v in self.state.items()}


def _margin_and_grad(model: nn.Module, x: Tensor, z: Tensor, labels: Tensor, const: Tensor, *,
                     targeted: bool, kappa: float) -> tuple[Tensor, Tensor]:
    """margin (3) at x + z (B,) and the gradient of c * margin w.r.t. z."""
    zk = z.detach().requires_grad_(True)
    margin = cw_margin_loss(model(x + zk), labels, targeted=targeted, kappa=kappa)
    grad, = torch.autograd.grad((const * margin).sum(), zk)
    return margin.detach(), grad


def _offer(model: nn.Module, best: BestAdversarial, x: Tensor, cand: Tensor, labels: Tensor,
           rows: Tensor, *, targeted: bool, kappa: float) -> tuple[Tensor, Tensor]:
    """Check a candidate perturbation with one forward pass and keep it if it is the best;
    returns its success and its margin (3)."""
    with torch.no_grad():
        logits = model(x + cand)
        success = is_adversarial(logits, labels, targeted=targeted, kappa=kappa)
        margin = cw_margin_loss(logits, labels, targeted=targeted, kappa=kappa)
    best.update(x + cand, success, cand.flatten(1).norm(dim=1), index=rows)
    return success, margin


def _search(solve: Callable[[Tensor], Tensor], search: TradeoffSearch, steps: int) -> None:
    """Binary search over c (`ops.search.TradeoffSearch`): one ADMM solve per step."""
    for _ in range(steps):
        search.update(solve(search.const.clone()))


def _abort(ws: "_Rows", patience: int) -> None:
    """Abort early: drop examples that already succeeded at this c and whose best candidate
    objective (a running minimum) fell by less than 0.01% in each of the last `patience` checks."""
    idle = torch.where(ws.obj > 0.9999 * ws.prev, ws.idle + 1, torch.zeros_like(ws.idle))
    ws.set(prev=ws.obj, idle=idle)
    stop = ws.hit & (idle >= patience)
    if stop.any():
        ws.keep(~stop)


def _working_set(x0: Tensor, **state: Tensor) -> "_Rows":
    """A solve's working set: its state tensors plus the abort-early bookkeeping."""
    b = x0.shape[0]
    inf = torch.full((b,), float("inf"), device=x0.device)
    return _Rows(torch.arange(b, device=x0.device), x=x0, **state, prev=inf, obj=inf.clone(),
                 hit=torch.zeros(b, dtype=torch.bool, device=x0.device),
                 idle=torch.zeros(b, dtype=torch.long, device=x0.device))


def _iterations(ws: "_Rows", iterations: int, abort_early: bool, patience: int):
    """Iteration numbers k = 1..iterations, checking the abort-early rule every tenth of them;
    stops once every example has left the working set."""
    check = max(1, iterations // 10)
    for k in range(1, iterations + 1):
        if abort_early and k > 1 and (k - 1) % check == 0:
            _abort(ws, patience)
        if ws.rows.numel() == 0:
            return
        yield k


def _admm_groups(model: nn.Module, x0: Tensor, labels: Tensor, const: Tensor, lo: Tensor, hi: Tensor,
                 windows: Tensor, best: BestAdversarial, index: Tensor, *, targeted: bool, kappa: float, rho: float,
                 eta: float, tau: float, gamma: float, iterations: int, copies: bool,
                 abort_early: bool, patience: int) -> Tensor:
    """One ADMM solve of (4)/(16) at fixed c for every example; returns success per example.
    `index` maps the rows of x0 to rows of the batch that `best` keeps."""
    b, ch, h, w = x0.shape
    g, m = windows.shape
    flat = windows.flatten()
    mult = torch.bincount(flat, minlength=h * w).to(x0.dtype).view(1, 1, h, w)  # n_j
    if (mult == 0).any():
        raise ValueError("the groups must cover every pixel")

    def gather(t: Tensor) -> Tensor:  # (b, C, H, W) -> each group's own entries (b, C, G, M)
        return t.flatten(2)[:, :, windows]

    def scatter(t: Tensor) -> Tensor:  # sum of group entries back onto pixels (b, C, H, W)
        out = t.new_zeros(t.shape[0], ch, h * w).index_add_(2, flat, t.flatten(2))
        return out.view(t.shape[0], ch, h, w)

    zeros = torch.zeros_like(x0)
    ws = _working_set(x0, lab=labels, c=const, lo=lo, hi=hi, z=zeros, u=zeros.clone(), s=zeros.clone(),
                      v=x0.new_zeros(b, ch, g, m))
    found = torch.zeros(b, dtype=torch.bool, device=x0.device)
    for k in _iterations(ws, iterations, abort_early, patience):
        z, u, s, v = ws.z, ws.u, ws.s, ws.v
        _, grad = _margin_and_grad(model, ws.x, z, ws.lab, ws.c, targeted=targeted, kappa=kappa)
        with torch.no_grad():
            zg = gather(z)
            delta = rho / (rho + 2 * gamma) * (z - u / rho)                       # (10)
            wv = torch.minimum(torch.maximum(z - s / rho, ws.lo), ws.hi)           # (11)
            cg = zg - v / rho
            norms = cg.pow(2).sum(dim=(1, 3), keepdim=True).sqrt()
            shrink = (1 - tau / (rho * norms.clamp_min(1e-30))).clamp_min(0)
            y = cg * shrink                                                         # (12) / (17)
            eta_k = eta * math.sqrt(k)
            num = eta_k * z + rho * (delta + u / rho) + rho * (wv + s / rho) + rho * scatter(y + v / rho) - grad
            if copies:                                                              # (18)
                z_new = (num + rho * (g - mult) * z) / (eta_k + 2 * rho + g * rho)
            else:                                                                   # (15)
                z_new = num / (eta_k + 2 * rho + mult * rho)
            u = u + rho * (delta - z_new)                                           # (9)
            s = s + rho * (wv - z_new)
            v = v + rho * (y - gather(z_new))
            cand = torch.minimum(torch.maximum(scatter(y) / mult, ws.lo), ws.hi)
        success, cm = _offer(model, best, ws.x, cand, ws.lab, index[ws.rows], targeted=targeted, kappa=kappa)
        obj = ws.c * cm + gamma * cand.flatten(1).pow(2).sum(1) + tau * window_sq_sums(cand, windows).sqrt().sum(1)
        ws.set(z=z_new, u=u, s=s, v=v, obj=torch.minimum(ws.obj, obj), hit=ws.hit | success)
        found[ws.rows] |= success
    return found


def _admm_refine(model: nn.Module, x0: Tensor, labels: Tensor, const: Tensor, lo: Tensor, hi: Tensor,
                 start: Tensor, free: Tensor, best: BestAdversarial, index: Tensor, *, targeted: bool, kappa: float,
                 rho: float, eta: float, gamma: float, iterations: int, abort_early: bool,
                 patience: int) -> Tensor:
    """One ADMM solve of the refined problem (20) by (21)-(22) at fixed c; success per example."""
    b = x0.shape[0]
    ws = _working_set(x0, lab=labels, c=const, lo=lo, hi=hi, free=free, z=start * free, u=torch.zeros_like(x0))
    found = torch.zeros(b, dtype=torch.bool, device=x0.device)
    for k in _iterations(ws, iterations, abort_early, patience):
        z, u = ws.z, ws.u
        with torch.no_grad():
            a = rho / (2 * gamma + rho) * (z - u / rho)
            delta = torch.minimum(torch.maximum(a, ws.lo), ws.hi) * ws.free        # (21)
        _, grad = _margin_and_grad(model, ws.x, z, ws.lab, ws.c, targeted=targeted, kappa=kappa)
        with torch.no_grad():
            eta_k = eta * math.sqrt(k)
            z_new = ws.free * (eta_k * z + rho * (delta + u / rho) - grad) / (eta_k + rho)  # (22)
            u = u + rho * (delta - z_new)
        success, dm = _offer(model, best, ws.x, delta, ws.lab, index[ws.rows], targeted=targeted, kappa=kappa)
        ws.set(z=z_new, u=u, obj=torch.minimum(ws.obj, ws.c * dm + gamma * delta.flatten(1).pow(2).sum(1)),
               hit=ws.hit | success)
        found[ws.rows] |= success
    return found


def _check_windows(windows: Tensor, height: int, width: int) -> Tensor:
    if windows.dim() != 2 or windows.dtype not in (torch.int64, torch.int32):
        raise ValueError("groups must be a (G, M) integer tensor of flat pixel indices "
                         "(see ops.groups.sliding_window_groups)")
    if windows.numel() == 0 or windows.min() < 0 or windows.max() >= height * width:
        raise ValueError(f"group indices must lie in [0, {height * width}) for {height}x{width} images")
    return windows.long()


def strattack(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
              initial_const: float | None = None, binary_search_steps: int = 9, max_iterations: int = 1000,
              kappa: float = 0.0, rho: float = 1.0, eta: float = 5.0, tau: float = 2.0, gamma: float = 1.0,
              eps: float | Tensor = 1.0, group_size: int | None = None, stride: int | None = None,
              overlap: bool = False, groups: Tensor | None = None, overlap_z_step: str = "entrywise",
              scale_up: float = 5.0, abort_early: bool = True, patience: int = 2, refine: bool = False,
              sigma_quantile: float = 0.03, refine_search_steps: int = 4,
              refine_iterations: int = 400, quantize: bool = True) -> Tensor:
    """Batched StrAttack (problem (2) by ADMM (9)-(15); overlapping groups (16)-(18) when the
    windows overlap; with `refine`, Sec. 4.2's refinement (19)-(22) of each success).

    Groups: `groups` (a (G, M) window index) or `group_size`/`stride` (default: Appendix F for
    the image size, `overlap` picks 3x3 stride 2). eps: the l_inf cap of (2), a scalar or (B,).
    Returns adversarial inputs in [0, 1]; an example with no success is returned unchanged.
    quantize: end on the 8-bit grid via `ops.quantize.finish` (inside the eps cap); inputs must
    then be 8-bit images (k/255); False for float inputs.
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    if binary_search_steps < 1 or max_iterations < 1:
        raise ValueError("binary_search_steps and max_iterations must be >= 1")
    if overlap_z_step not in ("entrywise", "copies"):
        raise ValueError(f"overlap_z_step must be 'entrywise' or 'copies', got {overlap_z_step!r}")
    if min(rho, eta) <= 0 or min(tau, gamma, kappa) < 0:
        raise ValueError("rho and eta must be positive, tau, gamma and kappa non-negative")
    if refine and not 0 <= sigma_quantile < 1:
        raise ValueError(f"sigma_quantile must be in [0, 1), got {sigma_quantile}")
    x = inputs.detach()
    b, ch, h, w = x.shape
    windows = group_index(h, w, group_size=group_size, stride=stride, overlap=overlap, device=x.device) \
        if groups is None else _check_windows(groups.to(x.device), h, w)
    c0 = default_const(ch, h, w) if initial_const is None else initial_const
    cap = _per_example(eps, x)
    lo, hi = _bounds(x, cap)
    search = TradeoffSearch(c0, b, device=x.device, scale_up=scale_up)
    best = BestAdversarial(x)
    index = torch.arange(b, device=x.device)
    opts = dict(targeted=targeted, kappa=kappa, rho=rho, eta=eta, tau=tau, gamma=gamma,
                iterations=max_iterations, copies=overlap_z_step == "copies", abort_early=abort_early,
                patience=patience)
    _search(lambda c: _admm_groups(model, x, labels, c, lo, hi, windows, best, index, **opts),
            search, binary_search_steps)
    if not refine or not best.found.any():
        return finish(model, x, best.adv, labels, targeted=targeted, quantize=quantize, linf_cap=cap.flatten())
    # refinement starts its search at the smallest successful c of the main search
    c_ref = torch.where(search.upper < search.upper_bound, search.upper, search.const)
    refined = _refine(model, x, labels, best.adv, targeted=targeted, initial_const=c_ref,
                      search_steps=refine_search_steps, iterations=refine_iterations, kappa=kappa, rho=rho,
                      eta=eta, gamma=gamma, lo=lo, hi=hi, sigma_quantile=sigma_quantile, scale_up=scale_up,
                      abort_early=abort_early, patience=patience)
    return _finish_refined(model, x, refined, best.adv, labels, targeted=targeted, quantize=quantize,
                           cap=cap.flatten())


def strattack_refine(model: nn.Module, inputs: Tensor, labels: Tensor, adv: Tensor, *, targeted: bool = False,
                     initial_const: float | Tensor | None = None, search_steps: int = 4, iterations: int = 400,
                     kappa: float = 0.0, rho: float = 1.0, eta: float = 5.0, gamma: float = 1.0,
                     eps: float | Tensor = 1.0, sigma_quantile: float = 0.03, scale_up: float = 5.0,
                     abort_early: bool = True, patience: int = 2, quantize: bool = True) -> Tensor:
    """Refined StrAttack (Sec. 4.2) of any adversarial `adv`: sigma-sparse support (19) of
    delta* = adv - inputs, then ADMM (21)-(22) for problem (20) on that fixed support with a search
    over c. Each example whose refinement succeeds gets it (support within delta*'s); the others
    keep `adv`. With gamma = 0 this is Table 2's l_inf-bounded refined attack.

    quantize: end on the 8-bit grid via `ops.quantize.finish` (inside the eps cap); inputs must
    then be 8-bit images (k/255); False for float inputs. A refined result that does not survive
    the finish falls back to `adv`, finished the same way; an example where neither succeeds is
    returned unchanged (`inputs`).
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    check_images(adv, name="adv")
    if adv.shape != inputs.shape:
        raise ValueError(f"adv must have the shape of inputs {tuple(inputs.shape)}, got {tuple(adv.shape)}")
    if not 0 <= sigma_quantile < 1:
        raise ValueError(f"sigma_quantile must be in [0, 1), got {sigma_quantile}")
    if min(rho, eta) <= 0 or min(gamma, kappa) < 0:
        raise ValueError("rho and eta must be positive, gamma and kappa non-negative")
    if search_steps < 1 or iterations < 1:
        raise ValueError("search_steps and iterations must be >= 1")
    x, adv = inputs.detach(), adv.detach().to(inputs.dtype)
    cap = _per_example(eps, x)
    lo, hi = _bounds(x, cap)
    refined = _refine(model, x, labels, adv, targeted=targeted, initial_const=initial_const,
                      search_steps=search_steps, iterations=iterations, kappa=kappa, rho=rho, eta=eta,
                      gamma=gamma, lo=lo, hi=hi, sigma_quantile=sigma_quantile, scale_up=scale_up,
                      abort_early=abort_early, patience=patience)
    return _finish_refined(model, x, refined, adv, labels, targeted=targeted, quantize=quantize,
                           cap=cap.flatten())


def _refine(model: nn.Module, x: Tensor, labels: Tensor, adv: Tensor, *, targeted: bool,
            initial_const: float | Tensor | None, search_steps: int, iterations: int, kappa: float, rho: float,
            eta: float, gamma: float, lo: Tensor, hi: Tensor, sigma_quantile: float, scale_up: float,
            abort_early: bool, patience: int) -> Tensor:
    """The refinement (19)-(22) without checks or finish: `adv` with each refined success in place."""
    b, ch, h, w = x.shape
    delta_star = adv - x
    sigma = sigma_threshold(delta_star, sigma_quantile)
    free = (delta_star.abs() > sigma.view(-1, 1, 1, 1)).to(x.dtype)                # complement of S_sigma
    idx = free.flatten(1).any(1).nonzero().flatten()
    out = adv.clone()
    if idx.numel() == 0:
        return out
    if initial_const is None:
        initial_const = default_const(ch, h, w)
    c0 = initial_const[idx] if isinstance(initial_const, Tensor) else initial_const
    best = BestAdversarial(x)
    search = TradeoffSearch(c0, idx.numel(), device=x.device, scale_up=scale_up)
    opts = dict(targeted=targeted, kappa=kappa, rho=rho, eta=eta, gamma=gamma, iterations=iterations,
                abort_early=abort_early, patience=patience)
    _search(lambda c: _admm_refine(model, x[idx], labels[idx], c, lo[idx], hi[idx], delta_star[idx],
                                   free[idx], best, idx, **opts), search, search_steps)
    out[best.found] = best.adv[best.found]
    return out


def _finish_refined(model: nn.Module, x: Tensor, refined: Tensor, unrefined: Tensor, labels: Tensor, *,
                    targeted: bool, quantize: bool, cap: Tensor) -> Tensor:
    """`ops.quantize.finish` of the refined result; where it fails and the unrefined result differs,
    finish that instead (the refined support is a subset of the unrefined one, so rounding may cost
    the refined result a success the unrefined one keeps). One float success is reported."""
    quiet = SilentModel(model)
    out = finish(quiet, x, refined, labels, targeted=targeted, quantize=quantize, linf_cap=cap)
    float_ok = quiet.float_success
    retry = ((out == x).flatten(1).all(1) & (refined != unrefined).flatten(1).any(1)).nonzero().flatten()
    if retry.numel():
        quiet = SilentModel(model)
        out[retry] = finish(quiet, x[retry], unrefined[retry], labels[retry], targeted=targeted,
                            quantize=quantize, linf_cap=cap[retry])
        if float_ok is not None and quiet.float_success is not None:
            float_ok = float_ok.clone()
            float_ok[retry] |= quiet.float_success
    if float_ok is not None:
        report_float_success(model, float_ok)
    return out

"""StrAttack: structured (group-sparse) adversarial perturbations by linearized ADMM
(Xu et al., "Structured Adversarial Attack", ICLR 2019; equation numbers refer to that paper).

Problem (2), with f = c * the C&W margin (3) of confidence kappa (`ops.losses.cw_margin_loss`),
D = ||.||_2^2 and g (1) the sum of the groups' l2 norms:

    min_delta  f(x0 + delta) + gamma ||delta||_2^2 + tau sum_i ||delta_{D_i}||_2
    s.t.       x0 + delta in [0, 1]^n,  ||delta||_inf <= eps (`linf_cap`; None: only the box)

split as (4) into z = delta = w = y and solved by ADMM on the augmented Lagrangian (6):

    for each of binary_search_steps values of c (`ops.search.TradeoffSearch`: x scale_up until a first
    success, then bisection):
        z = u = s = v = 0
        for it = 1 .. steps (the paper's iteration index k):
            a = z - u/rho,  b = z - s/rho,  c = z - v/rho                               Prop. 1
            delta = rho / (rho + 2 gamma) * a                                           (10)
            w     = min(max(b, max(-x0, -eps)), min(1 - x0, eps))                       (11)
            y_D   = (1 - tau / (rho ||c_D||_2))_+ c_D       for every group D           (12), (17)
            eta_it = eta_1 sqrt(it)                                                      (14)
            z'    = (eta_it z + rho a' + rho b' + rho c' - grad f(x0 + z)) / (eta_it + 3 rho)   (15), (18)
                    with a' = delta + u/rho, b' = w + s/rho, c' = y + v/rho              (13)
            u += rho (delta - z'),  s += rho (w - z'),  v += rho (y - z');  z = z'      (9)
            candidate y (clipped to (11)'s bounds): keep the smallest-l2 success (`ops.search.BestAdversarial`)
            abort early: a pair whose objective stalled leaves (C&W's rule; with
                abort_unsuccessful=False only a pair that succeeded at this c)
    refine (Sec. 4.2, optional) the best delta*:
        S_sigma = {j : |delta*_j| <= sigma}, sigma a quantile of delta*'s nonzeros     (19)
        problem (20) = (2) without g and with delta = 0 on S_sigma; from z = delta*, u = 0, for each c:
            delta = min(max(rho / (2 gamma + rho) a, lo), hi), 0 on S_sigma             (21)
            z'    = (eta_it z + rho a' - grad f(x0 + z)) / (eta_it + rho), 0 on S_sigma  (22)
            u += rho (delta - z')
        (refine_solver='admm'; the default 'minimal_l2' solves (20) on the same support as the
        smallest-l2 success directly, `ops.minimal_norm.minimal_l2_on_support`, then, with
        refine_grow > 0, grows that support by whole groups of the largest margin gradient and
        solves again from there, `ops.groups.grow_support_by_windows`; see `strattack`)
    finish: `ops.quantize.finish` with `linf_cap` as its l_inf cap

Overlapping groups (16)-(18) keep only each group's own entries of the copies y_i, v_i (see
`strattack`'s Notes for this and every other choice the paper leaves open). Groups are
`ops.groups.sliding_window_groups` windows (Appendix F's sizes by default, `default_groups`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ..ops.groups import grow_support_by_windows, groups_touched, sliding_window_groups, window_sq_sums
from ..ops.losses import cw_margin_loss, is_adversarial
from ..ops.minimal_norm import MinimalL2, minimal_l2_on_support
from ..ops.optim import AbortEarly
from ..ops.quantize import SilentModel, finish, report_float_success
from ..ops.search import BestAdversarial, TradeoffSearch
from ..ops.tensors import is_imagenet_size, per_example, perturbation_bounds
from ..ops.working_set import WorkingSet
from ..validation import ValidationError, check_attack_call, check_images
from ._renames import renamed

__all__ = ["strattack", "strattack_refine", "group_index", "group_grid_shape", "group_map",
           "nonzero_groups", "sigma_threshold", "default_groups", "default_const", "default_refine_grow"]


def default_groups(height: int, width: int, overlap: bool = False) -> tuple[int, int]:
    """The group size r and stride S of Appendix F for an image of this size.

    Parameters
    ----------
    height, width : int
        The image size; ImageNet-size images (`ops.tensors.is_imagenet_size`) get 13x13 groups.
    overlap : bool, default False
        Overlapping groups: 3x3 stride 2 on small images (Appendix F), 13x13 stride 6 on
        ImageNet-size ones (our choice; the paper gives none).

    Returns
    -------
    tuple of int
        (r, S): (2, 2) / (3, 2) overlapping on small images, (13, 13) / (13, 6) on ImageNet-size ones.
    """
    if not is_imagenet_size(height, width):
        return (3, 2) if overlap else (2, 2)
    return (13, 6) if overlap else (13, 13)


def default_const(channels: int, height: int, width: int) -> float:
    """The initial c of Appendix F: 0.5 MNIST-like, 0.25 CIFAR-like, 2.5 ImageNet-like.

    Parameters
    ----------
    channels, height, width : int
        The image shape: 1 channel (MNIST-like) or more (CIFAR-like) on small images;
        ImageNet-size (`ops.tensors.is_imagenet_size`) whatever the channels.

    Returns
    -------
    float
    """
    if is_imagenet_size(height, width):
        return 2.5
    return 0.5 if channels == 1 else 0.25


def default_refine_grow(height: int, width: int) -> float:
    """The default support growth of the minimal-l2 refinement (`strattack`'s `refine_grow`).

    0.2 on small images; 0 at ImageNet size (`ops.tensors.is_imagenet_size`). There an 8-bit
    output pays at least 1/255 per nonzero entry, so its l2 is at least sqrt(l0)/255 and the
    entries that whole added groups bring cost more l2 than they save: on the 10 Lite0 pairs of
    benchmarks/sapf_metric.py (--imagenet) the same main search refined with 0.2 gives mean l2
    0.993 at l0 59221, with 0.1 0.972 at l0 45250, with 0 0.917 at l0 39868 (adv-lib's
    StrAttack: 0.921 at l0 42518). On the 180 Fashion-MNIST pairs 0.2 gives 1.003x adv-lib's
    l2 at l0 186 vs 198, 0 1.052x at l0 164 (`strattack`'s Notes, "Schedule").

    Parameters
    ----------
    height, width : int
        The image size.

    Returns
    -------
    float
    """
    return 0.0 if is_imagenet_size(height, width) else 0.2


def group_index(height: int, width: int, *, group_size: int | None = None, stride: int | None = None,
                overlap: bool = False, device=None) -> Tensor:
    """The StrAttack groups D_i as a (G, M) index tensor of flat pixel positions (`ops.groups`).

    Usable as `groups=` of `strattack`, of `eval.run_attack` / `perturbation_norms` and in
    `eval.evaluate`.

    Parameters
    ----------
    height, width : int
        The image size.
    group_size : int, optional
        The window side r; default `default_groups`.
    stride : int, optional
        The window step S; default `default_groups`'s when `group_size` is None, else `group_size`
        (non-overlapping windows).
    overlap : bool, default False
        Appendix F's overlapping default (used only where `group_size` / `stride` are None).
    device : torch.device, optional

    Returns
    -------
    Tensor
        (G, M) int64: row i holds the M = r*r flat pixel indices of group D_i; the last window of
        each axis is aligned with the border so every pixel is covered.
    """
    size, stride = _window_shape(height, width, group_size, stride, overlap)
    return sliding_window_groups(height, width, size, stride, device=device)


def _window_shape(height: int, width: int, group_size: int | None, stride: int | None,
                  overlap: bool) -> tuple[int, int]:
    """(r, S) from `group_index`'s arguments: Appendix F's defaults, or non-overlapping windows
    of the given size."""
    size, step = default_groups(height, width, overlap)
    size = group_size or size
    return size, stride or (step if group_size is None else size)


def group_grid_shape(height: int, width: int, group_size: int, stride: int) -> tuple[int, int]:
    """(P, Q), the windows per column and per row, as `ops.groups.sliding_window_groups` places them.

    Parameters
    ----------
    height, width : int
        The image size.
    group_size : int
        The window side r.
    stride : int
        The window step S.

    Returns
    -------
    tuple of int
        (ceil((H - r) / S) + 1, ceil((W - r) / S) + 1): the paper's (W - r)/S + 1 rounded up by the
        border-aligned last window.
    """
    return (math.ceil((height - group_size) / stride) + 1, math.ceil((width - group_size) / stride) + 1)


def group_map(delta: Tensor, *, group_size: int | None = None, stride: int | None = None,
              overlap: bool = False, reduce: str = "l2") -> Tensor:
    """Per-group strength of perturbations as a (B, P, Q) map (the paper's Figs. 1-2).

    Parameters
    ----------
    delta : Tensor
        Perturbations (B, C, H, W).
    group_size, stride : int, optional
    overlap : bool, default False
        The windows: `group_index`'s arguments.
    reduce : {'l2', 'mean_abs'}, default 'l2'
        'l2': ||delta_G||_2 over the group's C x r x r entries (Fig. 1); 'mean_abs': mean |delta|
        over them (Fig. 2, times 255 for its scale).

    Returns
    -------
    Tensor
        (B, P, Q).
    """
    h, w = delta.shape[-2:]
    size, stride = _window_shape(h, w, group_size, stride, overlap)
    windows = sliding_window_groups(h, w, size, stride, device=delta.device)
    delta = delta.detach()
    if reduce == "l2":
        vals = window_sq_sums(delta, windows).sqrt()
    elif reduce == "mean_abs":
        vals = delta.abs().flatten(2)[:, :, windows].mean(dim=(1, 3))
    else:
        raise ValidationError(f"reduce must be 'l2' or 'mean_abs', got {reduce!r}")
    return vals.view(delta.shape[0], *group_grid_shape(h, w, size, stride))


def nonzero_groups(delta: Tensor, *, group_size: int | None = None, stride: int | None = None,
                   overlap: bool = False, tol: float = 0.0) -> Tensor:
    """The number of groups with an entry |delta| > tol, per perturbation.

    Parameters
    ----------
    delta : Tensor
    group_size, stride : int, optional
    overlap : bool, default False
        As in `group_map`.
    tol : float, default 0.0
        Entries with |delta| <= tol count as zero.

    Returns
    -------
    Tensor
        (B,) int64.
    """
    h, w = delta.shape[-2:]
    return groups_touched(delta.detach(), group_index(h, w, group_size=group_size, stride=stride,
                                                      overlap=overlap, device=delta.device), tol)


def sigma_threshold(delta: Tensor, quantile: float = 0.03) -> Tensor:
    """sigma of (19): a quantile of the nonzero |delta| of each perturbation.

    Parameters
    ----------
    delta : Tensor
        Perturbations delta* (B, ...).
    quantile : float, default 0.03
        In [0, 1]; Appendix F's 3% quantile. Linear interpolation, as numpy.percentile.

    Returns
    -------
    Tensor
        (B,); 0 for an all-zero perturbation.
    """
    a = delta.detach().abs().flatten(1)
    nnz = (a > 0).sum(1)
    srt = torch.where(a > 0, a, torch.full_like(a, float("inf"))).sort(1).values
    pos = quantile * (nnz - 1).clamp_min(0).to(a.dtype)
    lo, hi = pos.floor().long(), pos.ceil().long()
    v0, v1 = srt.gather(1, lo[:, None]).squeeze(1), srt.gather(1, hi[:, None]).squeeze(1)
    sigma = v0 + (v1 - v0).nan_to_num(0.0) * (pos - lo.to(a.dtype))
    return torch.where(nnz > 0, sigma, torch.zeros_like(sigma))


@dataclass
class _Solve(WorkingSet):
    """The pairs of one ADMM solve at fixed c that have not aborted early."""
    x: Tensor              # x0
    labels: Tensor
    const: Tensor          # c of (3)
    lo: Tensor             # bounds of (11) / (21): max(-x0, -eps) <= delta <= min(1 - x0, eps)
    hi: Tensor
    z: Tensor
    u: Tensor              # multiplier of delta = z (9)
    obj: Tensor            # running minimum of the candidates' objective (abort early)
    hit: Tensor            # succeeded at this c
    abort: AbortEarly


@dataclass
class _GroupSolve(_Solve):
    """Problem (4) / (16)."""
    s: Tensor              # multiplier of w = z
    v: Tensor              # multipliers of y_i = z, each group's own entries (b, C, G, M)


@dataclass
class _RefineSolve(_Solve):
    """Problem (20)."""
    free: Tensor           # 1 off S_sigma (19), 0 on it


def _start(cls, x0: Tensor, steps: int, patience: int, **state: Tensor):
    """A solve's working set: its state plus the abort-early bookkeeping."""
    b = x0.shape[0]
    return cls.start(x=x0, **state, obj=torch.full((b,), float("inf"), device=x0.device),
                     hit=torch.zeros(b, dtype=torch.bool, device=x0.device),
                     abort=AbortEarly(steps, b, device=x0.device, patience=patience))


def _iterations(ws: _Solve, steps: int, abort_early: bool, unsuccessful: bool = False):
    """Iteration numbers it = 1..steps (the paper's k). Before each tenth of them, the abort-early
    rule (`ops.optim.AbortEarly` with a patience): a pair whose best objective fell by less than
    0.01% at each of the last `patience` checks leaves `ws`, if it already succeeded at this c
    (or, with `unsuccessful`, whether or not it did: C&W's own rule). Stops once every pair has
    left."""
    for it in range(1, steps + 1):
        if abort_early and ws.abort.due(it - 1):
            stalled = ws.abort.check(it - 1, ws.obj)
            ws.keep(~(stalled if unsuccessful else ws.hit & stalled))
        if ws.empty:
            return
        yield it


def _offer(model: nn.Module, best: BestAdversarial, ws: _Solve, cand: Tensor, index: Tensor, *,
           targeted: bool, kappa: float, logits: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Check a candidate perturbation with one forward pass (or the given `logits` of x0 + cand)
    and keep it if it is the best; returns its success and its margin (3)."""
    with torch.no_grad():
        if logits is None:
            logits = model(ws.x + cand)
        success = is_adversarial(logits, ws.labels, targeted=targeted, kappa=kappa)
        margin = cw_margin_loss(logits, ws.labels, targeted=targeted, kappa=kappa)
    best.update(ws.x + cand, success, cand.flatten(1).norm(dim=1), index=index[ws.rows])
    return success, margin


def _margin_grad(model: nn.Module, x: Tensor, point: Tensor, labels: Tensor, const: Tensor, *,
                 targeted: bool, kappa: float) -> tuple[Tensor, Tensor]:
    """grad f(x0 + point) of (15) / (22), f = c * margin (3), and the logits of that one forward
    pass (with `gradient_at='candidate'` the candidate's check)."""
    pk = point.detach().requires_grad_(True)
    logits = model(x + pk)
    margin = cw_margin_loss(logits, labels, targeted=targeted, kappa=kappa)
    grad, = torch.autograd.grad((const * margin).sum(), pk)
    return grad, logits.detach()


def _search(solve: Callable[[Tensor], Tensor], search: TradeoffSearch, steps: int) -> None:
    """Binary search over c (`ops.search.TradeoffSearch`): one ADMM solve per step."""
    for _ in range(steps):
        search.update(solve(search.const.clone()))


def _solve_groups(model: nn.Module, x0: Tensor, labels: Tensor, const: Tensor, lo: Tensor, hi: Tensor,
                  windows: Tensor, best: BestAdversarial, index: Tensor, *, targeted: bool, kappa: float,
                  rho: float, eta: float, tau: float, gamma: float, steps: int, copies: bool,
                  abort_early: bool, patience: int, abort_unsuccessful: bool, at_candidate: bool) -> Tensor:
    """One ADMM solve of (4) / (16) at fixed c, (9)-(15) / (17)-(18); returns success per pair.
    `index` maps the rows of x0 to the rows of the batch that `best` keeps."""
    b, ch, h, w = x0.shape
    g, m = windows.shape
    flat = windows.flatten()
    mult = torch.bincount(flat, minlength=h * w).to(x0.dtype).view(1, 1, h, w)  # n_j
    if (mult == 0).any():
        raise ValidationError("the groups must cover every pixel")

    def gather(t: Tensor) -> Tensor:  # (b, C, H, W) -> each group's own entries (b, C, G, M)
        return t.flatten(2)[:, :, windows]

    def scatter(t: Tensor) -> Tensor:  # sum of group entries back onto pixels (b, C, H, W)
        out = t.new_zeros(t.shape[0], ch, h * w).index_add_(2, flat, t.flatten(2))
        return out.view(t.shape[0], ch, h, w)

    zeros = torch.zeros_like(x0)
    ws = _start(_GroupSolve, x0, steps, patience, labels=labels, const=const, lo=lo, hi=hi, z=zeros,
                u=zeros.clone(), s=zeros.clone(), v=x0.new_zeros(b, ch, g, m))
    found = torch.zeros(b, dtype=torch.bool, device=x0.device)
    for it in _iterations(ws, steps, abort_early, abort_unsuccessful):
        z, u, s, v = ws.z, ws.u, ws.s, ws.v
        with torch.no_grad():
            zg = gather(z)
            delta = rho / (rho + 2 * gamma) * (z - u / rho)                       # (10)
            wv = torch.minimum(torch.maximum(z - s / rho, ws.lo), ws.hi)           # (11)
            cg = zg - v / rho
            norms = cg.pow(2).sum(dim=(1, 3), keepdim=True).sqrt()
            shrink = (1 - tau / (rho * norms.clamp_min(1e-30))).clamp_min(0)
            y = cg * shrink                                                         # (12) / (17)
            cand = torch.minimum(torch.maximum(scatter(y) / mult, ws.lo), ws.hi)  # the candidate
        if at_candidate:  # (13) linearized at the candidate: its forward pass is also its check
            grad, logits = _margin_grad(model, ws.x, cand, ws.labels, ws.const, targeted=targeted, kappa=kappa)
        else:             # (13) as written, at z^k; the candidate is checked by its own pass
            grad, logits = _margin_grad(model, ws.x, z, ws.labels, ws.const, targeted=targeted, kappa=kappa)[0], None
        with torch.no_grad():
            eta_it = eta * math.sqrt(it)                                            # (14)
            num = eta_it * z + rho * (delta + u / rho) + rho * (wv + s / rho) + rho * scatter(y + v / rho) - grad
            if copies:                                                              # (18)
                z_new = (num + rho * (g - mult) * z) / (eta_it + 2 * rho + g * rho)
            else:                                                                   # (15)
                z_new = num / (eta_it + 2 * rho + mult * rho)
            u = u + rho * (delta - z_new)                                           # (9)
            s = s + rho * (wv - z_new)
            v = v + rho * (y - gather(z_new))
        success, cm = _offer(model, best, ws, cand, index, targeted=targeted, kappa=kappa, logits=logits)
        obj = ws.const * cm + gamma * cand.flatten(1).pow(2).sum(1) + tau * window_sq_sums(cand, windows).sqrt().sum(1)
        ws.update(z=z_new, u=u, s=s, v=v, obj=torch.minimum(ws.obj, obj), hit=ws.hit | success)
        found[ws.rows] |= success
    return found


def _solve_refined(model: nn.Module, x0: Tensor, labels: Tensor, const: Tensor, lo: Tensor, hi: Tensor,
                   start: Tensor, free: Tensor, best: BestAdversarial, index: Tensor, *, targeted: bool,
                   kappa: float, rho: float, eta: float, gamma: float, steps: int, abort_early: bool,
                   patience: int) -> Tensor:
    """One ADMM solve of the refined problem (20) by (21)-(22) at fixed c; success per pair."""
    ws = _start(_RefineSolve, x0, steps, patience, labels=labels, const=const, lo=lo, hi=hi,
                z=start * free, u=torch.zeros_like(x0), free=free)
    found = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
    for it in _iterations(ws, steps, abort_early):
        z, u = ws.z, ws.u
        with torch.no_grad():
            a = rho / (2 * gamma + rho) * (z - u / rho)
            delta = torch.minimum(torch.maximum(a, ws.lo), ws.hi) * ws.free        # (21)
        grad = _margin_grad(model, ws.x, z, ws.labels, ws.const, targeted=targeted, kappa=kappa)[0]
        with torch.no_grad():
            eta_it = eta * math.sqrt(it)                                            # (14)
            z_new = ws.free * (eta_it * z + rho * (delta + u / rho) - grad) / (eta_it + rho)  # (22)
            u = u + rho * (delta - z_new)
        success, dm = _offer(model, best, ws, delta, index, targeted=targeted, kappa=kappa)
        ws.update(z=z_new, u=u, obj=torch.minimum(ws.obj, ws.const * dm + gamma * delta.flatten(1).pow(2).sum(1)),
                  hit=ws.hit | success)
        found[ws.rows] |= success
    return found


def _check_windows(windows: Tensor, height: int, width: int) -> Tensor:
    if windows.dim() != 2 or windows.dtype not in (torch.int64, torch.int32):
        raise ValidationError("groups must be a (G, M) integer tensor of flat pixel indices "
                         "(see ops.groups.sliding_window_groups)")
    if windows.numel() == 0 or windows.min() < 0 or windows.max() >= height * width:
        raise ValidationError(f"group indices must lie in [0, {height * width}) for {height}x{width} images")
    return windows.long()


def _finish_cap(linf_cap: float | Tensor | None, x: Tensor) -> Tensor | None:
    """`linf_cap` as `ops.quantize.finish`'s per-pair (B,) cap (validated), None for no cap."""
    return None if linf_cap is None else per_example(linf_cap, x, name="linf_cap").flatten()


@renamed(eps="linf_cap", max_iterations="steps", refine_iterations="refine_steps",
         refine_search_steps="refine_binary_search_steps")
def strattack(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
              initial_const: float | None = None, binary_search_steps: int = 9, steps: int = 1000,
              kappa: float = 0.0, rho: float = 1.0, eta: float = 5.0, tau: float = 2.0, gamma: float = 1.0,
              linf_cap: float | Tensor | None = None, group_size: int | None = None, stride: int | None = None,
              overlap: bool = False, groups: Tensor | None = None, overlap_z_step: str = "entrywise",
              scale_up: float = 5.0, abort_early: bool = True, patience: int = 2, abort_unsuccessful: bool = True,
              refine: bool = False, sigma_quantile: float = 0.03, refine_solver: str = "minimal_l2",
              refine_grow: float | None = None, refine_grow_rounds: int = 1,
              refine_binary_search_steps: int = 4, refine_steps: int = 400, quantize: bool = True,
              gradient_at: str = "candidate") -> Tensor:
    """Batched StrAttack (Xu et al., ICLR 2019): problem (2) by linearized ADMM (9)-(15), overlapping
    groups by (16)-(18), and with `refine` Sec. 4.2's refinement (19)-(22) (module docstring).

    Parameters
    ----------
    model : nn.Module
        The classifier (logits Z of (3)), in eval mode.
    inputs : Tensor
        Images x0 (B, C, H, W) in [0, 1]; with `quantize`, 8-bit images (k/255).
    labels : Tensor
        Target classes t (targeted) or true classes (untargeted), (B,) integers.
    targeted : bool, default False
        (3) as written (toward t), or its untargeted form max(Z_y - max_{j != y} Z_j, -kappa).
    initial_const : float, optional
        c of (3) at the first search step; default Appendix F's (`default_const`): 0.5 for
        1-channel (MNIST-like) and 0.25 for 3-channel (CIFAR-like) images, 2.5 for ImageNet-size
        ones (`ops.tensors.is_imagenet_size`: smaller side above 64 px).
    binary_search_steps : int, default 9
        Steps of the search over c, one ADMM solve each (Appendix F's C&W budget; Notes, "Schedule").
    steps : int, default 1000
        ADMM iterations (7)-(9) per value of c (at most; see `abort_early`).
    kappa : float, default 0.0
        Confidence kappa of (3); success needs a margin > kappa.
    rho : float, default 1.0
        The augmented Lagrangian's penalty rho of (6) (Appendix F: 1).
    eta : float, default 5.0
        eta_1 of the Bregman weight eta_k = eta_1 sqrt(k) in (14) (Appendix F: 5).
    tau : float, default 2.0
        Weight tau of the group-sparsity term g (1) in (2) (Appendix F: 2).
    gamma : float, default 1.0
        Weight gamma of the distortion D = ||delta||_2^2 in (2) (Appendix F: 1).
    linf_cap : float or Tensor, optional
        The l_inf bound eps of (2) and (11), a scalar or one per pair (B,); None (default): no cap,
        only the [0, 1] box (the paper gives no eps for its tables).
    group_size : int, optional
        The window side r of the groups D_i; default Appendix F's (`default_groups`).
    stride : int, optional
        The window step S; default Appendix F's with the default `group_size`, else `group_size`.
    overlap : bool, default False
        Use Appendix F's overlapping windows (3x3 stride 2 on small images) when `group_size` and
        `stride` are not given; the ADMM is (16)-(18) whenever the windows overlap.
    groups : Tensor, optional
        The groups as a (G, M) tensor of flat pixel indices (`group_index`, any cover of the
        pixels); overrides `group_size`, `stride` and `overlap`.
    overlap_z_step : {'entrywise', 'copies'}, default 'entrywise'
        The z-step for overlapping groups: 'copies' is (18) with full copies y_i, 'entrywise' drops
        the redundant off-group constraints (Notes). Equal for non-overlapping groups.
    scale_up : float, default 5.0
        c is multiplied by this until a pair's first success, then bisected.
    abort_early : bool, default True
        Leave the iterations of a c early (Notes).
    patience : int, default 2
        Consecutive stalled checks before a pair aborts (Notes). 1 (C&W's exact rule): 36% fewer
        gradient evaluations for about 0.8% more l2 at the same l0 (Notes, "Schedule").
    abort_unsuccessful : bool, default True
        With `abort_early`, a pair that has not succeeded at this c also leaves once its objective
        stalls (C&W's own rule). False: only a pair that succeeded at this c leaves early, every
        failing c runs all `steps` (the earlier default, which the committed records of
        benchmarks/regression_v01.py and the ADMM-refined row of benchmarks/sapf_metric.py pin).
        On the 180 Fashion-MNIST pairs of benchmarks/sapf_metric.py True gives the same l2 and l0
        with 26% fewer gradient evaluations (Notes, "Schedule", with gradient_at='z'). At
        ImageNet size the defaults cost 9120 evaluations per pair on the 10 Lite0 pairs of
        benchmarks/sapf_metric.py (4710 with gradient_at='z'; False not run there).
    refine : bool, default False
        Refine each success on its sigma-sparse support, Sec. 4.2 (`strattack_refine`).
    sigma_quantile : float, default 0.03
        With `refine`: sigma of (19) is this quantile of delta*'s nonzero |entries| (Appendix F: 3%).
    refine_solver : {'minimal_l2', 'admm'}, default 'minimal_l2'
        With `refine`: how problem (20) is solved on the fixed support. 'admm' is the paper's
        (21)-(22) with a search over c (the reproduction); 'minimal_l2' (ours, the default) finds
        the smallest-l2 success on the support directly (`ops.minimal_norm.minimal_l2_on_support`,
        `refine_steps` gradient steps from delta*, no search over c, with the support growth of
        `refine_grow`): on the 180 Fashion-MNIST pairs of benchmarks/sapf_metric.py its mean l2 is
        1.003x adv-lib's StrAttack (l0 186 vs 198) against 1.08x for 'admm' (l0 165), with 5684
        gradient evaluations per pair against 8526 (the latter with the success-only abort).
    refine_grow : float, optional
        With `refine` and 'minimal_l2' (unused with 'admm', which keeps the paper's support): after
        half of `refine_steps` on the sigma-support, add ceil(refine_grow x the groups it touches)
        groups it does not touch, those of the largest squared margin gradient at the solution
        (the first-order score of entering the support), in `refine_grow_rounds` rounds, each
        followed by an equal share of the other half of the steps on the grown support from the
        best solution so far; the smallest-l2 success is kept. 0: the sigma-support only. Default
        (`default_refine_grow`): 0.2 on small images, 0 at ImageNet size, where every 8-bit entry
        costs at least 1/255 of l2 (on the 10 Lite0 pairs of benchmarks/sapf_metric.py 0 gives
        l2 0.917 at l0 39868 against 0.2's 0.993 at l0 59221 from the same main search; adv-lib's
        StrAttack 0.921 at l0 42518). On the 180 Fashion-MNIST pairs of
        benchmarks/sapf_metric.py (defaults otherwise): mean l2 1.003x adv-lib's StrAttack at l0
        186 vs 198 with 5684 gradient evaluations per pair against 15200, where refine_grow = 0
        gave 1.052x at l0 164 (success-only abort)
        (0.3 on the first 45 pairs: 0.985x at 0.96x adv-lib's l0, so the growth trades l0 for l2).
    refine_grow_rounds : int, default 1
        With `refine_grow` > 0: the rounds the growth is split into (1: all groups at once); each
        round scores the untouched groups by the gradient at the best solution so far, so later
        groups are chosen where the earlier ones left the margin, at the same l0 and cost.
        Measured in Notes, "Schedule": 0.3-0.5% lower l2 on 45-90 pairs, but 1.2% higher on 180
        pairs together with abort_unsuccessful.
    refine_binary_search_steps : int, default 4
        With `refine` and 'admm': steps of the refinement's search over c.
    refine_steps : int, default 400
        With `refine`: ADMM iterations (21)-(22) per value of c ('admm'), or the minimal-l2
        solver's steps in all ('minimal_l2', split in two halves when `refine_grow` > 0).
    quantize : bool, default True
        End on the 8-bit grid (inside `linf_cap`) via `ops.quantize.finish`; False for float inputs.
    gradient_at : {'candidate', 'z'}, default 'candidate'
        Where f is linearized in the z-step (13)-(15) / (18). 'z': at z^k, as the paper writes it
        (the reproduction); every iteration then also needs a forward-only pass to check the
        candidate (the group-sparse y^{k+1} on the box, which is what the attack returns).
        'candidate' (ours, the default): at that candidate, so one forward + backward pass both
        checks it and gives the gradient (Notes, "Linearization point"). On the 180
        Fashion-MNIST pairs of benchmarks/sapf_metric.py (refined, defaults otherwise): mean l2
        0.995x adv-lib's StrAttack at l0 169 vs 198 with 7216 gradient evaluations per pair and
        no forward-only ones, against 1.003x at l0 186 with 5684 gradient evaluations plus 5287
        forward-only ones for 'z'. On the 10 EfficientNet-Lite0 pairs of benchmarks/sapf_metric.py
        --imagenet: l2 0.766 at l0 18948 (0.83x adv-lib's 0.921 at l0 42518) with 9120 gradient
        evaluations per pair, against 0.917 at l0 39868 with 4711 plus 4315 forward-only for 'z'.

    Returns
    -------
    Tensor
        Adversarial inputs (B, C, H, W) in [0, 1]: each pair's smallest-l2 success (refined where
        the refinement succeeds); a pair that never succeeds is returned unchanged.

    Notes
    -----
    Choices the paper leaves open:

    - eta_k = eta_1 sqrt(k), k = 1, 2, ... restarting with each c (Sec. 3: "eta_k = alpha sqrt(k)",
      Appendix F: eta_1 = 5); the ADMM variables restart from zero for each c (the authors' code).
    - Groups: a last window is aligned with the border so every pixel is covered (the paper's
      P = (W - r)/S + 1 leaves a remainder); overlapping ImageNet groups 13x13 stride 6 (ours).
    - The search: c grows x5 until a first success (the authors' code), then bisection. Appendix
      F's budget is C&W's, 9 steps of at most 1000 iterations (the authors' code runs 1000 +
      1000*step), our default; `refine_solver='admm'` adds the paper's refinement.
    - The candidate at iteration k is the group-sparse y^{k+1} (for overlapping groups the mean of
      the copies covering each entry), projected on the box and the cap (this keeps its zeros), as
      the authors' code evaluates y; the smallest-l2 success is kept (the authors' code).
    - Linearization point (`gradient_at`): (13) linearizes f at z^k, and the authors' code then
      evaluates the candidate y^{k+1} in a second pass. With 'candidate' the gradient is taken at
      that candidate (computed from z^k and v^k before the z-step, so nothing else changes), the
      point the attack keeps and whose success it tracks; the forward pass of the gradient is
      its check. The fixed points are those of (9)-(15): at a fixed point z = y, so the
      candidate is z. It is what proximal-gradient methods do (the gradient at the
      sparse iterate) and what the authors' refinement code does (its gradient at delta). The
      gradient then sees the perturbation the attack would return: the supports it finds are
      smaller at the same l2 (l0 169 against 186 on the 180 Fashion-MNIST pairs) and a pair's
      objective keeps falling longer, so it aborts later (7216 against 5684 gradient
      evaluations per pair); the z-variant adds 5287 forward-only checks per pair, so if a
      forward costs about a third of a gradient evaluation (an estimate, not timed here) the
      two take about equal model time. On the first 45 pairs
      alone: 0.981x adv-lib's l2 at l0 194 against 1.008x at l0 208. The ADMM refinement
      (`refine_solver='admm'`) keeps (22) at z as written. A short schedule with a larger
      growth on all 180 pairs (scratch, one batch): 8 x 450 at refine_grow 0.5 0.964x at l0 199.5
      vs 198 with 3130 evaluations per pair (4.9x fewer than adv-lib), at 0.6 0.948x at l0 211;
      on the 18 pairs of benchmarks/overhead.py's throughput part, 8 x 450 at 0.4 gives 1.005x
      at l0 168 vs 193, at 0.5 0.995x at l0 180, at 0.6 0.985x at l0 190.
    - Abort early (C&W's rule, per pair): every steps/10 iterations, a pair whose best candidate
      objective so far, c f + gamma ||.||^2 + tau g, fell by less than 0.01% at `patience`
      consecutive checks leaves the loop, whether or not it succeeded at this c (C&W's own rule,
      `abort_unsuccessful`); with `abort_unsuccessful=False` only once it has succeeded there,
      since y may stay 0 while the duals grow. A running minimum and a patience because the ADMM
      iterates oscillate.
    - Schedule (measured on Fashion-MNIST pairs of benchmarks/sapf_metric.py against adv-lib's
      StrAttack at c = 0.5, Appendix F's for MNIST, 15200 gradient evaluations per pair; all
      refined by 'minimal_l2'; l2 as a ratio of adv-lib's on the same pairs; every figure of this
      item was measured with gradient_at='z', the default before 'candidate', whose own figures are
      under "Linearization point"). The defaults then
      (Appendix F's 9 x 1000, C&W's abort rule, refine_grow 0.2, one round): 1.003x at l0 186 vs
      198 on all 180 pairs with 5684 evaluations per pair (committed records:
      benchmarks/results/sapf_metric_rerun_gradient_at_z.jsonl). With abort_unsuccessful=False (success-only abort): 1.003x at
      l0 186 with 7709 evaluations (the same l2 and l0 for 26% more); on the first 45 pairs
      1.006x at l0 208 (adv-lib: l0 233), on the next 45 1.031x at l0 169 (adv-lib: l0 167).
      The remaining figures are scratch runs of `run_attack("strattack", ..., refine=True, ...)`,
      one batch per 45, 90 or 180 pairs. abort_unsuccessful on the first 45 (with refine_grow
      0.3) 0.987x at l0 224 against 0.985x without, 5704 evaluations; next 45 1.030x at l0 168,
      5587 evaluations. refine_grow_rounds 2 with the success-only abort: next 45 1.028x at l0
      168. Both options on the first 90 pairs (one batch of 90): 1.036x at l0 187 against the
      success-only abort's 1.015x at l0 189, 5646 evaluations; on the next 45 in one batch of
      45: 1.027x at l0 168, 5587 evaluations. The two runs disagree by more than the options'
      effects: in float32 the batch composition changes rounding (in float64 a batch equals
      one-at-a-time runs bit for bit, a test), and the discrete choices (which pairs abort,
      which groups enter the support) amplify it, so differences of 1-2% on 45-90 pairs lie
      within the run-to-run spread. On all 180 pairs in one batch, both options: 1.015x at l0
      185 (5684 evaluations), so refine_grow_rounds stays 1.
      Shorter schedules trade l2 or l0 for speed (first 45 pairs, refine_grow 0.3): with
      abort_unsuccessful, 9 x 500 0.999x at l0 229 (3051 evaluations), 8 x 500 0.999x at l0 229
      (2757), 9 x 400 1.007x at l0 225 (2493); without it 9 x 300 1.023x at l0 219 (2577), 7 x 300
      1.021x at l0 226 (2089). On all 180 pairs, 8 x 500 with abort_unsuccessful and refine_grow
      0.3 gives 1.002x at l0 200 vs 198 with 2779 evaluations (5.5x fewer than adv-lib); on its
      first 90 1.009x at l0 201, with refine_grow_rounds 2 1.004x at l0 202, 3 rounds 1.003x at
      l0 202, 2 rounds at refine_grow 0.25 1.014x at l0 195 (2739 evaluations each). It buys its
      speed with more entries (the default: 1.003x at l0 186). A larger growth buys l2 with
      entries: 7 x 500 at refine_grow 0.4 1.000x at l0 216 (2470 evaluations), 8 x 450 at 0.4
      0.988x at l0 217 (2526; 6.0x fewer than adv-lib, 9% more entries than its l0 198). With patience 1 (C&W's exact
      rule, no second stalled check) every pair leaves its values of c sooner: Appendix F's 9 x
      1000 with 3659 evaluations per pair (36% fewer than the default's 5684) gives 1.014x at l0
      185 (refine_grow 0.2), 1.004x at l0 190 (0.25) and 0.995x at l0 198 vs 198 (0.3: lower l2
      than adv-lib at its l0 with 4.2x fewer evaluations); 8 x 500 1.020x at l0 199 with 1829
      evaluations, 8 x 800 1.003x at l0 200 with 2731 (no better than 8 x 500 at patience 2).
      Patience 1 costs about 0.8% l2 at the default's l0, so the default keeps 2.
      ImageNet size (EfficientNet-Lite0, the 10 pairs of benchmarks/sapf_metric.py --imagenet,
      adv-lib's StrAttack at c = 2.5 with 13 x 13 groups: l2 0.921 at l0 42518, 15200
      evaluations): the defaults' main search costs 4710 evaluations per pair in all. One main
      search, refined four ways (scratch): refine_grow 0.2 l2 0.993 at l0 59221 (the committed
      records of that run), 0.1 0.972 at 45250, 0 0.917 at 39868, 0 with 800 refine steps 0.928
      at 41775, 0 with sigma_quantile 0.1 0.910 at 42165. On 8-bit ImageNet outputs every entry
      costs at least 1/255 (l2 >= sqrt(l0)/255: 0.78 at l0 39868), so growth buys nothing there:
      `default_refine_grow` is 0 at ImageNet size.
      Warm-starting each c's ADMM from the previous c's variables did not help (9 x 300:
      1.021-1.033x) and is not offered.
    - Overlapping groups (16)-(18) keep only each group's own entries of y_i, v_i: off-group entries
      are unregularized consensus copies of z whose c'_i equals z^k exactly, so 'copies' reproduces
      (18) with the term (PQ - n_j) rho z^k_j; 'entrywise' drops those redundant constraints:
      denominator eta_k + 2 rho + n_j rho with n_j the number of groups covering entry j, which is
      (15) for non-overlapping groups.
    - Refinement: sigma per pair (the authors' code pools the batch); with 'admm', (21)-(22) from z = delta*,
      u = 0, with a new search over c from the smallest successful c of the main search; 4 x 400
      (the authors' code 8 x 400). A refined result replaces delta* whenever it succeeds (its
      support is a subset); one that does not survive the 8-bit finish falls back to delta*.
      'minimal_l2' keeps (20)'s support and box but drops its trade-off: gamma ||delta||^2 + c f
      over a search of c approximates the smallest-l2 success on the support, which the
      adaptive-radius solver targets directly (it needs gamma > 0: with gamma = 0, Table 2's
      l_inf refinement, use 'admm'). Its support growth (`refine_grow`) leaves (19)'s subset: the
      support is the sigma-support plus whole groups, so the result stays group-sparse but may
      touch groups delta* does not (their number is bounded by refine_grow; l0 is reported as ever).
    - Where the authors' code departs from the equations we follow the equations: its z-step weighs
      a' twice over eta_k + 4 rho, and its refinement uses rho/(rho + gamma/100), a constant eta and
      the gradient at delta instead of z (adv-lib's `str_attack` copies the code).
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    if binary_search_steps < 1 or steps < 1:
        raise ValidationError("binary_search_steps and steps must be >= 1")
    if overlap_z_step not in ("entrywise", "copies"):
        raise ValidationError(f"overlap_z_step must be 'entrywise' or 'copies', got {overlap_z_step!r}")
    if gradient_at not in ("z", "candidate"):
        raise ValidationError(f"gradient_at must be 'z' or 'candidate', got {gradient_at!r}")
    if min(rho, eta) <= 0 or min(tau, gamma, kappa) < 0:
        raise ValidationError("rho and eta must be positive, tau, gamma and kappa non-negative")
    x = inputs.detach()
    b, ch, h, w = x.shape
    if refine_grow is None:
        refine_grow = default_refine_grow(h, w)
    if refine:
        _check_refine(sigma_quantile, refine_solver, gamma, refine_grow, refine_grow_rounds)
    windows = group_index(h, w, group_size=group_size, stride=stride, overlap=overlap, device=x.device) \
        if groups is None else _check_windows(groups.to(x.device), h, w)
    c0 = default_const(ch, h, w) if initial_const is None else initial_const
    cap = _finish_cap(linf_cap, x)
    lo, hi = perturbation_bounds(x, linf_cap)
    search = TradeoffSearch(c0, b, device=x.device, scale_up=scale_up)
    best = BestAdversarial(x)
    index = torch.arange(b, device=x.device)
    opts = dict(targeted=targeted, kappa=kappa, rho=rho, eta=eta, tau=tau, gamma=gamma, steps=steps,
                copies=overlap_z_step == "copies", abort_early=abort_early, patience=patience,
                abort_unsuccessful=abort_unsuccessful, at_candidate=gradient_at == "candidate")
    _search(lambda c: _solve_groups(model, x, labels, c, lo, hi, windows, best, index, **opts),
            search, binary_search_steps)
    if not refine or not best.found.any():
        return finish(model, x, best.adv, labels, targeted=targeted, quantize=quantize, linf_cap=cap)
    # refinement starts its search at the smallest successful c of the main search
    c_ref = torch.where(search.upper < search.upper_bound, search.upper, search.const)
    refined = _refine(model, x, labels, best.adv, targeted=targeted, initial_const=c_ref,
                      binary_search_steps=refine_binary_search_steps, steps=refine_steps, kappa=kappa, rho=rho,
                      eta=eta, gamma=gamma, lo=lo, hi=hi, sigma_quantile=sigma_quantile, scale_up=scale_up,
                      abort_early=abort_early, patience=patience, solver=refine_solver, windows=windows,
                      grow=refine_grow, rounds=refine_grow_rounds)
    return _finish_refined(model, x, refined, best.adv, labels, targeted=targeted, quantize=quantize, cap=cap)


@renamed(search_steps="binary_search_steps", iterations="steps", eps="linf_cap")
def strattack_refine(model: nn.Module, inputs: Tensor, labels: Tensor, adv: Tensor, *, targeted: bool = False,
                     initial_const: float | Tensor | None = None, binary_search_steps: int = 4, steps: int = 400,
                     kappa: float = 0.0, rho: float = 1.0, eta: float = 5.0, gamma: float = 1.0,
                     linf_cap: float | Tensor | None = None, sigma_quantile: float = 0.03, scale_up: float = 5.0,
                     abort_early: bool = True, patience: int = 2, solver: str = "minimal_l2", grow: float | None = None,
                     grow_rounds: int = 1, group_size: int | None = None, stride: int | None = None, overlap: bool = False,
                     groups: Tensor | None = None, quantize: bool = True) -> Tensor:
    """Refined StrAttack (Sec. 4.2) of any adversarial `adv`: the sigma-sparse support (19) of
    delta* = adv - inputs, then problem (20) on that fixed support, by default as its smallest-l2
    success (`solver='minimal_l2'`), or by the paper's ADMM (21)-(22) with a search over c
    (`solver='admm'`; with gamma = 0 this is Table 2's l_inf-bounded refined attack).

    Parameters
    ----------
    model : nn.Module
    inputs, labels : Tensor
        As in `strattack`.
    adv : Tensor
        The adversarial inputs x0 + delta* to refine, shaped like `inputs` (any attack's).
    targeted : bool, default False
        Toward `labels` (True) or away from them (False), as in `strattack`.
    initial_const : float or Tensor, optional
        c of (3) at the refinement's first search step, a scalar or one per pair (B,); default
        Appendix F's (`default_const`). `strattack(refine=True)` passes its smallest successful c.
    binary_search_steps : int, default 4
        Steps of the search over c, one ADMM solve of (20) each.
    steps : int, default 400
        ADMM iterations (21)-(22) per value of c (at most; see `abort_early`).
    kappa : float, default 0.0
        Confidence of the margin (3) in (20).
    rho : float, default 1.0
        The penalty rho of (21)-(22).
    eta : float, default 5.0
        eta_1 of eta_k = eta_1 sqrt(k) in (22).
    gamma : float, default 1.0
        Weight of D = ||delta||_2^2 in (20); 0 for Table 2's l_inf-bounded refinement.
    linf_cap : float or Tensor, optional
        The l_inf bound eps of (20), a scalar or (B,); None (default): only the [0, 1] box.
    sigma_quantile : float, default 0.03
        sigma of (19) is this quantile of delta*'s nonzero |entries| per pair (Appendix F: 3%).
    scale_up : float, default 5.0
        c is multiplied by this until a pair's first refined success, then bisected.
    abort_early : bool, default True
        Leave the iterations of a c early, as in `strattack` (objective c f + gamma ||delta||^2).
    patience : int, default 2
        Consecutive stalled checks before a pair aborts.
    solver : {'minimal_l2', 'admm'}, default 'minimal_l2'
        'admm': (21)-(22) with the search over c (the paper); 'minimal_l2': the smallest-l2
        success on the support by `ops.minimal_norm.minimal_l2_on_support` in `steps` steps from
        delta* (initial_const, binary_search_steps, rho, eta, scale_up, abort_early and patience
        are then unused); see `strattack`'s `refine_solver`.
    grow : float, optional
        With 'minimal_l2': `strattack`'s `refine_grow` (0: the sigma-support only); default
        `default_refine_grow` of the image size (0.2 on small images, 0 at ImageNet size).
    grow_rounds : int, default 1
        With `grow` > 0: `strattack`'s `refine_grow_rounds`.
    group_size, stride : int, optional
    overlap : bool, default False
    groups : Tensor, optional
        The groups that `grow` adds, as in `strattack` (Appendix F's windows by default; pass the
        ones delta* was made with).
    quantize : bool, default True
        End on the 8-bit grid (inside `linf_cap`) via `ops.quantize.finish`; False for float inputs.

    Returns
    -------
    Tensor
        (B, C, H, W): the refined result where the refinement succeeds (its support within
        delta*'s, plus at most ceil(grow x its groups) whole groups with `grow`), else `adv`; a
        refined result that does not survive the finish falls back to `adv`, finished the same
        way; a pair where neither succeeds is returned unchanged (`inputs`).

    Notes
    -----
    sigma is taken per pair (the authors' code pools the batch); S_sigma = {j : |delta*_j| <= sigma}
    (the paper writes delta*_j <= sigma). A pair whose delta* has no entry above sigma keeps `adv`.
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    check_images(adv, name="adv")
    if adv.shape != inputs.shape:
        raise ValidationError(f"adv must have the shape of inputs {tuple(inputs.shape)}, got {tuple(adv.shape)}")
    if min(rho, eta) <= 0 or min(gamma, kappa) < 0:
        raise ValidationError("rho and eta must be positive, gamma and kappa non-negative")
    if binary_search_steps < 1 or steps < 1:
        raise ValidationError("binary_search_steps and steps must be >= 1")
    x, adv = inputs.detach(), adv.detach().to(inputs.dtype)
    h, w = x.shape[-2:]
    if grow is None:
        grow = default_refine_grow(h, w)
    _check_refine(sigma_quantile, solver, gamma, grow, grow_rounds)
    windows = group_index(h, w, group_size=group_size, stride=stride, overlap=overlap, device=x.device) \
        if groups is None else _check_windows(groups.to(x.device), h, w)
    cap = _finish_cap(linf_cap, x)
    lo, hi = perturbation_bounds(x, linf_cap)
    refined = _refine(model, x, labels, adv, targeted=targeted, initial_const=initial_const,
                      binary_search_steps=binary_search_steps, steps=steps, kappa=kappa, rho=rho, eta=eta,
                      gamma=gamma, lo=lo, hi=hi, sigma_quantile=sigma_quantile, scale_up=scale_up,
                      abort_early=abort_early, patience=patience, solver=solver, windows=windows, grow=grow,
                      rounds=grow_rounds)
    return _finish_refined(model, x, refined, adv, labels, targeted=targeted, quantize=quantize, cap=cap)


_REFINE_SOLVERS = ("minimal_l2", "admm")


def _check_refine(sigma_quantile: float, solver: str, gamma: float, grow: float, rounds: int) -> None:
    if not 0 <= sigma_quantile < 1:
        raise ValidationError(f"sigma_quantile must be in [0, 1), got {sigma_quantile}")
    if not (isinstance(grow, (int, float)) and 0 <= grow < math.inf):
        raise ValidationError(f"the refinement's support growth (refine_grow / grow) must be a finite number >= 0, "
                              f"got {grow!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValidationError(f"the refinement's growth rounds (refine_grow_rounds / grow_rounds) must be an "
                              f"integer >= 1, got {rounds!r}")
    if solver not in _REFINE_SOLVERS:
        raise ValidationError(f"the refinement's solver must be one of {_REFINE_SOLVERS}, got {solver!r}")
    if solver == "minimal_l2" and gamma == 0:
        raise ValidationError("gamma = 0 (Table 2's l_inf-bounded refinement) has no l2 term to minimize: "
                              "use the refinement solver 'admm'")


def _refine(model: nn.Module, x: Tensor, labels: Tensor, adv: Tensor, *, targeted: bool,
            initial_const: float | Tensor | None, binary_search_steps: int, steps: int, kappa: float, rho: float,
            eta: float, gamma: float, lo: Tensor, hi: Tensor, sigma_quantile: float, scale_up: float,
            abort_early: bool, patience: int, solver: str, windows: Tensor, grow: float, rounds: int) -> Tensor:
    """The refinement (19)-(22) without checks or finish: `adv` with each refined success in place."""
    b, ch, h, w = x.shape
    delta_star = adv - x
    sigma = sigma_threshold(delta_star, sigma_quantile)
    free = (delta_star.abs() > sigma.view(-1, 1, 1, 1)).to(x.dtype)                # complement of S_sigma
    idx = free.flatten(1).any(1).nonzero().flatten()
    out = adv.clone()
    if idx.numel() == 0:
        return out
    if solver == "minimal_l2":
        best = _refine_minimal_l2(model, x[idx], labels[idx], delta_star[idx], free[idx], targeted=targeted,
                                  steps=steps, lo=lo[idx], hi=hi[idx], kappa=kappa, windows=windows, grow=grow,
                                  rounds=rounds)
        done = idx[best.found]
        out[done] = x[done] + best.delta[best.found]
        return out
    if initial_const is None:
        initial_const = default_const(ch, h, w)
    c0 = initial_const[idx] if isinstance(initial_const, Tensor) else initial_const
    best = BestAdversarial(x)
    search = TradeoffSearch(c0, idx.numel(), device=x.device, scale_up=scale_up)
    opts = dict(targeted=targeted, kappa=kappa, rho=rho, eta=eta, gamma=gamma, steps=steps,
                abort_early=abort_early, patience=patience)
    _search(lambda c: _solve_refined(model, x[idx], labels[idx], c, lo[idx], hi[idx], delta_star[idx],
                                     free[idx], best, idx, **opts), search, binary_search_steps)
    out[best.found] = best.adv[best.found]
    return out


def _refine_minimal_l2(model: nn.Module, x: Tensor, labels: Tensor, delta_star: Tensor, support: Tensor, *,
                       targeted: bool, steps: int, lo: Tensor, hi: Tensor, kappa: float, windows: Tensor,
                       grow: float, rounds: int) -> MinimalL2:
    """(20) as the smallest-l2 success on the sigma-support; with `grow` > 0 half the steps there,
    then `rounds` times: the support grows by an equal share of ceil(grow x the sigma-support's
    touched groups) untouched groups, those of the largest squared margin gradient at the best
    solution so far (`ops.groups.grow_support_by_windows`), and an equal share of the other half
    of the steps continues from that solution on the grown support. The smallest success per pair."""
    first = steps if grow == 0 else max(steps // 2, 1)
    best = minimal_l2_on_support(model, x, labels, targeted=targeted, support=support, delta=delta_star,
                                 steps=first, lo=lo, hi=hi, kappa=kappa)
    if grow == 0 or steps - first < 1:
        return best
    total = (grow * (window_sq_sums(support, windows) > 0).sum(1)).ceil().long()
    left, gradient = steps - first, best.gradient
    for r in range(rounds):
        part = left // (rounds - r)
        left -= part
        if part < 1:
            continue
        count = (total * (r + 1) // rounds - total * r // rounds) * best.found
        support = grow_support_by_windows(support, gradient, windows, count)
        start = torch.where(best.found.view(-1, 1, 1, 1), best.delta, delta_star)
        more = minimal_l2_on_support(model, x, labels, targeted=targeted, support=support, delta=start,
                                     steps=part, lo=lo, hi=hi, kappa=kappa)
        better = more.norm < best.norm
        best.delta[better], best.norm = more.delta[better], torch.minimum(best.norm, more.norm)
        gradient = torch.where(better.view(-1, 1, 1, 1), more.gradient, gradient)
    return best


def _finish_refined(model: nn.Module, x: Tensor, refined: Tensor, unrefined: Tensor, labels: Tensor, *,
                    targeted: bool, quantize: bool, cap: Tensor | None) -> Tensor:
    """`ops.quantize.finish` of the refined result; where it fails and the unrefined result differs,
    finish that instead (the refined result may lose its success to rounding where the unrefined one
    keeps it). One float success is reported."""
    quiet = SilentModel(model)
    out = finish(quiet, x, refined, labels, targeted=targeted, quantize=quantize, linf_cap=cap)
    float_ok = quiet.float_success
    retry = ((out == x).flatten(1).all(1) & (refined != unrefined).flatten(1).any(1)).nonzero().flatten()
    if retry.numel():
        quiet = SilentModel(model)
        out[retry] = finish(quiet, x[retry], unrefined[retry], labels[retry], targeted=targeted,
                            quantize=quantize, linf_cap=None if cap is None else cap[retry])
        if float_ok is not None and quiet.float_success is not None:
            float_ok = float_ok.clone()
            float_ok[retry] |= quiet.float_success
    if float_ok is not None:
        report_float_success(model, float_ok)
    return out

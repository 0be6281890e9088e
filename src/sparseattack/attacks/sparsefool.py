"""SparseFool (Modas, Moosavi-Dezfooli & Frossard, "SparseFool: a few pixels make a big difference",
CVPR 2019), batched, untargeted as the paper defines it plus a targeted variant.

The paper's Algorithm 2 (and the authors' code, LTS4/SparseFool), from x_0 = x:

    for i = 0, 1, ..., steps - 1
        1. DeepFool (Moosavi-Dezfooli et al. 2016) from x_i to the decision boundary: r = the sum
           of the minimal linearised steps; the boundary point x_B = x_i + lam * r (lam = 3
           "pushes" it past the boundary) and the boundary normal w = grad(f_k - f_y) at x_i + r
           (k = the class DeepFool reached)                                          (`_deepfool`)
        2. x_{i+1} = LinearSolver(x_i, w, x_B): the l1 step toward the hyperplane
           {x : w.(x - x_B) = 0} inside the box [l, u] (Alg. 1)                  (`linear_solver`)
        3. stop when x_0 + (1 + overshoot)(x_{i+1} - x_0), clipped to [l, u], is misclassified
    return that image (the authors' code returns the last one either way; here a failure returns
    the input unchanged, see below)

LinearSolver moves one coordinate at a time in the order of decreasing |w_j|, each by what is
left of the distance to the plane (plus 1e-3 to cross it, at least 1e-4), clipped to the box; a
clipped coordinate is used up and the next one continues.

Choices where the paper leaves room (or its code differs from the text):
- LinearSolver is computed in closed form, not one coordinate per loop: with the coordinates
  sorted by |w_j|, every coordinate before the crossing one saturates at the box, so a cumulative
  sum over |w_j| * (room to the box) finds the crossing coordinate; this equals the greedy loop.
  Coordinates move toward the plane (-sign(w.(x_i - x_B)) sign(w_j)); the code always moves along
  +sign(w_j), which is the same thing in the usual case w.(x_i - x_B) < 0.
- Untargeted DeepFool considers `num_candidates` classes (the code's 10): the true class and the
  top others of the clean image, fixed once per image; each DeepFool step back-propagates every
  candidate logit (num_candidates gradient evaluations per example and step, as the code does).
- Targeted variant (not in the paper): DeepFool toward the target only (each step linearises
  f_t - f_c with c the strongest other class: one gradient evaluation), the normal is
  grad(f_t - f_c) at the DeepFool point, and an outer iteration succeeds when the target wins.
- `linf_cap` optionally intersects the [0, 1] box with an l_inf ball around x_0 (the paper's
  perceptibility bounds [l, u]; default None = the plain image box, the code's delta = 255).
Batched: the pairs not yet fooled are a working set (`ops.working_set.WorkingSet`), each with
its own iterate, DeepFool steps, candidate classes and stop; a pair leaves it as soon as it
succeeds. The attack draws no random numbers, so an example returns the same alone or in any batch.

The result goes through `ops.quantize.finish` (l_inf cap `linf_cap`): with `quantize=True`
(default) the changed entries are put on the 8-bit grid and success is re-checked there; an
example that does not succeed (or whose success does not survive the grid) is returned unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..ops.losses import is_adversarial, logit_margin
from ..ops.quantize import finish
from ..ops.tensors import perturbation_bounds
from ..ops.working_set import WorkingSet
from ..validation import ValidationError, check_attack_call
from ._renames import renamed


@dataclass
class _Iterates(WorkingSet):
    """The pairs not yet fooled: SparseFool's iterate x_i and what it needs."""
    x0: Tensor                 # clean inputs
    xi: Tensor                 # the current iterate
    labels: Tensor
    low: Tensor                # the box [l, u] of the images
    high: Tensor
    candidates: Tensor | None  # untargeted: the true class, then the candidate classes (n, K)


def _grad(model: nn.Module, x: Tensor, fn) -> tuple[Tensor, Tensor]:
    """Logits at x and the gradient of fn(logits).sum() w.r.t. x (one backward pass)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    g, = torch.autograd.grad(fn(logits).sum(), x)
    return logits.detach(), g


def _deepfool(model: nn.Module, x: Tensor, labels: Tensor, cand: Tensor | None, *, targeted: bool,
              steps: int, overshoot: float) -> tuple[Tensor, Tensor]:
    """DeepFool from x (batched): returns the accumulated step r and the boundary normal at x + r.

    Untargeted: `cand` (n, K) holds the true class first, then the other candidate classes.
    Targeted: `labels` are the targets; DeepFool stops once the target wins at x + (1+overshoot) r.
    """
    n = x.shape[0]
    r_tot = torch.zeros_like(x)
    active = torch.ones(n, dtype=torch.bool, device=x.device)
    for _ in range(steps):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        xs = (x[idx] + r_tot[idx]).detach().requires_grad_(True)
        logits = model(xs)
        if targeted:
            t = labels[idx]
            diff = -logit_margin(logits, t, targeted=True)        # f_t - max_c f_c, < 0 before success
            w, = torch.autograd.grad(diff.sum(), xs)
            f = diff.detach()
        else:
            c = cand[idx]
            grads = []
            for j in range(c.shape[1]):
                g, = torch.autograd.grad(logits.gather(1, c[:, j:j + 1]).sum(), xs,
                                         retain_graph=j + 1 < c.shape[1])
                grads.append(g)
            g = torch.stack(grads, 1)                                         # (m, K, C, H, W)
            lg = logits.detach().gather(1, c)                                 # (m, K)
            wk = (g[:, 1:] - g[:, :1]).flatten(2)
            fk = lg[:, 1:] - lg[:, :1]
            pert = fk.abs() / wk.norm(dim=2).clamp_min(1e-12)
            best = pert.argmin(1)
            w = wk[torch.arange(len(idx)), best].view_as(xs)
            f = fk[torch.arange(len(idx)), best]
        wn = w.flatten(1).norm(dim=1).clamp_min(1e-12)
        step = (f.abs() / wn).clamp_min(1e-4)
        r_tot[idx] += step.view(-1, 1, 1, 1) * w / wn.view(-1, 1, 1, 1)
        with torch.no_grad():
            done = is_adversarial(model(x[idx] + (1 + overshoot) * r_tot[idx]), labels[idx], targeted=targeted)
        active[idx[done]] = False
    # boundary normal at the DeepFool point x + r (the authors' code): grad(f_new - f_label)
    if targeted:
        _, normal = _grad(model, x + r_tot, lambda z: -logit_margin(z, labels, targeted=True))
    else:
        # the class DeepFool reached; if it did not leave the label, its best candidate
        with torch.no_grad():
            logits = model(x + (1 + overshoot) * r_tot)
        new = torch.where(is_adversarial(logits, labels, targeted=False), logits.argmax(1), cand[:, 1])
        _, normal = _grad(model, x + r_tot, lambda z: z.gather(1, new[:, None]).squeeze(1)
                          - z.gather(1, labels[:, None]).squeeze(1))
    return r_tot, normal


def linear_solver(x: Tensor, normal: Tensor, boundary: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """SparseFool's LinearSolver (Modas et al. 2019, Alg. 1) in closed form, batched.

    The sparse step from x toward the hyperplane through `boundary` with normal `normal`, inside
    the box [low, high]: coordinates are taken by decreasing |w_j|; each moves by the remaining
    distance to the plane (+1e-3 past it, at least 1e-4) or as far as the box allows, until the
    plane is crossed.

    Parameters
    ----------
    x : Tensor
        The current iterates (B, C, H, W).
    normal : Tensor
        The hyperplane's normal w per example, shaped like x.
    boundary : Tensor
        A point x_B of each hyperplane, shaped like x.
    low, high : Tensor
        The box [l, u] of the images, shaped like x.

    Returns
    -------
    Tensor
        The new iterates, inside [low, high], shaped like x.

    Notes
    -----
    Equal to the authors' one-coordinate-at-a-time loop: every coordinate before the crossing one
    saturates at the box, so a cumulative sum of |w_j| * (room to the box) over the sorted
    coordinates finds the crossing coordinate.
    """
    shape = x.shape
    w = normal.flatten(1)
    xf, lo, hi = x.flatten(1), low.flatten(1), high.flatten(1)
    f0 = (w * (xf - boundary.flatten(1))).sum(1)
    toward = torch.where(f0 > 0, -1.0, 1.0).to(x.dtype)                    # move to decrease |f|
    direction = toward[:, None] * w.sign()
    room = torch.where(direction > 0, hi - xf, xf - lo).clamp_min(0) * (w != 0)
    aw, order = w.abs().sort(dim=1, descending=True, stable=True)
    room_s = room.gather(1, order)
    cum = (aw * room_s).cumsum(1)
    gap = f0.abs()
    crossed = cum >= gap[:, None]
    has = crossed.any(1)
    m = torch.where(has, crossed.float().argmax(1), torch.full_like(gap, shape[1:].numel(), dtype=torch.long))
    pos = torch.arange(w.shape[1], device=x.device)[None]
    move = torch.where(pos < m[:, None], room_s, torch.zeros_like(room_s))
    # the crossing coordinate: remaining gap (+1e-3 beyond the plane), at least 1e-4, within the box
    mi = m.clamp(max=w.shape[1] - 1)[:, None]
    before = torch.where(m[:, None] > 0, cum.gather(1, (mi - 1).clamp_min(0)), torch.zeros_like(gap[:, None]))
    need = ((gap[:, None] - before + 1e-3) / aw.gather(1, mi).clamp_min(1e-12)).clamp_min(1e-4)
    last = torch.minimum(need, room_s.gather(1, mi)) * has[:, None]
    move = move.scatter(1, mi, torch.where(has[:, None], last, move.gather(1, mi)))
    step = torch.zeros_like(xf).scatter(1, order, move) * direction
    return torch.minimum(torch.maximum(xf + step, lo), hi).view(shape)


def _candidate_classes(model: nn.Module, x: Tensor, labels: Tensor, num_candidates: int) -> Tensor:
    """The true class, then the top num_candidates - 1 other classes of the clean image: (B, K)."""
    with torch.no_grad():
        logits = model(x)
    count = min(max(2, num_candidates), logits.shape[1])
    others = logits.scatter(1, labels[:, None], float("-inf")).topk(count - 1, dim=1).indices
    return torch.cat([labels[:, None], others], 1)


@renamed(max_iter="steps", eps="linf_cap")
def sparsefool(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
               lam: float = 3.0, steps: int = 20, overshoot: float = 0.02,
               deepfool_steps: int = 50, deepfool_overshoot: float = 0.02, num_candidates: int = 10,
               linf_cap: float | None = None, quantize: bool = True) -> Tensor:
    """SparseFool (Modas et al. 2019, Alg. 2), batched: DeepFool's boundary point and normal, then
    LinearSolver's sparse l1 step toward that hyperplane, until the image is misclassified.

    Parameters
    ----------
    model : nn.Module
        The classifier (logits), in eval mode, that DeepFool linearises.
    inputs : Tensor
        The clean images x_0, (B, C, H, W) in [0, 1].
    labels : Tensor
        True classes (untargeted, the paper's setting) or targets (targeted), (B,).
    targeted : bool, default False
        The targeted variant (not in the paper, see Notes).
    lam : float, default 3.0
        lambda >= 1: the boundary point x_B = x_i + lam * r lies past DeepFool's boundary point.
    steps : int, default 20
        Outer iterations (DeepFool + LinearSolver) at most (was `max_iter`).
    overshoot : float, default 0.02
        The output is x_0 + (1 + overshoot)(x_i - x_0), clipped to the box.
    deepfool_steps : int, default 50
        DeepFool steps per outer iteration at most.
    deepfool_overshoot : float, default 0.02
        DeepFool's overshoot for its own stopping test.
    num_candidates : int, default 10
        Untargeted: the classes DeepFool considers (the true class and the top others of the clean
        image; at least 2, at most the number of classes).
    linf_cap : float or None, default None
        None: the box is the [0, 1] image box; else it is intersected with the l_inf ball of this
        radius around the input (also the l_inf cap of the finish) (was `eps`).
    quantize : bool, default True
        End on the 8-bit grid inside `linf_cap` (`ops.quantize.finish`); the inputs must then be
        8-bit images (k/255). False for float inputs.

    Returns
    -------
    Tensor
        x_0 + (1 + overshoot)(x_i - x_0) clipped to the box (the authors' output) for the pairs
        fooled; every other pair is its input unchanged (`ops.quantize.finish`).

    Notes
    -----
    LinearSolver is computed in closed form (`linear_solver`). Untargeted DeepFool back-propagates
    each candidate logit (`num_candidates` gradient evaluations per pair and step, as the authors'
    code). The targeted variant runs DeepFool toward the target only (f_t - f_c with c the
    strongest other class, one gradient evaluation per step) and succeeds when the target wins.
    The authors' code returns its last iterate on failure; here a failure returns the input.
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    if lam < 1:
        raise ValidationError(f"lam must be >= 1 (it pushes the boundary point past the boundary), got {lam}")
    if steps < 1 or deepfool_steps < 1:
        raise ValidationError("steps and deepfool_steps must be >= 1")
    if linf_cap is not None and not linf_cap > 0:
        raise ValidationError(f"linf_cap must be positive or None, got {linf_cap}")
    x0 = inputs.detach()
    lo, hi = perturbation_bounds(x0, linf_cap)
    cand = None if targeted else _candidate_classes(model, x0, labels, num_candidates)
    ws = _Iterates.start(x0=x0, xi=x0.clone(), labels=labels, low=x0 + lo, high=x0 + hi, candidates=cand)
    out = x0.clone()
    for _ in range(steps):
        if ws.empty:
            break
        # 1. DeepFool: the boundary point x_B and the normal w
        r, normal = _deepfool(model, ws.xi, ws.labels, ws.candidates, targeted=targeted,
                              steps=deepfool_steps, overshoot=deepfool_overshoot)
        boundary = ws.xi + lam * r
        # 2. LinearSolver: the sparse step toward the hyperplane, inside the box
        ws.xi = linear_solver(ws.xi, normal, boundary, ws.low, ws.high)
        # 3. stop when the overshot iterate is misclassified
        fool = torch.minimum(torch.maximum(ws.x0 + (1 + overshoot) * (ws.xi - ws.x0), ws.low), ws.high)
        with torch.no_grad():
            done = is_adversarial(model(fool), ws.labels, targeted=targeted)
        out[ws.rows[done]] = fool[done]
        ws.keep(~done)
    return finish(model, x0, out, labels, targeted=targeted, quantize=quantize, linf_cap=linf_cap)

"""PGD for l0 + l_inf (Croce & Hein, "Sparse and Imperceivable Adversarial Attacks", ICCV 2019,
Sec. 3.2), batched, targeted or untargeted: projected gradient descent onto the intersection of
{at most k changed pixels} with the l_inf ball of radius eps and the [0, 1] box.

The algorithm, per example, with [lb, ub] = [max(-eps, -x), min(eps, 1 - x)]:

    for each restart (until success; `restarts` = 5 as in the code)
        delta <- P(U(lb, ub))                                   (random start, projected)
        for `steps` steps (until success)
            g <- gradient of the loss at x + delta
            delta <- P(delta - step_size * g / ||g||_1)         (the authors' l1-normalised step)
    P = `ops.projections.project_l0_box`, the exact projection: clip every pixel to [lb, ub], keep
    the k pixels whose clipped perturbation removes the most squared distance, zero the others

Loss: cross-entropy (the code's), toward the target when targeted (any `ops.losses` loss by
name). An example succeeds at the first iterate that is adversarial (checked at every model
evaluation, and once after the last step); it then leaves the working set
(`ops.working_set.WorkingSet`), and failed examples start the next restart.

Choices where the paper leaves room:
- eps may be a sequence of increasing radii: examples that fail at one radius go on to the next
  (SAPF Sec. 4.1 "keep increasing the upper bound of the perturbation until the attack succeeds");
  eps=None gives the pure l0 (box only) attack.
- step_size defaults to the code's 120000/255 for CIFAR-10 inputs (3072 entries) rescaled by the
  number of entries N / 3072, so that the average step per entry is the same on any input size.
- failures return the clean input (the code returns x_nat for them).
- `granularity="element"` (not in the paper) counts k in entries: the same projection with each
  entry its own one-channel pixel.

The random start of every restart is drawn per example (`ops.rng.example_generators`): each
example's generator is seeded from `seed` and a hash of its own image and label, so an example
returns the same alone or in any batch (step sizes, projections and early stops are per example
too). The result goes through `ops.quantize.finish` with the radius each example succeeded at as
its l_inf cap: with `quantize=True` (default) the changed pixels are put on the 8-bit grid inside
that cap and success is re-checked there; failures return the clean input unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..ops import rng
from ..ops.losses import adversarial_loss, is_adversarial
from ..ops.projections import project_l0_box
from ..ops.quantize import finish
from ..ops.tensors import GRANULARITIES, budget_count, perturbation_bounds
from ..ops.working_set import WorkingSet
from ..validation import ValidationError, check_attack_call

CODE_STEP_SIZE = 120000.0 / 255.0   # the authors' step size for 32x32x3 inputs


@dataclass
class _Restart(WorkingSet):
    """The pairs of one restart not yet fooled: their PGD iterates."""
    x: Tensor            # clean inputs
    labels: Tensor
    lb: Tensor           # bounds of delta: max(-eps, -x), min(eps, 1 - x)
    ub: Tensor
    delta: Tensor        # the iterate


def _radii(eps) -> list[float | None]:
    if eps is None:
        return [None]
    radii = [float(e) for e in (eps if isinstance(eps, Sequence) else [eps])]
    if not radii or any(not e > 0 for e in radii):
        raise ValidationError(f"eps must be positive (or a sequence of positive radii), got {eps}")
    if radii != sorted(radii):
        raise ValidationError(f"eps radii must be increasing, got {radii}")
    return radii


def _project(delta: Tensor, k: int, lb: Tensor, ub: Tensor, granularity: str) -> Tensor:
    """The exact projection onto {lb <= delta <= ub, at most k nonzero pixels (or entries)}."""
    if granularity == "pixel":
        return project_l0_box(delta, k, lb, ub)
    entries = lambda t: t.reshape(t.shape[0], 1, -1, t.shape[-1])  # noqa: E731  (each entry a 1-channel pixel)
    return project_l0_box(entries(delta), k, entries(lb), entries(ub)).view_as(delta)


def pgd_l0_linf(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
                k: int | float = 20, granularity: str = "pixel", eps: float | Sequence[float] | None = 0.3,
                steps: int = 100, restarts: int = 5, step_size: float | None = None, loss: str = "ce",
                random_start: bool = True, seed: int = 0, quantize: bool = True) -> Tensor:
    """PGD onto {at most k changed pixels} and the l_inf ball of radius eps (Croce & Hein 2019,
    Sec. 3.2), batched, with restarts (the algorithm box is in the module docstring).

    Parameters
    ----------
    model : nn.Module
        The classifier (logits), in eval mode; one gradient evaluation per pair and step.
    inputs : Tensor
        Clean images x, (B, C, H, W) in [0, 1].
    labels : Tensor
        True classes (untargeted) or targets (targeted), (B,) integers.
    targeted : bool, default False
        Descend the loss toward `labels` (True) or ascend it away from them (False).
    k : int or float, default 20
        Changed pixels (entries with granularity="element") at most: an int count, or a float
        fraction in (0, 1] of them.
    granularity : str, default "pixel"
        "pixel": k counts spatial positions (a pixel with all its channels), the paper's; or
        "element": k counts entries of C x H x W.
    eps : float or sequence of float or None, default 0.3
        The l_inf radius of the threat model; an increasing sequence of radii (pairs that fail at
        one go on to the next); None for the box only (pure l0).
    steps : int, default 100
        PGD iterations per restart.
    restarts : int, default 5
        Restarts per radius for the pairs still failing (the code's 5).
    step_size : float or None, default None
        The step along the l1-normalised gradient (None: the code's 120000/255 for 3072-entry
        CIFAR-10 inputs, scaled by the number of entries / 3072).
    loss : str, default "ce"
        The loss (`ops.losses.adversarial_loss`): "ce" (the code's) or "cw" / "margin".
    random_start : bool, default True
        Start every restart at a projected uniform point of [lb, ub] (False: at delta = 0).
    seed : int, default 0
        Seeds each example's random starts together with a hash of its image and label
        (`ops.rng.example_generators`), so the result does not depend on the batch.
    quantize : bool, default True
        Round onto the 8-bit grid inside each pair's radius (`ops.quantize.finish`); needs 8-bit
        inputs (k/255). False for float inputs.

    Returns
    -------
    Tensor
        The first adversarial iterate per example; an example that does not succeed (or whose
        success does not survive the grid inside its radius) is its input unchanged.

    Notes
    -----
    The paper fixes one radius; a sequence of radii follows SAPF Sec. 4.1 ("keep increasing the
    upper bound of the perturbation until the attack succeeds"). The default step size keeps the
    code's average step per entry on any input size. Success is checked at every model evaluation.
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    x = inputs.detach()
    b = x.shape[0]
    k = budget_count(k, granularity, x.shape, supported=GRANULARITIES)
    if steps < 1 or restarts < 1:
        raise ValidationError("steps and restarts must be >= 1")
    radii = _radii(eps)
    loss_fn = adversarial_loss(loss)
    eta = CODE_STEP_SIZE * x[0].numel() / 3072.0 if step_size is None else float(step_size)
    gens = rng.example_generators(x, labels, seed) if random_start else None
    out = x.clone()
    fooled = torch.zeros(b, dtype=torch.bool, device=x.device)
    # the l_inf cap of the finish: the radius each example succeeded at (failures: unchanged anyway)
    cap = None if radii[0] is None else torch.full((b,), radii[-1], dtype=x.dtype, device=x.device)

    def stop_if_adversarial(ws: _Restart, adv: Tensor, logits: Tensor, radius: float | None) -> Tensor:
        """Pairs whose iterate is adversarial keep it and leave the working set; returns which."""
        ok = is_adversarial(logits, ws.labels, targeted=targeted)
        rows = ws.rows[ok]
        out[rows] = adv[ok]
        fooled[rows] = True
        if cap is not None:
            cap[rows] = radius
        ws.keep(~ok)
        return ok

    for radius in radii:
        for _ in range(restarts):
            idx = (~fooled).nonzero().flatten()
            if idx.numel() == 0:
                break
            x0 = x[idx]
            lb, ub = perturbation_bounds(x0, radius)                   # max(-eps, -x), min(eps, 1 - x)
            if random_start:
                u = rng.rand([gens[i] for i in idx.tolist()], x0.shape[1:], dtype=x.dtype, device=x.device)
                delta = _project(lb + u * (ub - lb), k, lb, ub, granularity)
            else:
                delta = torch.zeros_like(x0)
            ws = _Restart(rows=idx, x=x0, labels=labels[idx], lb=lb, ub=ub, delta=delta)
            for _ in range(steps):
                d = ws.delta.requires_grad_(True)
                logits = model(ws.x + d)
                value = loss_fn(logits, ws.labels, targeted=targeted).sum()
                g, = torch.autograd.grad(value, d)
                ws.update(delta=d.detach())
                ok = stop_if_adversarial(ws, ws.x + ws.delta, logits.detach(), radius)
                if ws.empty:
                    break
                with torch.no_grad():
                    g = g[~ok]
                    g = g / g.flatten(1).abs().sum(1).clamp_min(1e-10).view(-1, 1, 1, 1)
                    ws.update(delta=_project(ws.delta - eta * g, k, ws.lb, ws.ub, granularity))
            else:
                with torch.no_grad():
                    stop_if_adversarial(ws, ws.x + ws.delta, model(ws.x + ws.delta), radius)
    return finish(model, x, out, labels, targeted=targeted, quantize=quantize, linf_cap=cap)

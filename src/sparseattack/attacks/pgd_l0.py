"""PGD for l0 + l_inf (Croce & Hein, "Sparse and Imperceivable Adversarial Attacks", ICCV 2019,
Sec. 3.2), batched, targeted or untargeted: projected gradient descent onto the intersection of
{at most k changed pixels} with the l_inf ball of radius eps and the [0, 1] box.

Per restart: a random start x + U(lb, ub) with lb = max(-eps, -x), ub = min(eps, 1 - x), projected;
then `steps` iterations of a step of size `step_size` along the gradient normalised by its l1 norm
(the authors' code), each followed by the exact projection `ops.projections.project_l0_box`
(clip every pixel to the box, keep the k pixels whose clipped perturbation removes the most
squared distance). Loss: cross-entropy (the code's), toward the target when targeted (any
`ops.losses` loss by name). An example succeeds at the first iterate that is adversarial (checked
at every model evaluation, and once after the last step); it then leaves the working set, and
failed examples start the next restart. `restarts` = 5 as in the code.

Choices where the paper leaves room:
- eps may be a sequence of increasing radii: examples that fail at one radius go on to the next
  (SAPF Sec. 4.1 "keep increasing the upper bound of the perturbation until the attack succeeds");
  eps=None gives the pure l0 (box only) attack.
- step_size defaults to the code's 120000/255 for CIFAR-10 inputs (3072 entries) rescaled by the
  number of entries N / 3072, so that the average step per entry is the same on any input size.
- failures return the clean input (the code returns x_nat for them).

The random start of every restart is drawn per example (`ops.rng.example_generators`): each
example's generator is seeded from `seed` and a hash of its own image and label, so an example
returns the same alone or in any batch (step sizes, projections and early stops are per example
too). The result goes through `ops.quantize.finish` with the radius each example succeeded at as
its l_inf cap: with `quantize=True` (default) the changed pixels are put on the 8-bit grid inside
that cap and success is re-checked there; failures return the clean input unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..ops import rng
from ..ops.losses import adversarial_loss, is_adversarial
from ..ops.projections import project_l0_box
from ..ops.quantize import finish
from ..validation import check_attack_call, resolve_k

CODE_STEP_SIZE = 120000.0 / 255.0   # the authors' step size for 32x32x3 inputs


def _radii(eps) -> list[float | None]:
    if eps is None:
        return [None]
    radii = [float(e) for e in (eps if isinstance(eps, Sequence) else [eps])]
    if not radii or any(not e > 0 for e in radii):
        raise ValueError(f"eps must be positive (or a sequence of positive radii), got {eps}")
    if radii != sorted(radii):
        raise ValueError(f"eps radii must be increasing, got {radii}")
    return radii


def pgd_l0_linf(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
                k: int | float = 20, eps: float | Sequence[float] | None = 0.3, steps: int = 100,
                restarts: int = 5, step_size: float | None = None, loss: str = "ce",
                random_start: bool = True, seed: int = 0, quantize: bool = True) -> Tensor:
    """Batched PGD with at most k changed pixels and |delta| <= eps (see the module docstring).

    k: pixels (an int), or a fraction of the pixels in (0, 1]. eps: a radius, an increasing
    sequence of radii, or None (box only). seed: seeds each example's random starts together with
    a hash of its image and label (`ops.rng.example_generators`), so the result does not depend on
    the batch. quantize: end on the 8-bit grid via `ops.quantize.finish`; inputs must then be
    8-bit images (k/255); False for float inputs. Failures return the input unchanged."""
    check_attack_call(model, inputs, labels, quantize=quantize)
    x = inputs.detach()
    b, _, h, w = x.shape
    k = resolve_k(k, h * w, what="pixels")
    if steps < 1 or restarts < 1:
        raise ValueError("steps and restarts must be >= 1")
    radii = _radii(eps)
    loss_fn = adversarial_loss(loss)
    eta = CODE_STEP_SIZE * x[0].numel() / 3072.0 if step_size is None else float(step_size)
    gens = rng.example_generators(x, labels, seed) if random_start else None
    out = x.clone()
    active = torch.ones(b, dtype=torch.bool, device=x.device)
    # the l_inf cap of the finish: the radius each example succeeded at (failures: unchanged anyway)
    cap = None if radii[0] is None else torch.full((b,), radii[-1], dtype=x.dtype, device=x.device)

    def record(idx: Tensor, adv: Tensor, logits: Tensor, radius: float | None) -> Tensor:
        ok = is_adversarial(logits, labels[idx], targeted=targeted)
        out[idx[ok]] = adv[ok].detach()
        active[idx[ok]] = False
        if cap is not None:
            cap[idx[ok]] = radius
        return ok

    for radius in radii:
        for _ in range(restarts):
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            x0 = x[idx]
            lb, ub = -x0, 1 - x0
            if radius is not None:
                lb, ub = lb.clamp_min(-radius), ub.clamp_max(radius)
            if random_start:
                u = rng.rand([gens[i] for i in idx.tolist()], x0.shape[1:], dtype=x.dtype, device=x.device)
                delta = project_l0_box(lb + u * (ub - lb), k, lb, ub)
            else:
                delta = torch.zeros_like(x0)
            for _ in range(steps):
                d = delta.requires_grad_(True)
                logits = model(x0 + d)
                value = loss_fn(logits, labels[idx], targeted=targeted).sum()
                g, = torch.autograd.grad(value, d)
                ok = record(idx, x0 + d, logits.detach(), radius)
                keep = ~ok
                if not keep.any():
                    break
                idx, x0, lb, ub = idx[keep], x0[keep], lb[keep], ub[keep]
                g = g[keep]
                with torch.no_grad():
                    g = g / g.flatten(1).abs().sum(1).clamp_min(1e-10).view(-1, 1, 1, 1)
                    delta = project_l0_box(d.detach()[keep] - eta * g, k, lb, ub)
            else:
                with torch.no_grad():
                    record(idx, x0 + delta, model(x0 + delta), radius)
    return finish(model, x, out, labels, targeted=targeted, quantize=quantize, linf_cap=cap)

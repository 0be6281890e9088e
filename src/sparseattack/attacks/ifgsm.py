"""Iterative fast gradient (sign) method, targeted or untargeted, l_inf or l2 (Kurakin et al. 2017).

The dense baseline of StrAttack's Tables 1-2: `steps` iterations of size eps/steps (the paper: 10
iterations of eps/10), each projected back to the eps-ball around x and to the [0, 1] box. Loss:
cross-entropy toward the target (targeted) or away from the label (untargeted). `eps` may be a
scalar or a per-example (B,) tensor so that a grid search over eps advances all examples together.
With `early_stop`, an example freezes at the first iterate that is adversarial.

The result goes through `ops.quantize.finish` with the eps-ball as its cap (l_inf: `linf_cap=eps`,
l2: `l2_cap=eps`): with `quantize=True` (default) the perturbed entries end on the 8-bit grid inside
the ball and success is re-checked there; an example that does not succeed is returned unchanged.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ops.losses import adversarial_loss, is_adversarial
from ..ops.projections import project_linf
from ..ops.quantize import finish
from ..validation import check_attack_call

__all__ = ["ifgsm"]


def _per_example(value: float | Tensor, x: Tensor) -> Tensor:
    v = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    v = v.expand(x.shape[0]) if v.dim() == 0 else v
    if v.shape != (x.shape[0],):
        raise ValueError(f"eps must be a scalar or have shape ({x.shape[0]},), got {tuple(v.shape)}")
    if (v < 0).any() or torch.isnan(v).any():
        raise ValueError("eps must be non-negative")
    return v.view(-1, *([1] * (x.dim() - 1)))


def _l2_normalize(g: Tensor) -> Tensor:
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))


def _project_l2(delta: Tensor, eps: Tensor) -> Tensor:
    norm = delta.flatten(1).norm(dim=1).view_as(eps)
    return delta * torch.clamp(eps / norm.clamp_min(1e-12), max=1.0)


def _check_norm(norm: str) -> None:
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")


def _ball_cap(norm: str, eps: Tensor) -> dict:
    """The finish's cap for an eps-ball of this norm: {'linf_cap': eps} or {'l2_cap': eps}, (B,)."""
    return {"linf_cap" if norm == "linf" else "l2_cap": eps.flatten()}


def _ifgsm(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool, eps: Tensor, norm: str,
           steps: int, alpha: Tensor, loss: str, early_stop: bool) -> Tensor:
    """The iterations (no checks, no finish): the float x + delta inside the eps-ball and the box."""
    loss_fn = adversarial_loss(loss)
    delta = torch.zeros_like(inputs)
    active = torch.ones(inputs.shape[0], dtype=torch.bool, device=inputs.device)
    for _ in range(steps):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        d = delta[idx].requires_grad_(True)
        logits = model(inputs[idx] + d)
        if early_stop:  # freeze examples whose current iterate is already adversarial
            done = is_adversarial(logits.detach(), labels[idx], targeted=targeted)
            active[idx[done]] = False
        grad, = torch.autograd.grad(loss_fn(logits, labels[idx], targeted=targeted).sum(), d)
        with torch.no_grad():
            direction = grad.sign() if norm == "linf" else _l2_normalize(grad)
            step = d - alpha[idx] * direction
            step = project_linf(step, eps[idx].flatten()) if norm == "linf" else _project_l2(step, eps[idx])
            new = (inputs[idx] + step).clamp(0, 1) - inputs[idx]
            keep = done[:, None, None, None] if early_stop else torch.zeros_like(new[:, :1, :1, :1], dtype=torch.bool)
            delta[idx] = torch.where(keep, d.detach(), new)
    return (inputs + delta).detach()


def ifgsm(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
          eps: float | Tensor = 0.03, norm: str = "linf", steps: int = 10,
          step_size: float | Tensor | None = None, loss: str = "ce", early_stop: bool = True,
          quantize: bool = True) -> Tensor:
    """Batched I-FGSM/I-FGM. Returns adversarial inputs in [0, 1] with ||adv - x||_norm <= eps
    (eps a scalar or (B,)); examples that do not succeed are returned unchanged.

    quantize: end on the 8-bit grid via `ops.quantize.finish` (inside the eps-ball); inputs must
    then be 8-bit images (k/255); False for float inputs.
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    _check_norm(norm)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    adversarial_loss(loss)
    x = inputs.detach()
    eps_t = _per_example(eps, x)
    alpha = eps_t / steps if step_size is None else _per_example(step_size, x)
    adv = _ifgsm(model, x, labels, targeted=targeted, eps=eps_t, norm=norm, steps=steps, alpha=alpha,
                 loss=loss, early_stop=early_stop)
    return finish(model, x, adv, labels, targeted=targeted, quantize=quantize, **_ball_cap(norm, eps_t))

"""Iterative fast gradient (sign) method, targeted or untargeted, l_inf or l2 (Kurakin et al. 2017).

The dense baseline of StrAttack's Tables 1-2 (10 iterations of eps/10, its Appendix F):

    delta_0 = 0
    for it = 1 .. steps:
        g = grad_delta loss(x + delta_{it-1})            (CE toward the target / away from the label)
        d = sign(g) (l_inf) or g / ||g||_2 (l2)
        delta_it = Proj_{||.|| <= eps}(delta_{it-1} - step_size * d), then x + delta_it clipped to [0, 1]
    (with `early_stop`, a pair freezes at the first iterate that is adversarial)

`eps` may be a scalar or a per-example (B,) tensor, so that a grid search over eps
(`dense.min_eps_search`) advances all pairs together. `ifgsm_iterations` is the loop alone (no
checks, no finish) for such a search.

The result goes through `ops.quantize.finish` with the eps-ball as its cap (l_inf: `linf_cap=eps`,
l2: `l2_cap=eps`): with `quantize=True` (default) the perturbed entries end on the 8-bit grid inside
the ball and success is re-checked there; a pair that does not succeed is returned unchanged.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ops.losses import adversarial_loss, is_adversarial
from ..ops.projections import project_linf
from ..ops.quantize import finish
from ..ops.tensors import ball_cap, check_norm, l2_normalize, per_example, project_l2_ball
from ..validation import ValidationError, check_attack_call

__all__ = ["ifgsm", "ifgsm_iterations"]


def ifgsm_iterations(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool, eps: Tensor,
                     norm: str, steps: int, step_size: Tensor, loss: str, early_stop: bool) -> Tensor:
    """The I-FGSM / I-FGM loop of the module docstring, without argument checks or finish.

    Parameters
    ----------
    model : nn.Module
    inputs, labels : Tensor
    targeted : bool
        As in `ifgsm` (not checked here).
    eps : Tensor
        The ball radius per pair, (B, 1, 1, 1) (`ops.tensors.per_example`).
    norm : {'linf', 'l2'}
        The ball and the step: sign of the gradient (l_inf) or the l2-normalized gradient (l2).
    steps : int
        Iterations.
    step_size : Tensor
        The step length per pair, (B, 1, 1, 1).
    loss : {'ce', 'cw'}
        The attacker's loss (`ops.losses.adversarial_loss`).
    early_stop : bool
        Freeze a pair at its first adversarial iterate.

    Returns
    -------
    Tensor
        The float x + delta, inside the eps-ball and the [0, 1] box (not finished, not reset on
        failure).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValidationError(f"steps must be an integer >= 1, got {steps!r}")
    loss_fn = adversarial_loss(loss)
    delta = torch.zeros_like(inputs)
    active = torch.ones(inputs.shape[0], dtype=torch.bool, device=inputs.device)
    for _ in range(steps):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        d = delta[idx].requires_grad_(True)
        logits = model(inputs[idx] + d)
        if early_stop:  # freeze pairs whose current iterate is already adversarial
            done = is_adversarial(logits.detach(), labels[idx], targeted=targeted)
            active[idx[done]] = False
        grad, = torch.autograd.grad(loss_fn(logits, labels[idx], targeted=targeted).sum(), d)
        with torch.no_grad():
            direction = grad.sign() if norm == "linf" else l2_normalize(grad)
            step = d - step_size[idx] * direction
            step = project_linf(step, eps[idx].flatten()) if norm == "linf" else project_l2_ball(step, eps[idx])
            new = (inputs[idx] + step).clamp(0, 1) - inputs[idx]
            keep = done[:, None, None, None] if early_stop else torch.zeros_like(new[:, :1, :1, :1], dtype=torch.bool)
            delta[idx] = torch.where(keep, d.detach(), new)
    return (inputs + delta).detach()


def ifgsm(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
          eps: float | Tensor = 0.03, norm: str = "linf", steps: int = 10,
          step_size: float | Tensor | None = None, loss: str = "ce", early_stop: bool = True,
          quantize: bool = True) -> Tensor:
    """Batched I-FGSM (l_inf) / I-FGM (l2) of Kurakin et al. (2017), as StrAttack's dense baseline.

    `steps` gradient steps of length `step_size` (default eps / steps: Appendix F's 10 x eps/10),
    each projected onto the eps-ball around the input and onto the [0, 1] box (module docstring).

    Parameters
    ----------
    model : nn.Module
        The classifier (logits), in eval mode; the loss L is taken on its output.
    inputs : Tensor
        Images x (B, C, H, W) in [0, 1]; with `quantize`, 8-bit images (k/255).
    labels : Tensor
        Target classes (targeted) or true classes (untargeted), (B,) integers.
    targeted : bool, default False
        Each step descends L toward `labels` (True) or ascends it away from them (False).
    eps : float or Tensor, default 0.03
        The threat-model radius: ||adv - inputs||_norm <= eps; a scalar or one per pair (B,).
    norm : {'linf', 'l2'}, default 'linf'
        The ball and the step direction: sign of the gradient (I-FGSM) or the gradient divided by
        its l2 norm (I-FGM).
    steps : int, default 10
        Iterations (>= 1).
    step_size : float or Tensor, optional
        Step length, a scalar or (B,); default eps / steps.
    loss : {'ce', 'cw'}, default 'ce'
        The attacker's loss: cross-entropy toward the target / away from the label, or the C&W
        margin (`ops.losses.adversarial_loss`).
    early_stop : bool, default True
        Freeze a pair at its first adversarial iterate (the least perturbed success on the path).
    quantize : bool, default True
        End on the 8-bit grid inside the eps-ball via `ops.quantize.finish`; False for float inputs.

    Returns
    -------
    Tensor
        Adversarial inputs (B, C, H, W) in [0, 1] inside the eps-ball; a pair that does not
        succeed is returned unchanged (`ops.quantize.finish`).

    Notes
    -----
    The paper fixes only 10 iterations of eps/10; the loss, `early_stop` and the l2 step (the
    gradient normalized per pair) are this library's choices.
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    check_norm(norm)
    adversarial_loss(loss)
    x = inputs.detach()
    radius = per_example(eps, x)
    alpha = radius / steps if step_size is None else per_example(step_size, x, name="step_size")
    adv = ifgsm_iterations(model, x, labels, targeted=targeted, eps=radius, norm=norm, steps=steps,
                           step_size=alpha, loss=loss, early_stop=early_stop)
    return finish(model, x, adv, labels, targeted=targeted, quantize=quantize, **ball_cap(norm, radius))

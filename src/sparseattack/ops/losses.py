"""Adversarial losses on logits, per example (no reduction).

Convention: every loss here is *minimised* by the attacker. For a targeted attack `labels` are the
target classes; for an untargeted attack they are the true classes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from ..validation import ValidationError


def _other_max(logits: Tensor, labels: Tensor) -> Tensor:
    """Largest logit among the classes other than `labels`. The mask is a comparison with an
    arange, not `F.one_hot`, which checks its labels' range with two host synchronisations per call
    (on CUDA, 4 of SAPF's 4.1 synchronisations per model call; labels are validated once, at entry)."""
    mask = torch.arange(logits.shape[1], device=logits.device) == labels[:, None]
    return logits.masked_fill(mask, float("-inf")).amax(dim=1)


def cw_margin_loss(logits: Tensor, labels: Tensor, *, targeted: bool, kappa: float = 0.0) -> Tensor:
    """C&W margin loss (StrAttack Eq. 3, C&W 2017 f6), zero once the margin exceeds kappa.

    targeted:   max(max_{j != t} Z_j - Z_t, -kappa)
    untargeted: max(Z_y - max_{j != y} Z_j, -kappa)
    Shifted by +kappa so that it is >= 0 and == 0 exactly at success with confidence kappa.
    """
    return (logit_margin(logits, labels, targeted=targeted) + kappa).clamp_min(0.0)


def logit_margin(logits: Tensor, labels: Tensor, *, targeted: bool) -> Tensor:
    """The unclamped logit margin that `cw_margin_loss` clips: max_{j != t} Z_j - Z_t (targeted)
    or Z_y - max_{j != y} Z_j (untargeted); negative exactly when the attack succeeds. Its
    gradient stays informative at success (C&W-l0 ranks pixels by it)."""
    real = logits.gather(1, labels[:, None]).squeeze(1)
    other = _other_max(logits, labels)
    return other - real if targeted else real - other


def cross_entropy_loss(logits: Tensor, labels: Tensor, *, targeted: bool, kappa: float = 0.0) -> Tensor:
    """Cross-entropy toward the target (targeted) or negative CE of the true class (untargeted).

    kappa is accepted for a uniform signature and ignored.
    """
    ce = F.cross_entropy(logits, labels, reduction="none")
    return ce if targeted else -ce


LOSSES = {"cw": cw_margin_loss, "margin": cw_margin_loss, "ce": cross_entropy_loss}


def adversarial_loss(name: str):
    """Loss function by name: 'cw' (= 'margin') or 'ce'."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValidationError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None


def is_adversarial(logits: Tensor, labels: Tensor, *, targeted: bool, kappa: float = 0.0) -> Tensor:
    """Boolean success per example: the target wins by more than kappa (targeted) or the true
    class is no longer the top class by kappa (untargeted)."""
    real = logits.gather(1, labels[:, None]).squeeze(1)
    other = _other_max(logits, labels)
    if targeted:
        return real - other > kappa if kappa > 0 else logits.argmax(1) == labels
    return other - real > kappa if kappa > 0 else logits.argmax(1) != labels

"""Small tensor helpers every attack shares: per-example parameters, norms and balls, budgets, and
the image-size rule that picks a paper's small-image or ImageNet settings."""
from __future__ import annotations

import torch
from torch import Tensor

from ..validation import resolve_k, ValidationError

__all__ = ["as_column", "per_example", "l2_normalize", "project_l2_ball", "check_norm", "ball_cap", "is_imagenet_size",
           "SMALL_SIDE", "budget_count", "check_granularity", "GRANULARITIES", "perturbation_bounds"]

# The one rule for "a large image": both papers tune MNIST/CIFAR-size inputs (28-32 px) and
# ImageNet-size inputs (224-299 px) differently; an image whose smaller side exceeds this is ImageNet-size.
SMALL_SIDE = 64
GRANULARITIES = ("element", "pixel")


def is_imagenet_size(height: int, width: int) -> bool:
    """Whether an image gets the papers' ImageNet settings (min(h, w) > SMALL_SIDE = 64), else their
    MNIST/CIFAR ones (SAPF Sec. 4.1's lambda_1 start, StrAttack Appendix F's c and groups)."""
    return min(height, width) > SMALL_SIDE


def as_column(v: Tensor, like: Tensor) -> Tensor:
    """A per-row (B,) tensor shaped (B, 1, ..., 1) to broadcast over the rows of `like`."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def per_example(value: float | Tensor, x: Tensor, *, name: str = "eps") -> Tensor:
    """A scalar or (B,) non-negative parameter as a (B, 1, ..., 1) tensor broadcasting over x's rows."""
    v = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    v = v.expand(x.shape[0]) if v.dim() == 0 else v
    if v.shape != (x.shape[0],):
        raise ValidationError(f"{name} must be a scalar or have shape ({x.shape[0]},), got {tuple(v.shape)}")
    if (v < 0).any() or torch.isnan(v).any():
        raise ValidationError(f"{name} must be non-negative")
    return v.view(-1, *([1] * (x.dim() - 1)))


def l2_normalize(g: Tensor) -> Tensor:
    """Each row divided by its l2 norm (rows of zeros stay zero)."""
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))


def project_l2_ball(delta: Tensor, eps: Tensor) -> Tensor:
    """Projection of each row onto the l2 ball of radius eps ((B, 1, ..., 1) from `per_example`)."""
    norm = delta.flatten(1).norm(dim=1).view_as(eps)
    return delta * torch.clamp(eps / norm.clamp_min(1e-12), max=1.0)


def check_norm(norm: str) -> None:
    if norm not in ("linf", "l2"):
        raise ValidationError(f"norm must be 'linf' or 'l2', got {norm!r}")


def ball_cap(norm: str, eps: Tensor) -> dict:
    """`ops.quantize.finish`'s cap for an eps-ball of this norm: {'linf_cap': eps} or {'l2_cap': eps}, (B,)."""
    return {"linf_cap" if norm == "linf" else "l2_cap": eps.flatten()}


def check_granularity(granularity: str, supported: tuple[str, ...] = GRANULARITIES) -> None:
    if granularity not in supported:
        raise ValidationError(f"granularity must be {' or '.join(map(repr, supported))}, got {granularity!r}")


def budget_count(k: int | float, granularity: str, shape: tuple[int, ...] | torch.Size,
                 supported: tuple[str, ...] = GRANULARITIES) -> int:
    """A sparsity budget k as a count of what `granularity` counts in an input of `shape` (C, H, W)
    (or (B, C, H, W)): 'element' counts entries (C*H*W), 'pixel' counts positions (H*W, a pixel with
    all its channels). An int is a count in [1, N]; a float in (0, 1] a fraction of N (rounded, >= 1)."""
    check_granularity(granularity, supported)
    c, h, w = shape[-3:]
    n = c * h * w if granularity == "element" else h * w
    return resolve_k(k, n, what="entries" if granularity == "element" else "pixels")


def perturbation_bounds(inputs: Tensor, linf_cap: float | Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Entrywise bounds (lo, hi) of a perturbation delta that keeps inputs + delta in the [0, 1] box
    and, with `linf_cap` (scalar or (B,)), inside the l_inf ball: max(-x, -cap) <= delta <= min(1 - x, cap)."""
    lo, hi = -inputs, 1 - inputs
    if linf_cap is None:
        return lo, hi
    cap = per_example(linf_cap, inputs, name="linf_cap")
    return torch.maximum(lo, -cap), torch.minimum(hi, cap)

"""Input checks shared by every attack and by the evaluation layer.

Bad input must fail loudly with a message naming the problem (shape, range, dtype, NaN, a target
equal to the true label, k out of range), never produce a silent wrong answer.
"""
from __future__ import annotations

import torch
from torch import Tensor


class ValidationError(ValueError):
    """Bad input from the user: a tensor, label, parameter, option, file or configuration that this
    package refuses, with a message naming the problem. The CLI reports it with exit status 2; any
    other exception is a bug and surfaces as a traceback."""


class ValidationTypeError(ValidationError, TypeError):
    """A `ValidationError` about a value of the wrong type (also a TypeError)."""


class MissingFileError(ValidationError, FileNotFoundError):
    """A `ValidationError` for a path that does not exist (also a FileNotFoundError)."""

__all__ = ["ValidationError", "ValidationTypeError", "MissingFileError", "check_images", "check_labels", "check_targets_differ", "resolve_k", "check_model",
           "num_classes_of", "check_attack_call"]


def check_images(inputs: Tensor, *, name: str = "inputs") -> None:
    """Images must be a floating (B, C, H, W) tensor with finite values in [0, 1]."""
    if not isinstance(inputs, Tensor):
        raise ValidationTypeError(f"{name} must be a torch.Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise ValidationTypeError(
            f"{name} must be a floating-point tensor of images in [0, 1], got dtype {inputs.dtype} "
            "(convert uint8 images with `x.float() / 255`)")
    if inputs.dim() != 4:
        raise ValidationError(f"{name} must have shape (batch, channels, height, width), got shape "
                         f"{tuple(inputs.shape)}")
    if inputs.shape[0] == 0:
        raise ValidationError(f"{name} is an empty batch")
    if torch.isnan(inputs).any():
        raise ValidationError(f"{name} contains NaN values")
    if torch.isinf(inputs).any():
        raise ValidationError(f"{name} contains infinite values")
    lo, hi = inputs.min().item(), inputs.max().item()
    if lo < 0 or hi > 1:
        raise ValidationError(f"{name} must lie in [0, 1] (models normalize inside), got range "
                         f"[{lo:.4g}, {hi:.4g}]")


def check_labels(labels: Tensor, batch_size: int, num_classes: int | None = None, *,
                 name: str = "labels") -> None:
    """Labels must be an int64 tensor of shape (B,) with values in [0, num_classes)."""
    if not isinstance(labels, Tensor):
        raise ValidationTypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype != torch.int64:
        hint = f" ({name}.long() converts it)" if labels.dtype in (torch.int32, torch.int16, torch.uint8,
                                                                     torch.int8) else ""
        raise ValidationTypeError(f"{name} must be an integer tensor of class indices (torch.int64, as torch's losses "
                        f"take), got dtype {labels.dtype}{hint}")
    if labels.shape != (batch_size,):
        raise ValidationError(f"{name} must have shape ({batch_size},) to match the batch, got "
                         f"{tuple(labels.shape)}")
    if (labels < 0).any():
        raise ValidationError(f"{name} contains negative class indices")
    if num_classes is not None and (labels >= num_classes).any():
        raise ValidationError(f"{name} contains class index {labels.max().item()} but the model has "
                         f"{num_classes} classes")


def check_targets_differ(labels: Tensor, targets: Tensor) -> None:
    """A targeted attack toward the true class is meaningless: refuse it."""
    same = (labels == targets).nonzero().flatten()
    if same.numel():
        i = same[0].item()
        raise ValidationError(f"target class equals the true label for {same.numel()} example(s) "
                         f"(first: index {i}, class {labels[i].item()}); choose a different target")


def resolve_k(k: int | float, n: int, *, what: str = "entries") -> int:
    """k as an integer count in [1, n], or a fraction in (0, 1] of n (rounded, at least 1)."""
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise ValidationTypeError(f"k must be an int or a float fraction, got {type(k).__name__}")
    if isinstance(k, float):
        if 0 < k <= 1:
            return max(1, int(round(k * n)))
        if not k.is_integer():
            raise ValidationError(f"k as a fraction must be in (0, 1], got {k}")
    k = int(k)
    if not 1 <= k <= n:
        raise ValidationError(f"k must be in [1, {n}] (the number of {what}), got {k}")
    return k


def check_model(model, inputs: Tensor) -> None:
    """The model must be in eval mode (training mode keeps dropout on and batch-norm statistics
    moving, so success would change from run to run: refused, not silently switched), and its
    parameters must share the inputs' device and floating dtype."""
    if getattr(model, "training", False):
        raise ValidationError("the model is in training mode (dropout and batch-norm statistics would change "
                         "its predictions between passes); call model.eval() before attacking it")
    params = [p for p in model.parameters()] if hasattr(model, "parameters") else []
    if not params:
        return
    p = params[0]
    if p.device != inputs.device:
        raise ValidationError(f"inputs are on {inputs.device} but the model's parameters are on {p.device}; "
                         "move one of them (model.to(device) or inputs.to(device))")
    if p.is_floating_point() and p.dtype != inputs.dtype:
        raise ValidationTypeError(f"inputs are {inputs.dtype} but the model's parameters are {p.dtype}; convert one "
                        f"of them (inputs.to({p.dtype}) or model.to({inputs.dtype}))")


def num_classes_of(model, inputs: Tensor) -> int:
    """Number of classes: the width of the model's logits on the first input (one forward pass)."""
    try:
        with torch.no_grad():
            logits = model(inputs[:1])
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ValidationError(f"the model fails on inputs of shape {tuple(inputs.shape[1:])} and dtype {inputs.dtype}: "
                         f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != 1:
        raise ValidationError(f"the model must return logits of shape (batch, classes), got "
                         f"{tuple(getattr(logits, 'shape', ()))} for one input")
    return int(logits.shape[1])


def check_attack_call(model, inputs: Tensor, labels: Tensor, *, quantize: bool = False,
                      name: str = "labels") -> int:
    """Every check an attack needs before its first step: images, model mode/device/dtype, labels of
    shape (B,) with integer classes the model has, and (quantize=True) inputs on the 8-bit grid.
    Returns the number of classes."""
    check_images(inputs)
    check_model(model, inputs)
    check_labels(labels, inputs.shape[0], name=name)
    if labels.device != inputs.device:
        raise ValidationError(f"{name} are on {labels.device} but inputs are on {inputs.device}")
    classes = num_classes_of(model, inputs)
    check_labels(labels, inputs.shape[0], classes, name=name)
    if quantize:
        from .ops.quantize import check_on_grid
        check_on_grid(inputs)
    return classes

"""Interpretability of adversarial perturbations (Xu et al., "Structured Adversarial Attack", ICLR 2019,
Sec. 6 and Appendix E; equation numbers refer to that paper).

- ASM, the adversarial saliency map of Papernot et al. (2016b), at the natural image x0 with true
  label t0 and target t, for every entry i of x0 (gradients of the logits Z):

      ASM(x0, t)[i] = 0                                  if dZ_t/dx_i < 0 or dZ_t0/dx_i > 0      (61)
                      (dZ_t/dx_i) |dZ_t0/dx_i|           otherwise

  (61) is the paper's ImageNet form; (60) has sum_{j != t} dZ_j/dx_i in place of dZ_t0/dx_i
  (`others="all"`). `adversarial_saliency_map` then sums over the channels: a (B, H, W) map.
- CAM, the class activation map of Zhou et al. (CVPR 2016) of class c: M_c(x, y) = sum_k w_{c,k} f_k(x, y),
  f_k the last convolutional feature maps and w_c the final linear layer's row of c, upsampled
  bilinearly to the input size (`class_activation_map`). Exact for a head "global average pooling ->
  one linear layer": the logit is Z_c = mean_{x,y} M_c(x, y) + b_c.
- IS, the interpretability score (23) of a perturbation delta given a saliency map S (ASM, or the CAM
  of the true label as in Sec. 6):

      IS(delta) = ||B_nu o delta||_2 / ||delta||_2,   B_nu[i] = 1 if S[i] > nu else 0            (23)

  with nu the given percentile of the image's own saliency scores (Fig. 3a: the 30th to the 90th;
  Fig. 3b: the 90th), so a larger nu is a smaller mask (`interpretability_score`, `is_curve`).

Everything is batched, runs on the inputs' device and returns detached tensors.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import (ValidationError, ValidationTypeError, check_attack_call, check_images, check_labels,
                          check_model, check_targets_differ)

__all__ = ["adversarial_saliency_map", "class_activation_map", "interpretability_score", "is_curve",
           "DEFAULT_IS_PERCENTILES"]

# Fig. 3a's abscissa: nu from the 30th to the 90th percentile of the ASM scores.
DEFAULT_IS_PERCENTILES = (30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0)

_ASM_OTHERS = ("true", "all")
_ASM_REDUCE = ("sum", "max", "none")


# --------------------------------------------------------------------------------------------- checks

def _check_tensor(x, name: str) -> None:
    if not isinstance(x, Tensor):
        raise ValidationTypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValidationTypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.numel() and not torch.isfinite(x).all():
        raise ValidationError(f"{name} contains NaN or infinite values")


def _check_delta(delta, *, like: Tensor | None = None) -> None:
    _check_tensor(delta, "delta")
    if delta.dim() != 4:
        raise ValidationError(f"delta must have shape (batch, channels, height, width), got shape "
                              f"{tuple(delta.shape)}")
    if delta.shape[0] == 0:
        raise ValidationError("delta is an empty batch")
    if like is not None:
        if delta.shape != like.shape:
            raise ValidationError(f"delta must have the inputs' shape {tuple(like.shape)}, got {tuple(delta.shape)}")
        if delta.device != like.device:
            raise ValidationError(f"delta is on {delta.device} but inputs are on {like.device}")


def _check_saliency(saliency, delta: Tensor) -> None:
    _check_tensor(saliency, "saliency")
    b, c, h, w = delta.shape
    if tuple(saliency.shape) not in ((b, h, w), (b, c, h, w)):
        raise ValidationError(f"saliency must have shape (batch, height, width) = {(b, h, w)} (one score per "
                              f"pixel) or delta's shape {(b, c, h, w)} (one per entry), got "
                              f"{tuple(saliency.shape)}")
    if saliency.device != delta.device:
        raise ValidationError(f"saliency is on {saliency.device} but delta is on {delta.device}")


def _percentile_list(nu, *, name: str = "nu") -> tuple[list[float], bool]:
    """nu as a list of floats in [0, 100], and whether it was a scalar."""
    scalar = isinstance(nu, Real) or (isinstance(nu, Tensor) and nu.dim() == 0)
    if isinstance(nu, (bool, str)) or (scalar and isinstance(nu, Tensor) and nu.dtype == torch.bool):
        raise ValidationTypeError(f"{name} must be a percentile (float in [0, 100]) or a sequence of them, "
                                  f"got {type(nu).__name__}")
    if scalar:
        values = [nu]
    else:
        try:
            values = list(nu.flatten().tolist() if isinstance(nu, Tensor) else nu)
        except TypeError:
            raise ValidationTypeError(f"{name} must be a percentile (float in [0, 100]) or a sequence of them, "
                                      f"got {type(nu).__name__}") from None
        if not values:
            raise ValidationError(f"{name} is an empty sequence of percentiles")
    out = []
    for v in values:
        if isinstance(v, Tensor) and v.dim() == 0:
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, Real):
            raise ValidationTypeError(f"{name} must hold real percentiles, got {type(v).__name__}")
        v = float(v)
        if not 0.0 <= v <= 100.0:  # also refuses NaN
            raise ValidationError(f"{name} is a percentile of the saliency scores and must lie in [0, 100] "
                                  f"(e.g. 90 for the 90th percentile), got {v}")
        out.append(v)
    return out, scalar


def _percentiles(scores: Tensor, q: Sequence[float]) -> Tensor:
    """Per-row percentiles q (in [0, 100]) of scores (B, N) with linear interpolation between the
    closest ranks (numpy's default `percentile`): (B, len(q))."""
    srt = scores.sort(dim=1).values
    n = scores.shape[1]
    pos = torch.tensor(q, dtype=torch.float64) / 100.0 * (n - 1)
    lo = pos.floor().long().clamp_(0, n - 1)
    hi = pos.ceil().long().clamp_(0, n - 1)
    frac = (pos - lo.double()).to(scores.dtype).to(scores.device)
    a, b = srt[:, lo.to(scores.device)], srt[:, hi.to(scores.device)]
    return torch.where(b > a, a + (b - a) * frac, a)


# ----------------------------------------------------------------------------------------------- ASM

def adversarial_saliency_map(model: nn.Module, inputs: Tensor, delta: Tensor | None, labels: Tensor,
                             targets: Tensor, *, others: str = "true", reduce: str = "sum") -> Tensor:
    """The adversarial saliency map ASM(x0, t) of Appendix E, (61) (or (60)), per pixel.

    Parameters
    ----------
    model : nn.Module
        The classifier ([0, 1] images -> logits Z), in eval mode. The per-example gradients are taken
        by back-propagating the batch's summed logits, so examples must not interact (eval mode).
    inputs : Tensor
        Natural images x0 (B, C, H, W) in [0, 1]; the gradients are evaluated here (Sec. 6: ASM(x0, t)).
    delta : Tensor or None
        The perturbation being explained (B, C, H, W), or None. (61) does not depend on it: it is only
        checked against `inputs` (shape, device), so that a caller can pass an attack's pair as it is.
    labels : Tensor
        True classes t0 (B,) int64; used by (61) (`others="true"`), checked only with `others="all"`.
    targets : Tensor
        Target classes t (B,) int64, each different from its label.
    others : {'true', 'all'}, default 'true'
        'true': (61), the paper's ImageNet form, with dZ_t0/dx_i; 'all': (60), Papernot et al.'s form,
        with sum_{j != t} dZ_j/dx_i (one extra backward pass of sum_j Z_j - Z_t, as cheap as (61)).
    reduce : {'sum', 'max', 'none'}, default 'sum'
        How the per-entry scores of (61) (d = C*H*W of them, all >= 0) become per-pixel scores:
        their sum over the channels (default) or maximum, or 'none' to keep (B, C, H, W).

    Returns
    -------
    Tensor
        Non-negative scores (B, H, W) (with reduce='none': (B, C, H, W)), detached, on the inputs'
        device and dtype; larger means the entry promotes t and suppresses t0 more.

    Notes
    -----
    Choices the paper leaves open:

    - Channels: (61) is defined per entry of x in R^d; the paper shows ASM as a per-pixel heat map
      (Fig. 3b) without saying how the channels combine. We apply (61) per entry and then sum over
      the channels. `interpretability_score` accepts either a per-pixel or a per-entry map.
    - A score exactly at the border (dZ_t/dx_i = 0 or dZ_t0/dx_i = 0) is the product, i.e. 0.
    """
    check_images(inputs)
    if delta is not None:
        _check_delta(delta, like=inputs)
    if others not in _ASM_OTHERS:
        raise ValidationError(f"others must be 'true' ((61), dZ_t0/dx) or 'all' ((60), sum over j != t), "
                              f"got {others!r}")
    if reduce not in _ASM_REDUCE:
        raise ValidationError(f"reduce must be 'sum', 'max' or 'none', got {reduce!r}")
    classes = check_attack_call(model, inputs, labels)
    check_labels(targets, inputs.shape[0], classes, name="targets")
    if targets.device != inputs.device:
        raise ValidationError(f"targets are on {targets.device} but inputs are on {inputs.device}")
    check_targets_differ(labels, targets)

    rows = torch.arange(inputs.shape[0], device=inputs.device)
    with torch.enable_grad():
        x = inputs.detach().clone().requires_grad_(True)
        logits = model(x)
        z_t = logits[rows, targets]
        grad_t, = torch.autograd.grad(z_t.sum(), x, retain_graph=True)
        z_o = logits[rows, labels] if others == "true" else logits.sum(1) - z_t
        grad_o, = torch.autograd.grad(z_o.sum(), x)
    asm = torch.where((grad_t < 0) | (grad_o > 0), torch.zeros_like(grad_t), grad_t * grad_o.abs())
    if reduce == "sum":
        asm = asm.sum(1)
    elif reduce == "max":
        asm = asm.amax(1)
    return asm.detach()


# ----------------------------------------------------------------------------------------------- CAM

def _unwrap(model: nn.Module) -> nn.Module:
    """The network inside the repo's logit-preserving wrappers (`eval.CountingModel`, `models.Normalized`)."""
    from ..eval.counting import CountingModel
    from ..models.wrappers import Normalized

    net = model
    while isinstance(net, (CountingModel, Normalized)):
        net = net.model if isinstance(net, CountingModel) else net.net
    return net


class _Head:
    """Where the CAM's ingredients come from: the feature maps f (from a hooked module's input or
    output, or a callable on the images, then `post`) and the final linear layer."""

    def __init__(self, module: nn.Module | None = None, port: str = "output",
                 post: Callable[[Tensor], Tensor] | None = None,
                 call: Callable[[Tensor], Tensor] | None = None, linear: nn.Linear | None = None):
        self.module, self.port, self.post, self.call, self.linear = module, port, post, call, linear


def _is_global_pool(m: nn.Module) -> bool:
    size = getattr(m, "output_size", None)
    return isinstance(m, nn.AdaptiveAvgPool2d) and size in (1, (1, 1), [1, 1])


def _detect_head(net: nn.Module) -> _Head | None:
    """The repo's EfficientNet-Lite (features = relu6 of `_bn1`'s output, linear `_fc`), or an
    nn.Sequential ending in AdaptiveAvgPool2d(1) -> Flatten -> [Dropout / Identity ...] -> Linear
    (features = the pool's input). None for anything else."""
    from ..models.efficientnet_lite import EfficientNetLite

    if isinstance(net, EfficientNetLite):
        # forward: x = relu6(_bn1(_conv_head(x))); avg-pool; _fc(dropout(.)) -- the relu6 is functional.
        return _Head(net._bn1, "output", F.relu6, linear=net._fc)
    if isinstance(net, nn.Sequential) and len(net) >= 3:
        mods = list(net)
        if not isinstance(mods[-1], nn.Linear):
            return None
        i = len(mods) - 2
        while i >= 0 and isinstance(mods[i], (nn.Dropout, nn.Identity)):
            i -= 1
        if i < 1 or not isinstance(mods[i], nn.Flatten) or mods[i].start_dim != 1 or not _is_global_pool(mods[i - 1]):
            return None
        return _Head(mods[i - 1], "input", linear=mods[-1])
    return None


def _no_head_error(net: nn.Module, missing: str) -> ValidationError:
    return ValidationError(
        f"cannot compute a CAM for {type(net).__name__}: no global-average-pool + linear head was detected "
        f"(CAM is defined only for networks whose last feature maps are globally average-pooled into one "
        f"linear layer; auto-detected: EfficientNet-Lite and nn.Sequential(..., AdaptiveAvgPool2d(1), "
        f"Flatten(), Linear)); pass {missing}")


def _resolve_head(model: nn.Module, features, classifier) -> _Head:
    net = _unwrap(model)
    detected = _detect_head(net)
    head = _Head()
    if features is None:
        if detected is None:
            raise _no_head_error(net, "features= (the last feature maps) and classifier= (the final nn.Linear)")
        head.module, head.port, head.post = detected.module, detected.port, detected.post
    elif isinstance(features, nn.Module) and hasattr(model, "modules") and any(m is features for m in model.modules()):
        head.module, head.port = features, "output"
    elif callable(features):
        head.call = features
    else:
        raise ValidationTypeError(f"features must be a submodule of the model (hooked), or a callable "
                                  f"mapping images to feature maps, got {type(features).__name__}")
    if classifier is None:
        if detected is None:
            raise _no_head_error(net, "classifier= (the final nn.Linear) with features=")
        head.linear = detected.linear
    elif isinstance(classifier, nn.Linear):
        head.linear = classifier
    else:
        raise ValidationTypeError(f"classifier must be an nn.Linear (the layer after global average pooling), "
                                  f"got {type(classifier).__name__}")
    return head


def _feature_maps(model: nn.Module, head: _Head, inputs: Tensor, need_logits: bool) -> tuple[Tensor, Tensor | None]:
    if head.call is not None:
        maps = head.call(inputs)
        return maps, (model(inputs) if need_logits else None)
    captured: list[Tensor] = []

    def hook(module, args, output):
        captured.append(args[0] if head.port == "input" else output)

    handle = head.module.register_forward_hook(hook)
    try:
        logits = model(inputs)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValidationError(f"the feature module {type(head.module).__name__} ran {len(captured)} times in the "
                              "model's forward pass; it must run exactly once to give the feature maps")
    maps = captured[0]
    return (head.post(maps) if head.post is not None else maps), logits


def class_activation_map(model: nn.Module, inputs: Tensor, classes: Tensor, *, features=None,
                         classifier: nn.Linear | None = None, upsample: bool = True, verify: bool = True) -> Tensor:
    """Class activation maps M_c(x, y) = sum_k w_{c,k} f_k(x, y) (Zhou et al., CVPR 2016), as used in
    Sec. 6 and Appendix E (Figs. 3c, 4, A2b), for one class per image.

    Parameters
    ----------
    model : nn.Module
        The classifier ([0, 1] images -> logits), in eval mode. The repo's EfficientNet-Lite (also
        inside `models.Normalized` and `eval.CountingModel`) and an nn.Sequential ending in
        AdaptiveAvgPool2d(1) -> Flatten -> [Dropout] -> Linear are detected: f is then the
        EfficientNet's final activation relu6(_bn1(_conv_head(.))) (the pool's input for the
        Sequential) and w the final linear layer's weights.
    inputs : Tensor
        Images (B, C, H, W) in [0, 1].
    classes : Tensor
        The class c of each map (B,) int64 (e.g. the true label t0 for Sec. 6's CAM-based IS).
    features : nn.Module or callable, optional
        For any other model: the last convolutional feature maps f (B, K, h, w). A submodule of
        `model` is hooked (its output during `model(inputs)`); any other callable is called on the
        [0, 1] images. Default: detected.
    classifier : nn.Linear, optional
        For any other model: the final linear layer applied to the globally average-pooled f,
        with K inputs. Default: detected.
    upsample : bool, default True
        Resize the maps bilinearly (align_corners=False) to the input size (H, W), as Zhou et al. do;
        False returns them at the feature resolution (h, w).
    verify : bool, default True
        Check that mean_{x,y} M_c + b_c equals the model's logit Z_c (relative tolerance
        10 sqrt(eps) of the dtype, relative to sum_k |w_{c,k}| mean|f_k| + |b_c|) and raise otherwise:
        this catches features / classifier that are not the model's head.

    Returns
    -------
    Tensor
        The maps (B, H, W) (with upsample=False: (B, h, w)), detached, without the bias b_c and
        without normalization (raw logit evidence per position; normalize for display).

    Raises
    ------
    ValidationError
        If no global-average-pool + linear head is detected and `features` / `classifier` are not
        given (e.g. the C&W nets, which flatten into fully connected layers), or if `verify` fails.

    Notes
    -----
    The CAM is exact for a head "global average pooling -> one linear layer": at the feature
    resolution Z_c(x) = (1 / hw) sum_{x,y} M_c(x, y) + b_c. Upsampling (for overlays on the image,
    and for an IS (23) with the CAM as saliency, as in Sec. 6) is the only approximation.
    """
    check_images(inputs)
    check_model(model, inputs)
    head = _resolve_head(model, features, classifier)
    linear = head.linear
    b = inputs.shape[0]
    check_labels(classes, b, linear.out_features, name="classes")
    if classes.device != inputs.device:
        raise ValidationError(f"classes are on {classes.device} but inputs are on {inputs.device}")
    with torch.no_grad():
        maps, logits = _feature_maps(model, head, inputs, verify)
        if not isinstance(maps, Tensor) or maps.dim() != 4 or maps.shape[0] != b:
            raise ValidationError(f"the feature maps must have shape (batch={b}, K, h, w), got "
                                  f"{tuple(getattr(maps, 'shape', ()))}")
        if maps.shape[1] != linear.in_features:
            raise ValidationError(f"the feature maps have K={maps.shape[1]} channels but the classifier takes "
                                  f"{linear.in_features} inputs")
        weight = linear.weight[classes].to(maps.dtype)  # (B, K)
        cam = torch.einsum("bk,bkhw->bhw", weight, maps)
        if verify:
            _verify_cam(cam, maps, weight, linear, classes, logits)
        if upsample and tuple(cam.shape[-2:]) != tuple(inputs.shape[-2:]):
            cam = F.interpolate(cam[:, None], size=tuple(inputs.shape[-2:]), mode="bilinear",
                                align_corners=False)[:, 0]
    return cam.detach()


def _verify_cam(cam: Tensor, maps: Tensor, weight: Tensor, linear: nn.Linear, classes: Tensor,
                logits: Tensor) -> None:
    b = cam.shape[0]
    if not isinstance(logits, Tensor) or logits.shape != (b, linear.out_features):
        raise ValidationError(f"the model's logits have shape {tuple(getattr(logits, 'shape', ()))} but the "
                              f"classifier has {linear.out_features} outputs: it is not the model's final layer")
    bias = linear.bias[classes].to(cam.dtype) if linear.bias is not None else torch.zeros_like(cam[:, 0, 0])
    rebuilt = cam.mean((1, 2)) + bias
    logit = logits[torch.arange(b, device=logits.device), classes].to(cam.dtype)
    scale = (weight.abs() * maps.abs().mean((2, 3))).sum(1) + bias.abs()
    tol = 10 * math.sqrt(torch.finfo(cam.dtype).eps) * scale + torch.finfo(cam.dtype).tiny
    gap = (rebuilt - logit).abs()
    bad = (gap > tol).nonzero().flatten()
    if bad.numel():
        i = bad[0].item()
        raise ValidationError(
            f"the CAM does not rebuild the model's logit (example {i}, class {classes[i].item()}: mean CAM + bias "
            f"= {rebuilt[i].item():.6g}, logit = {logit[i].item():.6g}): features / classifier are not a "
            "global-average-pool + linear head of this model (verify=False skips this check)")


# ------------------------------------------------------------------------------------------------ IS

def interpretability_score(delta: Tensor, saliency: Tensor, nu: float | Sequence[float]) -> Tensor:
    """The interpretability score IS(delta) = ||B_nu o delta||_2 / ||delta||_2 of (23).

    Parameters
    ----------
    delta : Tensor
        Perturbations (B, C, H, W) (adversarial minus natural images).
    saliency : Tensor
        Saliency scores S, one per pixel (B, H, W) (`adversarial_saliency_map`, or
        `class_activation_map` of the true label, Sec. 6) or one per entry (B, C, H, W). A per-pixel
        mask covers all channels of its pixel.
    nu : float or sequence of float
        Percentile(s) in [0, 100] of each image's own saliency scores: B_nu[i] = 1 iff S[i] is
        strictly above that percentile (linear interpolation between ranks, numpy's default). 90 keeps
        about the 10 % most salient pixels (Fig. 3b); a larger nu is a smaller mask and a lower IS.

    Returns
    -------
    Tensor
        IS in [0, 1], (B,) for a scalar nu, (B, len(nu)) for a sequence; NaN for a zero perturbation
        (0 / 0: nothing to interpret; average with `nanmean`). On delta's device, detached.

    Notes
    -----
    - (23) is a ratio of l2 norms, so IS^2 is the fraction of the perturbation's energy ||delta||_2^2
      inside the mask (half the energy inside: IS = sqrt(1/2)).
    - The mask is B[i] = 1 if S[i] > nu as in Sec. 6 (strict), with nu the percentile value: entries
      tied at the threshold are outside, so the many exact zeros of (61) never enter the mask, nu = 0
      leaves out the least salient entries, and nu = 100 gives an empty mask (IS = 0). A constant
      saliency map gives an empty mask at every nu.
    """
    nus, scalar = _percentile_list(nu)
    _check_delta(delta)
    _check_saliency(saliency, delta)
    with torch.no_grad():
        sq = delta.detach().pow(2)
        energy = (sq.sum(1) if saliency.dim() == 3 else sq).flatten(1)  # (B, N), matching the scores
        scores = saliency.detach().flatten(1)
        total = energy.sum(1)
        thresholds = _percentiles(scores, nus)  # (B, K)
        inside = torch.stack([torch.where(scores > thresholds[:, k:k + 1], energy, torch.zeros_like(energy)).sum(1)
                              for k in range(len(nus))], 1)
        ratio = (inside / total.clamp_min(torch.finfo(total.dtype).tiny)[:, None]).clamp(0, 1).sqrt()
        ratio = torch.where(total[:, None] > 0, ratio, torch.full_like(ratio, float("nan")))
    return ratio[:, 0] if scalar else ratio


def is_curve(delta: Tensor, saliency: Tensor,
             nus: Sequence[float] = DEFAULT_IS_PERCENTILES) -> tuple[Tensor, Tensor]:
    """IS (23) against the percentile nu, Fig. 3a's curve.

    Parameters
    ----------
    delta, saliency : Tensor
        As in `interpretability_score`.
    nus : sequence of float, default (30, 40, ..., 90)
        Percentiles in [0, 100] (Fig. 3a: the 30th to the 90th percentile of the ASM scores).

    Returns
    -------
    tuple of Tensor
        (nus (K,), scores (B, K)) on delta's device; Fig. 3a plots `scores.nanmean(0)` against nus.
    """
    values, scalar = _percentile_list(nus, name="nus")
    if scalar:
        raise ValidationTypeError("nus must be a sequence of percentiles (use interpretability_score for one)")
    scores = interpretability_score(delta, saliency, values)
    return torch.tensor(values, dtype=scores.dtype, device=scores.device), scores

"""Running one attack on a batch and measuring it: the rich result layer over the functional core.

`run_attack` validates the inputs (images, labels, targets, the model's mode, device and dtype, and
every parameter against the attack's signature), counts model gradient evaluations and seconds,
and re-checks every success with an independent forward pass of the original model on the output
the user receives: with `quantize=True` (the default) the 8-bit image, exactly as saved in a PNG,
else the clipped float image. `success` is that verdict; `float_success` is the attack's float
output before the 8-bit finish (they differ only where quantization cost a success the finish
could not repair; see `ops.quantize`).
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from ..ops.losses import is_adversarial
from ..ops.quantize import check_on_grid, finish, on_grid
from ..validation import check_attack_call, check_labels, check_targets_differ, ValidationError
from .config import jsonable
from .counting import CountingModel
from .metrics import perturbation_norms


@dataclass
class AttackResult:
    """Adversarial examples of one batch with their verified success and distortion."""
    method: str
    inputs: Tensor
    adv: Tensor
    labels: Tensor
    targets: Tensor | None
    success: Tensor          # (B,) bool, from an independent forward pass on adv (8-bit if quantized)
    adv_pred: Tensor         # (B,) predicted class of adv
    norms: dict[str, Tensor]  # l0, l0_pixels, l1, l2, linf (and groups) per example
    gradients: int           # model gradient evaluations (per-sample backward passes), whole batch
    forwards: int            # per-sample forward passes, whole batch
    seconds: float
    params: dict = field(default_factory=dict)   # every parameter of the run, defaults filled in
    quantized: bool = True                        # adv is on the 8-bit grid
    float_success: Tensor | None = None           # (B,) success of the float output before the finish

    @property
    def targeted(self) -> bool:
        return self.targets is not None

    @property
    def delta(self) -> Tensor:
        return self.adv - self.inputs

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def success_rate(self) -> float:
        return self.success.float().mean().item()

    def records(self, ids: list | None = None) -> list[dict]:
        """One JSON-ready dict per (image, target) pair: the record schema of every JSONL this
        package writes (`eval.evaluate` adds the run's `config` and `config_hash`). Keys: image (its
        index in the dataset, `ids`), method, label, target (None: untargeted), success (8-bit when
        quantized), adv_pred, quantized, float_success, the norms of `eval.metrics.perturbation_norms`,
        gradients, forwards, seconds. Gradient counts and seconds are the batch's totals divided
        evenly (examples advance together in one batch)."""
        n = len(self)
        ids = list(range(n)) if ids is None else ids
        out = []
        for i in range(n):
            rec = {"image": ids[i], "method": self.method, "label": int(self.labels[i]),
                   "target": None if self.targets is None else int(self.targets[i]),
                   "success": bool(self.success[i]), "adv_pred": int(self.adv_pred[i]),
                   "quantized": self.quantized,
                   "float_success": bool(self.success[i] if self.float_success is None else self.float_success[i])}
            rec.update({k: float(v[i]) for k, v in self.norms.items()})
            rec.update({"gradients": self.gradients / n, "forwards": self.forwards / n,
                        "seconds": self.seconds / n})
            out.append(rec)
        return out

    def summary(self) -> str:
        ok = self.success
        parts = [f"{self.method}: success {int(ok.sum())}/{len(self)}" + (" (8-bit)" if self.quantized else " (float)")]
        if self.float_success is not None and not torch.equal(self.float_success, ok):
            parts.append(f"float success {int(self.float_success.sum())}/{len(self)}")
        if ok.any():
            parts += [f"{k}={self.norms[k][ok].float().mean().item():.4g}" for k in self.norms]
        parts.append(f"grads/pair={self.gradients / len(self):.0f} s/pair={self.seconds / len(self):.3g}")
        return "  ".join(parts)


def _resolve(method: str | Callable, params: dict) -> tuple[str, Callable, dict, dict]:
    """(name, function, keyword arguments to call it with, every parameter of the run)."""
    from ..attacks import RESERVED, function_parameters, get
    from ..attacks._renames import translate
    if callable(method):
        own, var_kw = function_parameters(method)
        unknown = sorted(set(params) - set(own))
        if unknown and not var_kw:
            raise ValidationError(f"attack function {getattr(method, '__name__', method)!r} takes no parameter "
                             f"{', '.join(map(repr, unknown))}")
        reserved = sorted(set(params) & set(RESERVED))
        if reserved:
            raise ValidationError(f"{', '.join(reserved)} is set by run_attack's own argument, not as a parameter")
        resolved = {k: v for k, v in {**own, **params}.items() if k not in RESERVED}
        return getattr(method, "__name__", "custom"), method, dict(params), resolved
    spec = get(method)
    params = translate(spec.name, spec.renamed(), params, stacklevel=4)  # 0.1 names, warned once here
    resolved = spec.resolve(params)
    return spec.name, spec.fn, {**spec.defaults, **params}, resolved


def _as_long(labels):
    """Any integer class tensor as int64 (the attacks' functional core takes int64 only)."""
    if isinstance(labels, Tensor) and labels.dtype in (torch.int32, torch.int16, torch.uint8, torch.int8):
        return labels.long()
    return labels


def run_attack(method: str | Callable, model: nn.Module, inputs: Tensor, labels: Tensor, *,
               targets: Tensor | None = None, count_groups: Tensor | None = None, quantize: bool = True,
               **params) -> AttackResult:
    """Attack `inputs` (true classes `labels`) toward `targets` (targeted) or away from `labels`.

    method: a registered name (see `sparseattack.attacks.available()`) or an attack function.
    count_groups: a segment map or window index (see `ops.groups`) for the nonzero-group count
    `groups` of the norms (measurement only; an attack's own `groups` parameter is in params).
    quantize (default True): the output is an 8-bit image (the attack's finish, `ops.quantize`)
    and success is judged on it; inputs must then be 8-bit images. False: float research mode.
    params: the attack's parameters; unknown ones are refused before anything runs.
    """
    name, fn, kwargs, resolved = _resolve(method, params)
    labels, targets = _as_long(labels), _as_long(targets)
    num_classes = check_attack_call(model, inputs, labels)
    if targets is not None:
        check_labels(targets, inputs.shape[0], num_classes, name="targets")
        if targets.device != inputs.device:
            raise ValidationError(f"targets are on {targets.device} but inputs are on {inputs.device}")
        check_targets_differ(labels, targets)
    if quantize:
        check_on_grid(inputs)
    goal = targets if targets is not None else labels
    takes_quantize = "quantize" in inspect.signature(fn).parameters
    counter = CountingModel(model)
    start = time.perf_counter()
    if takes_quantize:
        adv = fn(counter, inputs, goal, targeted=targets is not None, quantize=quantize, **kwargs)
    else:  # a user's function: the shared finish makes its output what the user receives
        adv = fn(counter, inputs, goal, targeted=targets is not None, **kwargs)
        if isinstance(adv, Tensor) and adv.shape == inputs.shape:
            adv = finish(counter, inputs, adv, goal, targeted=targets is not None, quantize=quantize)
    if inputs.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if not isinstance(adv, Tensor) or adv.shape != inputs.shape:
        raise RuntimeError(f"attack {name!r} returned {getattr(adv, 'shape', type(adv))}, "
                           f"expected a tensor of shape {tuple(inputs.shape)}")
    adv = adv.detach().to(inputs.dtype).clamp(0, 1)
    if quantize and not bool(on_grid(adv).all()):
        raise RuntimeError(f"attack {name!r} returned values off the 8-bit grid with quantize=True "
                           "(a bug in the attack: its last step must be ops.quantize.finish)")
    with torch.no_grad():
        logits = model(adv)
    pred = logits.argmax(1)
    success = is_adversarial(logits, targets if targets is not None else labels, targeted=targets is not None)
    float_success = counter.float_success
    if float_success is None or float_success.shape != success.shape:
        float_success = success.clone()
    return AttackResult(name, inputs, adv, labels, targets, success, pred,
                        perturbation_norms(adv - inputs, groups=count_groups),
                        counter.gradients, counter.forwards, seconds,
                        {k: jsonable(v) for k, v in resolved.items()}, quantize, float_success)


class _ProbeStop(Exception):
    """Raised by the probe model at the attack's first real step."""


class _ProbeModel(nn.Module):
    """Answers the gradient-free single-image passes attacks make while checking their arguments
    (the class count), and stops the attack at its first real step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() or x.shape[0] != 1:
            raise _ProbeStop
        return self.model(x)


def probe(method: str | Callable, model: nn.Module, inputs: Tensor, labels: Tensor, *,
          targets: Tensor | None = None, quantize: bool = True, **params) -> None:
    """Check a run's method, parameters and inputs without running it: resolves every parameter,
    then starts the attack on the first example and stops it at its first real step, so that its
    own argument checks run. Raises what the run would raise (ValueError / TypeError)."""
    _, fn, kwargs, _ = _resolve(method, params)
    x, goal = inputs[:1], (targets if targets is not None else labels)[:1]
    check_attack_call(model, x, labels[:1], quantize=quantize)
    extra = {"quantize": quantize} if "quantize" in inspect.signature(fn).parameters else {}
    try:
        fn(_ProbeModel(model), x, goal, targeted=targets is not None, **extra, **kwargs)
    except _ProbeStop:
        pass


__all__ = ["AttackResult", "run_attack", "probe", "is_adversarial"]

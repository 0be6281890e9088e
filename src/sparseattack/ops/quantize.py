"""The 8-bit grid, and the finish every attack ends with.

An adversarial example is published, shown and saved as an 8-bit image (PNG: values k/255). A
float perturbation that flips the prediction often stops doing so once rounded to that grid
(measured on SAPF at k = 80 on Fashion-MNIST: 58.9% of 180 float successes survived plain
rounding, benchmarks/results/quantization.md), so
success must be judged on the 8-bit image, and the attack must end on the grid.

`finish` is the last step of every attack (`sparseattack.attacks`):
1. clip to the [0, 1] box (and to an optional l_inf cap around the input);
2. with `quantize=True`, move every perturbed entry onto the 8-bit grid while keeping the
   constraints: entries the attack left unchanged stay exactly unchanged (so l0 never grows, and
   l0 <= k holds), every candidate stays in the box and inside the l_inf cap (the nearest grid
   points inside it) and, if given, the l2 cap. The candidates, per example:
   - nearest rounding of x + delta;
   - rounding toward x (never increases any |delta_i|, so it keeps every norm bound);
   - rounding away from x of x + s * delta for s in `scales` (1, 1.1, 1.25, 1.5, 2, 3): the same
     support and signs, a slightly larger step where rounding cost the margin;
   each is checked by one forward pass, and the successful candidate with the smallest l2 wins;
   a float success that no candidate keeps (measured: C&W-l2, whose minimal perturbations sit on
   the decision boundary) is repaired by greedy descent on the grid: from the nearest rounding,
   the 10% of the perturbed entries with the largest margin gradient move one grey level at a
   time (only perturbed entries, inside the caps; a row whose margin stops falling doubles that
   share), at most `repair_steps` (40) gradients;
3. an example without a successful candidate (float failure, or no grid candidate succeeds)
   is returned unchanged: on failure every attack returns its input.
Success here is the model's top-1 (`argmax`) class, the criterion of the evaluation layer; a
confidence margin kappa is an optimization target of the attacks, not part of success.

The grid needs the inputs on it: images from 8-bit files (all loaders of `sparseattack.data`) are.
`finish(quantize=True)` refuses inputs off the grid (`check_on_grid`): for such float research
inputs pass `quantize=False` (the output is then float, clipped and re-checked all the same).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .losses import is_adversarial
from ..validation import ValidationError

__all__ = ["LEVELS", "grid_values", "quantize", "on_grid", "check_on_grid", "finish", "DEFAULT_SCALES", "succeeds",
           "finish_candidate", "report_float_success", "SilentModel"]

LEVELS = 255
DEFAULT_SCALES = (1.0, 1.1, 1.25, 1.5, 2.0, 3.0)


_GRID_TABLES: dict = {}


def grid_values(steps: Tensor, levels: int = LEVELS) -> Tensor:
    """The grid points steps / levels of integer-valued `steps` (0..levels), bit-identical on every
    device: the values an 8-bit PNG loads back as (`data`: uint8 -> float, divided by 255 on the
    CPU). A plain `q / 255` differs on CUDA, which divides by a scalar as a multiplication by its
    reciprocal (one ulp off for some k): the saved file would then not be the tensor that was
    judged. A lookup in a table made on the CPU is exact everywhere."""
    key = (levels, steps.dtype, steps.device)
    table = _GRID_TABLES.get(key)
    if table is None:
        table = _GRID_TABLES[key] = (torch.arange(levels + 1, dtype=steps.dtype) / levels).to(steps.device)
    return table[steps.clamp(0, levels).long()]


def quantize(images: Tensor, levels: int = LEVELS) -> Tensor:
    """Nearest point of the 8-bit grid {0, 1/255, ..., 1} (what saving as a PNG keeps), with the
    CPU's values on every device (`grid_values`)."""
    return grid_values((images.clamp(0, 1) * levels).round(), levels)


def on_grid(images: Tensor, levels: int = LEVELS, tol: float = 1e-4) -> Tensor:
    """Per example: whether every value is a grid point k/levels (up to float rounding)."""
    scaled = images * levels
    return ((scaled - scaled.round()).abs() <= tol).flatten(1).all(1)


def check_on_grid(inputs: Tensor, *, name: str = "inputs", levels: int = LEVELS) -> None:
    """Refuse inputs off the 8-bit grid for a quantized attack, naming the fix."""
    bad = (~on_grid(inputs, levels)).nonzero().flatten()
    if bad.numel():
        raise ValidationError(
            f"{name} are not 8-bit images (values k/{levels}) for quantize=True: {bad.numel()} of "
            f"{inputs.shape[0]} are off the grid (first: index {bad[0].item()}). Pass quantize=False "
            f"for float inputs, or put them on the grid first with sparseattack.ops.quantize.quantize(x)")


def _view(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def succeeds(model: nn.Module, images: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    """Top-1 success per example (no gradients)."""
    with torch.no_grad():
        return is_adversarial(model(images), labels, targeted=targeted)


# Gradient budget of the grid repair per example that needs it: 40 repaired every SAPF float success
# of the 180 Fashion-MNIST pairs of benchmarks/quantization.py (20 left one of them unrepaired).
REPAIR_STEPS = 40


def finish(model: nn.Module, inputs: Tensor, adv: Tensor, labels: Tensor, *, targeted: bool,
           quantize: bool = True, linf_cap: float | Tensor | None = None,
           l2_cap: float | Tensor | None = None, levels: int = LEVELS,
           scales: tuple[float, ...] = DEFAULT_SCALES, repair_steps: int = REPAIR_STEPS) -> Tensor:
    """End an attack: the box, the caps, the 8-bit grid, success re-checked, failures unchanged.

    model, inputs, labels, targeted: as the attack's (labels are the targets when targeted).
    adv: the attack's float output. quantize (default True): put perturbed entries on the grid
    of `levels` (255) steps, keeping l0, the box, `linf_cap` and `l2_cap` (None: no cap; a float
    or a per-example (B,) tensor). scales: the outward-rounding step multipliers tried.
    repair_steps (default REPAIR_STEPS = 40; 0 for gradient-free and one-step attacks and inside eps/k searches,
    whose cost model it would change): for a float success that no rounding
    candidate keeps, at most this many greedy gradient steps on the grid (`_repair`).
    Returns a tensor shaped like `inputs`; examples that do not succeed are `inputs` unchanged.
    The cost is one forward pass of the batch (quantize=False), at most 3 + len(scales) with quantize,
    plus at most `repair_steps` gradient evaluations per example that needs the repair.
    A model with a `report_finish(float_success)` method (eval.CountingModel) is told which examples
    succeeded as floats, before quantization.
    """
    x = inputs.detach()
    adv = adv.detach().to(x.dtype)
    finite = torch.isfinite(adv).flatten(1).all(1)
    adv = torch.where(_view(finite, x), adv, x)
    lo, hi = torch.zeros_like(x), torch.ones_like(x)
    if linf_cap is not None:
        cap = linf_cap if not isinstance(linf_cap, Tensor) else _view(linf_cap.to(x), x)
        lo, hi = torch.maximum(lo, x - cap), torch.minimum(hi, x + cap)
    adv = torch.minimum(torch.maximum(adv, lo), hi)
    float_ok = finite & succeeds(model, adv, labels, targeted)
    report = getattr(model, "report_finish", None)
    if callable(report):  # eval.CountingModel keeps it: records report float and 8-bit success
        report(float_ok)
    if not quantize:
        return torch.where(_view(float_ok, x), adv, x)

    check_on_grid(x, levels=levels)
    delta = adv - x
    support = delta != 0
    # grid points inside the allowed interval [lo, hi] (both contain x, a grid point)
    g_lo, g_hi = grid_values(torch.ceil(lo * levels - 1e-6), levels), grid_values(torch.floor(hi * levels + 1e-6), levels)

    def on_support(values: Tensor) -> Tensor:
        return torch.where(support, torch.minimum(torch.maximum(values, g_lo), g_hi), x)

    scaled_x = lambda s: (x + s * delta) * levels  # noqa: E731
    candidates = [on_support(grid_values(torch.round(adv * levels), levels)),                  # nearest
                  on_support(grid_values(torch.where(delta > 0, torch.floor(adv * levels + 1e-6),
                                                     torch.ceil(adv * levels - 1e-6)), levels))]  # toward x
    candidates += [on_support(grid_values(torch.where(delta > 0, torch.ceil(scaled_x(s) - 1e-6),
                                                      torch.floor(scaled_x(s) + 1e-6)), levels))  # away from x
                   for s in scales]
    best = x.clone()
    best_norm = torch.full((x.shape[0],), float("inf"), dtype=x.dtype, device=x.device)
    l2_limit = None if l2_cap is None else (l2_cap.to(x) if isinstance(l2_cap, Tensor)
                                            else torch.full_like(best_norm, float(l2_cap)))
    for cand in candidates:
        norm = (cand - x).flatten(1).norm(dim=1)
        valid = finite & (norm > 0)
        if l2_limit is not None:
            valid &= norm <= l2_limit * (1 + 1e-6)
        rows = (valid & (norm < best_norm)).nonzero().flatten()
        if rows.numel() == 0:
            continue
        ok = succeeds(model, cand[rows], labels[rows], targeted)
        rows = rows[ok]
        best[rows], best_norm[rows] = cand[rows], norm[rows]
    rows = (float_ok & ~torch.isfinite(best_norm)).nonzero().flatten()
    if repair_steps > 0 and rows.numel():  # float successes no rounding kept: repair on the grid
        fixed, ok = _repair(model, x[rows], candidates[0][rows], support[rows], g_lo[rows], g_hi[rows],
                            labels[rows], targeted, repair_steps, levels,
                            None if l2_limit is None else l2_limit[rows])
        best[rows[ok]] = fixed[ok]
    return best


def _repair(model: nn.Module, x: Tensor, start: Tensor, support: Tensor, g_lo: Tensor, g_hi: Tensor,
            labels: Tensor, targeted: bool, steps: int, levels: int, l2_limit: Tensor | None,
            share: float = 0.1) -> tuple[Tensor, Tensor]:
    """Greedy descent on the 8-bit grid: from the nearest rounding, move the `share` (10%) of the
    support entries with the largest logit-margin gradient one grey level in its descent
    direction, inside [g_lo, g_hi], until the example succeeds (at most `steps` gradients each).
    A row whose margin did not fall at a step doubles its share (up to all its support): a greedy
    step of a few entries can undo the last one and cycle, as measured on 2 of 180 SAPF pairs on
    Fashion-MNIST that a fixed 10% never repaired. Only support entries move, so l0 and the caps
    hold; returns (images, success)."""
    from .projections import topk_mask
    from .losses import logit_margin

    q, out = start.clone(), x.clone()
    done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    size = support.flatten(1).sum(1).to(x.dtype)
    shares = torch.full_like(size, share)
    previous = torch.full_like(size, float("inf"))
    active = torch.arange(x.shape[0], device=x.device)
    for step in range(steps + 1):
        qa = q[active].detach().requires_grad_(step < steps)
        with torch.enable_grad():
            logits = model(qa)
        ok = is_adversarial(logits.detach(), labels[active], targeted=targeted)
        if l2_limit is not None:
            ok &= (qa.detach() - x[active]).flatten(1).norm(dim=1) <= l2_limit[active] * (1 + 1e-6)
        out[active[ok]], done[active[ok]] = qa.detach()[ok], True
        keep = ~ok
        if step == steps or not keep.any():
            break
        with torch.enable_grad():
            margin = logit_margin(logits, labels[active], targeted=targeted)
            grad, = torch.autograd.grad(margin[keep].sum(), qa)
        active, qa, grad, margin = active[keep], qa.detach()[keep], grad[keep], margin.detach()[keep]
        stuck = margin >= previous[active]
        shares[active] = torch.where(stuck, (2 * shares[active]).clamp(max=1.0), shares[active])
        previous[active] = margin
        direction = -grad.sign()
        lo, hi = g_lo[active], g_hi[active]
        movable = support[active] & (((direction > 0) & (qa < hi)) | ((direction < 0) & (qa > lo)))
        count = (size[active] * shares[active]).ceil().clamp_min(1).long()
        pick = topk_mask(torch.where(movable, grad.abs(), torch.full_like(grad, -1.0)), count).bool() & movable
        qa = grid_values(torch.round(qa * levels) + pick * direction, levels)
        q[active] = torch.minimum(torch.maximum(qa, lo), hi)
    return out, done


# --- searches (over eps, over k) that finish many candidates and return one ----------------------

class SilentModel:
    """Calls `model` and keeps the float success `ops.quantize.finish` reports instead of passing it
    on, for searches (over eps, over k) that finish many candidates and report once, for what they
    return (`report_float_success`)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.float_success: Tensor | None = None

    def __call__(self, images: Tensor) -> Tensor:
        return self.model(images)

    def report_finish(self, float_success: Tensor) -> None:
        self.float_success = float_success


def finish_candidate(model: nn.Module, inputs: Tensor, adv: Tensor, labels: Tensor, *, targeted: bool,
                      quantize: bool, inputs_adversarial: Tensor,
                      **caps: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """One candidate of a search (over eps or k) through `ops.quantize.finish`, judged on what the
    search would return: (finished output, its success, the float success). A candidate succeeds
    when its float image (clipped to the box and `caps`, per-example (B,) tensors) succeeds and,
    with `quantize`, its 8-bit finish does too; an unchanged output is judged as the input
    (`inputs_adversarial`). Only float successes are finished on the grid: the finish costs up to
    len(scales) + 3 forward passes, a float check one (most candidates of a search fail)."""
    caps = {key: cap for key, cap in caps.items() if cap is not None}
    quiet = SilentModel(model)
    out = finish(quiet, inputs, adv, labels, targeted=targeted, quantize=False, **caps)
    changed = (out != inputs).flatten(1).any(1)
    float_ok = changed | inputs_adversarial if quiet.float_success is None else quiet.float_success
    if quantize:
        rows = (changed & float_ok).nonzero().flatten()
        out = inputs.clone()
        if rows.numel():
            # no grid repair inside a search: a candidate that rounding breaks fails at this eps / k,
            # and the search goes on to the next one (the FGM scan stays one gradient per example)
            out[rows] = finish(quiet, inputs[rows], adv[rows], labels[rows], targeted=targeted, quantize=True,
                               repair_steps=0, **{key: cap[rows] for key, cap in caps.items()})
        changed = (out != inputs).flatten(1).any(1)
    return out, changed | inputs_adversarial, float_ok


def report_float_success(model: nn.Module, float_success: Tensor) -> None:
    """Tell the model (eval.CountingModel) the float success of a search's result, as
    `ops.quantize.finish` does for one candidate."""
    report = getattr(model, "report_finish", None)
    if callable(report):
        report(float_success)

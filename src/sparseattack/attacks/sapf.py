"""SAPF: sparse adversarial attack via perturbation factorization (Fan et al., ECCV 2020).

The perturbation is factorized as eps = delta * G (Eq. 2) with G binary and 1^T G = k, and

    min_{delta, G}  ||w * delta * G||^2 + lambda_1 * L(f(x + delta * G), t)
    s.t. 1^T G = k,  G in {0, 1}^N                                             (Eq. 3; w = 1)

is solved by Algorithm 1: starting from G = 1, delta = 0, alternate
  Step 1   gradient steps on delta (Eq. 7), and
  Step 2   an lp-box ADMM on G (Eq. 8-15): G in {0,1}^N <=> G in S_b (box) and S_p (l2-sphere,
           Eq. 4), split as G = Y1 = Y2; Y1 by the box projection (Eq. 11), Y2 by the sphere
           projection (Eq. 13), a gradient step on G (Eq. 14), then the dual updates.
lambda_1 is searched per pair (Sec. 4.1): bounds [0, 100], x10 until a first success, then
bisection, keeping each pair's successful result of smallest l2.

Choices where the paper is vague or inexact (documented and tested):
- Dual update. Eq. (15) prints Z <- Z + rho (G - Z); ADMM (and the authors' code) use
  Z1 <- Z1 + rho1 (G - Y1), Z2 <- Z2 + rho2 (G - Y2), which is what we do.
- One ADMM iteration = Y1, Y2 updates, one G gradient step, dual updates, then rho <- 1.01 rho;
  "2000 G steps" are 2000 such iterations. As in the authors' code, the duals restart from
  Y = 1, Z = 0 at each Step 2 while rho and the step sizes carry over between iterations.
- The cardinality penalty. With rho3 up to 100 the term rho3/2 (1^T G - k)^2 has curvature
  rho3 * N along 1, so the gradient step (14) with step 0.1 diverges (we observed G's sum
  oscillating by thousands). The authors' code caps this penalty at 0.01 and gives the cap of
  100 to a group-sparsity split; we cap it at 0.01 too (rho_max = (20, 10, 0.01)) and, for
  large N, also bound the G step by 1 / (rho1 + rho2 + rho3 * N), the inverse Lipschitz
  constant of the penalty terms, so the iteration is stable at any image size.
- Exact sparsity. The final support is exactly the top-k entries of G (thresholding G > 0.5
  does not guarantee 1^T G = k), then delta is refined by Eq. (7) on that fixed support, so
  l0 <= k holds for every output.
- The [0, 1] range: delta is projected onto [-x, 1 - x] (intersected with [-eps, eps] if an
  l_inf cap is given) after each step, so x + delta * G stays in the box for G in [0, 1]; the
  forward pass also clips, as the paper states.
- Granularity 'element' (the paper: k counts the N = w*h*c entries) or 'pixel' (one G per
  spatial position shared by its channels; k counts pixels).
- Step sizes: the paper's plain gradient descent with step 0.1 decayed x0.9 every 50 steps
  (floored at 0.001, as the authors' code), continuing across outer iterations.

SAPF-GS (Eq. 16) adds lambda_2 * sum_i ||G^i||_2 over groups (SLIC superpixels by default). The
paper says to add its gradient to Eq. (14); that gradient, lambda_2 G^i / ||G^i||, never makes a
group exactly zero and in our measurements did not concentrate the support at all. We handle the
term as the authors' code does, by one more ADMM split G = Y3 whose update is the group
soft-thresholding prox (rho_group from 5e-3 growing to 100: the "100" of the paper's rho caps).
That alone still left the final top-k of G spread over as many groups as lambda_2 = 0 (measured),
because the top-k step ignores groups; so SAPF-GS also picks its final support group-aware: whole
groups in decreasing order of their mean G, then the largest entries of the last group
(`ops.groups.group_topk_mask`), which keeps exactly k entries and realizes the sum_i ||G^i|| term's
intent of few, fully used groups.
SAPF-VI (Eq. 17) weights the distortion by w (Sec. 4.3 strategies).

The "fast" preset (default) aims at the paper preset's success rate and l2 with a small fraction
of its model gradient evaluations (benchmarks/sapf.py measures both): 3 outer iterations of 100
Adam steps on delta (step 0.1 decayed x0.9 every 20 steps) and 200 ADMM iterations on G with rho
growing x1.05 per iteration (rho nears its caps by the end of each Step 2 instead of after ~1000
iterations), 500 refinement steps, C&W's abort-early rule per pair, each search step warm-started
from the previous one's G and delta, and lambda_1 starting at 1 so that the 6 search steps bisect
instead of spending 3-4 steps growing from 0.001. How it was tuned (Fashion-MNIST, shipped net):
the G schedule matters most for success at small k (k = 39, 5 images x 9 targets: 80 iterations
with x1.25, G binary within one Step 2, reached 47% ASR; 200 with x1.05 76%; 400 with x1.025 78% at
twice the cost); the delta step size and refinement length set the l2 (k = 80, the 18 pairs the
paper preset was run on: mean l2 over the paper preset's 1.17x with step 0.05 and 150 refinement
steps, 1.04x with step 0.1, 100 delta steps and 500 refinement steps, at 64% ASR for k = 39).
Measured afterwards on 90 pairs (10 images x 9 targets, k = 80): 100% ASR for both presets, mean
l2 fast/paper = 0.997, 44.5x fewer gradient evaluations (benchmarks/results/sapf_fmnist.md).

The result goes through `ops.quantize.finish` with the optional `eps` as its l_inf cap: with
`quantize=True` (default) the perturbed entries end on the 8-bit grid while every unperturbed
entry stays exactly the input's (so l0 <= k still holds), success is re-checked on that 8-bit
image, and an example that does not succeed is returned unchanged. `sapf_min_k` finishes the
output of every k it tries and bisects on the success of that finished output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.groups import grid_segments, group_topk_mask, segment_soft_threshold, superpixel_segments
from ..ops.losses import adversarial_loss, is_adversarial
from ..ops.projections import project_box, project_l2_sphere, topk_mask
from ..ops.quantize import finish, finish_candidate, report_float_success, succeeds
from ..ops.search import BestAdversarial, TradeoffSearch
from ..validation import check_attack_call, resolve_k
from .ifgsm import _per_example

__all__ = ["sapf", "sapf_gs", "sapf_vi", "sapf_min_k", "SAPFSchedule", "PRESETS", "imperceptibility_weights"]


@dataclass(frozen=True)
class SAPFSchedule:
    """Iteration schedule of Algorithm 1 and the lambda_1 search (Sec. 4.1)."""
    outer_iters: int = 10            # Algorithm 1 iterations
    delta_steps: int = 2000          # gradient steps on delta per iteration (Eq. 7)
    g_steps: int = 2000              # ADMM iterations on G per iteration (Eq. 11-15)
    refine_steps: int = 2000         # delta steps on the final top-k support
    lr: float = 0.1                  # initial step size (delta and G)
    lr_decay: float = 0.9            # step decay ...
    decay_every: int = 50            # ... every this many steps
    optimizer: str = "sgd"           # 'sgd' (the paper's plain gradient descent) or 'adam'
    search_steps: int = 6            # lambda_1 binary search steps
    lambda_init: float | None = None  # None: 0.01 on ImageNet-size inputs, else 0.001 (Sec. 4.1)
    lambda_bounds: tuple[float, float] = (0.0, 100.0)
    lr_min: float = 1e-3             # step-size floor
    rho_init: tuple[float, float, float] = (5e-3, 5e-3, 1e-4)
    rho_max: tuple[float, float, float] = (20.0, 10.0, 0.01)  # see the module docstring
    rho_group_init: float = 5e-3     # SAPF-GS split G = Y3 (authors' code: 5e-3 growing to 100)
    rho_group_max: float = 100.0
    rho_growth: float = 1.01         # per ADMM iteration
    warm_start: bool = False         # start each search step from the previous G, delta
    abort_early: bool = False        # stop a pair's delta loop once its objective stalls


PRESETS: dict[str, SAPFSchedule] = {
    "paper": SAPFSchedule(),
    "fast": SAPFSchedule(outer_iters=3, delta_steps=100, g_steps=200, refine_steps=500, lr=0.1,
                         lr_decay=0.9, decay_every=20, optimizer="adam", search_steps=6,
                         lambda_init=1.0, rho_growth=1.05, warm_start=True, abort_early=True),
}


def imperceptibility_weights(inputs: Tensor, strategy: str = "variance", n: int = 3) -> Tensor:
    """Per-entry weights w in [0, 1] of SAPF-VI (Sec. 4.3): 'uniform' (w = 1), 'variance'
    (w = 1/sigma over the n x n neighbourhood, where the paper's var(x_i) is the local standard
    deviation) or 'variance-mean' (w = 1/(sigma * mu)). Each image's weights are divided by their
    maximum to lie in [0, 1]; sigma and mu are floored at 1/255 (one grey level) so that flat
    regions get the largest, finite weight."""
    if strategy == "uniform":
        return torch.ones_like(inputs)
    if strategy not in ("variance", "variance-mean"):
        raise ValueError(f"unknown weighting strategy {strategy!r}; use uniform, variance or variance-mean")
    pad = n // 2
    padded = F.pad(inputs, (pad, pad, pad, pad), mode="replicate")
    mu = F.avg_pool2d(padded, n, stride=1)
    sigma = (F.avg_pool2d(padded.pow(2), n, stride=1) - mu.pow(2)).clamp_min(0).sqrt()
    floor = 1.0 / 255
    w = 1.0 / sigma.clamp_min(floor)
    if strategy == "variance-mean":
        w = w / mu.clamp_min(floor)
    return w / w.flatten(1).amax(1).view(-1, 1, 1, 1)


class _Optimizer:
    """Per-example gradient descent (plain or Adam) with the step decay of Sec. 4.1; `t0` is the
    number of steps already taken, so the decay continues across calls."""

    def __init__(self, schedule: SAPFSchedule, like: Tensor, t0: int = 0, kind: str | None = None):
        self.s = schedule
        self.t = t0
        self.kind = kind or schedule.optimizer
        if self.kind not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.kind!r}")
        if self.kind == "adam":
            self.m = torch.zeros_like(like)
            self.v = torch.zeros_like(like)
            self.n = 0

    @property
    def lr(self) -> float:
        return max(self.s.lr * self.s.lr_decay ** (self.t // self.s.decay_every), self.s.lr_min)

    def step(self, grad: Tensor, lr: Tensor | float | None = None) -> Tensor:
        """The update to subtract."""
        lr = self.lr if lr is None else lr
        self.t += 1
        if self.kind == "sgd":
            return lr * grad
        b1, b2 = 0.9, 0.999
        self.n += 1
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        return lr * (self.m / (1 - b1 ** self.n)) / ((self.v / (1 - b2 ** self.n)).sqrt() + 1e-8)

    def keep(self, rows: Tensor) -> None:
        if self.kind == "adam":
            self.m, self.v = self.m[rows], self.v[rows]


@dataclass
class _Problem:
    """The pieces of objective (3)/(16)/(17) for the current working set of pairs."""
    model: nn.Module
    x: Tensor
    labels: Tensor
    targeted: bool
    loss_fn: Callable
    kappa: float
    w2: Tensor              # squared VI weights (1 for plain SAPF), shaped like x
    lo: Tensor              # delta box: max(-x, -eps)
    hi: Tensor              # delta box: min(1 - x, eps)
    lam: Tensor             # lambda_1 per pair (B,)
    segments: Tensor | None  # SAPF-GS partition (B, H, W)
    lambda2: float

    def select(self, rows: Tensor) -> "_Problem":
        return replace(self, x=self.x[rows], labels=self.labels[rows], w2=self.w2[rows], lo=self.lo[rows],
                       hi=self.hi[rows], lam=self.lam[rows],
                       segments=None if self.segments is None else self.segments[rows])

    @property
    def grouped(self) -> bool:
        """SAPF-GS: a group term (Eq. 16) is active."""
        return self.segments is not None and self.lambda2 > 0

    def attack_loss(self, delta: Tensor, G: Tensor) -> tuple[Tensor, Tensor]:
        """Per-pair ||w delta G||^2 + lambda_1 L, and the logits of the clipped x + delta G."""
        eps = delta * G
        logits = self.model((self.x + eps).clamp(0, 1))
        dist = (self.w2 * eps.pow(2)).flatten(1).sum(1)
        return dist + self.lam * self.loss_fn(logits, self.labels, targeted=self.targeted, kappa=self.kappa), logits


def _delta_steps(prob: _Problem, delta: Tensor, G: Tensor, sched: SAPFSchedule, steps: int, state: dict,
                 best: BestAdversarial | None = None, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Step 1 (Eq. 7): gradient descent on delta with G fixed. With `best`, every iterate's
    clipped image is checked and successes recorded (rows: their indices in the full batch).
    Returns delta and, per pair, whether any iterate succeeded."""
    opt = _Optimizer(sched, delta, state["t_delta"])
    delta = delta.clone()
    succeeded = torch.zeros(delta.shape[0], dtype=torch.bool, device=delta.device)
    active = torch.arange(delta.shape[0], device=delta.device)
    prev = torch.full((delta.shape[0],), float("inf"), device=delta.device, dtype=delta.dtype)
    check = max(1, steps // 10)
    sub, d, g = prob, delta.clone(), G
    for step in range(steps):
        d.requires_grad_(True)
        obj, logits = sub.attack_loss(d, g)
        grad, = torch.autograd.grad(obj.sum(), d)
        with torch.no_grad():
            if best is not None:
                adv = (sub.x + d * g).clamp(0, 1)
                ok = is_adversarial(logits, sub.labels, targeted=sub.targeted, kappa=sub.kappa)
                best.update(adv, ok, (adv - sub.x).flatten(1).norm(dim=1), rows[active])
                succeeded[active] |= ok
            d = torch.maximum(torch.minimum(d.detach() - opt.step(grad), sub.hi), sub.lo)
            delta[active] = d
            if sched.abort_early and (step + 1) % check == 0:
                # C&W's abort-early rule: a pair whose objective stopped decreasing leaves the loop.
                going = obj.detach() < 0.9999 * prev[active]
                prev[active] = obj.detach()
                if not going.all():
                    active, sub, d, g = active[going], sub.select(going), d[going], g[going]
                    opt.keep(going)
                    if active.numel() == 0:
                        break
    state["t_delta"] += steps
    return delta, succeeded


def _g_admm(prob: _Problem, delta: Tensor, G: Tensor, k: Tensor, sched: SAPFSchedule,
            state: dict) -> Tensor:
    """Step 2 (Eq. 8-15): lp-box ADMM on G with delta fixed. The duals start at Y = 1, Z = 0;
    rho (per pair) and the step count come from and go back to `state`."""
    n = G[0].numel()
    kf = k.to(G.dtype)
    z1, z2, zg = torch.zeros_like(G), torch.zeros_like(G), torch.zeros_like(G)
    z3 = torch.zeros(G.shape[0], device=G.device, dtype=G.dtype)
    rho, rho_g = state["rho"], state["rho_group"]
    grouped = prob.grouped
    opt = _Optimizer(sched, G, state["t_g"], kind="sgd")
    G = G.clone()
    view = (-1,) + (1,) * (G.dim() - 1)
    for _ in range(sched.g_steps):
        r1, r2, r3 = (r.view(view) for r in rho)
        y1 = project_box(G + z1 / r1)                                           # Eq. (11)
        y2 = project_l2_sphere(G + z2 / r2)                                     # Eq. (13)
        rg = rho_g.view(view)
        if grouped:  # SAPF-GS: split G = Y3, Y3 by group soft-thresholding (prox of Eq. 16's term)
            y3 = segment_soft_threshold(G + zg / rg, prob.segments, prob.lambda2 / rho_g)
        G.requires_grad_(True)
        obj, _ = prob.attack_loss(delta, G)
        grad, = torch.autograd.grad(obj.sum(), G)
        with torch.no_grad():
            card = (G.flatten(1).sum(1) - kf).view(view)
            grad = (grad + z1 + z2 + z3.view(view) + r1 * (G - y1) + r2 * (G - y2)  # Eq. (14)
                    + r3 * card)
            if grouped:
                grad = grad + zg + rg * (G - y3)
            lr = torch.clamp(1.0 / (r1 + r2 + r3 * n + (rg if grouped else 0)), max=opt.lr)  # stable step
            G = G.detach() - opt.step(grad, lr)
            z1 = z1 + r1 * (G - y1)                                             # Eq. (15), with Y
            z2 = z2 + r2 * (G - y2)
            z3 = z3 + rho[2] * (G.flatten(1).sum(1) - kf)
            if grouped:
                zg = zg + rg * (G - y3)
            rho = [torch.clamp(r * sched.rho_growth, max=m) for r, m in zip(rho, sched.rho_max)]
            rho_g = torch.clamp(rho_g * sched.rho_growth, max=sched.rho_group_max)
    state["rho"], state["rho_group"] = rho, rho_g
    state["t_g"] = opt.t
    return G.detach()


def _init_state(b: int, sched: SAPFSchedule, device) -> dict:
    """Step counts (for the step decay) and rho per pair: what carries across iterations."""
    return {"t_delta": 0, "t_g": 0, "rho": [torch.full((b,), r, device=device) for r in sched.rho_init],
            "rho_group": torch.full((b,), sched.rho_group_init, device=device)}


def _resolve_segments(groups, inputs: Tensor, n_segments: int, grid_size: int | None) -> Tensor | None:
    if groups is None:
        return None
    if isinstance(groups, Tensor):
        seg = groups.to(inputs.device).long()
        seg = seg.expand(inputs.shape[0], *seg.shape[-2:]) if seg.dim() == 2 else seg
        if seg.shape != (inputs.shape[0], *inputs.shape[-2:]):
            raise ValueError(f"groups must be a segment map (H, W) or (B, H, W) matching the inputs, "
                             f"got {tuple(groups.shape)}")
        return seg
    if groups == "superpixels":
        return superpixel_segments(inputs, n_segments)
    if groups == "grid":
        size = grid_size or max(2, inputs.shape[-1] // 14)
        return grid_segments(*inputs.shape[-2:], size, device=inputs.device).expand(inputs.shape[0], -1, -1)
    raise ValueError(f"groups must be 'superpixels', 'grid' or a segment map tensor, got {groups!r}")


def sapf(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False, k: int | float,
         granularity: str = "element", preset: str | SAPFSchedule = "fast", lambda_init: float | None = None,
         loss: str = "cw", kappa: float = 0.0, eps: float | Tensor | None = None,
         weights: str | Tensor = "uniform", groups: str | Tensor | None = None, lambda2: float = 0.0,
         n_segments: int = 350, grid_size: int | None = None, quantize: bool = True,
         **schedule_overrides) -> Tensor:
    """SAPF (Eq. 3) / SAPF-GS (Eq. 16) / SAPF-VI (Eq. 17), batched over (image, target) pairs.

    k: the number of perturbed entries ('element') or pixels ('pixel'), or a fraction in (0, 1]
    (or a (B,) tensor of counts).
    lambda_init: initial lambda_1 (default: the preset's; the paper's is 0.01 on ImageNet-size
    inputs, else 0.001, Sec. 4.1).
    loss: 'cw' (margin on logits, confidence kappa) or 'ce'.  eps: optional l_inf cap on delta
    (a scalar or (B,)).
    weights: SAPF-VI weights, a strategy name (see `imperceptibility_weights`) or a tensor.
    groups, lambda2: SAPF-GS groups ('superpixels' (SLIC, `n_segments`), 'grid' or a segment map)
    and their weight. Extra keyword arguments override fields of the schedule `preset`.
    quantize: end on the 8-bit grid via `ops.quantize.finish` (inside the eps cap, on the
    perturbed entries only); inputs must then be 8-bit images (k/255); False for float inputs.
    Returns x + delta * G with at most k perturbed entries (pixels) per example, in [0, 1];
    examples with no success are returned unchanged.
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    adv, cap = _sapf(model, inputs.detach(), labels, targeted=targeted, k=k, granularity=granularity,
                     preset=preset, lambda_init=lambda_init, loss=loss, kappa=kappa, eps=eps, weights=weights,
                     groups=groups, lambda2=lambda2, n_segments=n_segments, grid_size=grid_size,
                     **schedule_overrides)
    return finish(model, inputs, adv, labels, targeted=targeted, quantize=quantize, linf_cap=cap)


def _sapf(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool, k: int | float | Tensor,
          granularity: str = "element", preset: str | SAPFSchedule = "fast", lambda_init: float | None = None,
          loss: str = "cw", kappa: float = 0.0, eps: float | Tensor | None = None,
          weights: str | Tensor = "uniform", groups: str | Tensor | None = None, lambda2: float = 0.0,
          n_segments: int = 350, grid_size: int | None = None,
          **schedule_overrides) -> tuple[Tensor, Tensor | None]:
    """SAPF's argument checks and Algorithm 1 with the lambda_1 search, without the call checks and
    the finish: (the float result, the l_inf cap per example or None)."""
    if granularity not in ("element", "pixel"):
        raise ValueError(f"granularity must be 'element' or 'pixel', got {granularity!r}")
    sched = PRESETS[preset] if isinstance(preset, str) and preset in PRESETS else preset
    if not isinstance(sched, SAPFSchedule):
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)} or pass a SAPFSchedule")
    if schedule_overrides:
        unknown = set(schedule_overrides) - set(SAPFSchedule.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unexpected SAPF argument(s): {', '.join(sorted(unknown))}")
        sched = replace(sched, **schedule_overrides)
    cap = None
    if eps is not None:
        cap = _per_example(eps, inputs)
        if not (cap > 0).all():
            raise ValueError(f"eps (l_inf cap) must be positive, got {eps}")
    b, c, h, w = inputs.shape
    gshape = (c, h, w) if granularity == "element" else (1, h, w)
    n = math.prod(gshape)
    what = "entries" if granularity == "element" else "pixels"
    if isinstance(k, Tensor):
        kt = k.to(device=inputs.device, dtype=torch.long).flatten()
        if kt.shape != (b,) or (kt < 1).any() or (kt > n).any():
            raise ValueError(f"k per example must have shape ({b},) and lie in [1, {n}] (the number of {what})")
    else:
        kt = torch.full((b,), resolve_k(k, n, what=what), device=inputs.device, dtype=torch.long)
    if lambda_init is None:
        lambda_init = sched.lambda_init or (0.01 if h * w >= 96 * 96 else 0.001)
    weight = weights if isinstance(weights, Tensor) else imperceptibility_weights(inputs, weights)
    if weight.shape != inputs.shape or (weight < 0).any():
        raise ValueError("weights must be non-negative and shaped like the inputs")
    segments = _resolve_segments(groups, inputs, n_segments, grid_size)
    if lambda2 < 0:
        raise ValueError(f"lambda2 must be >= 0, got {lambda2}")

    loss_fn = adversarial_loss(loss)
    x = inputs.detach()
    lo = -x if cap is None else torch.maximum(-x, -cap)
    hi = 1 - x if cap is None else torch.minimum(1 - x, cap)
    search = TradeoffSearch(lambda_init, b, device=x.device, lower_bound=sched.lambda_bounds[0],
                            upper_bound=sched.lambda_bounds[1])
    best = BestAdversarial(x)
    full = _Problem(model, x, labels, targeted, loss_fn, kappa, weight.pow(2), lo, hi,
                    search.const, segments, lambda2)
    G_all = torch.ones(b, *gshape, device=x.device, dtype=x.dtype)
    delta_all = torch.zeros_like(x)
    rows = torch.arange(b, device=x.device)

    for _ in range(sched.search_steps):
        prob = replace(full.select(rows), lam=search.const[rows])
        if sched.warm_start:  # continue from the previous search step's G and delta
            G, delta = G_all[rows], delta_all[rows]
        else:                 # Algorithm 1, line 1: G = 1, delta = 0
            G, delta = torch.ones(rows.numel(), *gshape, device=x.device, dtype=x.dtype), torch.zeros_like(x[rows])
        state = _init_state(rows.numel(), sched, x.device)
        for _ in range(sched.outer_iters):                                       # Algorithm 1
            delta, _ = _delta_steps(prob, delta, G, sched, sched.delta_steps, state)  # Step 1
            G = _g_admm(prob, delta, G, kt[rows], sched, state)                       # Step 2
        if prob.grouped:  # SAPF-GS: whole groups first, by mean G (ops.groups.group_topk_mask)
            support = group_topk_mask(G, prob.segments, kt[rows])
        else:
            support = topk_mask(G, kt[rows])                                     # exactly k ones
        _, success = _delta_steps(prob, delta * support, support, sched, sched.refine_steps, state,
                                  best, rows)
        search.update(success, rows)
        if sched.warm_start:
            G_all[rows], delta_all[rows] = G, delta
    return best.adv, None if cap is None else cap.flatten()


def sapf_gs(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False, k: int | float,
            lambda2: float = 0.1, groups: str | Tensor = "superpixels", quantize: bool = True, **kwargs) -> Tensor:
    """SAPF-GS (Eq. 16): SAPF with the group-sparsity term lambda_2 sum_i ||G^i||_2 over SLIC
    superpixels (350 segments on ImageNet-size images, Sec. 4.3), a grid, or given segments.
    quantize: end on the 8-bit grid via `ops.quantize.finish`; inputs must then be 8-bit images
    (k/255); False for float inputs."""
    return sapf(model, inputs, labels, targeted=targeted, k=k, groups=groups, lambda2=lambda2,
                quantize=quantize, **kwargs)


def sapf_vi(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False, k: int | float,
            weights: str | Tensor = "variance", quantize: bool = True, **kwargs) -> Tensor:
    """SAPF-VI (Eq. 17): distortion weighted by w (Sec. 4.3: 'uniform', 'variance', 'variance-mean').
    quantize: end on the 8-bit grid via `ops.quantize.finish`; inputs must then be 8-bit images
    (k/255); False for float inputs."""
    return sapf(model, inputs, labels, targeted=targeted, k=k, weights=weights, quantize=quantize, **kwargs)


def _rows_of(value, rows: Tensor, b: int, per_example_dims: tuple[int, ...]):
    """A per-example tensor argument (first dimension the batch, `dim()` in per_example_dims)
    restricted to `rows`; anything else unchanged."""
    if isinstance(value, Tensor) and value.dim() in per_example_dims and value.shape[0] == b:
        return value[rows.to(value.device)]
    return value


def sapf_min_k(model: nn.Module, inputs: Tensor, labels: Tensor, *, targeted: bool = False,
               k_max: int | float = 1.0, granularity: str = "element", quantize: bool = True,
               **kwargs) -> tuple[Tensor, Tensor]:
    """Per pair, the smallest k at which SAPF still succeeds, by bisection over k in [1, k_max].

    Returns (adversarial inputs at that k, k per pair); pairs that fail even at k_max are returned
    unchanged with k = -1. quantize: end on the 8-bit grid via `ops.quantize.finish`; inputs must
    then be 8-bit images (k/255); False for float inputs. The output of every k tried is finished
    and the bisection judges success on that finished output (what would be returned).
    """
    check_attack_call(model, inputs, labels, quantize=quantize)
    if granularity not in ("element", "pixel"):
        raise ValueError(f"granularity must be 'element' or 'pixel', got {granularity!r}")
    c, h, w = inputs.shape[1:]
    n = c * h * w if granularity == "element" else h * w
    kmax = resolve_k(k_max, n, what="entries" if granularity == "element" else "pixels")
    x = inputs.detach()
    b = x.shape[0]
    x_adv = succeeds(model, x, labels, targeted)
    lo = torch.zeros(b, dtype=torch.long, device=x.device)       # largest failing k
    hi = torch.full((b,), kmax, dtype=torch.long, device=x.device)  # smallest succeeding k
    best = x.clone()
    found = torch.zeros(b, dtype=torch.bool, device=x.device)
    float_ok = torch.zeros(b, dtype=torch.bool, device=x.device)
    first = True
    while True:
        todo = (hi - lo > 1) | (first & ~found)
        if not todo.any():
            break
        rows = todo.nonzero().flatten()
        k_try = hi[rows] if first else (lo[rows] + hi[rows]) // 2
        kw = {key: _rows_of(v, rows, b, {"eps": (1,), "weights": (4,), "groups": (3,)}.get(key, ()))
              for key, v in kwargs.items()}
        adv, cap = _sapf(model, x[rows], labels[rows], targeted=targeted, k=k_try, granularity=granularity, **kw)
        cand, ok, f_ok = finish_candidate(model, x[rows], adv, labels[rows], targeted=targeted, quantize=quantize,
                                           inputs_adversarial=x_adv[rows], linf_cap=cap)
        float_ok[rows] |= f_ok
        if first:
            found[rows] = ok
            lo[rows[~ok]] = hi[rows[~ok]]  # never succeeded: stop searching this pair
        else:
            hi[rows[ok]] = k_try[ok]
            lo[rows[~ok]] = k_try[~ok]
        best[rows[ok]] = cand[ok]
        first = False
    report_float_success(model, float_ok)
    return best, torch.where(found, hi, torch.full_like(hi, -1))

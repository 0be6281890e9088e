"""Attacks: one module per method, each `attack(model, inputs, labels, *, targeted=False, ...) -> Tensor`.

For a targeted attack `labels` are the target classes (adv-lib's convention); the evaluation layer
(`sparseattack.eval.run_attack`) takes true labels and targets separately and checks them.
`get(name)` returns a registered attack (`AttackSpec`); `available()` lists names;
`sparseattack attacks NAME` prints an attack's docstring and parameters.

Glossary: one name per idea, in every attack, the registry, the CLI (`-p key=value`) and the records
--------------------------------------------------------------------------------------------------
k
    The sparsity budget of every sparse attack: how many entries (or pixels) may change. An int is a
    count, a float in (0, 1] a fraction of what `granularity` counts. (0.1 called One-Pixel's `pixels`.)
granularity
    What `k` counts: "element", entries of C x H x W; "pixel", spatial positions (a pixel with all its
    channels). An attack that works only on pixels (One-Pixel, CornerSearch) accepts only "pixel".
eps
    Only a threat-model radius: the l_inf or l2 ball of FGM/FGSM/IFGSM/PGD and of the eps searches.
linf_cap
    An optional l_inf cap on a sparse or minimal-norm attack (SAPF, StrAttack, SparseFool, CornerSearch);
    None: only the [0, 1] box. (0.1 called it `eps`.)
steps
    Iterations of an attack's main loop (0.1: max_iterations, max_iter, n_iter, iterations, outer_iters);
    sub-loops are `<name>_steps` (SAPF's delta_steps, g_steps, refine_steps; StrAttack's refine_steps).
binary_search_steps
    Steps of the search over a trade-off constant (C&W's c, StrAttack's c, SAPF's lambda_1).
step_size
    The learning rate or step length (0.1: learning_rate, lr).
initial_const, kappa
    The trade-off constant's start (C&W, StrAttack; SAPF's `lambda_init` is the paper's lambda_1), and
    the confidence margin of the C&W loss.
quantize
    Set by the evaluation layer, not by `-p`: True (default) ends every attack with
    `ops.quantize.finish`, so the output is on the 8-bit grid and its success holds there.

Failure: an attack returns the input unchanged for every pair it did not fool; success is reported by
the evaluation layer (`run_attack`, `evaluate`), which re-checks every output with a forward pass.
Return type: always the adversarial inputs, one tensor. A search's extra (the smallest k or eps per
pair) comes from its own function returning `ops.search.MinimalBudget(adv, budget)`:
`find_min_k` (SAPF) and `find_min_eps` (the eps searches).

Old names of 0.1 still work for this release with a DeprecationWarning (`_renames.renamed`), in the
functions and through the registry; they go away in 0.3.
"""
from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Callable

from ._renames import translate
from .ifgsm import ifgsm
from ..validation import ValidationError

__all__ = ["ifgsm", "sapf", "sapf_gs", "sapf_vi", "sapf_min_k", "find_min_k", "register", "get", "available", "AttackSpec",
           "REQUIRED", "RESERVED", "function_parameters"]

# Arguments every attack takes positionally or from the evaluation layer, never from `-p`.
_CALL_ARGS = ("model", "inputs", "labels", "adv", "targeted")
# Set by the evaluation layer (run_attack / evaluate / the CLI's --float), not as an attack parameter.
RESERVED = ("quantize",)


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED = _Required()


def function_parameters(fn: Callable) -> tuple[dict, bool]:
    """Keyword parameters of an attack function with their defaults (REQUIRED where none), and
    whether it also takes **kwargs."""
    params, var_kw = {}, False
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.name not in _CALL_ARGS and p.kind is not p.VAR_POSITIONAL:
            params[p.name] = REQUIRED if p.default is p.empty else p.default
    return params, var_kw


def _type_hints(fn: Callable) -> dict:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # an annotation that does not evaluate: no type check for that function
        return {}


def _matches(value, hint) -> bool:
    """Whether a parameter value fits its annotation (ints fit floats; bools fit only bool)."""
    if hint is typing.Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (collections.abc.Callable,) or hint is Callable:
        return callable(value)
    if origin in (tuple, list, collections.abc.Sequence):
        return isinstance(value, (tuple, list))
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _type_name(hint) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack: its function, registry defaults (which override the function's), and
    `extra(params)`: the keywords its **kwargs accept, with their defaults, given the others."""
    name: str
    fn: Callable
    description: str
    defaults: dict = field(default_factory=dict)
    sparse: bool = False
    extra: Callable[[dict], dict] | None = None

    def parameters(self, params: dict | None = None) -> dict:
        """Every parameter a user may set (`-p`), with the default this registered attack uses."""
        own, var_kw = function_parameters(self.fn)
        out = {**own, **self.defaults}
        if var_kw and self.extra is not None:
            out = {**self.extra({**out, **(params or {})}), **out}
        for name in RESERVED:
            out.pop(name, None)
        return out

    def _extra_hints(self) -> dict:
        """Annotations of the keywords that **kwargs forwards (SAPF's schedule fields, an inner attack)."""
        hints = {}
        if getattr(self.fn, "__name__", "") in ("sapf", "sapf_gs", "sapf_vi"):
            from .sapf import SAPFSchedule, sapf
            hints.update(_type_hints(SAPFSchedule))
            hints.update(_type_hints(sapf))
        return hints

    def renamed(self) -> dict:
        """0.1 parameter names this attack still accepts (old -> new), with a DeprecationWarning."""
        return dict(getattr(self.fn, "__renamed__", {}))

    def accepts(self, key: str, *, old_names: bool = False) -> bool:
        """Whether `key` is one of this attack's parameters (with `old_names`: or a 0.1 name of one)."""
        allowed = self.parameters()
        return key in allowed or (old_names and self.renamed().get(key) in allowed)

    def resolve(self, params: dict) -> dict:
        """All parameters of a run (defaults filled in), refusing unknown or missing ones; 0.1 names
        are translated to the glossary's (with a DeprecationWarning)."""
        params = translate(self.name, self.renamed(), params, stacklevel=3)
        reserved = sorted(set(params) & set(RESERVED))
        if reserved:
            raise ValidationError(f"{', '.join(reserved)} is set by the evaluation layer (run_attack(quantize=...), "
                             f"the CLI's --float), not as a parameter of attack {self.name!r}")
        allowed = self.parameters(params)
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValidationError(f"attack {self.name!r} takes no parameter {', '.join(map(repr, unknown))}; "
                             f"its parameters: {', '.join(sorted(allowed))}")
        hints = {**self._extra_hints(), **_type_hints(self.fn)}
        for key, value in params.items():
            if key in hints and not _matches(value, hints[key]):
                raise ValidationError(f"parameter {key!r} of attack {self.name!r} must be {_type_name(hints[key])}, "
                                 f"got {type(value).__name__} {value!r}")
        resolved = {**allowed, **params}
        missing = sorted(k for k, v in resolved.items() if v is REQUIRED)
        if missing:
            raise ValidationError(f"attack {self.name!r} needs parameter(s) {', '.join(missing)}")
        return resolved


_ATTACKS: dict[str, AttackSpec] = {}


def register(name: str, fn: Callable, description: str, *, defaults: dict | None = None,
             sparse: bool = False, extra: Callable[[dict], dict] | None = None) -> None:
    _ATTACKS[name] = AttackSpec(name, fn, description, dict(defaults or {}), sparse, extra)


def get(name: str) -> AttackSpec:
    try:
        return _ATTACKS[name]
    except KeyError:
        raise ValidationError(f"unknown attack method {name!r}; available: {', '.join(available())}") from None


def available() -> list[str]:
    return sorted(_ATTACKS)


register("ifgsm", ifgsm, "Iterative FGSM, l_inf ball (Kurakin et al. 2017)", defaults={"norm": "linf"})
register("ifgm-l2", ifgsm, "Iterative fast gradient method, l2 ball", defaults={"norm": "l2"})

from .sapf import DEFAULT_PRESET as DEFAULT_SAPF_PRESET  # noqa: E402
from .sapf import PRESETS as _SAPF_PRESETS  # noqa: E402
from .sapf import _schedule as _sapf_schedule  # noqa: E402
from .sapf import find_min_k, sapf, sapf_gs, sapf_min_k, sapf_vi  # noqa: E402


def _keywords_of(obj) -> dict:
    """The keywords a **kwargs forwards to, with defaults: a dataclass instance's fields (SAPF's
    schedule) or a function's keyword parameters (an inner attack)."""
    return asdict(obj) if is_dataclass(obj) else function_parameters(obj)[0]


def _sapf_extra(params: dict) -> dict:
    """SAPF's schedule fields (keyword overrides) with the chosen preset's values, and `sapf`'s own
    parameters (sapf_gs and sapf_vi forward them)."""
    preset = params.get("preset", DEFAULT_SAPF_PRESET)
    sched = _SAPF_PRESETS.get(preset) if isinstance(preset, str) else preset
    if sched is None:
        raise ValidationError(f"unknown SAPF preset {preset!r}; choose one of {sorted(_SAPF_PRESETS)}")
    fields = _keywords_of(sched)
    # refuse, before any work, a schedule field that the chosen way of choosing G would not use
    _sapf_schedule(sched, {key: params[key] for key in fields if key in params})
    return {**fields, **_keywords_of(sapf)}


register("sapf", sapf, "SAPF: perturbation factorization with an lp-box ADMM (Fan et al. ECCV 2020)",
         defaults={"k": 0.02}, sparse=True, extra=_sapf_extra)
register("sapf-gs", sapf_gs, "SAPF-GS: SAPF with group sparsity over SLIC superpixels (Eq. 16)",
         defaults={"k": 0.02}, sparse=True, extra=_sapf_extra)
register("sapf-vi", sapf_vi, "SAPF-VI: SAPF with variance-weighted distortion (Eq. 17)",
         defaults={"k": 0.02}, sparse=True, extra=_sapf_extra)

# --- sparse baselines of SAPF's Table 1 (C&W-l0, One-Pixel, SparseFool, CornerSearch, PGD l0+l_inf) ---
from .corner_search import corner_search  # noqa: E402
from .cw_l0 import cw_l0  # noqa: E402
from .one_pixel import one_pixel  # noqa: E402
from .pgd_l0 import pgd_l0_linf  # noqa: E402
from .sparsefool import sparsefool  # noqa: E402

register("cw-l0", cw_l0, "C&W-l0: C&W-l2 on a shrinking allowed set of pixels (Carlini & Wagner 2017)",
         defaults={"steps": 1000, "initial_const": 1.0, "largest_const": 2e6}, sparse=True)
register("one-pixel", one_pixel, "One-Pixel: differential evolution over (row, col, value) (Su et al. 2019)",
         defaults={"k": 1, "popsize": 400, "steps": 100}, sparse=True)
register("sparsefool", sparsefool, "SparseFool: DeepFool-linearised l1 steps in the box (Modas et al. 2019)",
         defaults={"lam": 3.0, "steps": 20}, sparse=True)
register("corner-search", corner_search, "CornerSearch: ranked one-pixel corners, then sampled (Croce & Hein 2019)",
         defaults={"k": 10, "steps": 1000}, sparse=True)
register("pgd-l0-linf", pgd_l0_linf, "PGD onto the l0 ball of k pixels and the l_inf ball (Croce & Hein 2019)",
         defaults={"k": 20, "eps": 0.3, "steps": 100, "restarts": 5}, sparse=True)

# --- StrAttack (Xu et al., ICLR 2019) and the dense baselines of its Tables 1-2 ---------------
# strattack picks Appendix F's c0 and groups from the image size (2x2 stride 2 / 3x3 stride 2
# overlapping on small images, c0 = 0.5 one channel, 0.25 three channels; 13x13 and 2.5 above 64 px).
from .dense import cw_l2, cw_linf, fgm, fgsm, find_min_eps, min_eps_search  # noqa: E402
from .strattack import strattack, strattack_refine  # noqa: E402

__all__ += ["strattack", "strattack_refine", "fgm", "fgsm", "min_eps_search", "find_min_eps", "cw_l2", "cw_linf",
            "cw_l0", "one_pixel", "sparsefool", "corner_search", "pgd_l0_linf"]

register("strattack", strattack, "StrAttack: group-sparse perturbation by ADMM (Xu et al. 2019, Eq. 2-15)",
         sparse=True)
register("strattack-overlap", strattack, "StrAttack with overlapping groups, 3x3 stride 2 (Eq. 16-18)",
         defaults={"overlap": True}, sparse=True)
register("strattack-refined", strattack, "StrAttack refined on its fixed sigma-sparse support (Eq. 19-22)",
         defaults={"refine": True}, sparse=True)
register("fgm", fgm, "Fast gradient method: one l2 step of size eps", defaults={"eps": 1.0, "norm": "l2"})
register("fgsm", fgsm, "FGSM: one l_inf sign step of size eps", defaults={"eps": 0.1})


def _search_extra(params: dict) -> dict:
    """min_eps_search's **kwargs: the inner attack's own parameters (eps and norm are the search's)."""
    from .dense import _ATTACKS as _INNER
    inner = params.get("attack", "ifgsm")
    fn = _INNER.get(inner) if isinstance(inner, str) else inner
    if fn is None:
        raise ValidationError(f"unknown inner attack {inner!r} for the eps search; use one of {sorted(_INNER)}")
    return {k: v for k, v in _keywords_of(fn).items() if k not in ("eps", "norm") + RESERVED}


register("fgm-search", min_eps_search, "FGM (l2) at the smallest eps of a fine grid (0.01 steps) that succeeds",
         defaults={"attack": "fgm", "norm": "l2", "search": "scan"}, extra=_search_extra)
register("fgsm-search", min_eps_search, "FGSM at the smallest eps of a fine grid (0.001 steps) that succeeds",
         defaults={"attack": "fgsm", "norm": "linf", "search": "scan"}, extra=_search_extra)
register("ifgsm-search", min_eps_search, "IFGSM (10 x eps/10) at the smallest grid eps that succeeds (bisection)",
         defaults={"attack": "ifgsm", "norm": "linf", "search": "bisect"}, extra=_search_extra)
register("ifgm-l2-search", min_eps_search, "IFGM-l2 (10 x eps/10) at the smallest grid eps that succeeds (bisection)",
         defaults={"attack": "ifgsm", "norm": "l2", "search": "bisect"}, extra=_search_extra)
register("cw-l2", cw_l2, "Carlini & Wagner l2 (9 binary-search steps x 1000 Adam iterations)")
register("cw-linf", cw_linf, "Carlini & Wagner l_inf (shrinking t, doubling/halving c)")

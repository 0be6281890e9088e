"""Attacks: one module per method, each `attack(model, inputs, labels, *, targeted=False, ...)`.

For a targeted attack `labels` are the target classes (adv-lib's convention); the evaluation
layer (`sparseattack.eval.run_attack`) takes true labels and targets separately and checks them.
`get(name)` returns a registered attack; `available()` lists names.
"""
from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from dataclasses import asdict, dataclass, field
from typing import Callable

from .ifgsm import ifgsm

__all__ = ["ifgsm", "sapf", "sapf_gs", "sapf_vi", "sapf_min_k", "register", "get", "available", "AttackSpec",
           "REQUIRED", "RESERVED", "function_parameters"]

# Arguments every attack takes positionally or from the evaluation layer, never from `-p`.
_CALL_ARGS = ("model", "inputs", "labels", "adv", "targeted")
# Set by the evaluation layer (run_attack / evaluate / the CLI's --float), not as an attack parameter.
RESERVED = ("quantize",)
# Keywords that change what a function returns (a tuple): not settable through the registry.
_NOT_SETTABLE = ("return_eps",)


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
        for name in RESERVED + _NOT_SETTABLE:
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

    def accepts(self, key: str) -> bool:
        return key in self.parameters()

    def resolve(self, params: dict) -> dict:
        """All parameters of a run (defaults filled in), refusing unknown or missing ones."""
        reserved = sorted(set(params) & set(RESERVED))
        if reserved:
            raise ValueError(f"{', '.join(reserved)} is set by the evaluation layer (run_attack(quantize=...), "
                             f"the CLI's --float), not as a parameter of attack {self.name!r}")
        allowed = self.parameters(params)
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(f"attack {self.name!r} takes no parameter {', '.join(map(repr, unknown))}; "
                             f"its parameters: {', '.join(sorted(allowed))}")
        hints = {**self._extra_hints(), **_type_hints(self.fn)}
        for key, value in params.items():
            if key in hints and not _matches(value, hints[key]):
                raise ValueError(f"parameter {key!r} of attack {self.name!r} must be {_type_name(hints[key])}, "
                                 f"got {type(value).__name__} {value!r}")
        resolved = {**allowed, **params}
        missing = sorted(k for k, v in resolved.items() if v is REQUIRED)
        if missing:
            raise ValueError(f"attack {self.name!r} needs parameter(s) {', '.join(missing)}")
        return resolved


_ATTACKS: dict[str, AttackSpec] = {}


def register(name: str, fn: Callable, description: str, *, defaults: dict | None = None,
             sparse: bool = False, extra: Callable[[dict], dict] | None = None) -> None:
    _ATTACKS[name] = AttackSpec(name, fn, description, dict(defaults or {}), sparse, extra)


def get(name: str) -> AttackSpec:
    try:
        return _ATTACKS[name]
    except KeyError:
        raise ValueError(f"unknown attack method {name!r}; available: {', '.join(available())}") from None


def available() -> list[str]:
    return sorted(_ATTACKS)


register("ifgsm", ifgsm, "Iterative FGSM, l_inf ball (Kurakin et al. 2017)", defaults={"norm": "linf"})
register("ifgm-l2", ifgsm, "Iterative fast gradient method, l2 ball", defaults={"norm": "l2"})

from .sapf import PRESETS as _SAPF_PRESETS  # noqa: E402
from .sapf import sapf, sapf_gs, sapf_min_k, sapf_vi  # noqa: E402


def _sapf_extra(params: dict) -> dict:
    """SAPF's schedule fields (keyword overrides), with the values of the chosen preset."""
    preset = params.get("preset", "fast")
    sched = _SAPF_PRESETS.get(preset) if isinstance(preset, str) else preset
    if sched is None:
        raise ValueError(f"unknown SAPF preset {preset!r}; choose one of {sorted(_SAPF_PRESETS)}")
    sapf_own, _ = function_parameters(sapf)
    return {**asdict(sched), **sapf_own}


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
         defaults={"max_iterations": 1000, "initial_const": 1.0, "largest_const": 20.0}, sparse=True)
register("one-pixel", one_pixel, "One-Pixel: differential evolution over (row, col, value) (Su et al. 2019)",
         defaults={"pixels": 1, "popsize": 400, "max_iter": 100}, sparse=True)
register("sparsefool", sparsefool, "SparseFool: DeepFool-linearised l1 steps in the box (Modas et al. 2019)",
         defaults={"lam": 3.0, "max_iter": 20}, sparse=True)
register("corner-search", corner_search, "CornerSearch: ranked one-pixel corners, then sampled (Croce & Hein 2019)",
         defaults={"k": 10, "n_iter": 1000}, sparse=True)
register("pgd-l0-linf", pgd_l0_linf, "PGD onto the l0 ball of k pixels and the l_inf ball (Croce & Hein 2019)",
         defaults={"k": 20, "eps": 0.3, "steps": 100, "restarts": 5}, sparse=True)

# --- StrAttack (Xu et al., ICLR 2019) and the dense baselines of its Tables 1-2 ---------------
# strattack picks Appendix F's c0 and groups from the image size (2x2 stride 2 / 3x3 stride 2
# overlapping on small images, c0 = 0.5 one channel, 0.25 three channels; 13x13 and 2.5 above 64 px).
from .dense import cw_l2, cw_linf, fgm, fgsm, min_eps_search  # noqa: E402
from .strattack import strattack, strattack_refine  # noqa: E402

__all__ += ["strattack", "strattack_refine", "fgm", "fgsm", "min_eps_search", "cw_l2", "cw_linf"]

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
        raise ValueError(f"unknown inner attack {inner!r} for the eps search; use one of {sorted(_INNER)}")
    own, _ = function_parameters(fn)
    return {k: v for k, v in own.items() if k not in ("eps", "norm") + RESERVED}


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

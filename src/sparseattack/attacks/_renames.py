"""Old parameter names of release 0.1, accepted for one release with a DeprecationWarning.

`@renamed(max_iterations="steps", learning_rate="step_size")` on an attack function maps the old
keyword to the new one (both given: an error); the registry uses the same map (`RENAMED`) so that
`-p max_iterations=...` keeps working with the warning. Remove in 0.3.
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable
from ..validation import ValidationTypeError

__all__ = ["renamed", "translate"]


def translate(fn_name: str, old_to_new: dict, kwargs: dict, *, stacklevel: int = 3) -> dict:
    """kwargs with old names replaced by new ones (warning once per old name)."""
    out = dict(kwargs)
    for old, new in old_to_new.items():
        if old in out:
            if new in out:
                raise ValidationTypeError(f"{fn_name}() got both {old!r} (the 0.1 name) and {new!r}; use {new!r}")
            warnings.warn(f"{fn_name}(): parameter {old!r} is now {new!r}; the old name goes away in 0.3",
                          DeprecationWarning, stacklevel=stacklevel)
            out[new] = out.pop(old)
    return out


def renamed(**old_to_new: str) -> Callable:
    """Decorator: accept each old keyword as its new name, with a DeprecationWarning."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            return fn(*args, **translate(fn.__name__, old_to_new, kwargs))
        inner.__renamed__ = {**getattr(fn, "__renamed__", {}), **old_to_new}
        return inner
    return wrap

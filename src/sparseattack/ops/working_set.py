"""The shrinking working set: the per-pair state of the pairs still being solved.

Batched attacks drop a pair from every per-pair tensor once it is done (succeeded, aborted early,
gave up), so it costs no more model evaluations. `WorkingSet` is a dataclass base: an attack
declares its state as typed fields, and `keep(mask)` shrinks every per-pair field together (tensors
whose first dimension is the number of rows, and helpers with a `keep` method such as
`ops.optim.BatchAdam`); `rows` maps each remaining row to its index in the caller's batch.

    @dataclass
    class _Solve(WorkingSet):
        x: Tensor
        labels: Tensor
        const: Tensor
        adam: BatchAdam

    ws = _Solve.start(x=x, labels=y, const=c, adam=BatchAdam(x))
    ...
    ws.keep(~stopped)
    best[ws.rows] = ...
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["WorkingSet"]


@dataclass
class WorkingSet:
    """Base of an attack's per-pair state; `rows` are the batch indices of the remaining pairs."""
    rows: Tensor = field(kw_only=True)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        clash = {name for name in getattr(cls, "__annotations__", {}) if callable(getattr(WorkingSet, name, None))}
        if clash:
            raise TypeError(f"{cls.__name__}: field(s) {sorted(clash)} would hide WorkingSet methods; rename them")

    @classmethod
    def start(cls, **state):
        """All rows of a batch of `len` equal to the first tensor field's first dimension."""
        first = next(v for v in state.values() if isinstance(v, Tensor) and v.dim() > 0)
        return cls(rows=torch.arange(first.shape[0], device=first.device), **state)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def empty(self) -> bool:
        return len(self) == 0

    def _per_pair(self):
        n = len(self)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n:
                yield f.name, value, True
            elif hasattr(value, "keep") and not isinstance(value, Tensor):
                yield f.name, value, False

    def keep(self, mask: Tensor) -> None:
        """Keep only the rows where `mask` (bool, (len,)) is True, in every per-pair field."""
        if mask.all():
            return
        for name, value, is_tensor in list(self._per_pair()):
            if is_tensor:
                setattr(self, name, value[mask])
            else:
                value.keep(mask)

    def take(self, index: Tensor):
        """A new working set of the rows `index` (indices or a mask); helpers with state are not
        copied (only plain per-pair tensors may be taken)."""
        out = dataclasses.replace(self)
        for name, value, is_tensor in list(out._per_pair()):
            if not is_tensor:
                raise TypeError(f"cannot take rows of field {name!r}; use keep()")
            setattr(out, name, value[index])
        return out

    def update(self, **state) -> None:
        """Set fields (per-pair tensors of the current rows)."""
        for name, value in state.items():
            if not hasattr(self, name):
                raise AttributeError(f"{type(self).__name__} has no field {name!r}")
            setattr(self, name, value)

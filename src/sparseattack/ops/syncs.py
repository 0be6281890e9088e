"""Counting host synchronisations: the operations that make the host wait for the device.

On a GPU an attack's inner loop should queue work and never wait: every `.item()`, `bool(tensor)`,
`tensor.any()` in an `if`, `nonzero()` or boolean-mask indexing copies a value back and stalls the
queue until the device catches up. `torch.cuda.set_sync_debug_mode` reports them on CUDA only;
`HostSyncCounter` counts the same operations on any device (a dispatch mode that sees every aten
call), so the count can be tested on a CPU: `benchmarks/overhead.py` reports it per model call and
tests/test_ops.py bounds it for SAPF and StrAttack.

    with HostSyncCounter() as syncs:
        attack(model, x, t, targeted=True)
    syncs.count, syncs.by_site.most_common(5)
"""
from __future__ import annotations

import collections
import traceback

from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostSyncCounter", "SYNC_OPS"]

# aten operations that return a value to the host (or size their output by the data)
SYNC_OPS = frozenset({"_local_scalar_dense", "is_nonzero", "nonzero", "masked_select", "unique", "_unique",
                      "_unique2", "unique_consecutive", "unique_dim", "equal", "repeat_interleave"})


class HostSyncCounter(TorchDispatchMode):
    """Counts operations in SYNC_OPS (`count`), and by the innermost sparseattack source line that
    caused them (`by_site`, when `where=True`: slower, it walks the stack)."""

    def __init__(self, where: bool = False):
        super().__init__()
        self.count = 0
        self.where = where
        self.by_site: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNC_OPS and not (name == "repeat_interleave" and (kwargs or {}).get("output_size")):
            self.count += 1
            if self.where:
                frames = [f for f in traceback.extract_stack() if "sparseattack" in f.filename]
                if frames:
                    self.by_site[(name, frames[-1].filename.rsplit("sparseattack/", 1)[-1], frames[-1].lineno)] += 1
        return func(*args, **(kwargs or {}))

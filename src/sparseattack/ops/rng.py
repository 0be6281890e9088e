"""Per-example random generators: an example draws the same numbers alone or in any batch.

An attack that draws from one generator shared by the batch couples its examples: what example i
draws depends on how many numbers the examples before it drew (their number, their early stops,
their position in the batch). Attacking a subset, reordering the batch or batching differently
then changes the results. Here each example gets its own `torch.Generator`, seeded from the
attack's `seed` and a hash (SHA-256) of that example's own content - its image values (as float64,
so a float32 image and its exact float64 copy draw alike) with its shape, and its label (the
target for a targeted attack). An example therefore draws the same stream wherever it sits; two
copies of one (image, label) pair in a batch draw the same numbers, which is what "the same
example" means.

Draws are per example (a short Python loop over the batch); `rand`, `randn` and `randint` stack
one draw of a fixed per-example shape for a list of generators.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import torch
from torch import Tensor
from ..validation import ValidationError, ValidationTypeError

__all__ = ["example_seed", "example_generators", "rand", "randn", "randint"]

_MASK = (1 << 63) - 1


def example_seed(image: Tensor, label: int | Tensor, seed: int) -> int:
    """A 63-bit seed from `seed`, the image's values and shape, and the label."""
    h = hashlib.sha256()
    h.update(struct.pack("<q", int(seed) & _MASK))
    h.update(struct.pack("<q", int(label)))
    h.update(struct.pack(f"<{image.dim()}q", *image.shape))
    h.update(image.detach().to(device="cpu", dtype=torch.float64).contiguous().numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") & _MASK


def example_generators(inputs: Tensor, labels: Tensor, seed: int = 0) -> list[torch.Generator]:
    """One generator per example of `inputs` (B, ...), on the inputs' device, seeded by
    `example_seed(inputs[i], labels[i], seed)`."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValidationTypeError(f"seed must be an int, got {type(seed).__name__}")
    cpu_x = inputs.detach().to("cpu")
    cpu_y = labels.detach().to("cpu").tolist()
    return [torch.Generator(device=inputs.device).manual_seed(example_seed(cpu_x[i], cpu_y[i], seed))
            for i in range(cpu_x.shape[0])]


def _stack(draw, gens: Sequence[torch.Generator], device) -> Tensor:
    if len(gens) == 0:
        raise ValidationError("no generators to draw from")
    return torch.stack([draw(g) for g in gens]).to(device)


def rand(gens: Sequence[torch.Generator], shape: Sequence[int], *, dtype=None, device=None) -> Tensor:
    """U[0, 1) draws of `shape` per generator, stacked: (len(gens), *shape)."""
    return _stack(lambda g: torch.rand(tuple(shape), generator=g, dtype=dtype, device=g.device),
                  gens, device)


def randn(gens: Sequence[torch.Generator], shape: Sequence[int], *, dtype=None, device=None) -> Tensor:
    """N(0, 1) draws of `shape` per generator, stacked: (len(gens), *shape)."""
    return _stack(lambda g: torch.randn(tuple(shape), generator=g, dtype=dtype, device=g.device),
                  gens, device)


def randint(gens: Sequence[torch.Generator], low: int, high: int, shape: Sequence[int], *,
            device=None) -> Tensor:
    """Integers uniform in [low, high) of `shape` per generator, stacked: (len(gens), *shape)."""
    return _stack(lambda g: torch.randint(low, high, tuple(shape), generator=g, device=g.device),
                  gens, device)

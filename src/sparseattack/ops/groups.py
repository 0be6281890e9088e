"""Group structures over the spatial positions of an image, held as index tensors.

Two representations, neither of which ever materialises a dense (#groups x N) mask:
- a *partition* as a segment map (H, W) or (B, H, W) of group ids 0..G-1 (grids, SLIC superpixels);
  group sums are one `scatter_add` over the N positions;
- *overlapping* groups (StrAttack Eq. 16, sliding windows) as a (G, M) tensor of flat spatial
  indices, each group holding only its own M entries.
A group contains all channels of its positions (StrAttack Sec. 3; SAPF-GS Eq. 16).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .projections import topk_mask
from ..validation import ValidationError


def grid_segments(height: int, width: int, size: int, *, device=None) -> Tensor:
    """Non-overlapping size x size blocks as a (H, W) segment map (last blocks may be smaller)."""
    if size < 1:
        raise ValidationError(f"group size must be >= 1, got {size}")
    rows = torch.arange(height, device=device) // size
    cols = torch.arange(width, device=device) // size
    return rows[:, None] * ((width + size - 1) // size) + cols[None, :]


def sliding_window_groups(height: int, width: int, size: int, stride: int, *, device=None) -> Tensor:
    """Overlapping size x size windows with the given stride as a (G, size*size) index tensor of
    flat positions (row * width + col). Windows start at 0, stride, ... and a last window is
    aligned with the border so every position belongs to at least one group."""
    if size < 1 or stride < 1:
        raise ValidationError(f"window size and stride must be >= 1, got size={size}, stride={stride}")
    if size > min(height, width):
        raise ValidationError(f"window size {size} exceeds the image size {height}x{width}")

    def starts(extent: int) -> list[int]:
        s = list(range(0, extent - size + 1, stride))
        if s[-1] != extent - size:
            s.append(extent - size)
        return s

    offs = torch.arange(size, device=device)
    window = (offs[:, None] * width + offs[None, :]).flatten()
    corners = torch.tensor([r * width + c for r in starts(height) for c in starts(width)], device=device)
    return corners[:, None] + window[None, :]


def superpixel_segments(images: Tensor, n_segments: int = 350, compactness: float = 10.0,
                        *, seed: int = 0) -> Tensor:
    """SLIC superpixels (Achanta et al. 2012, via scikit-image) per image, as (B, H, W) segment
    maps with ids 0..G_b-1 (SAPF Sec. 4.3 uses 350 segments on ImageNet-size images)."""
    from skimage.segmentation import slic

    out = []
    for img in images.detach().cpu():
        arr = img.permute(1, 2, 0).numpy().astype(np.float64)
        channel_axis = -1
        if arr.shape[2] == 1:
            arr, channel_axis = arr[..., 0], None
        seg = slic(arr, n_segments=n_segments, compactness=compactness, start_label=0,
                   channel_axis=channel_axis, enforce_connectivity=True)
        _, seg = np.unique(seg, return_inverse=True)  # make ids contiguous
        out.append(torch.from_numpy(seg.reshape(arr.shape[:2]).astype(np.int64)))
    return torch.stack(out).to(images.device)


def num_segments(segments: Tensor) -> Tensor:
    """Number of groups per image of a (B, H, W) segment map, as (B,)."""
    return segments.flatten(1).amax(1) + 1


def segment_sq_sums(x: Tensor, segments: Tensor, num_groups: int | None = None) -> Tensor:
    """Per-group sums of squares of x (B, C, H, W) over a partition (H, W) or (B, H, W): (B, G)."""
    b = x.shape[0]
    seg = segments.expand(b, *segments.shape[-2:]) if segments.dim() == 2 else segments
    seg = seg.flatten(1)
    g = int(seg.max().item()) + 1 if num_groups is None else num_groups
    sq = x.pow(2).sum(1).flatten(1)
    return torch.zeros(b, g, dtype=x.dtype, device=x.device).scatter_add_(1, seg, sq)


def window_sq_sums(x: Tensor, windows: Tensor) -> Tensor:
    """Per-group sums of squares of x (B, C, H, W) over overlapping groups (G, M): (B, G)."""
    sq = x.pow(2).sum(1).flatten(1)
    return sq[:, windows].sum(-1)


def group_norms(x: Tensor, groups: Tensor) -> Tensor:
    """l2 norm of each group of x: `groups` is a segment map (dims 2 or 3) or windows (G, M)."""
    if groups.dim() == 2 and groups.shape != x.shape[-2:]:
        return window_sq_sums(x, groups).sqrt()
    return segment_sq_sums(x, groups).sqrt()


def groups_touched(x: Tensor, groups: Tensor, tol: float = 0.0) -> Tensor:
    """Number of groups with a nonzero entry per example (B,)."""
    return (group_norms(x, groups) > tol).sum(1)


def segment_soft_threshold(v: Tensor, segments: Tensor, tau: float | Tensor) -> Tensor:
    """Proximal operator of tau * sum_i ||v^i||_2 over a partition (group soft-thresholding):
    each group is scaled by max(0, 1 - tau / ||v^i||). v: (B, C, H, W); segments (B, H, W);
    tau: scalar or (B,)."""
    b = v.shape[0]
    seg = segments.expand(b, *segments.shape[-2:]) if segments.dim() == 2 else segments
    norms = segment_sq_sums(v, seg).sqrt()
    tau = torch.as_tensor(tau, dtype=v.dtype, device=v.device).reshape(-1, 1)
    scale = (1 - tau / norms.clamp_min(1e-12)).clamp_min(0)
    return v * scale.gather(1, seg.flatten(1)).view(b, 1, *v.shape[-2:])


def grow_support_by_windows(support: Tensor, gradient: Tensor, windows: Tensor, count: Tensor) -> Tensor:
    """Add to a support the `count` windows it does not touch with the largest gradient energy.

    support: 0/1 mask (B, C, H, W); gradient: (B, C, H, W), a window's energy being its squared l2
    norm (`window_sq_sums`, the first-order gain of letting it move); windows: (G, M) flat spatial
    indices (`sliding_window_groups`, any cover); count: (B,) windows to add per example (at most
    the untouched ones). A window is touched when one of its positions is in the support in any
    channel; an added window enters with all its channels.
    Returns the grown 0/1 mask (B, C, H, W), a superset of `support`."""
    b, c, h, w = support.shape
    touched = window_sq_sums(support, windows) > 0                                  # (B, G)
    energy = window_sq_sums(gradient, windows)                                     # (B, G)
    free = (~touched).sum(1)
    score = torch.where(touched, torch.full_like(energy, -float("inf")), energy)
    chosen = topk_mask(score, torch.minimum(count.to(free.device), free))          # (B, G)
    cover = torch.zeros(b, h * w, dtype=support.dtype, device=support.device)
    cover.scatter_add_(1, windows.flatten().expand(b, -1), chosen.repeat_interleave(windows.shape[1], dim=1))
    return torch.maximum(support, (cover > 0).to(support.dtype).view(b, 1, h, w).expand_as(support))


def group_topk_mask(scores: Tensor, segments: Tensor, k: int | Tensor) -> Tensor:
    """Binary mask with exactly k ones per example that fills whole groups first: groups are taken
    in decreasing order of their mean score, and within the last (partially taken) group the
    entries of largest score. scores: (B, C, H, W) (C = 1 for pixel granularity); segments: a
    partition (H, W) or (B, H, W) shared by the channels; k: int or (B,). With one group per
    entry this is `topk_mask`."""
    b = scores.shape[0]
    seg = segments.expand(b, *segments.shape[-2:]) if segments.dim() == 2 else segments
    seg = seg.unsqueeze(1).expand_as(scores).flatten(1)
    flat = scores.flatten(1)
    g = int(seg.max().item()) + 1
    sums = torch.zeros(b, g, dtype=flat.dtype, device=flat.device).scatter_add_(1, seg, flat)
    counts = torch.zeros_like(sums).scatter_add_(1, seg, torch.ones_like(flat))
    means = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, -float("inf")))
    rank = means.argsort(dim=1, descending=True, stable=True).argsort(dim=1)  # 0 = best group
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    within = 0.5 * (flat - lo) / (hi - lo).clamp_min(1e-12)                 # in [0, 0.5]
    key = within - rank.gather(1, seg).to(flat.dtype)                        # lexicographic order
    return topk_mask(key.view_as(scores), k)

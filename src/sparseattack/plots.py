"""Pictures that papers in this field show: adversarial images and perturbation maps."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor
from .validation import ValidationError


def to_uint8(image: Tensor) -> np.ndarray:
    """(C, H, W) or (1, C, H, W) tensor in [0, 1] to an (H, W) (C = 1) or (H, W, C) uint8 array:
    clamped to [0, 1], then rounded to the nearest 8-bit level (round(255 x), ties to even), not
    truncated, so a tensor on the grid (values k/255) maps back to exactly k."""
    if image.dim() == 4:
        image = image[0]
    arr = (image.detach().cpu().float().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def save_image(image: Tensor, path: str | Path) -> Path:
    """Save a [0, 1] image tensor, (C, H, W) or (1, C, H, W), as an 8-bit image (PNG unless the
    path names another format; a path without a suffix gets PNG data).

    C = 1 is written as 8-bit grayscale (PIL mode 'L'), C = 3 as 8-bit RGB. Values are clamped to
    [0, 1] and rounded to the nearest level k/255 (ties to even; see `to_uint8`), so a tensor on
    the 8-bit grid survives a PNG round trip exactly:
    `sparseattack.data.load_image(path, channels=C)` returns it unchanged. An off-grid float tensor
    is stored rounded (the exact tensor is what the reports measure); lossy formats (JPEG) do not
    round-trip. Raises ValueError for another shape, a batch of more than one image, or
    non-finite values."""
    from PIL import Image

    if image.dim() == 4 and image.shape[0] != 1:
        raise ValidationError(f"save_image saves one image, got a batch of {image.shape[0]}")
    if image.dim() not in (3, 4) or image.shape[-3] not in (1, 3):
        raise ValidationError(f"save_image expects a (C, H, W) or (1, C, H, W) tensor with C = 1 or 3, "
                         f"got shape {tuple(image.shape)}")
    if not bool(image.detach().isfinite().all()):
        raise ValidationError("save_image: the image has NaN or infinite values")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(image)
    im = Image.fromarray(arr)  # uint8 (H, W) -> mode 'L', (H, W, 3) -> mode 'RGB'
    try:
        im.save(path, format=None if path.suffix else "PNG")
    except (ValueError, KeyError) as exc:  # PIL: unknown extension
        raise ValidationError(f"cannot save an image as {path}: {exc}") from None
    return path


def save_perturbation_map(inputs: Tensor, adv: Tensor, path: str | Path, *, title: str = "") -> Path:
    """Three panels: clean image, adversarial image, and |delta| per pixel (channel l2) as a heat
    map with the perturbed pixels' count in the caption."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if inputs.dim() == 4:
        inputs, adv = inputs[0], adv[0]
    delta = (adv - inputs).detach().cpu()
    mag = delta.pow(2).sum(0).sqrt().numpy()
    pixels = int((delta.abs().sum(0) > 0).sum())
    gray = inputs.shape[0] == 1
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    axes[0].imshow(to_uint8(inputs), cmap="gray" if gray else None)
    axes[0].set_title("clean")
    axes[1].imshow(to_uint8(adv), cmap="gray" if gray else None)
    axes[1].set_title("adversarial")
    im = axes[2].imshow(np.where(mag > 0, mag, np.nan), cmap="magma")
    axes[2].set_facecolor("black")
    axes[2].set_title(f"|δ| per pixel ({pixels} pixels)")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

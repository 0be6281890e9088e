"""The papers' figure writers (sparseattack.figures) on small synthetic tensors: each writes a
readable, non-blank PNG of a sensible size, for grayscale and RGB images, and refuses bad shapes.

Sizes are asserted loosely (they depend on the matplotlib version and its fonts)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparseattack import figures
from sparseattack.validation import ValidationError

MIN_WIDTH, MIN_HEIGHT = 300, 150


def is_blank(path, *, min_std: float = 2.0, min_colors: int = 8) -> bool:
    """Whether the image at `path` is essentially one color: the pixel std of its grayscale
    version is below `min_std` (on 0..255) or it has fewer than `min_colors` distinct colors."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint32)
        gray = np.asarray(im.convert("L"), dtype=np.float64)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    colors = np.unique(packed).size
    return gray.std() < min_std or colors < min_colors


def assert_png(path):
    from PIL import Image

    assert path.exists() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        width, height = im.size
    assert width > MIN_WIDTH and height > MIN_HEIGHT, (width, height)
    assert not is_blank(path)


def _image(channels, side, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(channels, side, side, generator=g)


def _sparse_delta(image, fraction=0.1, scale=0.3, seed=1):
    """A perturbation on a random `fraction` of the pixels (all channels), kept inside [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(1, *image.shape[1:], generator=g) < fraction).float()
    raw = (torch.rand(image.shape, generator=g) * 2 - 1) * scale * mask
    return (image + raw).clamp(0, 1) - image


GRAY = _image(1, 28)
RGB = _image(3, 32, seed=2)


@pytest.fixture(params=["gray", "rgb"])
def image(request):
    return GRAY if request.param == "gray" else RGB


def test_is_blank_detects_a_single_color(tmp_path):
    from PIL import Image

    Image.new("RGB", (400, 200), (255, 255, 255)).save(tmp_path / "white.png")
    assert is_blank(tmp_path / "white.png")


def test_targets_figure(image, tmp_path):
    deltas = torch.stack([_sparse_delta(image, seed=s) for s in range(4)])
    deltas[:, :, :4, :4] = 0.2  # a corner every target perturbs
    names = {str(i): f"class {i}, synonym" for i in range(10)}
    path = figures.targets_figure(image, deltas, [1, 2, 3, 4], tmp_path / "sub" / "fig12.png",
                                  class_names=names, label=0)
    assert path == tmp_path / "sub" / "fig12.png"
    assert_png(path)


def test_targets_figure_refuses_bad_shapes(tmp_path):
    deltas = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValidationError, match="deltas must have shape"):
        figures.targets_figure(GRAY, deltas, [1, 2], tmp_path / "x.png")
    with pytest.raises(ValidationError, match="targets has 3 classes"):
        figures.targets_figure(RGB, deltas, [1, 2, 3], tmp_path / "x.png")
    with pytest.raises(ValidationError, match="image must be a"):
        figures.targets_figure(RGB[:2], deltas, [1, 2], tmp_path / "x.png")
    with pytest.raises(ValidationError, match=r"\[0, 1\]"):
        figures.targets_figure(RGB * 2, deltas, [1, 2], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_group_sparsity_figure(image, tmp_path):
    from skimage.segmentation import slic

    if image.shape[0] == 1:  # a 4x4 grid of 7x7 cells
        cells = torch.arange(4).repeat_interleave(7)
        segments = (cells[:, None] * 4 + cells[None, :]).numpy()
    else:  # SLIC; on noise only a high compactness keeps the 16 superpixels from merging
        arr = image.permute(1, 2, 0).numpy().astype(np.float64)
        segments = slic(arr, n_segments=16, compactness=100, start_label=0)
        assert len(np.unique(segments)) > 4
    d0 = _sparse_delta(image, seed=3)
    d10 = torch.zeros_like(image)
    d10[:, :8, :8] = _sparse_delta(image, fraction=0.6, seed=4)[:, :8, :8]
    norms = {10: {"l1": 1.5, "l2": torch.tensor(0.5)}}
    path = figures.group_sparsity_figure(image, {0: d0, 10: d10}, torch.from_numpy(segments),
                                         tmp_path / "fig3.png", norms=norms)
    assert_png(path)


def test_group_sparsity_figure_refuses_bad_segments(tmp_path):
    grid = torch.arange(4).repeat_interleave(7)
    segments = grid[:, None] * 4 + grid[None, :]  # 4x4 grid of 7x7 cells on 28x28
    d = {0: torch.zeros_like(GRAY)}
    with pytest.raises(ValidationError, match="segments must be an"):
        figures.group_sparsity_figure(GRAY, d, segments[:20], tmp_path / "x.png")
    with pytest.raises(ValidationError, match="integer label map"):
        figures.group_sparsity_figure(GRAY, d, segments.float(), tmp_path / "x.png")
    with pytest.raises(ValidationError, match="image's shape"):
        figures.group_sparsity_figure(GRAY, {0: torch.zeros(3, 28, 28)}, segments, tmp_path / "x.png")
    with pytest.raises(ValidationError, match="no perturbation"):
        figures.group_sparsity_figure(GRAY, d, segments, tmp_path / "x.png", norms={5: {"l1": 1.0}})


def test_sweep_figure(tmp_path):
    rows = []
    for method, scale in (("SAPF", 1.0), ("PGD-l0", 1.5)):
        for k in (10, 20, 50, 100):
            rows.append({"method": method, "k": k, "l1": scale * 5 + k / 20, "l2": scale / math.sqrt(k) + 0.2,
                         "linf": scale / k ** 0.25, "asr": 1.0})
    rows.append({"method": "SAPF", "k": 5, "l1": float("nan"), "l2": float("nan"), "linf": float("nan"),
                 "asr": 0.0})  # no successful pair: skipped
    path = figures.sweep_figure(rows, tmp_path / "fig4.png")
    assert_png(path)


def test_sweep_figure_refuses_bad_rows(tmp_path):
    with pytest.raises(ValidationError, match="empty"):
        figures.sweep_figure([], tmp_path / "x.png")
    with pytest.raises(ValidationError, match="lacks the key"):
        figures.sweep_figure([{"method": "a", "k": 1, "l1": 1.0, "l2": 1.0}], tmp_path / "x.png")
    with pytest.raises(ValidationError, match="must be an int"):
        figures.sweep_figure([{"method": "a", "k": "ten", "l1": 1, "l2": 1, "linf": 1}], tmp_path / "x.png")


def test_weighting_figure(image, tmp_path):
    deltas = {s: _sparse_delta(image, fraction=0.2, seed=i) for i, s in enumerate(
        ("variance-mean", "uniform", "variance"))}
    path = figures.weighting_figure(image, deltas, tmp_path / "fig5.png", top_fraction=0.05)
    assert_png(path)


def test_weighting_figure_refuses_bad_input(tmp_path):
    with pytest.raises(ValidationError, match="top_fraction"):
        figures.weighting_figure(RGB, {"uniform": torch.zeros_like(RGB)}, tmp_path / "x.png", top_fraction=0)
    with pytest.raises(ValidationError, match="empty"):
        figures.weighting_figure(RGB, {}, tmp_path / "x.png")
    with pytest.raises(ValidationError, match="image's shape"):
        figures.weighting_figure(RGB, {"uniform": torch.zeros(3, 16, 16)}, tmp_path / "x.png")


def test_group_map_figure(image, tmp_path):
    cw = _sparse_delta(image, fraction=0.9, scale=0.05, seed=5)
    st = torch.zeros_like(image)
    st[:, 4:10, 6:12] = _sparse_delta(image, fraction=1.0, seed=6)[:, 4:10, 6:12]
    path = figures.group_map_figure(image, {"C&W-ℓ2": cw, "StrAttack": st}, tmp_path / "fig1.png",
                                    group_size=4, stride=4)
    assert_png(path)


def test_group_map_figure_mean_abs_overlapping(tmp_path):
    d = _sparse_delta(RGB, seed=7)
    path = figures.group_map_figure(RGB, {"StrAttack": d}, tmp_path / "fig2.png", group_size=3, stride=2,
                                    reduce="mean_abs")
    assert_png(path)


def test_group_map_figure_refuses_bad_groups(tmp_path):
    d = {"StrAttack": torch.zeros_like(GRAY)}
    with pytest.raises(ValidationError, match="exceeds the image size"):
        figures.group_map_figure(GRAY, d, tmp_path / "x.png", group_size=29, stride=1)
    with pytest.raises(ValidationError, match="stride must be >= 1"):
        figures.group_map_figure(GRAY, d, tmp_path / "x.png", group_size=2, stride=0)
    with pytest.raises(ValidationError, match="reduce"):
        figures.group_map_figure(GRAY, d, tmp_path / "x.png", group_size=2, stride=2, reduce="max")


def test_interpretability_figure(tmp_path):
    nus = list(range(30, 100, 10))
    curves = {"StrAttack": (nus, [0.9 - 0.05 * i for i in range(len(nus))]),
              "C&W": (torch.tensor(nus), np.array([0.85 - 0.06 * i for i in range(len(nus) - 1)] + [np.nan]))}
    path = figures.interpretability_figure(curves, tmp_path / "fig3a.png")
    assert_png(path)


def test_interpretability_figure_refuses_bad_curves(tmp_path):
    with pytest.raises(ValidationError, match="2 nus but 3 scores"):
        figures.interpretability_figure({"a": ([30, 40], [0.1, 0.2, 0.3])}, tmp_path / "x.png")
    with pytest.raises(ValidationError, match="pair"):
        figures.interpretability_figure({"a": [0.1, 0.2, 0.3]}, tmp_path / "x.png")


def test_saliency_figure(image, tmp_path):
    h, w = image.shape[1:]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cam = torch.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (2 * (h / 5) ** 2))
    asm = torch.rand(image.shape, generator=torch.Generator().manual_seed(8))
    deltas = {"StrAttack": _sparse_delta(image, seed=9), "C&W": _sparse_delta(image, fraction=0.8, seed=10)}
    path = figures.saliency_figure(image, {"ASM": asm, "CAM": cam}, deltas, tmp_path / "fig3b.png")
    assert_png(path)


def test_saliency_figure_refuses_bad_maps(tmp_path):
    d = {"StrAttack": torch.zeros_like(RGB)}
    with pytest.raises(ValidationError, match="saliency_maps"):
        figures.saliency_figure(RGB, torch.rand(16, 16), d, tmp_path / "x.png")
    with pytest.raises(ValidationError, match="percentile"):
        figures.saliency_figure(RGB, torch.rand(32, 32), d, tmp_path / "x.png", percentile=100)


def test_suffixless_path_gets_png_data(tmp_path):
    path = figures.sweep_figure([{"method": "SAPF", "k": 10, "l1": 1.0, "l2": 0.5, "linf": 0.3}],
                                tmp_path / "deep" / "fig4")
    assert_png(path)

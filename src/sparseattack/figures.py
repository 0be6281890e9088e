"""The papers' figures, drawn from already computed perturbations and records (no attack is run here).

SAPF (Fan et al., "Sparse Adversarial Attack via Perturbation Factorization", ECCV 2020):

- `targets_figure`: Figs. 1-2, a benign image, its perturbations toward several target classes and
  the positions they have in common;
- `group_sparsity_figure`: Fig. 3, SAPF-GS perturbations without and with the group-sparsity term
  (lambda_2 = 0 vs 10) over the SLIC superpixels;
- `sweep_figure`: Fig. 4, the l1, l2 and l_inf norms against the number of perturbed positions k;
- `weighting_figure`: Fig. 5, the top-1% perturbed positions of SAPF-VI's three weighting strategies.

StrAttack (Xu et al., "Structured Adversarial Attack", ICLR 2019):

- `group_map_figure`: Figs. 1-2, the per-group strength of each method's perturbation as a heat map;
- `interpretability_figure`: Fig. 3(a), the ASM interpretability score IS (23) against nu;
- `saliency_figure`: Figs. 3(b)-(c), an image, its ASM / CAM and each method's B o delta with the
  salient region's contour.

Every writer takes images as (C, H, W) tensors in [0, 1] with C = 1 (grayscale) or 3 (RGB) (a
(1, C, H, W) batch of one is accepted, and so are NumPy arrays) and perturbations of the image's
shape, writes one PNG (or the format the path's suffix names; a path without a suffix gets PNG
data) at 120 dpi, laid out by matplotlib's constrained layout (panels, labels and colorbars fit the
figure without overlap or clipping), creating the parent folders, and returns the path.
Wrong shapes, types or values raise `validation.ValidationError` naming the problem.

Figures are drawn on `matplotlib.figure.Figure` objects directly, without pyplot and without
touching the global backend, so writers may run in threads.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .eval.metrics import perturbation_norms
from .eval.tables import format_value
from .plots import to_uint8
from .validation import ValidationError, ValidationTypeError

__all__ = ["targets_figure", "group_sparsity_figure", "sweep_figure", "weighting_figure",
           "group_map_figure", "interpretability_figure", "saliency_figure", "DPI"]

DPI = 120
PANEL = 2.4  # inches per image panel
DIVERGING = "RdBu_r"  # signed perturbations: blue < 0 < red, white at 0
NORM_LABELS = {"l0": r"$\ell_0$", "l1": r"$\ell_1$", "l2": r"$\ell_2$", "linf": r"$\ell_\infty$"}
SAPF_WEIGHTINGS = ("uniform", "variance", "variance-mean")


# ---------------------------------------------------------------------------------------------
# checks


def _tensor(x, name: str) -> Tensor:
    """x as a detached float32 CPU tensor (NumPy arrays are converted)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.asarray(x))
    if not isinstance(x, Tensor):
        raise ValidationTypeError(f"{name} must be a torch.Tensor (or NumPy array), got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValidationTypeError(f"{name} must be a real-valued tensor, got dtype {x.dtype}")
    x = x.detach().cpu().float()
    if not bool(torch.isfinite(x).all()):
        raise ValidationError(f"{name} contains NaN or infinite values")
    return x


def _check_image(image, name: str = "image") -> Tensor:
    """A (C, H, W) image with C in (1, 3) and values in [0, 1] (a (1, C, H, W) batch of one too)."""
    image = _tensor(image, name)
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValidationError(f"{name} must be a (C, H, W) tensor with C = 1 (grayscale) or 3 (RGB), "
                              f"got shape {tuple(image.shape)}")
    if image.shape[1] < 2 or image.shape[2] < 2:
        raise ValidationError(f"{name} must be at least 2x2 pixels, got shape {tuple(image.shape)}")
    lo, hi = image.min().item(), image.max().item()
    if lo < 0 or hi > 1:
        raise ValidationError(f"{name} must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return image


def _check_delta(delta, image: Tensor, name: str) -> Tensor:
    """A perturbation of the image's (C, H, W) shape (a (1, C, H, W) batch of one too)."""
    delta = _tensor(delta, name)
    if delta.dim() == 4 and delta.shape[0] == 1:
        delta = delta[0]
    if tuple(delta.shape) != tuple(image.shape):
        raise ValidationError(f"{name} must have the image's shape {tuple(image.shape)}, got "
                              f"{tuple(delta.shape)}")
    return delta


def _check_mapping(value, name: str, what: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValidationTypeError(f"{name} must be a dict {{{what}}}, got {type(value).__name__}")
    if not value:
        raise ValidationError(f"{name} is empty: give at least one {what.split(':')[0].strip()}")
    return value


def _check_deltas_by(value, image: Tensor, name: str, what: str) -> dict:
    """{key: delta} with every delta checked to have the image's shape, in the mapping's order."""
    value = _check_mapping(value, name, what)
    return {key: _check_delta(d, image, f"{name}[{key!r}]") for key, d in value.items()}


def _check_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValidationTypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValidationError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# drawing helpers


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path: str | Path) -> Path:
    """Write the figure (PNG unless the suffix names another format matplotlib writes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # layout engine notes on tiny panels
            fig.savefig(path, dpi=DPI, format=None if path.suffix else "png")
    except ValueError as exc:  # matplotlib: unknown format
        raise ValidationError(f"cannot save a figure as {path}: {exc}") from None
    return path


def _bare(ax) -> None:
    """No ticks, but keep the axes' labels (the text under each panel goes in the x label)."""
    ax.set_xticks([])
    ax.set_yticks([])


def _show_image(ax, image: Tensor, *, alpha: float = 1.0, faded: bool = False) -> None:
    """The (C, H, W) image; `faded` draws it half-transparent over white (a background for marks)."""
    arr = to_uint8(image)
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255,
              alpha=0.45 if faded else alpha, interpolation="nearest")
    _bare(ax)


def _signed_map(delta: Tensor) -> np.ndarray:
    """(H, W) signed perturbation: per pixel the channel entry of largest magnitude, with its sign
    (the entry itself for grayscale)."""
    if delta.shape[0] == 1:
        return delta[0].numpy()
    idx = delta.abs().argmax(0, keepdim=True)
    return delta.gather(0, idx)[0].numpy()


def _magnitude(delta: Tensor) -> np.ndarray:
    """(H, W) per-pixel magnitude: the l2 norm over the channels."""
    return delta.pow(2).sum(0).sqrt().numpy()


def _symmetric_limit(maps: Iterable[np.ndarray]) -> float:
    vmax = max((float(np.abs(m).max()) for m in maps), default=0.0)
    return vmax if vmax > 0 else 1.0


def _show_signed(ax, signed: np.ndarray, vmax: float, *, mask_zero: bool = False):
    shown = np.ma.masked_equal(signed, 0.0) if mask_zero else signed
    im = ax.imshow(shown, cmap=DIVERGING, vmin=-vmax, vmax=vmax, interpolation="nearest")
    _bare(ax)
    return im


def _norm_text(norms: Mapping, keys: Sequence[str] = ("l0", "l1", "l2", "linf")) -> str:
    """'l0 = 12, l1 = 3.1\\nl2 = 0.9, linf = 0.42' for the keys present (mathtext labels)."""
    parts = [f"{NORM_LABELS[k]}={format_value(k, _scalar(norms[k]))}" for k in keys if k in norms]
    lines = [", ".join(parts[i:i + 2]) for i in range(0, len(parts), 2)]
    return "\n".join(lines)


def _scalar(v):
    if isinstance(v, Tensor):
        v = v.detach().cpu().reshape(-1)[0].item() if v.numel() else float("nan")
    if isinstance(v, np.generic):
        v = v.item()
    return v


def _norms_of(delta: Tensor, groups: Tensor | None = None) -> dict:
    out = perturbation_norms(delta[None], groups=groups)
    return {k: (int(v[0]) if k in ("l0", "l0_pixels", "groups") else float(v[0])) for k, v in out.items()}


def _class_name(cls: int, class_names) -> str:
    """The class's display name (the first synonym of ImageNet's 'a, b, c' names) or its index."""
    if class_names is None:
        return str(cls)
    try:
        if isinstance(class_names, Mapping):
            name = class_names[cls] if cls in class_names else class_names[str(cls)]
        else:
            name = class_names[cls]
    except (KeyError, IndexError, TypeError):
        raise ValidationError(f"class_names has no entry for class {cls}") from None
    return str(name).split(",")[0].strip()


# ---------------------------------------------------------------------------------------------
# SAPF


def targets_figure(image, deltas, targets, path: str | Path, *, class_names=None, title: str | None = None,
                   label: int | None = None) -> Path:
    """SAPF Figs. 1-2: one benign image, its sparse perturbations toward several targets, and their
    common perturbed positions.

    Panels, left to right: the benign image (its class under it when `label` is given); for each
    target the signed perturbation (per pixel the channel entry of largest magnitude, diverging
    colormap symmetric around 0, white = unperturbed, one scale shared by all targets) with the
    target class and the l0 (entries), l1, l2 and l_inf norms under it (the text of Fig. 1); last,
    the common positions (Fig. 2, right-most column): per pixel the number of targets whose
    perturbation changes it, with the counts of pixels perturbed by all targets and by at least
    half of them.

    Parameters
    ----------
    image : Tensor
        The benign image (C, H, W) in [0, 1], C = 1 or 3.
    deltas : Tensor
        The perturbations (T, C, H, W), one per target (T >= 1).
    targets : sequence of int, Tensor or ndarray
        The T target classes, in the order of `deltas`.
    path : str or Path
        Output file (PNG unless its suffix names another format).
    class_names : sequence or mapping, optional
        Class index -> name (a list, or a dict keyed by int or by str such as
        `data/imagenet_classes.json`); default None: indices are shown.
    title : str, optional
        The figure's title; default None: "SAPF Figs. 1-2: ...".
    label : int, optional
        The benign image's true class, written under it; default None: not shown.

    Returns
    -------
    Path
        `path`.
    """
    image = _check_image(image)
    deltas = _tensor(deltas, "deltas")
    if deltas.dim() == 3 and image.shape[0] == 1 and deltas.shape[1:] == image.shape[1:]:
        deltas = deltas[:, None]
    if deltas.dim() != 4 or tuple(deltas.shape[1:]) != tuple(image.shape) or deltas.shape[0] < 1:
        raise ValidationError(f"deltas must have shape (T, {', '.join(map(str, image.shape))}) with T >= 1 "
                              f"perturbations of the image, got {tuple(deltas.shape)}")
    if isinstance(targets, Tensor):
        targets = targets.detach().cpu().reshape(-1).tolist()
    elif isinstance(targets, np.ndarray):
        targets = targets.reshape(-1).tolist()
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence):
        raise ValidationTypeError(f"targets must be a sequence of class indices, got {type(targets).__name__}")
    targets = [_check_int(t, f"targets[{i}]", 0) for i, t in enumerate(targets)]
    n = deltas.shape[0]
    if len(targets) != n:
        raise ValidationError(f"targets has {len(targets)} classes but deltas has {n} perturbations")
    if label is not None:
        label = _check_int(label, "label", 0)

    signed = [_signed_map(d) for d in deltas]
    vmax = _symmetric_limit(signed)
    perturbed = (deltas != 0).any(1)  # (T, H, W)
    counts = perturbed.sum(0).numpy()

    fig = _figure(PANEL * (n + 2) + 1.0, PANEL + 1.3)
    axes = fig.subplots(1, n + 2, squeeze=False)[0]
    _show_image(axes[0], image)
    axes[0].set_title("benign image", fontsize=9)
    if label is not None:
        axes[0].set_xlabel(_class_name(label, class_names), fontsize=8)
    im = None
    for i, (ax, d, t) in enumerate(zip(axes[1:n + 1], deltas, targets)):
        im = _show_signed(ax, signed[i], vmax)
        ax.set_title(f"target: {_class_name(t, class_names)}", fontsize=9)
        ax.set_xlabel(_norm_text(_norms_of(d)), fontsize=8)
    fig.colorbar(im, ax=list(axes[1:n + 1]), location="bottom", shrink=0.6, aspect=40, pad=0.02,
                 label="δ (largest-magnitude channel)" if image.shape[0] > 1 else "δ")

    from matplotlib import colormaps
    from matplotlib.colors import BoundaryNorm, ListedColormap

    ax = axes[-1]
    colors = [(1.0, 1.0, 1.0, 1.0)] + list(colormaps["viridis_r"](np.linspace(0.15, 1.0, n)))
    cmap = ListedColormap(colors)
    norm = BoundaryNorm(np.arange(-0.5, n + 1.5), cmap.N)
    cim = ax.imshow(counts, cmap=cmap, norm=norm, interpolation="nearest")
    _bare(ax)
    ax.set_title("common positions", fontsize=9)
    common, most = int((counts == n).sum()), int((counts >= math.ceil(n / 2)).sum())
    ax.set_xlabel(f"all {n} targets: {common} px\n≥ {math.ceil(n / 2)} targets: {most} px", fontsize=8)
    fig.colorbar(cim, ax=ax, ticks=range(n + 1), shrink=0.8, label="targets perturbing the pixel")
    fig.suptitle(title or f"SAPF Figs. 1-2: sparse perturbations toward {n} target classes "
                          "and their common positions", fontsize=10)
    return _save(fig, path)


def _check_segments(segments, image: Tensor) -> Tensor:
    if isinstance(segments, np.ndarray):
        segments = torch.from_numpy(np.asarray(segments))
    if not isinstance(segments, Tensor):
        raise ValidationTypeError(f"segments must be a torch.Tensor (or NumPy array) label map, got "
                                  f"{type(segments).__name__}")
    if segments.is_floating_point() or segments.is_complex() or segments.dtype == torch.bool:
        raise ValidationTypeError(f"segments must be an integer label map, got dtype {segments.dtype}")
    segments = segments.detach().cpu().long()
    if segments.dim() == 3 and segments.shape[0] == 1:
        segments = segments[0]
    if tuple(segments.shape) != tuple(image.shape[1:]):
        raise ValidationError(f"segments must be an (H, W) = {tuple(image.shape[1:])} label map, got shape "
                              f"{tuple(segments.shape)}")
    if (segments < 0).any():
        raise ValidationError("segments contains negative labels")
    return segments


def _draw_boundaries(ax, segments: np.ndarray, color, *, linewidth: float = 0.8, alpha: float = 0.8) -> None:
    """The superpixel boundaries as lines along the pixel edges between differing labels (thin at
    any image size, unlike a boundary mask)."""
    from matplotlib.collections import LineCollection

    rows, cols = np.nonzero(segments[:-1, :] != segments[1:, :])  # edge below (r, c)
    horizontal = [((c - 0.5, r + 0.5), (c + 0.5, r + 0.5)) for r, c in zip(rows, cols)]
    rows, cols = np.nonzero(segments[:, :-1] != segments[:, 1:])  # edge right of (r, c)
    vertical = [((c + 0.5, r - 0.5), (c + 0.5, r + 0.5)) for r, c in zip(rows, cols)]
    ax.add_collection(LineCollection(horizontal + vertical, colors=[color], linewidths=linewidth,
                                     alpha=alpha, capstyle="projecting"))
    h, w = segments.shape
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def group_sparsity_figure(image, deltas_by_lambda, segments, path: str | Path, *, norms=None) -> Path:
    """SAPF Fig. 3: SAPF-GS (model (16)) perturbations without and with group-wise sparsity
    (lambda_2 = 0 vs lambda_2 = 10) over the SLIC superpixels that form its groups.

    Panels, left to right: the benign image with the superpixel boundaries, then one panel per
    lambda_2 (in increasing order): the signed perturbation (largest-magnitude channel, diverging
    colormap, one scale shared by the panels, unperturbed pixels white) with the superpixel
    boundaries drawn along the pixel edges (gray), with
    lambda_2, the l0 (entries), l1, l2, l_inf norms and the number of superpixels the perturbation
    touches written under it.

    Parameters
    ----------
    image : Tensor
        The benign image (C, H, W) in [0, 1], C = 1 or 3.
    deltas_by_lambda : dict
        {lambda_2: delta (C, H, W)}, e.g. {0: d0, 10: d10}.
    segments : Tensor or ndarray
        (H, W) integer superpixel label map (e.g. `ops.groups.superpixel_segments(x)[0]` or
        `skimage.segmentation.slic`); a (1, H, W) map is accepted.
    path : str or Path
        Output file (PNG unless its suffix names another format).
    norms : dict, optional
        {lambda_2: {"l0": .., "l1": .., "l2": .., "linf": ..}}: the norms to print (e.g. means the
        caller measured); default None: computed from each delta (also for a lambda_2 or a key it
        leaves out).

    Returns
    -------
    Path
        `path`.
    """
    image = _check_image(image)
    deltas = _check_mapping(deltas_by_lambda, "deltas_by_lambda", "lambda_2: delta")
    by_lam = {}
    for key, d in deltas.items():
        try:
            lam = float(key)
        except (TypeError, ValueError):
            raise ValidationTypeError(f"deltas_by_lambda keys must be numbers (lambda_2), got {key!r}") from None
        by_lam[lam] = (key, _check_delta(d, image, f"deltas_by_lambda[{key!r}]"))
    segments = _check_segments(segments, image)
    given = {}
    if norms is not None:
        for key, value in _check_mapping(norms, "norms", "lambda_2: {norm: value}").items():
            try:
                lam = float(key)
            except (TypeError, ValueError):
                raise ValidationTypeError(f"norms keys must be numbers (lambda_2), got {key!r}") from None
            if lam not in by_lam:
                raise ValidationError(f"norms has lambda_2 = {key!r}, which has no perturbation in deltas_by_lambda")
            if not isinstance(value, Mapping):
                raise ValidationTypeError(f"norms[{key!r}] must be a dict {{norm: value}}, got {type(value).__name__}")
            given[lam] = value

    lams = sorted(by_lam)
    n_groups = int(torch.unique(segments).numel())
    signed = {lam: _signed_map(by_lam[lam][1]) for lam in lams}
    vmax = _symmetric_limit(signed.values())

    fig = _figure(PANEL * (len(lams) + 1) + 0.8, PANEL + 1.1)
    axes = fig.subplots(1, len(lams) + 1, squeeze=False)[0]
    _show_image(axes[0], image)
    _draw_boundaries(axes[0], segments.numpy(), (1.0, 0.85, 0.0))
    axes[0].set_title("benign image", fontsize=9)
    axes[0].set_xlabel(f"{n_groups} superpixels", fontsize=8)
    im = None
    for ax, lam in zip(axes[1:], lams):
        key, delta = by_lam[lam]
        im = _show_signed(ax, signed[lam], vmax, mask_zero=True)
        _draw_boundaries(ax, segments.numpy(), "0.45", linewidth=0.6)
        measured = _norms_of(delta, groups=segments)
        shown = {**measured, **{k: v for k, v in given.get(lam, {}).items() if k in NORM_LABELS}}
        ax.set_title(f"SAPF-GS, $\\lambda_2$ = {lam:g}", fontsize=9)
        ax.set_xlabel(f"{_norm_text(shown)}\nsuperpixels touched: {measured['groups']}/{n_groups}", fontsize=8)
    fig.colorbar(im, ax=list(axes[1:]), shrink=0.8, label="δ (largest-magnitude channel)"
                 if image.shape[0] > 1 else "δ")
    fig.suptitle("SAPF Fig. 3: perturbations without and with group-wise sparsity "
                 "(SLIC superpixel boundaries in gray)", fontsize=10)
    return _save(fig, path)


SWEEP_NORMS = ("l1", "l2", "linf")


def sweep_figure(rows, path: str | Path) -> Path:
    """SAPF Fig. 4: the l1, l2 and l_inf norms of the perturbations against the number of perturbed
    positions k, three plots side by side, one line (with markers at the measured k) per method.

    Parameters
    ----------
    rows : iterable of dict
        {"method": str, "k": int, "l1": float, "l2": float, "linf": float, "asr": float}, one per
        method and k (norms: means over the successful pairs; "asr" is optional and not drawn).
        NaN or None norms (no successful pair) are skipped; a method's points are sorted by k.
    path : str or Path
        Output file (PNG unless its suffix names another format).

    Returns
    -------
    Path
        `path`.
    """
    if isinstance(rows, (Mapping, str, bytes)) or not isinstance(rows, Iterable):
        raise ValidationTypeError(f"rows must be a list of dicts, got {type(rows).__name__}")
    rows = list(rows)
    if not rows:
        raise ValidationError("rows is empty: give at least one {method, k, l1, l2, linf} record")
    series: dict[str, list[tuple[int, dict]]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValidationTypeError(f"rows[{i}] must be a dict, got {type(row).__name__}")
        missing = [k for k in ("method", "k", *SWEEP_NORMS) if k not in row]
        if missing:
            raise ValidationError(f"rows[{i}] lacks the key(s) {', '.join(missing)}")
        k = _check_int(_scalar(row["k"]), f"rows[{i}]['k']", 1)
        vals = {}
        for key in SWEEP_NORMS:
            v = _scalar(row[key])
            if v is None:
                v = float("nan")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValidationTypeError(f"rows[{i}][{key!r}] must be a number, got {type(v).__name__}")
            vals[key] = float(v)
        series.setdefault(str(row["method"]), []).append((k, vals))

    from matplotlib.ticker import MaxNLocator

    fig = _figure(4.2 * len(SWEEP_NORMS), 3.6)
    axes = fig.subplots(1, len(SWEEP_NORMS), squeeze=False)[0]
    handles = {}
    for ax, key in zip(axes, SWEEP_NORMS):
        drawn = False
        for j, (method, pts) in enumerate(series.items()):
            pts = sorted((k, v[key]) for k, v in pts if math.isfinite(v[key]))
            if not pts:
                continue
            x, y = zip(*pts)
            (line,) = ax.plot(x, y, marker="o", markersize=4, color=f"C{j % 10}", label=method)
            handles.setdefault(method, line)
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "no successful pairs", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("k (perturbed positions)")
        ax.set_ylabel(NORM_LABELS[key] + " norm")
        ax.set_title(NORM_LABELS[key] + " vs k", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncol=min(len(handles), 5), fontsize=9)
    fig.suptitle("SAPF Fig. 4: $\\ell_1, \\ell_2, \\ell_\\infty$ norms of the perturbations vs the number "
                 "of perturbed positions k", fontsize=10)
    return _save(fig, path)


def _top_positions(delta: Tensor, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the ceil(fraction * H * W) pixels of largest channel-l2 magnitude (perturbed
    pixels only)."""
    mag = torch.from_numpy(_magnitude(delta)).flatten()
    count = min(max(1, math.ceil(fraction * mag.numel())), int((mag > 0).sum()))
    idx = mag.topk(count).indices.numpy() if count else np.zeros(0, dtype=np.int64)
    w = delta.shape[-1]
    return idx // w, idx % w


def weighting_figure(image, deltas_by_strategy, path: str | Path, *, top_fraction: float = 0.01) -> Path:
    """SAPF Fig. 5: the perturbed positions of SAPF-VI (model (17)) under its weighting strategies
    ('uniform', 'variance', 'variance-mean'), as the paper shows them: the top-1% positions of
    largest magnitude marked in red on the (faded) benign image, one panel per strategy.

    A position's magnitude is the l2 norm of delta over the channels; only perturbed positions are
    marked, so a perturbation with fewer nonzero pixels than the top fraction marks all of them.

    Parameters
    ----------
    image : Tensor
        The benign image (C, H, W) in [0, 1], C = 1 or 3.
    deltas_by_strategy : dict
        {strategy: delta (C, H, W)}; the paper's three strategies are drawn in its order, any
        other key after them.
    path : str or Path
        Output file (PNG unless its suffix names another format).
    top_fraction : float, default 0.01
        The fraction of the H x W positions marked (the paper's top 1%), in (0, 1].

    Returns
    -------
    Path
        `path`.
    """
    image = _check_image(image)
    deltas = _check_deltas_by(deltas_by_strategy, image, "deltas_by_strategy", "strategy: delta")
    if isinstance(top_fraction, bool) or not isinstance(top_fraction, (int, float)) \
            or not 0 < top_fraction <= 1:
        raise ValidationError(f"top_fraction must be a number in (0, 1], got {top_fraction!r}")
    order = [s for s in SAPF_WEIGHTINGS if s in deltas] + [s for s in deltas if s not in SAPF_WEIGHTINGS]
    h, w = image.shape[1:]

    fig = _figure(PANEL * (len(order) + 1), PANEL + 0.9)
    axes = fig.subplots(1, len(order) + 1, squeeze=False)[0]
    _show_image(axes[0], image)
    axes[0].set_title("(a) benign image", fontsize=9)
    pixel_pt = PANEL * 72 / max(h, w)  # one pixel's side in points
    size = max(pixel_pt * 0.9, 3.0) ** 2
    for i, (ax, strategy) in enumerate(zip(axes[1:], order)):
        rows, cols = _top_positions(deltas[strategy], float(top_fraction))
        _show_image(ax, image, faded=True)
        ax.scatter(cols, rows, s=size, c="red", marker="s" if pixel_pt >= 3 else "o", linewidths=0)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_title(f"({chr(ord('b') + i)}) {strategy}", fontsize=9)
        ax.set_xlabel(f"top {top_fraction:.0%} of |δ|: {len(rows)} px", fontsize=8)
    fig.suptitle("SAPF Fig. 5: perturbed positions of SAPF-VI's weighting strategies "
                 f"(top {top_fraction:.0%} by magnitude in red)", fontsize=10)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# StrAttack


def group_map_figure(image, deltas_by_method, path: str | Path, *, group_size: int, stride: int,
                     reduce: str = "l2") -> Path:
    """StrAttack Figs. 1-2: the group sparsity of each method's perturbation (e.g. C&W-l2 vs
    StrAttack), the strength of the perturbation in each r x r window as a heat map over the image.

    Panels: the image, then per method the `attacks.strattack.group_map` of its perturbation
    (one cell per window, stretched over the image it covers; zero groups transparent; one color
    scale shared by the methods) with the number of nonzero groups
    (`attacks.strattack.nonzero_groups`) under it.

    Parameters
    ----------
    image : Tensor
        The image (C, H, W) in [0, 1], C = 1 or 3.
    deltas_by_method : dict
        {method: delta (C, H, W)}, e.g. {"C&W-ℓ2": d1, "StrAttack": d2}.
    path : str or Path
        Output file (PNG unless its suffix names another format).
    group_size : int
        The window side r (the paper: 13 on ImageNet, 2 on MNIST / CIFAR-10), at most min(H, W).
    stride : int
        The window step S (r for non-overlapping groups).
    reduce : {'l2', 'mean_abs'}, default 'l2'
        'l2': each group's l2 norm (Fig. 1); 'mean_abs': its mean |delta| on the [0, 255] scale
        (Fig. 2).

    Returns
    -------
    Path
        `path`.
    """
    from .attacks.strattack import group_map, nonzero_groups

    image = _check_image(image)
    deltas = _check_deltas_by(deltas_by_method, image, "deltas_by_method", "method: delta")
    h, w = image.shape[1:]
    group_size = _check_int(group_size, "group_size")
    stride = _check_int(stride, "stride")
    if group_size > min(h, w):
        raise ValidationError(f"group_size {group_size} exceeds the image size {h}x{w}")
    if reduce not in ("l2", "mean_abs"):
        raise ValidationError(f"reduce must be 'l2' or 'mean_abs', got {reduce!r}")

    maps, counts = {}, {}
    for method, d in deltas.items():
        m = group_map(d[None], group_size=group_size, stride=stride, reduce=reduce)[0].numpy()
        maps[method] = m * 255 if reduce == "mean_abs" else m
        counts[method] = int(nonzero_groups(d[None], group_size=group_size, stride=stride)[0])
    vmax = max(float(m.max()) for m in maps.values()) or 1.0

    n = len(maps)
    fig = _figure(PANEL * (n + 1) + 0.9, PANEL + 1.0)
    axes = fig.subplots(1, n + 1, squeeze=False)[0]
    _show_image(axes[0], image)
    axes[0].set_title("image", fontsize=9)
    im = None
    for ax, (method, m) in zip(axes[1:], maps.items()):
        _show_image(ax, image, faded=True)
        im = ax.imshow(np.ma.masked_equal(m, 0.0), cmap="jet", vmin=0, vmax=vmax, alpha=0.85,
                       extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
        ax.set_title(str(method), fontsize=9)
        ax.set_xlabel(f"nonzero groups: {counts[method]}/{m.size}", fontsize=8)
    fig.colorbar(im, ax=list(axes[1:]), shrink=0.8,
                 label="group $\\ell_2$ norm" if reduce == "l2" else "mean |δ| × 255")
    fig.suptitle(f"StrAttack Figs. 1-2: group sparsity of the perturbations "
                 f"({group_size}×{group_size} groups, stride {stride})", fontsize=10)
    return _save(fig, path)


def interpretability_figure(curves, path: str | Path) -> Path:
    """StrAttack Fig. 3(a): the ASM-based interpretability score IS (23),
    ||B_ASM o delta||_2 / ||delta||_2, against the threshold nu (a percentile of the ASM scores,
    30th to 90th in the paper), one line per method.

    Parameters
    ----------
    curves : dict
        {method: (nus, scores)}: two equal-length 1-D sequences (or tensors / arrays), the
        percentiles and the mean IS at each; NaN scores are skipped.
    path : str or Path
        Output file (PNG unless its suffix names another format).

    Returns
    -------
    Path
        `path`.
    """
    curves = _check_mapping(curves, "curves", "method: (nus, scores)")
    checked = {}
    for method, curve in curves.items():
        if isinstance(curve, (str, bytes)) or not isinstance(curve, Sequence) or len(curve) != 2:
            raise ValidationError(f"curves[{method!r}] must be a pair (nus, scores)")
        checked[str(method)] = _curve(curve, method)

    fig = _figure(5.2, 3.8)
    ax = fig.subplots()
    top = 1.0
    for j, (method, (nus, scores)) in enumerate(checked.items()):
        ok = np.isfinite(scores)
        order = np.argsort(nus[ok], kind="stable")
        ax.plot(nus[ok][order], scores[ok][order], marker="o", markersize=4, color=f"C{j % 10}", label=method)
        if ok.any():
            top = max(top, float(scores[ok].max()))
    ax.set_ylim(0, top * 1.05)
    ax.set_xlabel("ν (percentile of ASM scores)")
    ax.set_ylabel("IS")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title("StrAttack Fig. 3(a): ASM-based interpretability score vs ν", fontsize=10)
    return _save(fig, path)


def _curve(curve, method) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for part, what in zip(curve, ("nus", "scores")):
        name = f"curves[{method!r}] {what}"
        if isinstance(part, Tensor):
            arr = part.detach().cpu().double().numpy()
        else:
            try:
                arr = np.asarray(part, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValidationTypeError(f"{name} must be a sequence of numbers") from None
        if arr.ndim != 1 or arr.size == 0:
            raise ValidationError(f"{name} must be a non-empty 1-D sequence, got shape {arr.shape}")
        out.append(arr)
    nus, scores = out
    if nus.shape != scores.shape:
        raise ValidationError(f"curves[{method!r}] has {nus.size} nus but {scores.size} scores")
    if not np.isfinite(nus).all():
        raise ValidationError(f"curves[{method!r}] nus contains NaN or infinite values")
    return nus, scores


def saliency_figure(image, saliency_maps, deltas_by_method, path: str | Path, *,
                    percentile: float = 90.0) -> Path:
    """StrAttack Figs. 3(b)-(c): the image, a saliency map (ASM or CAM) and each method's
    perturbation restricted to the salient region, B o delta, with that region's contour.

    B (the paper's B_ASM) is 1 where the saliency exceeds nu, its `percentile`-th percentile
    (90th in Fig. 3(b)). One row per saliency map; panels: the image, the saliency map (darker =
    larger, as in the paper), then per method |B o delta| (channel l2) over the faded image with
    the contour of B and the method's IS (23) = ||B o delta||_2 / ||delta||_2 under it.

    Parameters
    ----------
    image : Tensor
        The image (C, H, W) in [0, 1], C = 1 or 3.
    saliency_maps : Tensor or dict
        One map, or {name: map} (e.g. {"ASM": asm, "CAM": cam}); a map is (H, W), or (C, H, W)
        with per-entry scores (ASM; drawn as the max over channels, and B is then per entry).
    deltas_by_method : dict
        {method: delta (C, H, W)}, e.g. {"StrAttack": d1, "C&W": d2}.
    path : str or Path
        Output file (PNG unless its suffix names another format).
    percentile : float, default 90.0
        nu as a percentile of the map's scores, in [0, 100).

    Returns
    -------
    Path
        `path`.
    """
    image = _check_image(image)
    deltas = _check_deltas_by(deltas_by_method, image, "deltas_by_method", "method: delta")
    if isinstance(saliency_maps, (Tensor, np.ndarray)):
        saliency_maps = {"ASM": saliency_maps}
    saliency_maps = _check_mapping(saliency_maps, "saliency_maps", "name: map")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 <= percentile < 100:
        raise ValidationError(f"percentile must be a number in [0, 100), got {percentile!r}")
    maps = {}
    for name, sal in saliency_maps.items():
        sal = _tensor(sal, f"saliency_maps[{name!r}]")
        if sal.dim() == 3 and sal.shape[0] == 1 and image.shape[0] != 1:
            sal = sal[0]
        if not (tuple(sal.shape) == tuple(image.shape[1:]) or tuple(sal.shape) == tuple(image.shape)):
            raise ValidationError(f"saliency_maps[{name!r}] must be an (H, W) = {tuple(image.shape[1:])} or "
                                  f"(C, H, W) = {tuple(image.shape)} map, got shape {tuple(sal.shape)}")
        maps[str(name)] = sal

    rows, cols = len(maps), len(deltas) + 2
    h, w = image.shape[1:]
    fig = _figure(PANEL * cols + 0.6, (PANEL + 0.9) * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, (name, sal) in enumerate(maps.items()):
        nu = float(np.percentile(sal.numpy(), percentile))
        salient = sal > nu
        entries = salient if salient.dim() == 3 else salient[None].expand_as(image)
        region = (salient.any(0) if salient.dim() == 3 else salient).numpy()
        shown = (sal.amax(0) if sal.dim() == 3 else sal).numpy()
        _show_image(axes[r, 0], image)
        axes[r, 0].set_title("image", fontsize=9)
        axes[r, 1].imshow(shown, cmap="Greys", interpolation="nearest")
        _bare(axes[r, 1])
        axes[r, 1].set_title(name, fontsize=9)
        axes[r, 1].set_xlabel(f"ν = {percentile:g}th percentile", fontsize=8)
        masked = {m: d * entries for m, d in deltas.items()}
        vmax = max(float(_magnitude(d).max()) for d in masked.values()) or 1.0
        for ax, (method, d) in zip(axes[r, 2:], masked.items()):
            full = float(deltas[method].norm())
            score = float(d.norm()) / full if full > 0 else float("nan")
            _show_image(ax, image, faded=True)
            ax.imshow(np.ma.masked_equal(_magnitude(d), 0.0), cmap="hot_r", vmin=0, vmax=vmax,
                      interpolation="nearest")
            if region.any() and not region.all():
                ax.contour(region.astype(float), levels=[0.5], colors="tab:blue", linewidths=1.0)
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            ax.set_title(f"{method}: $B_{{{name}}} \\circ \\delta$", fontsize=9)
            ax.set_xlabel(f"IS = {format_value('is', score)}", fontsize=8)
    fig.suptitle("StrAttack Fig. 3(b)-(c): perturbations in the salient region "
                 "(contour: saliency above ν)", fontsize=10)
    return _save(fig, path)

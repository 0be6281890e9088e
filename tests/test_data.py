"""Data loading with no download: idx, CIFAR batches, image folders, scikit-image photos."""
import gzip
import pickle
import struct

import numpy as np
import torch
from PIL import Image

from sparseattack.data import (imagenet_class_index, imagenet_class_names, load_cifar10,
                               load_image_folder, load_idx, load_mnist, skimage_photo)


def _write_idx(path, arr):
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_idx_roundtrip(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(5))
    assert (load_idx(tmp_path / "t10k-images-idx3-ubyte.gz") == imgs).all()
    x, y = load_mnist(tmp_path)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.tolist() == [0, 1, 2, 3, 4]


def test_fashion_mnist(fmnist_test):
    x, y = fmnist_test
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,) and set(y.tolist()) == set(range(10))


def test_cifar_batches(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (3, 3072)).astype(np.uint8)
    with open(tmp_path / "test_batch", "wb") as fh:
        pickle.dump({b"data": data, b"labels": [1, 2, 3]}, fh)
    x, y = load_cifar10(tmp_path)
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [1, 2, 3]
    assert torch.allclose(x[0, 0, 0, :4] * 255, torch.tensor(data[0, :4], dtype=torch.float32))


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["file,class_index,synset,name"]
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        lines.append(f"{i}.png,{i * 7},n000,thing")
    (tmp_path / "labels.csv").write_text("\n".join(lines))
    x, y, files = load_image_folder(tmp_path)
    assert x.shape == (3, 3, 16, 16) and y.tolist() == [0, 7, 14] and files[0] == "0.png"


def test_skimage_photo_and_class_names():
    x = skimage_photo("coffee", 224)
    assert x.shape == (1, 3, 224, 224) and 0 <= x.min() and x.max() <= 1
    names = imagenet_class_names()
    assert len(names) == 1000 and names[0].startswith("tench")
    assert imagenet_class_index("espresso") == 967
    assert imagenet_class_index("tabby cat") == 281
    assert imagenet_class_index(5) == 5


# ---------------------------------------------------------------------------------------------
# Robust image loading: corrupt files, every PIL mode, channels, save/load round trip, labels CSV.

import pytest  # noqa: E402

from sparseattack.data import load_dataset, load_image  # noqa: E402
from sparseattack.plots import save_image, to_uint8  # noqa: E402


def _rgb(rng, h=8, w=8):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _on_grid(x):
    return torch.equal(x, (x * 255).round() / 255)


def test_corrupt_or_non_image_files_raise_valueerror(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_rgb(np.random.default_rng(0), 32, 32)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for bad in (truncated, text, empty):
        with pytest.raises(ValueError, match="not an image or corrupt") as err:
            load_image(bad)
        assert bad.name in str(err.value)
    with pytest.raises(ValueError, match="is a folder"):
        load_image(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image(tmp_path / "missing.png")


def test_decompression_bomb_is_valueerror(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4096 pixels > 2 * 100: a "bomb"
    with pytest.raises(ValueError, match="big.png: not an image or corrupt"):
        load_image(path)


V16 = np.array([[0, 128, 129, 257, 1000], [32896, 65278, 65279, 65534, 65535]], dtype=np.uint16)
V16_TO_8 = np.array([[0, 0, 1, 1, 4], [128, 254, 254, 255, 255]], dtype=np.uint8)  # round(v/257)


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(V16).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # Pillow opens 16-bit gray PNGs as 'I;16' (or 'I')
    assert np.array_equal(np.rint(V16 / 257), V16_TO_8)
    x = load_image(path)
    assert x.shape == (1, 1, 2, 5) and _on_grid(x)
    assert torch.equal(x[0, 0], torch.from_numpy(V16_TO_8).float() / 255)
    x3 = load_image(path, channels=3)
    assert x3.shape == (1, 3, 2, 5) and torch.equal(x3, x.expand(-1, 3, -1, -1))


def _tiff(tmp_path, name, im):
    path = tmp_path / name
    im.save(path, format="TIFF")
    return path


def test_16bit_big_endian_and_int32_modes(tmp_path):
    big = Image.frombytes("I;16B", (5, 2), V16.astype(">u2").tobytes())
    int32 = Image.fromarray(V16.astype(np.int32))
    assert int32.mode == "I"
    for name, im in (("big.tif", big), ("int.tif", int32)):
        path = _tiff(tmp_path, name, im)
        assert torch.equal(load_image(path)[0, 0], torch.from_numpy(V16_TO_8).float() / 255), name
    neg = _tiff(tmp_path, "neg.tif", Image.fromarray(np.array([[-5, 70000]], dtype=np.int32)))
    with pytest.raises(ValueError, match=r"neg.tif.*mode 'I'.*-5\.\.70000"):
        load_image(neg)


def test_every_pil_mode_loads_right_values_or_refuses(tmp_path):
    rng = np.random.default_rng(1)
    rgb = _rgb(rng)
    gray = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    alpha = rng.integers(0, 256, (8, 8), dtype=np.uint8)

    def load(name, im, fmt="PNG", **kw):
        path = tmp_path / name
        im.save(path, format=fmt)
        return load_image(path, **kw)

    def as_tensor(arr):
        arr = arr[..., None] if arr.ndim == 2 else arr
        return torch.from_numpy(arr.transpose(2, 0, 1).copy()).float().unsqueeze(0) / 255

    # RGBA: alpha dropped, colour kept as stored
    assert torch.equal(load("rgba.png", Image.fromarray(np.dstack([rgb, alpha]))), as_tensor(rgb))
    # LA: alpha dropped, 1 channel
    assert torch.equal(load("la.png", Image.fromarray(np.dstack([gray, alpha]), "LA")), as_tensor(gray))
    # '1': 0 / 1
    bits = gray > 127
    assert torch.equal(load("bits.png", Image.fromarray(bits)), as_tensor(bits.astype(np.uint8) * 255))
    # P with a colour palette: the palette colours; with transparency too
    pal = Image.fromarray(rgb).quantize(16)
    expect = np.asarray(pal.convert("RGB"))
    assert torch.equal(load("pal.png", pal), as_tensor(expect))
    pal.info["transparency"] = 0
    assert torch.equal(load("pal_t.png", pal), as_tensor(expect))
    # P with an all-gray palette: 1 channel
    gpal = Image.fromarray(gray).convert("P")
    assert torch.equal(load("gpal.png", gpal), as_tensor(gray))
    # CMYK (JPEG-free: TIFF, lossless): PIL's own CMYK -> RGB conversion
    cmyk = Image.fromarray(rgb).convert("CMYK")
    assert torch.equal(load("cmyk.tif", cmyk, "TIFF"), as_tensor(np.asarray(cmyk.convert("RGB"))))
    # F in [0, 1]: rounded onto the grid; outside [0, 1]: refused, mode named
    f = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    xf = load("f.tif", Image.fromarray(f), "TIFF")
    assert _on_grid(xf) and torch.equal(xf, as_tensor(np.rint(f * 255).astype(np.uint8)))
    with pytest.raises(ValueError, match=r"f255.tif: float image \(mode 'F'\)"):
        load("f255.tif", Image.fromarray(f * 255), "TIFF")
    # a mode with no sound conversion: refused, mode named
    with pytest.raises(ValueError, match="unsupported image mode 'LAB'"):
        load("lab.tif", Image.fromarray(rgb).convert("LAB"), "TIFF")


def test_channels_rule_and_luma(tmp_path):
    rng = np.random.default_rng(2)
    rgb, gray = _rgb(rng), rng.integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(gray).save(tmp_path / "g.png")
    assert load_image(tmp_path / "c.png").shape == (1, 3, 8, 8)
    assert load_image(tmp_path / "g.png").shape == (1, 1, 8, 8)
    luma = load_image(tmp_path / "c.png", channels=1)
    expect = np.array(Image.fromarray(rgb).convert("L"))
    assert torch.equal(luma[0, 0], torch.from_numpy(expect).float() / 255)
    r, g, b = (rgb[..., i].astype(float) for i in range(3))
    assert np.abs(expect - (0.299 * r + 0.587 * g + 0.114 * b)).max() <= 1  # ITU-R 601-2 luma
    rep = load_image(tmp_path / "g.png", channels=3)
    assert rep.shape == (1, 3, 8, 8) and torch.equal(rep, load_image(tmp_path / "g.png").expand(-1, 3, -1, -1))
    # legacy mode= spelling still works
    assert torch.equal(load_image(tmp_path / "g.png", mode="RGB"), rep)
    assert torch.equal(load_image(tmp_path / "c.png", mode="L"), luma)
    # resized images stay on the grid, with the channel count asked for
    small = load_image(tmp_path / "c.png", (4, 6), channels=1)
    assert small.shape == (1, 1, 4, 6) and _on_grid(small)
    for bad in (2, 4, 0, True):
        with pytest.raises(ValueError, match="channels must be 1, 3 or None"):
            load_image(tmp_path / "c.png", channels=bad)
    with pytest.raises(ValueError, match="size must be"):
        load_image(tmp_path / "c.png", size=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_save_image_load_image_round_trip(tmp_path, channels):
    x = torch.randint(0, 256, (channels, 9, 7)).float() / 255
    path = save_image(x, tmp_path / "out" / "adv.png")
    with Image.open(path) as im:
        assert im.mode == ("L" if channels == 1 else "RGB")
    assert torch.equal(load_image(path, channels=channels), x.unsqueeze(0))
    assert torch.equal(load_image(path), x.unsqueeze(0))  # the file's own count is the same
    save_image(x.unsqueeze(0), tmp_path / "batch1.png")
    assert torch.equal(load_image(tmp_path / "batch1.png", channels=channels), x.unsqueeze(0))


def test_save_image_rounds_to_nearest_and_checks_input(tmp_path):
    k = torch.tensor([[[0.0, 10.0, 100.0, 254.0]]])
    x = torch.cat([(k + 0.4) / 255, (k + 0.6) / 255, torch.tensor([[[-0.5, 1.5, 0.0, 1.0]]])], dim=1)
    x = x.reshape(1, 3, 4)  # (C=1, H=3, W=4)
    save_image(x, tmp_path / "r.png")
    got = np.asarray(Image.open(tmp_path / "r.png"))
    assert got.tolist() == [[0, 10, 100, 254], [1, 11, 101, 255], [0, 255, 0, 255]]
    assert np.array_equal(to_uint8(x), got)
    with pytest.raises(ValueError, match="batch of 2"):
        save_image(torch.zeros(2, 3, 4, 4), tmp_path / "b.png")
    with pytest.raises(ValueError, match="C = 1 or 3"):
        save_image(torch.zeros(2, 4, 4), tmp_path / "c2.png")
    with pytest.raises(ValueError, match="NaN"):
        save_image(torch.full((1, 4, 4), float("nan")), tmp_path / "nan.png")


def _folder(tmp_path, rows, header="file,class_index", make=(), size=8, mode="RGB"):
    rng = np.random.default_rng(3)
    for name in make:
        arr = _rgb(rng, size, size) if mode == "RGB" else rng.integers(0, 256, (size, size), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / name)
    (tmp_path / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    return tmp_path


@pytest.mark.parametrize("rows, kw, pattern", [
    ([], {}, r"has a header but no data rows"),
    (["a.png,1", ",2"], {}, r"line 3: no file name"),
    (["a.png,1", "b.png,x"], {}, r"line 3: class_index 'x' of 'b.png' is not an integer"),
    (["a.png,1.5"], {}, r"line 2: class_index '1.5' of 'a.png' is not an integer"),
    (["a.png,"], {}, r"line 2: no class_index for 'a.png'"),
    (["a.png,-1"], {}, r"line 2: class_index -1 of 'a.png' is negative"),
    (["a.png,1", "b.png,10"], {"num_classes": 10}, r"line 3: class_index 10 of 'b.png' is out of range for 10"),
    (["a.png,1", "gone.png,2"], {}, r"line 3: file 'gone.png' not found in"),
    (["a.png,1", "b.png,2", "a.png,3"], {}, r"line 4: file 'a.png' is listed twice \(also on line 2\)"),
])
def test_labels_csv_errors_name_file_and_line(tmp_path, rows, kw, pattern):
    folder = _folder(tmp_path, rows, make=("a.png", "b.png"))
    with pytest.raises(ValueError, match=pattern) as err:
        load_image_folder(folder, **kw)
    assert str(folder / "labels.csv") in str(err.value)


def test_labels_csv_errors_through_load_dataset(tmp_path):
    folder = _folder(tmp_path, ["a.png,3", "b.png,12"], make=("a.png", "b.png"))
    x, y = load_dataset(str(folder))
    assert y.tolist() == [3, 12]
    with pytest.raises(ValueError, match=r"labels.csv: line 3: class_index 12 .* out of range for 10"):
        load_dataset(str(folder), num_classes=10)
    (folder / "labels.csv").write_text("")
    with pytest.raises(ValueError, match="labels.csv is empty"):
        load_dataset(str(folder))


def test_labels_csv_blank_lines_bom_and_spaces_are_fine(tmp_path):
    folder = _folder(tmp_path, ["a.png , 4", "", " b.png,5 "], header="\ufefffile, class_index,name",
                     make=("a.png", "b.png"))
    x, y, files = load_image_folder(folder, num_classes=6)
    assert x.shape == (2, 3, 8, 8) and y.tolist() == [4, 5] and files == ["a.png", "b.png"]
    x, y, files = load_image_folder(folder, limit=1)
    assert x.shape == (1, 3, 8, 8) and files == ["a.png"]


def test_folder_sizes_channels_and_corrupt_member(tmp_path):
    rng = np.random.default_rng(4)
    Image.fromarray(_rgb(rng, 8, 8)).save(tmp_path / "a.png")
    Image.fromarray(_rgb(rng, 10, 12)).save(tmp_path / "b.png")
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "g.png")
    (tmp_path / "bad.png").write_text("nope")
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("file,class_index\na.png,0\nb.png,1\n")
    with pytest.raises(ValueError, match=r"different sizes .*8x8 \(a.png\).*10x12 \(b.png\).*pass size="):
        load_image_folder(tmp_path)
    x, _, _ = load_image_folder(tmp_path, size=6, channels=1)
    assert x.shape == (2, 1, 6, 6) and _on_grid(x)
    csv_file.write_text("file,class_index\ng.png,0\n")
    assert load_image_folder(tmp_path)[0].shape == (1, 1, 8, 8)
    assert load_dataset(str(tmp_path), channels=3)[0].shape == (1, 3, 8, 8)
    csv_file.write_text("file,class_index\na.png,0\ng.png,1\n")  # mixed gray + colour -> 3 channels
    x, _, _ = load_image_folder(tmp_path)
    assert x.shape == (2, 3, 8, 8) and torch.equal(x[1, 0], x[1, 2])
    csv_file.write_text("file,class_index\na.png,0\nbad.png,1\n")
    with pytest.raises(ValueError, match=r"labels.csv: line 3: .*bad.png: not an image or corrupt"):
        load_image_folder(tmp_path)


def test_load_dataset_channels_and_single_images(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (2, 28, 28))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(2))
    x, y = load_dataset(f"mnist:{tmp_path}", channels=1, num_classes=10)
    assert x.shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="dataset mnist has 1 channel, asked for channels=3"):
        load_dataset(f"mnist:{tmp_path}", channels=3)
    with pytest.raises(ValueError, match="dataset mnist has labels up to 1"):
        load_dataset(f"mnist:{tmp_path}", num_classes=1)
    data = np.zeros((1, 3072), np.uint8)
    with open(tmp_path / "test_batch", "wb") as fh:
        pickle.dump({b"data": data, b"labels": [0]}, fh)
    assert load_dataset(f"cifar10:{tmp_path}", channels=3)[0].shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="dataset cifar10 has 3 channels, asked for channels=1"):
        load_dataset(f"cifar10:{tmp_path}", channels=1)
    gray = tmp_path / "g.png"
    Image.fromarray(imgs[0].astype(np.uint8)).save(gray)
    x, y = load_dataset(str(gray))
    assert x.shape == (1, 1, 28, 28) and y.tolist() == [-1]
    assert load_dataset(str(gray), channels=3, size=32)[0].shape == (1, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match="expected 'fashion-mnist'.*skimage:NAME"):
        load_dataset(str(tmp_path / "nothing"))


def test_skimage_photo_channels_and_unknown_name():
    x = skimage_photo("coffee", 32, channels=1)
    assert x.shape == (1, 1, 32, 32) and _on_grid(x)
    x, y = load_dataset("skimage:coffee", size=32, channels=1)
    assert x.shape == (1, 1, 32, 32) and y.tolist() == [967]
    assert load_dataset("skimage:coffee", size=32, num_classes=10)[1].tolist() == [-1]
    with pytest.raises(ValueError, match="unknown scikit-image photo 'teapot'"):
        skimage_photo("teapot")
    with pytest.raises(ValueError, match="unknown scikit-image photo"):
        load_dataset("skimage:teapot")


def test_corrupt_idx_gz(tmp_path):
    good = tmp_path / "good-idx1-ubyte.gz"
    _write_idx(good, np.arange(100))
    bad = tmp_path / "bad-idx1-ubyte.gz"
    bad.write_bytes(good.read_bytes()[:20])  # truncated gzip stream
    with pytest.raises(ValueError, match="bad-idx1-ubyte.gz: not a valid gzip file or truncated"):
        load_idx(bad)
    junk = tmp_path / "junk-idx1-ubyte.gz"
    junk.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="junk-idx1-ubyte.gz: not a valid gzip file"):
        load_idx(junk)
    short = tmp_path / "short-idx3-ubyte.gz"
    with gzip.open(short, "wb") as fh:
        fh.write(struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", 2, 4, 4) + bytes(10))
    with pytest.raises(ValueError, match="short-idx3-ubyte.gz is truncated"):
        load_idx(short)


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /dev/null",))


def test_corrupt_cifar_batch(tmp_path):
    data = np.zeros((2, 3072), np.uint8)
    good = pickle.dumps({b"data": data, b"labels": [1, 2]})
    path = tmp_path / "test_batch"
    for content, pattern in ((good[: len(good) // 2], "not a CIFAR-10 python batch or corrupt"),
                             (b"garbage", "not a CIFAR-10 python batch or corrupt"),
                             (pickle.dumps(_Evil()), "refusing to load"),
                             (pickle.dumps([1, 2]), "not a CIFAR-10 python batch"),
                             (pickle.dumps({b"data": data, b"labels": [1]}), "expected 2 integer labels")):
        path.write_bytes(content)
        with pytest.raises(ValueError, match=pattern) as err:
            load_cifar10(tmp_path)
        assert str(path) in str(err.value)
    with pytest.raises(ValueError, match="split must be"):
        load_cifar10(tmp_path, split="val")

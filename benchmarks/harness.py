"""What every benchmark under benchmarks/ shares, written once: data, pairs, runs, peers, output.

Running: `make setup` installs sparseattack (editable) in .venv; run a script with that Python,
`.venv/bin/python benchmarks/NAME.py` (`make bench-deps` adds the peer libraries and the larger
EfficientNet-Lites). A script imports this module as `harness`: Python puts the script's own folder
first on sys.path. Nothing here edits sys.path: without the installed package the import stops
with the command to run.

- Data: `fashion_mnist()` (Debian's test split), `imagenet_sample(folder=IMAGENET_SAMPLE)` (the
  sample folder: 224x224 RGB images and a labels.csv), `first_correct(model, images, labels, n)`:
  the first n images the model classifies correctly (`eval.correctly_classified`) as a `Subset`
  (images, labels, ids = positions in the dataset), on the model's device.
- Pairs: `pair_tensors(model, subset)`: one row per (image, target) pair of the protocol
  (`eval.make_pairs`: every other class, or n seeded random ones).
- Runs: `run_protocol` (`eval.evaluate` on a subset: JSONL records, resumable, one line printed)
  and `untargeted` (`eval.run_attack` without targets, its records cached the same way). Records
  are those of `AttackResult.records()` / `evaluate` (key `image`), never renamed.
- Peers, called like our attacks (`fn(model, inputs, labels, *, targeted=False, **params)`, so
  their parameters go into each record's configuration): `adv_lib_attack(module, function)`
  (without adv-lib's package __init__, which needs torchvision and visdom), `torchattacks_attack
  (cls)`, `foolbox_attack(cls)`; each raises ImportError when its library is missing.
  `peer_version(dist)` names the installed version.
- Output: `write_text` (Markdown, CSV), `write_jsonl` (replaces a file), `append_jsonl` /
  `read_jsonl` (rows of any kind; attack records are read back with `eval.read_records`, which
  checks them), `slug` (a method label as a file-name part).
  Numbers and tables: `sparseattack.eval.tables` (`format_value`, `markdown_table`, the papers'
  Table-1 layout `table1` / `table1_csv`), re-exported here.
- Command line: `argument_parser(doc)`, `add_device`, `add_threads` / `set_threads`.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import sys
import time
import types
from pathlib import Path
from typing import Callable, NamedTuple

try:
    import sparseattack  # noqa: F401 (and torch, its dependency)
except ImportError as err:  # a setup problem, not a benchmark one
    raise SystemExit(f"sparseattack is not importable ({err}); run `make setup` and use .venv/bin/python") from None

import torch
from torch import Tensor, nn

from sparseattack.data import FASHION_MNIST_DIR, load_fashion_mnist, load_image_folder
from sparseattack.eval import (config_hash, correctly_classified, evaluate, make_pairs, read_records, run_attack,
                               run_config)
from sparseattack.eval.tables import HEADERS, format_value, markdown_table, table1, table1_csv
from sparseattack.validation import num_classes_of

__all__ = ["REPO", "RESULTS", "IMAGENET_SAMPLE", "Subset", "fashion_mnist", "imagenet_sample", "first_correct",
           "pair_tensors", "run_protocol", "untargeted", "adv_lib_attack", "torchattacks_attack", "foolbox_attack",
           "peer_version", "write_text", "write_jsonl", "append_jsonl", "read_jsonl", "slug", "argument_parser",
           "add_device", "add_threads", "set_threads", "HEADERS", "format_value", "markdown_table", "table1",
           "table1_csv"]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# The Fashion-MNIST net of every committed result in benchmarks/results: the first shipped weights
# (88.81%), registered as fmnist-cw-v1 since the retrained fmnist-cw (90.89%) ships (see
# README "Models"). Records carry model_sha256, so results of the two nets never mix.
FMNIST_MODEL = "fmnist-cw-v1"
IMAGENET_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"


# ----------------------------------------------------------------------------- data
class Subset(NamedTuple):
    """Images with their labels and their ids (positions in the dataset they come from)."""
    images: Tensor
    labels: Tensor
    ids: list[int]

    def head(self, n: int) -> "Subset":
        return Subset(self.images[:n], self.labels[:n], self.ids[:n])


def fashion_mnist(root: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST's test split (default: Debian's dataset-fashion-mnist, `make setup`)."""
    return load_fashion_mnist("test", root or FASHION_MNIST_DIR)


def imagenet_sample(folder: str | Path = IMAGENET_SAMPLE) -> tuple[Tensor, Tensor]:
    """The ImageNet sample folder (labels.csv: file,class_index,...) as 224x224 RGB images in CSV
    order. Raises FileNotFoundError when the folder or its CSV is missing."""
    x, y, _ = load_image_folder(folder, size=224, channels=3, num_classes=1000)
    return x, y


def _device_of(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def first_correct(model: nn.Module, images: Tensor, labels: Tensor, n: int | None = None, *,
                  chunk: int = 256) -> Subset:
    """The first `n` images (all with n=None) that `model` classifies correctly, on its device.
    Predicts `chunk` images at a time and stops once n are found."""
    device = _device_of(model)
    ids: list[int] = []
    for start in range(0, len(images), chunk):
        x, y = images[start:start + chunk].to(device), labels[start:start + chunk].to(device)
        ids += [start + j for j in correctly_classified(model, x, y)]
        if n is not None and len(ids) >= n:
            break
    ids = ids[:n]
    index = torch.tensor(ids, dtype=torch.long)
    return Subset(images[index].to(device), labels[index].to(device), ids)


def pair_tensors(model: nn.Module, subset: Subset, targets: str | int = "all",
                 seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """(images, labels, targets), one row per (image, target) pair of `eval.make_pairs`."""
    num_classes = num_classes_of(model, subset.images[:1])
    pairs = make_pairs(range(len(subset.ids)), subset.labels, num_classes, targets, seed, image_ids=subset.ids)
    index = torch.tensor([j for j, _ in pairs], device=subset.images.device)
    goal = torch.tensor([t for _, t in pairs], device=subset.images.device)
    return subset.images[index], subset.labels[index], goal


# ----------------------------------------------------------------------------- runs
def run_protocol(model: nn.Module, method: str | Callable, subset: Subset, out: Path, name: str, *,
                 progress: bool = False, **kwargs) -> list[dict]:
    """`eval.evaluate` on `subset` (its ids are the records' `image`), appending to and resuming
    from `out`; prints one line. kwargs: evaluate's (targets, seed, batch_size, groups_fn, ...) and
    the attack's parameters. The model is put back in eval mode (a peer library may switch it)."""
    start = time.time()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    recs = evaluate(model, method, subset.images, subset.labels, out=out, name=name, image_ids=subset.ids,
                    progress=progress, **kwargs)
    model.eval()
    ok = sum(r["success"] for r in recs)
    print(f"  {name}: {ok}/{len(recs)} successful ({time.time() - start:.0f}s this run)", flush=True)
    return recs


def untargeted(model: nn.Module, method: str | Callable, subset: Subset, out: Path, name: str,
               **params) -> list[dict]:
    """An untargeted run of every image of `subset` (`eval.run_attack`; `evaluate` is the targeted
    protocol). Its records (target None) carry the run's configuration like `evaluate`'s and are
    written to `out`; a rerun with the same configuration reads them back instead of attacking."""
    config = run_config(model, method, name=name, targets="untargeted", **params)
    chash = config_hash(config)
    done = {r["image"]: r for r in read_records(out) if r.get("config_hash") == chash}
    if all(i in done for i in subset.ids):
        return [done[i] for i in subset.ids]
    start = time.time()
    res = run_attack(method, model, subset.images, subset.labels, **params)
    model.eval()
    recs = dataclasses.replace(res, method=name).records(subset.ids)
    for r in recs:
        r.update(config_hash=chash, config=config)
    write_jsonl(out, recs)
    print(f"  {name}: {int(res.success.sum())}/{len(recs)} successful ({time.time() - start:.0f}s)", flush=True)
    return recs


# ----------------------------------------------------------------------------- peers
def _named(fn: Callable, name: str) -> Callable:
    fn.__name__ = fn.__qualname__ = name  # the `attack` of the records' configuration
    return fn


def _adv_lib_module(module: str):
    """adv-lib's `adv_lib.attacks.<module>` without running `adv_lib/attacks/__init__.py` (which
    imports every attack, some needing torchvision) and, where visdom is missing, with a stand-in
    for the (unused) visdom logger type its modules annotate callbacks with. ALMA's module imports
    adv-lib's LPIPS distance, which imports torchvision (no CPU build here); where torchvision is
    missing, an empty stand-in lets it load, and only the LPIPS distance (never used here) fails."""
    import adv_lib
    stand_in = module == "augmented_lagrangian" and importlib.util.find_spec("torchvision") is None
    if stand_in:
        vision = types.ModuleType("torchvision")
        vision.models = types.ModuleType("torchvision.models")
        sys.modules.update({"torchvision": vision, "torchvision.models": vision.models})
    try:
        import adv_lib.utils.visdom_logger  # noqa: F401
    except ImportError:
        stub = types.ModuleType("adv_lib.utils.visdom_logger")
        stub.VisdomLogger = object
        sys.modules["adv_lib.utils.visdom_logger"] = stub
    if "adv_lib.attacks" not in sys.modules:
        package = types.ModuleType("adv_lib.attacks")
        package.__path__ = [str(Path(adv_lib.__path__[0]) / "attacks")]
        sys.modules["adv_lib.attacks"] = package
    try:
        return importlib.import_module(f"adv_lib.attacks.{module}")
    finally:
        if stand_in:  # loaded: take the stand-in away again so nothing else mistakes it for torchvision
            sys.modules.pop("torchvision", None)
            sys.modules.pop("torchvision.models", None)


def adv_lib_attack(module: str, function: str) -> Callable:
    """adv-lib's `adv_lib.attacks.<module>.<function>` (e.g. "fast_minimum_norm", "fmn"), called
    like our attacks; its keyword parameters pass through."""
    fn = getattr(_adv_lib_module(module), function)

    def attack(model, inputs, labels, *, targeted=False, **params):
        model.eval()
        return fn(model, inputs, labels, targeted=targeted, **params)
    return _named(attack, f"adv_lib.{function}")


def torchattacks_attack(cls: str) -> Callable:
    """torchattacks' attack class `cls` (e.g. "OnePixel"), called like our attacks; the keyword
    parameters go to its constructor. Targeted runs use its target-by-label mode (torchattacks
    refuses it for untargeted-only attacks such as SparseFool)."""
    import torchattacks
    make = getattr(torchattacks, cls)

    def attack(model, inputs, labels, *, targeted=False, **params):
        model.eval()  # torchattacks restores the wrapper's mode; keep it in eval mode
        atk = make(model, **params)
        if targeted:
            atk.set_mode_targeted_by_label(quiet=True)
        return atk(inputs, labels)
    return _named(attack, f"torchattacks.{cls}")


def foolbox_attack(cls: str) -> Callable:
    """foolbox's minimum-norm attack class `cls` (e.g. "L0FMNAttack", run with epsilons=None),
    called like our attacks; the keyword parameters go to its constructor."""
    import foolbox as fb
    make = getattr(fb.attacks, cls)

    def attack(model, inputs, labels, *, targeted=False, **params):
        model.eval()
        criterion = (fb.criteria.TargetedMisclassification if targeted else fb.criteria.Misclassification)(labels)
        _, adv, _ = make(**params)(fb.PyTorchModel(model, bounds=(0, 1)), inputs, criterion, epsilons=None)
        return adv
    return _named(attack, f"foolbox.{cls}")


def peer_version(dist: str) -> str:
    """The installed version of a distribution ("adv-lib", "torchattacks"), or "?"."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# ----------------------------------------------------------------------------- output
def write_text(path: Path, text: str) -> Path:
    """Write a report (Markdown, CSV), creating its folder; ends it with one newline."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Replace `path` with one JSON line per row."""
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def append_jsonl(path: Path, rows: list[dict]) -> None:
    """Append one JSON line per row (the file and its folder are created as needed)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file ([] when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def slug(name: str) -> str:
    """A file-name part for a method label: "PGD ℓ0+ℓ∞" -> "pgd-l0-linf"."""
    name = name.lower().replace("ℓ0", "l0").replace("ℓ∞", "linf").replace("σ", "sigma")
    return "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in name).strip("-")


# ----------------------------------------------------------------------------- command line
def argument_parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose --help shows the script's docstring as written (it states the commands that
    made the committed results)."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_device(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """--device (default: `default`, else cuda when available, else cpu)."""
    default = default or ("cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--device", default=default, help="torch device (default: %(default)s)")


def add_threads(parser: argparse.ArgumentParser, default: int | None = 1) -> None:
    """--threads: torch CPU threads (one is fastest on a shared 2-core machine)."""
    parser.add_argument("--threads", type=int, default=default,
                        help="torch CPU threads (default: %(default)s; 0: torch's own)")


def set_threads(threads: int | None) -> int:
    """Apply --threads (None: keep torch's) and return the number of threads in use."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()

"""The targeted evaluation protocol of both papers, with resumable JSONL results.

Protocol (C&W 2017 Sec. VI; StrAttack Sec. 6; SAPF Sec. 4.1): take the correctly classified images
of a slice; for each, attack every other class ("all", as on MNIST/CIFAR) or `n` random other
classes drawn with a seed (as on ImageNet). Each (image, target) pair gives one JSONL record,
appended as soon as its batch finishes, carrying its whole configuration (`eval.config`); a rerun
with the same file and configuration skips the finished pairs, a file made under another
configuration is refused (ConfigMismatch names the keys that differ), and one run at a time may
write a file (OutputLock). Success is judged on the 8-bit output unless quantize=False.

Tables (definitions, per method; "successful" means re-checked by an independent forward pass):
- average case: ASR = successful pairs / all pairs; each norm = mean over successful pairs.
- best case: per image the successful target with the smallest `criterion` norm (default l2:
  the easiest target); ASR = images with at least one success / images; norms averaged over
  those images.
- worst case: per image the target with the largest `criterion` norm, counted as a success only
  if every target of the image succeeded; ASR = such images / images; norms averaged over them.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from ..validation import check_labels, num_classes_of, ValidationError
from .config import (RUN_KEYS, ConfigMismatch, config_hash, diff_configs, jsonable, model_fingerprint,
                     package_version)
from .config import model_name as config_model_name
from .metrics import NORM_KEYS
from .tables import HEADERS, format_value, markdown_table
from .backends import check_backend, run_batches
from .result import _resolve


def predict(model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Predicted classes of [0, 1] images, batched, without gradients."""
    with torch.inference_mode():
        return torch.cat([model(images[i:i + batch_size]).argmax(1)
                          for i in range(0, len(images), batch_size)])


def make_pairs(positions: Iterable[int], labels: Tensor, num_classes: int,
               targets: str | int = "all", seed: int = 0,
               image_ids: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """(position, target) pairs: every class but the label ('all'), n random other classes, or
    one untargeted pair (target None) per image ('untargeted', as StrAttack Table 2).

    `positions` index `labels`. Random targets are drawn from a generator seeded by (seed, image
    id), where `image_ids[i]` is the id in its dataset of the image at position i (default: i),
    so an image gets the same targets whether it is evaluated alone, in a subset, or in full.
    """
    pairs = []
    if targets == "untargeted":
        return [(int(i), None) for i in positions]
    for i in positions:
        label = int(labels[i])
        others = [c for c in range(num_classes) if c != label]
        if targets == "all":
            chosen = others
        else:
            n = int(targets)
            if not 1 <= n <= len(others):
                raise ValidationError(f"number of targets must be in [1, {len(others)}], got {n}")
            image_id = int(i) if image_ids is None else int(image_ids[i])
            g = torch.Generator().manual_seed(seed * 1_000_003 + image_id)
            chosen = sorted(others[j] for j in torch.randperm(len(others), generator=g)[:n].tolist())
        pairs += [(int(i), c) for c in chosen]
    return pairs


def _key(rec: dict) -> tuple:
    return (rec.get("config_hash"), rec["method"], rec["image"], rec["target"])


def read_records(path: str | Path) -> list[dict]:
    """Records of a JSONL results file. A last line cut short by a kill (no newline, not valid
    JSON) is ignored; an unreadable line anywhere else is an error naming its line number."""
    path = Path(path)
    if not path.exists():
        return []
    if path.is_dir():
        raise ValidationError(f"{path} is a directory; give a .jsonl file path")
    text = path.read_text()
    lines = text.split("\n")
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the torn tail of a killed run
                continue
            raise ValidationError(f"{path}, line {number}: not a JSON record (the file is corrupt)") from None
        if not isinstance(rec, dict) or not {"method", "image", "target", "success"} <= set(rec):
            raise ValidationError(f"{path}, line {number}: not a sparseattack record")
        out.append(rec)
    return out


def check_unique(records: list[dict], source: str = "records") -> None:
    """Refuse two records of the same (configuration, method, image, target): counting both would
    weigh that pair twice (e.g. two runs that wrote one file at once)."""
    seen: dict[tuple, int] = {}
    dups = []
    for r in records:
        k = _key(r)
        seen[k] = seen.get(k, 0) + 1
        if seen[k] == 2:
            dups.append(k)
    if dups:
        shown = ", ".join(f"{m} image {i} target {t}" for _, m, i, t in dups[:3])
        raise ValidationError(f"{source} hold {len(dups)} duplicated pair(s) ({shown}{', ...' if len(dups) > 3 else ''}); "
                         "two runs wrote the same file? keep one record per pair")


def _repair_tail(path: Path) -> None:
    """A run killed mid-write leaves a last line without its newline: a complete record gets its
    newline back, a torn one is cut off, so that the records appended next start on a line of
    their own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    try:
        rec = json.loads(data[cut:])
        complete = isinstance(rec, dict) and {"method", "image", "target", "success"} <= set(rec)
    except (json.JSONDecodeError, UnicodeDecodeError):
        complete = False
    with open(path, "r+b") as fh:
        if complete:
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
        else:
            fh.truncate(cut)


class OutputLock:
    """One writer per results file: an exclusive, non-blocking lock on the file itself (fcntl).
    A second run on the same file gets a clear error instead of interleaving its records."""

    def __init__(self, path: Path):
        self.path = path
        self.fh = None

    def __enter__(self) -> "OutputLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            self.fh = None
            raise ValidationError(f"{self.path} is being written by another sparseattack run; wait for it to "
                             "finish or choose another output file") from None
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self.fh is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None


def check_output_path(out: str | Path) -> Path:
    """An output path must be a file (a .jsonl), not a directory."""
    path = Path(out)
    if path.is_dir():
        raise ValidationError(f"output {path} is a directory; give a file path such as {path / 'results.jsonl'}")
    if path.suffix != ".jsonl":
        raise ValidationError(f"output {path} must end in .jsonl (tables are written beside it as .md and .csv)")
    return path


def run_config(model: nn.Module, method: str | Callable, *, name: str | None = None, targets: str | int = "all",
               seed: int = 0, quantize: bool = True, model_name: str | None = None,
               dataset: str | None = None, groups_fn: Callable | None = None, **params) -> dict:
    """The configuration of one method's run (keys: see `eval.config`); refuses unknown parameters."""
    method_name, _, _, resolved = _resolve(method, params)
    return {"method": name or method_name, "attack": method_name,
            "params": {k: jsonable(v) for k, v in sorted(resolved.items())},
            "quantize": bool(quantize), "model": model_name or config_model_name(model),
            "model_sha256": model_fingerprint(model), "dataset": dataset or "tensors",
            "targets": targets, "seed": int(seed), "groups_fn": jsonable(groups_fn),
            "version": package_version()}


def check_compatible(existing: list[dict], configs: list[dict], source: str) -> None:
    """Refuse a results file whose records were made under another configuration: another
    experiment (model, weights, dataset, targets, seed, quantization, version) or, for a method
    about to run, other parameters. The message names every key that differs."""
    distinct = {(r.get("config_hash"), r["method"]): r for r in existing}.values()
    for cfg in configs:
        for r in distinct:
            old = r.get("config")
            if old is None:
                raise ConfigMismatch(f"{source} holds records without a configuration (written by "
                                     "sparseattack < 0.2); write to another file or start a fresh one")
            run_old = {k: old.get(k) for k in RUN_KEYS}
            run_new = {k: cfg.get(k) for k in RUN_KEYS}
            diff = diff_configs(run_old, run_new)
            if not diff and r["method"] == cfg["method"] and r.get("config_hash") != config_hash(cfg):
                diff = diff_configs(old, cfg)
            if diff:
                raise ConfigMismatch(
                    f"{source} holds records of {r['method']!r} made under another configuration: "
                    + "; ".join(diff[:8]) + ("; ..." if len(diff) > 8 else "")
                    + ". Resuming would mix them: choose another output file, or start a fresh one "
                      "(CLI --fresh; evaluate(fresh=True)), which moves the old file aside")


def start_fresh(path: Path) -> Path | None:
    """Move an existing results file aside (never deleted): FILE -> FILE.old-YYYYmmdd-HHMMSS.jsonl."""
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = path.with_name(f"{path.stem}.old-{stamp}{path.suffix}")
    path.rename(moved)
    return moved


def _append(fh, records: list[dict]) -> None:
    for r in records:
        fh.write(json.dumps(r) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def evaluate(model: nn.Module, method: str | Callable, images: Tensor, labels: Tensor, *,
             targets: str | int = "all", seed: int = 0, batch_size: int = 32,
             out: str | Path | None = None, name: str | None = None, progress: bool = True,
             image_ids: list[int] | None = None, groups_fn: Callable | None = None,
             quantize: bool = True, model_name: str | None = None, dataset: str | None = None,
             fresh: bool = False, save_adversarial: str | Path | None = None, backend: str = "local",
             address: str | None = None, **params) -> list[dict]:
    """Run the targeted protocol for one method over `images` and return all its records.

    targets: 'all' other classes, a number of seeded random ones (seed: their seed), or
    'untargeted' (one pair per image, success = any other class).
    batch_size (default 32): pairs attacked together. out: the JSONL file to append to and resume
    from (one writer at a time); a file made under another configuration raises ConfigMismatch
    unless fresh=True, which moves it aside first. name: the method's name in records (default:
    the method's). image_ids: the images' ids in their dataset (default: positions).
    groups_fn: images -> groups, for the nonzero-group count. quantize (default True): outputs
    are 8-bit images and success is judged on them. model_name, dataset: recorded in the
    configuration (default: the registry name or class name; 'tensors'). save_adversarial: a
    directory where every pair's output (what the user receives: 8-bit PNG `IMAGE-TARGET.png`
    when quantize, else a float tensor `IMAGE-TARGET.pt`) is written before its record, which then
    names the file (key `adversarial`, relative to that directory); figures and transfer read them.
    backend: 'local' (default: the batches run one after the other in this process) or 'ray' (they
    are spread over the Ray cluster at `address`, None: one started on this machine; see
    `eval.backends`); the records are the same but for their timing fields and `device`.
    Images the model misclassifies are skipped, as in the papers (see `correctly_classified`).
    """
    from tqdm import tqdm

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_backend(backend, address)
    config = run_config(model, method, name=name, targets=targets, seed=seed, quantize=quantize,
                        model_name=model_name, dataset=dataset, groups_fn=groups_fn, **params)
    chash = config_hash(config)
    method_name = config["method"]
    ids = list(range(len(images))) if image_ids is None else list(image_ids)
    if len(ids) != len(images):
        raise ValidationError(f"image_ids has {len(ids)} entries for {len(images)} images")
    check_labels(labels, len(images), num_classes_of(model, images[:1]))
    correct = correctly_classified(model, images, labels)
    with torch.no_grad():
        num_classes = model(images[:1]).shape[1]
    pairs = make_pairs(correct, labels, num_classes, targets, seed, image_ids=ids)
    lock = OutputLock(check_output_path(out)) if out is not None else contextlib.nullcontext()
    if out is not None and fresh:
        start_fresh(Path(out))
    with lock:
        out_path = Path(out) if out is not None else None
        existing = []
        if out_path is not None:
            _repair_tail(out_path)
            existing = read_records(out_path)
            check_unique(existing, str(out_path))
            check_compatible(existing, [config], str(out_path))
        done = {(r["image"], r["target"]): r for r in existing
                if r.get("config_hash") == chash and r["method"] == method_name}
        todo = [(j, t) for j, t in pairs if (ids[j], t) not in done]
        new_records: dict[tuple, dict] = {}
        chunks = [todo[b:b + batch_size] for b in range(0, len(todo), batch_size)]
        batches = run_batches(backend, model, method, images, labels, chunks, ids, address=address,
                              untargeted=targets == "untargeted", groups_fn=groups_fn, quantize=quantize,
                              params=params, keep_adv=save_adversarial is not None)
        bar = tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc=method_name, unit="pair",
                   disable=not progress)
        with contextlib.closing(batches):  # an error here cancels the batches in flight
            for chunk, recs, advs, device in batches:
                if save_adversarial is not None:
                    for r, adv in zip(recs, advs):
                        r["adversarial"] = _save_output(adv, Path(save_adversarial), r["image"], r["target"], quantize)
                for r in recs:
                    r.update(method=method_name, config_hash=chash, config=config, device=device,
                             torch=torch.__version__)
                    new_records[(r["image"], r["target"])] = r
                if out_path is not None:
                    _append(lock.fh, recs)
                bar.update(len(chunk))
                bar.set_postfix(asr=f"{sum(r['success'] for r in new_records.values()) / len(new_records):.2f}")
        bar.close()
    merged = {**done, **new_records}
    return [merged[(ids[j], t)] for j, t in pairs]


def _save_output(adv: Tensor, directory: Path, image: int, target, quantize: bool) -> str:
    from ..plots import save_image

    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{image}-{'u' if target is None else target}"
    if quantize:
        save_image(adv, directory / f"{stem}.png")
        return f"{stem}.png"
    torch.save(adv.detach().cpu().clone(), directory / f"{stem}.pt")
    return f"{stem}.pt"


def load_adversarial(record: dict, directory: str | Path, channels: int | None = None) -> Tensor:
    """The output saved for a record by `evaluate(save_adversarial=directory)`, as a (C, H, W) [0, 1]
    tensor (PNG outputs are exact: they are on the 8-bit grid). channels: 1 or 3 for PNGs
    (default: the file's own)."""
    from ..data import load_image

    name = record.get("adversarial")
    if not name:
        raise ValidationError(f"record of {record.get('method')!r} (image {record.get('image')}, target "
                              f"{record.get('target')}) has no saved output; run evaluate with save_adversarial")
    path = Path(directory) / name
    if path.suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    return load_image(path, channels=channels)[0]


def sweep(model: nn.Module, method: str, images: Tensor, labels: Tensor, ks, *, name: str | None = None,
          **kwargs) -> list[dict]:
    """The sparsity sweep (SAPF Fig. 4): `evaluate` once per budget k in `ks`, each run named
    'NAME k=K' (NAME: `name` or the method's), all in the same `out` file when one is given (each k
    resumes separately). kwargs go to `evaluate` and the attack (not k). Returns every record."""
    if "k" in kwargs:
        raise ValidationError("sweep sets k itself from ks; do not pass k")
    ks = [int(k) for k in ks]
    if not ks or any(k < 1 for k in ks):
        raise ValidationError(f"sweep needs budgets k >= 1, got {ks}")
    base = name or method
    out = []
    for k in ks:
        out += evaluate(model, method, images, labels, name=f"{base} k={k}", k=k, **kwargs)
    return out


def sweep_rows(records: list[dict]) -> list[dict]:
    """Per (method, k) of a sweep's records (methods named 'NAME k=K'): method NAME, k, asr (the
    average case's), the mean l0, l1, l2, linf over successful pairs, and pairs; sorted by method
    then k. Records of methods not named that way are ignored."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in records:
        base, sep, k = r["method"].rpartition(" k=")
        if sep and k.isdigit():
            groups[(base, int(k))].append(r)
    rows = []
    for (base, k), recs in sorted(groups.items()):
        ok = [r for r in recs if r["success"]]
        row = {"method": base, "k": k, "asr": len(ok) / len(recs), "pairs": len(recs)}
        row.update({key: _mean([r[key] for r in ok]) for key in ("l0", "l1", "l2", "linf")})
        rows.append(row)
    return rows


def correctly_classified(model: nn.Module, images: Tensor, labels: Tensor) -> list[int]:
    """Positions of the images the model classifies correctly (the protocol attacks only those)."""
    pred = predict(model, images)
    return [j for j in range(len(images)) if pred[j] == labels[j]]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def summarize(records: list[dict], criterion: str = "l2",
              keys: tuple[str, ...] = NORM_KEYS + ("gradients", "seconds")) -> list[dict]:
    """Best / average / worst case rows per method (definitions in the module docstring).

    Refuses duplicated pairs and one method name made under two configurations (rename one
    with evaluate(name=...)): nothing is merged silently."""
    rows = []
    check_unique(records)
    by_method: dict[str, list[dict]] = defaultdict(list)
    hashes: dict[str, set] = defaultdict(set)
    for r in records:
        by_method[r["method"]].append(r)
        hashes[r["method"]].add(r.get("config_hash"))
    for method, hs in hashes.items():
        if len(hs) > 1:
            configs = {r.get("config_hash"): r.get("config") or {} for r in by_method[method]}
            a, b = list(configs.values())[:2]
            raise ValidationError(f"records of {method!r} come from {len(hs)} configurations ("
                             + "; ".join(diff_configs(a, b)[:5]) + "); summarize them separately or "
                             "name them apart (evaluate(name=...))")
    for method, recs in by_method.items():
        by_image: dict = defaultdict(list)
        for r in recs:
            by_image[r["image"]].append(r)
        cases = {"best": [], "average": [], "worst": []}
        ok_count = {"best": 0, "average": 0, "worst": 0}
        for rs in by_image.values():
            wins = [r for r in rs if r["success"]]
            cases["average"] += wins
            ok_count["average"] += len(wins)
            if wins:
                cases["best"].append(min(wins, key=lambda r: r[criterion]))
                ok_count["best"] += 1
            if len(wins) == len(rs):
                cases["worst"].append(max(wins, key=lambda r: r[criterion]))
                ok_count["worst"] += 1
        totals = {"best": len(by_image), "average": len(recs), "worst": len(by_image)}
        for case in ("best", "average", "worst"):
            row = {"method": method, "case": case, "pairs": len(recs), "images": len(by_image),
                   "asr": ok_count[case] / totals[case] if totals[case] else float("nan")}
            for k in keys:
                pool = recs if k in ("gradients", "seconds", "forwards") and case == "average" else cases[case]
                row[k] = _mean([r[k] for r in pool if k in r])
            rows.append(row)
    return rows


def to_markdown(rows: list[dict], keys: tuple[str, ...] = ("asr",) + NORM_KEYS + ("gradients", "seconds")) -> str:
    """Rows from `summarize` as a Markdown table (method x case), in `eval.tables`' number format
    (`eval.tables.table1` gives the papers' wide layout)."""
    keys = tuple(k for k in keys if any(k in r for r in rows))
    head = ["method", "case"] + [HEADERS.get(k, k) for k in keys]
    return markdown_table(head, [[r["method"], r["case"]] + [format_value(k, r.get(k, float("nan"))) for k in keys]
                                 for r in rows])


def to_csv(rows: list[dict]) -> str:
    """Rows from `summarize` as CSV text."""
    if not rows:
        return ""
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()

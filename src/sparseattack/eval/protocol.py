"""The targeted evaluation protocol of both papers, with resumable JSONL results.

Protocol (C&W 2017 Sec. VI; StrAttack Sec. 6; SAPF Sec. 4.1): take the correctly classified images
of a slice; for each, attack every other class ("all", as on MNIST/CIFAR) or `n` random other
classes drawn with a seed (as on ImageNet). Each (image, target) pair gives one JSONL record,
appended as soon as its batch finishes; a rerun with the same file skips the finished pairs.

Tables (definitions, per method; "successful" means re-checked by an independent forward pass):
- average case: ASR = successful pairs / all pairs; each norm = mean over successful pairs.
- best case: per image the successful target with the smallest `criterion` norm (default l2:
  the easiest target); ASR = images with at least one success / images; norms averaged over
  those images.
- worst case: per image the target with the largest `criterion` norm, counted as a success only
  if every target of the image succeeded; ASR = such images / images; norms averaged over them.
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from .metrics import NORM_KEYS
from .result import run_attack


def predict(model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Predicted classes of [0, 1] images, batched, without gradients."""
    with torch.inference_mode():
        return torch.cat([model(images[i:i + batch_size]).argmax(1)
                          for i in range(0, len(images), batch_size)])


def make_pairs(positions: Iterable[int], labels: Tensor, num_classes: int,
               targets: str | int = "all", seed: int = 0,
               image_ids: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """(position, target) pairs: every class but the label ('all') or n random other classes.

    `positions` index `labels`. Random targets are drawn from a generator seeded by (seed, image
    id), where `image_ids[i]` is the id in its dataset of the image at position i (default: i),
    so an image gets the same targets whether it is evaluated alone, in a subset, or in full.
    """
    pairs = []
    for i in positions:
        label = int(labels[i])
        others = [c for c in range(num_classes) if c != label]
        if targets == "all":
            chosen = others
        else:
            n = int(targets)
            if not 1 <= n <= len(others):
                raise ValueError(f"number of targets must be in [1, {len(others)}], got {n}")
            image_id = int(i) if image_ids is None else int(image_ids[i])
            g = torch.Generator().manual_seed(seed * 1_000_003 + image_id)
            chosen = sorted(others[j] for j in torch.randperm(len(others), generator=g)[:n].tolist())
        pairs += [(int(i), c) for c in chosen]
    return pairs


def _key(rec: dict) -> tuple:
    return (rec["method"], rec["image"], rec["target"])


def read_records(path: str | Path) -> list[dict]:
    """Records of a JSONL results file; a torn last line (killed mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _drop_torn_tail(path: Path) -> None:
    """A run killed mid-write leaves a last line without its newline: cut it off so that the
    records appended next start on a line of their own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def _append(path: Path, records: list[dict]) -> None:
    with open(path, "a") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def evaluate(model: nn.Module, method: str | Callable, images: Tensor, labels: Tensor, *,
             targets: str | int = "all", seed: int = 0, batch_size: int = 32,
             out: str | Path | None = None, name: str | None = None, progress: bool = True,
             image_ids: list[int] | None = None, groups_fn: Callable | None = None,
             **params) -> list[dict]:
    """Run the targeted protocol for one method over `images` and return all its records.

    `image_ids` name the images in records (default: their positions); `out` is the JSONL file
    to append to and resume from; `name` labels the method in records (default: the method name).
    Images the model misclassifies are skipped, as in the papers.
    """
    from tqdm import tqdm

    method_name = name or (method if isinstance(method, str) else getattr(method, "__name__", "custom"))
    ids = list(range(len(images))) if image_ids is None else list(image_ids)
    pred = predict(model, images)
    correct = [j for j in range(len(images)) if pred[j] == labels[j]]
    with torch.no_grad():
        num_classes = model(images[:1]).shape[1]
    pairs = make_pairs(correct, labels, num_classes, targets, seed, image_ids=ids)
    out_path = Path(out) if out is not None else None
    done = {_key(r): r for r in read_records(out_path)} if out_path else {}
    todo = [(j, t) for j, t in pairs if (method_name, ids[j], t) not in done]
    if out_path:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(out_path)
    new_records: list[dict] = []
    bar = tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc=method_name, unit="pair",
               disable=not progress)
    for b in range(0, len(todo), batch_size):
        chunk = todo[b:b + batch_size]
        idx = torch.tensor([j for j, _ in chunk])
        tgt = torch.tensor([t for _, t in chunk])
        x = images[idx]
        groups = groups_fn(x) if groups_fn is not None else None
        res = run_attack(method, model, x, labels[idx], targets=tgt, groups=groups, **params)
        recs = res.records([ids[j] for j, _ in chunk])
        for r in recs:
            r["image"] = r.pop("id")
            r["method"] = method_name
        if out_path:
            _append(out_path, recs)
        new_records += recs
        bar.update(len(chunk))
        bar.set_postfix(asr=f"{sum(r['success'] for r in new_records) / len(new_records):.2f}")
    bar.close()
    wanted = {(method_name, ids[j], t) for j, t in pairs}
    merged = {k: v for k, v in done.items() if k in wanted}
    merged.update({_key(r): r for r in new_records})
    return [merged[(method_name, ids[j], t)] for j, t in pairs]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def summarize(records: list[dict], criterion: str = "l2",
              keys: tuple[str, ...] = NORM_KEYS + ("gradients", "seconds")) -> list[dict]:
    """Best / average / worst case rows per method (definitions in the module docstring)."""
    rows = []
    by_method: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_method[r["method"]].append(r)
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


_HEADERS = {"asr": "ASR", "l0": "ℓ0", "l0_pixels": "ℓ0 px", "l1": "ℓ1", "l2": "ℓ2", "linf": "ℓ∞",
            "groups": "groups", "gradients": "grads/pair", "seconds": "s/pair"}


def _fmt(key: str, v) -> str:
    if isinstance(v, str):
        return v
    if v != v:  # NaN
        return "-"
    if key == "asr":
        return f"{100 * v:.0f}%"
    if key in ("l0", "l0_pixels", "gradients", "groups"):
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    return f"{v:.3g}"


def to_markdown(rows: list[dict], keys: tuple[str, ...] = ("asr",) + NORM_KEYS + ("gradients", "seconds")) -> str:
    """Rows from `summarize` as a Markdown table (method x case)."""
    keys = tuple(k for k in keys if any(k in r for r in rows))
    head = ["method", "case"] + [_HEADERS.get(k, k) for k in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r["method"], r["case"]] + [_fmt(k, r.get(k, float("nan"))) for k in keys]) + " |")
    return "\n".join(lines)


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

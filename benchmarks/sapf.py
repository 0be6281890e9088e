"""SAPF benchmark: the fast preset against the paper's schedule, in the papers' table layout.

Part 1, Fashion-MNIST (shipped C&W net): the first `--images` correctly classified test images x 9
targets, SAPF with preset="fast" on all pairs and preset="paper" on the first `--paper-images`
of them (the paper schedule costs up to 6 x 10 x 4000 gradient evaluations per pair).
Part 2, ImageNet (EfficientNet-Lite0): `--imagenet-images` sample images x 3 seeded targets,
preset="fast" with the shorter delta / refinement schedule IMAGENET_SCHEDULE (CPU budget), and
"paper" only with --imagenet-paper, meant for a GPU.

Every record goes to a JSONL file under --out as its batch finishes (rerun to resume), and the
tables (best / average / worst case: ASR, l0, l1, l2, l_inf, gradient evaluations and seconds per
pair) are printed and written as Markdown (sapf_fmnist.md, sapf_imagenet.md; --skip-fmnist and
--skip-imagenet run one part). Gradient-evaluation ratios are computed on the pairs
both presets ran, in the same run.

    python benchmarks/sapf.py                       # defaults of the issue
    python benchmarks/sapf.py --paper-images 5      # a shorter paper-preset baseline
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sparseattack import models
from sparseattack.data import load_fashion_mnist, load_image_folder
from sparseattack.eval import evaluate, predict, summarize, to_markdown


def correct_subset(model, x, y, n):
    pred = predict(model, x[: 4 * n + 50])
    idx = (pred == y[: len(pred)]).nonzero().flatten()[:n]
    return x[idx], y[idx], idx.tolist()


def ratio_lines(fast: list[dict], paper: list[dict]) -> list[str]:
    """Compare presets on the pairs both ran: ASR, mean l2 over pairs both solved, gradients."""
    key = lambda r: (r["image"], r["target"])  # noqa: E731
    pf = {key(r): r for r in fast}
    common = [(pf[key(r)], r) for r in paper if key(r) in pf]
    if not common:
        return []
    both = [(f, p) for f, p in common if f["success"] and p["success"]]
    asr_f = sum(f["success"] for f, _ in common) / len(common)
    asr_p = sum(p["success"] for _, p in common) / len(common)
    g_f = sum(f["gradients"] for f, _ in common) / len(common)
    g_p = sum(p["gradients"] for _, p in common) / len(common)
    s_f = sum(f["seconds"] for f, _ in common) / len(common)
    s_p = sum(p["seconds"] for _, p in common) / len(common)
    lines = [f"pairs run by both presets: {len(common)}",
             f"ASR fast {100 * asr_f:.1f}% vs paper {100 * asr_p:.1f}%",
             f"gradient evaluations per pair: fast {g_f:.0f}, paper {g_p:.0f} -> paper/fast = {g_p / g_f:.1f}x",
             f"seconds per pair: fast {s_f:.3f}, paper {s_p:.3f} -> paper/fast = {s_p / s_f:.1f}x"]
    if both:
        l2_f = sum(f["l2"] for f, _ in both) / len(both)
        l2_p = sum(p["l2"] for _, p in both) / len(both)
        lines.append(f"mean l2 on the {len(both)} pairs both solved: fast {l2_f:.3f}, paper {l2_p:.3f} "
                     f"-> fast/paper = {l2_f / l2_p:.3f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--paper-images", type=int, default=20)
    ap.add_argument("--k", type=int, default=80, help="perturbed entries on Fashion-MNIST (of 784)")
    ap.add_argument("--imagenet-images", type=int, default=10)
    ap.add_argument("--imagenet-k", type=int, default=2000, help="perturbed entries on ImageNet (of 150528)")
    ap.add_argument("--imagenet-data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "imagenet-sample"))
    ap.add_argument("--imagenet-paper", action="store_true", help="also run the paper preset on ImageNet (GPU)")
    ap.add_argument("--skip-imagenet", action="store_true")
    ap.add_argument("--skip-fmnist", action="store_true")
    ap.add_argument("--batch-size", type=int, default=180)
    ap.add_argument("--imagenet-batch-size", type=int, default=3,
                    help="pairs per ImageNet batch (records are written as each batch finishes)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = [f"# SAPF benchmark ({time.strftime('%Y-%m-%d')}, device {args.device}, "
              f"{torch.get_num_threads()} threads)\n"]
    parts = []
    if not args.skip_fmnist:
        parts.append(("sapf_fmnist.md", fashion_mnist_part(args, out)))
    if not args.skip_imagenet and Path(args.imagenet_data).exists():
        parts.append(("sapf_imagenet.md", imagenet_part(args, out)))
    for filename, report in parts:  # one Markdown file per part, so parts can run separately
        text = "\n".join(header + report)
        (out / filename).write_text(text + "\n")
        print(text)


def fashion_mnist_part(args, out: Path) -> list[str]:
    report = []
    model = models.load("fmnist-cw", args.device)
    x, y = load_fashion_mnist("test")
    x, y, ids = correct_subset(model, x, y, args.images)
    x, y = x.to(args.device), y.to(args.device)
    jsonl = out / "sapf_fmnist.jsonl"
    common = dict(k=args.k, targets="all", out=jsonl, batch_size=args.batch_size)
    fast = evaluate(model, "sapf", x, y, image_ids=ids, name="sapf-fast", preset="fast", **common)
    n_paper = min(args.paper_images, args.images)
    paper = evaluate(model, "sapf", x[:n_paper], y[:n_paper], image_ids=ids[:n_paper], name="sapf-paper",
                     preset="paper", **common) if n_paper > 0 else []
    fast_sub = [r for r in fast if r["image"] in set(ids[:n_paper])]
    report += [f"## Fashion-MNIST, C&W net, k = {args.k} entries, {len(ids)} images x 9 targets "
               f"(paper preset on {n_paper} images)\n",
               to_markdown(summarize(fast + paper)), ""]
    if paper:
        report += ["Same pairs, fast vs paper:\n", to_markdown(summarize(fast_sub + paper)), "",
                   *[f"- {line}" for line in ratio_lines(fast, paper)], ""]
    return report


# On ImageNet the CPU budget of this project's machines (1 core: ~0.05 s per image gradient of
# EfficientNet-Lite0, ~4 min per pair) allows 10 images x 3 targets only with a shorter delta /
# refinement schedule than the default fast preset (about 4600 instead of about 5700 gradient
# evaluations per pair): 3 x 50 delta steps at step 0.05 and 150 refinement steps.
IMAGENET_SCHEDULE = dict(delta_steps=50, refine_steps=150, lr=0.05)


def imagenet_part(args, out: Path) -> list[str]:
    net = models.load("efficientnet-lite0", args.device)
    xi, yi, _ = load_image_folder(args.imagenet_data)
    xi, yi, ids_i = correct_subset(net, xi, yi, args.imagenet_images)
    xi, yi = xi.to(args.device), yi.to(args.device)
    jsonl_i = out / "sapf_imagenet.jsonl"
    common_i = dict(k=args.imagenet_k, targets=3, seed=0, out=jsonl_i, batch_size=args.imagenet_batch_size)
    recs = evaluate(net, "sapf", xi, yi, image_ids=ids_i, name="sapf-fast-short", preset="fast",
                    **IMAGENET_SCHEDULE, **common_i)
    if args.imagenet_paper:
        recs += evaluate(net, "sapf", xi, yi, image_ids=ids_i, name="sapf-paper", preset="paper", **common_i)
    return [f"## ImageNet sample, EfficientNet-Lite0, k = {args.imagenet_k} entries, "
            f"{len(ids_i)} images x 3 seeded targets\n", to_markdown(summarize(recs)), ""]


if __name__ == "__main__":
    main()

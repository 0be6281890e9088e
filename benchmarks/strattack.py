"""StrAttack's Table 1 on Fashion-MNIST: StrAttack (+overlap), C&W-l2, FGM, IFGSM, and adv-lib's
str_attack on the same (image, target) pairs.

The first `--images` correctly classified Fashion-MNIST test images, each attacked toward its 9
other classes (the targeted protocol of `sparseattack.eval.evaluate`; best / average / worst case
as defined there). Every method runs through `eval.run_attack`: the model is wrapped in
`eval.CountingModel` (gradient evaluations = per-sample backward passes) and every success is
re-checked by an independent forward pass. adv-lib (optional: `make bench-deps`) is run the same
way; without it its row is skipped with a note.

As in the paper (Appendix F), the StrAttack rows are refined (Sec. 4.2) and use its defaults
(rho 1, eta_1 5, tau 2, gamma 1, c0 0.5, 2x2 groups / 3x3 stride 2 overlapping); "groups" counts
nonzero 2x2 groups for every method. FGM is l2 with the fine eps grid scan, IFGSM is run for
l_inf and l2 with 10 steps of eps/10 and the grid bisection (attacks/dense.py).

    python benchmarks/strattack.py [--images 20] [--methods ...] [--threads 1] [--out FILE.jsonl]

Results: --out (default benchmarks/results/strattack.jsonl, resumable), and beside it the tables
(.md, printed; .csv: the Table-1 layout's numbers). The committed results (sparseattack 0.1) came
from `python benchmarks/strattack.py` (strattack.jsonl / .md) and, for the quieter timing of
StrAttack on the first 45 pairs, `python benchmarks/strattack.py --images 5 --methods StrAttack
--out benchmarks/results/strattack_timing.jsonl`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from harness import (FMNIST_MODEL, RESULTS, adv_lib_attack, add_device, add_threads, argument_parser, fashion_mnist,
                     first_correct, peer_version, run_protocol, set_threads, table1, table1_csv, write_text)
from sparseattack import models
from sparseattack.attacks.strattack import group_index
from sparseattack.eval import NORM_KEYS, model_fingerprint, summarize, to_markdown

ADVLIB_PARAMS = {"initial_const": 0.5}  # Appendix F's c for MNIST; adv-lib's other defaults are the paper's

# label -> (method, parameters); the labels are the `method` of the JSONL records. A peer's method
# is a function that imports it (ImportError: the row is skipped with a note).
METHODS = {  # Table 1's order
    "FGM-l2": ("fgm-search", {}),
    "IFGSM-linf": ("ifgsm-search", {}),
    "IFGM-l2": ("ifgm-l2-search", {}),
    "C&W-l2": ("cw-l2", {}),
    "StrAttack": ("strattack", {"refine": True}),
    "StrAttack+overlap": ("strattack", {"overlap": True, "refine": True}),
    "adv-lib str_attack": (lambda: adv_lib_attack("structured_adversarial_attack", "str_attack"), ADVLIB_PARAMS),
    "StrAttack (unrefined)": ("strattack", {}),
}
DEFAULT_METHODS = list(METHODS)[:-1]
NORMS = ("l0", "l1", "l2", "linf")
AVERAGE = ("groups", "gradients", "seconds")  # nonzero 2x2 groups (successful pairs), cost (all pairs)


def main() -> None:
    p = argument_parser(__doc__)
    p.add_argument("--images", type=int, default=20, help="correctly classified test images (default 20)")
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS),
                   help="default: all but 'StrAttack (unrefined)'")
    p.add_argument("--batch-size", type=int, default=45, help="pairs per attack batch (default 45)")
    add_threads(p)
    add_device(p, "cpu")
    p.add_argument("--out", type=Path, default=RESULTS / "strattack.jsonl")
    args = p.parse_args()
    threads = set_threads(args.threads)

    model = models.load(FMNIST_MODEL, args.device)
    data = first_correct(model, *fashion_mnist(), args.images)
    windows = group_index(28, 28, device=args.device)  # 2x2, stride 2
    notes = [f"Fashion-MNIST test images {data.ids[0]}..{data.ids[-1]} (first {len(data.ids)} correctly classified "
             f"by {FMNIST_MODEL}, model_sha256 {model_fingerprint(model)}) x 9 targets; {args.batch_size} pairs per "
             f"batch; device {args.device}, {threads} torch thread(s), torch {torch.__version__}."]
    records = []
    for label in args.methods:
        method, params = METHODS[label]
        if callable(method):  # a peer
            try:
                method = method()
            except ImportError:
                notes.append("adv-lib is not installed (`make bench-deps`): its row is skipped.")
                continue
            notes.append(f"adv-lib {peer_version('adv-lib')} str_attack with {params} "
                         "(its defaults otherwise: 6 x 2000 iterations, retrain 8 x 400).")
        records += run_protocol(model, method, data, args.out, label, progress=True, batch_size=args.batch_size,
                                groups_fn=lambda _: windows, **params)

    order = [m for m in args.methods if any(r["method"] == m for r in records)]
    text = "\n\n".join([
        f"## StrAttack Table 1 layout (Fashion-MNIST, {FMNIST_MODEL})",
        table1(records, order, norms=NORMS, average=AVERAGE),
        "\"groups\": nonzero 2×2 groups (of 196), average case; grads/pair and s/pair over all pairs.",
        "## All rows",
        to_markdown(summarize(records, keys=NORM_KEYS + AVERAGE), keys=("asr",) + NORMS + AVERAGE),
        "Notes: " + " ".join(notes),
    ])
    md = write_text(args.out.with_suffix(".md"), text)
    write_text(args.out.with_suffix(".csv"), table1_csv(records, order, norms=NORMS, average=AVERAGE))
    print(text)
    print(f"\nrecords: {args.out}  tables: {md}, {md.with_suffix('.csv')}")


if __name__ == "__main__":
    main()

"""Regression check of a refactor: rerun a 0.1 benchmark row on its own pairs, in float mode (as
0.1 measured), and compare pair by pair with the committed 0.1 records.

Version 0.1 judged success on the clipped float image and its records carry no configuration, so
they cannot be resumed (see the README); this script reruns the same method and parameters on the
same (image, target) pairs with `quantize=False` and reports, per row: pairs, ASR then and now,
pairs whose success changed, pairs with identical l0 and l2 (to 1e-6 relative), the largest
relative l2 change, the mean l2 then and now, and gradient evaluations per pair then and now.

Rows (ROWS below): SAPF's fast preset at k = 80 (sapf_fmnist.jsonl, "sapf-fast") and StrAttack
refined with 0.1's defaults (strattack.jsonl, "StrAttack"), on the first `--images` correctly
classified Fashion-MNIST test images x 9 targets.

    python benchmarks/regression_v01.py --rows sapf-fast --images 20
    python benchmarks/regression_v01.py --rows StrAttack --images 5
Output: printed, and appended to benchmarks/results/regression_v01.md with the command and date.
"""
from __future__ import annotations

import json
import sys
import time

from harness import (FMNIST_MODEL, RESULTS, add_threads, argument_parser, fashion_mnist, first_correct, format_value,
                     markdown_table, read_jsonl, set_threads)

from sparseattack import models
from sparseattack.eval import evaluate

# row name -> (0.1 results file, registered method, parameters, batch size of the 0.1 run)
ROWS = {"sapf-fast": ("sapf_fmnist.jsonl", "sapf", {"k": 80, "preset": "fast"}, 180),
        # 0.1's StrAttack defaults, pinned since the defaults moved on (ADMM refinement, Appendix F's
        # 9 x 1000 search, only pairs that succeeded at a c abort early, the gradient at z^k)
        "StrAttack": ("strattack.jsonl", "strattack", {"refine": True, "refine_solver": "admm",
                                                       "binary_search_steps": 9, "steps": 1000,
                                                       "abort_unsuccessful": False, "gradient_at": "z"}, 45)}


# the metric whose number format (eval.tables.format_value) each column takes
METRIC = {"asr then": "asr", "asr now": "asr", "l2 then": "l2", "l2 now": "l2", "max rel. l2 change": "ratio",
          "grads then": "gradients", "grads now": "gradients"}


def compare(old: list[dict], new: list[dict]) -> dict:
    key = lambda r: (r["image"], r["target"])  # noqa: E731
    then = {key(r): r for r in old}
    pairs = [(then[key(r)], r) for r in new if key(r) in then]
    both = [(a, b) for a, b in pairs if a["success"] and b["success"]]
    same = sum(a["l0"] == b["l0"] and abs(a["l2"] - b["l2"]) <= 1e-6 * max(a["l2"], 1e-12) for a, b in both)
    mean = lambda rows, k: sum(r[k] for r in rows) / max(len(rows), 1)  # noqa: E731
    return {"pairs": len(pairs), "asr then": mean([a for a, _ in pairs], "success"),
            "asr now": mean([b for _, b in pairs], "success"),
            "success changed": sum(a["success"] != b["success"] for a, b in pairs),
            "identical l0, l2": f"{same}/{len(both)}",
            "max rel. l2 change": max((abs(b["l2"] - a["l2"]) / a["l2"] for a, b in both), default=0.0),
            "l2 then": mean([a for a, _ in both], "l2"), "l2 now": mean([b for _, b in both], "l2"),
            "grads then": mean([a for a, _ in pairs], "gradients"), "grads now": mean([b for _, b in pairs], "gradients")}


def main() -> None:
    ap = argument_parser(__doc__)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="pairs per batch (default: the 0.1 run's; in float32 the batch composition changes "
                         "the convolutions' summation order, so only the same batches can match bit for bit)")
    ap.add_argument("--records", default=None, help="also write the new per-pair records to this JSONL")
    ap.add_argument("--out", default=str(RESULTS / "regression_v01.md"))
    add_threads(ap)
    args = ap.parse_args()
    set_threads(args.threads)
    model = models.load(FMNIST_MODEL)
    data = first_correct(model, *fashion_mnist(), args.images)
    table = []
    for row in args.rows.split(","):
        file, method, params, batch = ROWS[row]
        old = [r for r in read_jsonl(RESULTS / file) if r["method"] == row and r["image"] in set(data.ids)]
        start = time.time()
        batch = args.batch_size or batch
        new = evaluate(model, method, data.images, data.labels, targets="all", image_ids=data.ids, batch_size=batch,
                       quantize=False, progress=True, name=row, **params)
        if args.records:
            with open(args.records, "a") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in new)
        result = compare(old, new)
        print(row, result, f"({time.time() - start:.0f}s)", flush=True)
        table.append([f"{row} (batch {batch})"] + [format_value(METRIC.get(k, k), v) for k, v in result.items()])
    head = ["row"] + list(compare([], []).keys())
    text = (f"\n## {time.strftime('%Y-%m-%d')}: `python {' '.join(sys.argv)}`\n\n"
            f"First {args.images} correctly classified Fashion-MNIST test images x 9 targets, float mode "
            f"(quantize=False, as 0.1 measured), against the committed 0.1 records.\n\n"
            + markdown_table(head, table) + "\n")
    with open(args.out, "a") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()

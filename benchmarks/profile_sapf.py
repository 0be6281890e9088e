"""Where SAPF's CPU time goes on EfficientNet-Lite0: torch.profiler's self-CPU table of one short
SAPF run (4 ImageNet sample pairs, k = 2000, a shortened continuation schedule), one thread.

    OMP_NUM_THREADS=1 LD_PRELOAD=libtcmalloc_minimal.so.4 python benchmarks/profile_sapf.py

The model's own operators (convolutions, batch norm, hardtanh/clamp, padding copies and fills)
dominate; the attack's elementwise work, top-k and indexing are the rest (issue 14's "time outside
the model", measured against a bare loop by benchmarks/overhead.py).
"""
from __future__ import annotations

from pathlib import Path

import torch

from harness import IMAGENET_SAMPLE, argument_parser, first_correct, imagenet_sample, pair_tensors
from sparseattack import models
from sparseattack.attacks.sapf import sapf


def main() -> None:
    ap = argument_parser(__doc__)
    ap.add_argument("--imagenet-data", type=Path, default=IMAGENET_SAMPLE, help="default: %(default)s")
    ap.add_argument("--rows", type=int, default=30, help="operators listed (default: %(default)s)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = models.load("efficientnet-lite0", "cpu")
    x, y = imagenet_sample(args.imagenet_data)
    x, _, t = pair_tensors(model, first_correct(model, x, y, 2), 2)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        sapf(model, x[:4], t[:4], targeted=True, k=2000, stage_steps=10, max_stages=6, polish_steps=20)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()

"""Top-1 accuracy of the packaged EfficientNet-Lite models on a small ImageNet sample.

Reads ``labels.csv`` (columns file,class_index,synset,name) and the PNG images of
``--data``, wraps each model with its normalization (``sparseattack.models.Normalized``) and
prints a Markdown table. Images are fed at their stored size (224x224) unless
``--resize`` is given, which bilinearly resizes them to each model's native
resolution (on 224x224 center crops this did not help lite1/lite2).

    python benchmarks/model_accuracy.py [--data DIR] [--models lite0 lite1 lite2] [--resize]

The README's accuracy table came from `python benchmarks/model_accuracy.py` (defaults: the 100
images of the sample folder; `make bench` runs it); no results file is committed.
"""

from __future__ import annotations

import time
from pathlib import Path

from harness import IMAGENET_SAMPLE, argument_parser, format_value, imagenet_sample, markdown_table
from sparseattack.eval import correctly_classified
from sparseattack.models.efficientnet_lite import EFFICIENTNET_LITE_PREPROCESSING, build_efficientnet_lite
from sparseattack.models.wrappers import Normalized


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--data", type=Path, default=IMAGENET_SAMPLE,
                        help="folder with labels.csv and images (default: %(default)s)")
    parser.add_argument("--models", nargs="+", default=["lite0", "lite1", "lite2"],
                        choices=sorted(EFFICIENTNET_LITE_PREPROCESSING))
    parser.add_argument("--resize", action="store_true",
                        help="resize images to each model's native resolution")
    args = parser.parse_args()

    x, y = imagenet_sample(args.data)
    rows = []
    for name in args.models:
        prep = EFFICIENTNET_LITE_PREPROCESSING[name]
        start = time.perf_counter()
        model = Normalized(build_efficientnet_lite(name), prep["mean"], prep["std"],
                           prep["resolution"] if args.resize else None).eval()
        top1 = len(correctly_classified(model, x, y)) / len(x)
        label = f"{name} @{prep['resolution']}" if args.resize else name
        rows.append([label, format_value("top1", top1), len(x), format_value("seconds", time.perf_counter() - start)])
    print(markdown_table(["model", "top-1", "images", "seconds"], rows))

if __name__ == "__main__":
    main()

"""SAPF's Table 1 sparse baselines on CPU: C&W-l0, One-Pixel, SparseFool, CornerSearch, PGD l0+l_inf
and SAPF at matched sparsity, plus peer implementations (torchattacks, adv-lib, foolbox).

Fashion-MNIST (shipped C&W net): the first `--images` correctly classified test images x all 9
other targets. As in SAPF Sec. 4.1, C&W-l0 runs first and its average-case l0 (entries = pixels on
1-channel images) gives the budget k of the methods that take one (CornerSearch, PGD l0+l_inf,
SAPF); One-Pixel changes k = 1 pixel (Table 1) and SparseFool has no budget.
ImageNet (EfficientNet-Lite0, 224x224): `--imagenet-images` sample images x `--imagenet-targets`
seeded targets for the methods that run there in reasonable time on CPU (SparseFool, PGD
l0+l_inf, One-Pixel at a small population, all with shortened schedules); k is SAPF Table 1's
C&W-l0 average l0 as a fraction of the input (70885 / 299^2*3), since C&W-l0 itself (hundreds of
1000-step rounds) is out of reach on CPU.
Peers, on the same model and pairs: torchattacks' OnePixel (targeted, same population and
generations) and SparseFool (untargeted only, against ours untargeted); adv-lib's FMN-l0, sigma-zero
and VFGA and foolbox's L0-FMN (minimum-l0 attacks, no budget) as extra reference points. A peer
that does not install is skipped with a note.

Every run goes through `sparseattack.eval.evaluate` (one JSONL per method under --results, resumed
after a kill; the untargeted SparseFool / sigma-zero comparison goes through `run_attack`, cached
the same way; see benchmarks/harness.py), which counts gradient evaluations and re-checks success
independently. Tables (SAPF Table 1 layout, `sparseattack.eval.tables.table1`: best / average /
worst case, plus gradient evaluations and seconds per pair over all pairs) are written as Markdown
next to the JSONL and printed.

    python benchmarks/sparse_baselines.py [--images 20] [--imagenet-images 5] [--imagenet-targets 2]
        [--sections budgeted,free,peers,imagenet] [--skip-sapf] [--threads 1] [--quick]

The committed results (benchmarks/results/sparse_baselines*.md, *.jsonl, *.log; sparseattack 0.1)
came from the defaults, run as separate processes: `--sections budgeted`, then
`--sections free,peers,imagenet`, then a final run with all sections, which only read the JSONL
files and wrote the combined tables (sparse_baselines.md). One torch thread is the default: on a
shared 2-core machine two threads per process made small batches ~30x slower.
"""
from __future__ import annotations

import time
from pathlib import Path

from harness import (FMNIST_MODEL, HEADERS, RESULTS, IMAGENET_SAMPLE, Subset, adv_lib_attack, add_threads, argument_parser,
                     fashion_mnist, first_correct, foolbox_attack, format_value, imagenet_sample, markdown_table,
                     peer_version, run_protocol, set_threads, slug, table1, torchattacks_attack, untargeted,
                     write_text)
from sparseattack import models
from sparseattack.attacks import available
from sparseattack.eval import read_records, summarize

CW_L0_IMAGENET_FRACTION = 70885 / (299 * 299 * 3)   # SAPF Table 1, C&W-l0 average-case l0 on ImageNet
FMNIST_ORDER = ["One-Pixel", "CornerSearch", "PGD ℓ0+ℓ∞", "SparseFool", "C&W-ℓ0", "SAPF"]
PEER_KEYS = ("asr", "l0", "l1", "l2", "linf", "gradients", "seconds")


def peer_table(entries: list[tuple[str, str, list[dict], str]]) -> str:
    """Average-case comparison rows: (attack, implementation, records, notes)."""
    rows = []
    for attack, impl, recs, note in entries:
        avg = next(r for r in summarize(recs) if r["case"] == "average") if recs else {"pairs": 0}
        rows.append([attack, impl, avg["pairs"], *(format_value(k, avg.get(k)) for k in PEER_KEYS), note])
    return markdown_table(["attack", "implementation", "pairs", *(HEADERS[k] for k in PEER_KEYS), "notes"], rows)


class Baselines:
    """One benchmark run: its options, where its records go, and the notes of its report."""

    def __init__(self, args):
        self.args, self.quick, self.results = args, args.quick, args.results
        self.notes: list[str] = []

    def jsonl(self, dataset: str, name: str) -> Path:
        return self.results / f"sparse_baselines_{dataset}_{slug(name)}.jsonl"

    def fashion_mnist(self) -> str:
        args, q = self.args, self.quick
        model = models.load(FMNIST_MODEL)
        data = first_correct(model, *fashion_mnist(), args.images)
        recs: list[dict] = []
        budgets: dict[str, str] = {}
        sf = dict(lam=3.0, steps=20)
        op = dict(k=1, popsize=20 if q else 60, steps=5 if q else 20)
        k = None

        def go(method, name, budget, batch_size=60, **params):
            nonlocal recs
            recs += run_protocol(model, method, data, self.jsonl("fmnist", name), name, batch_size=batch_size,
                                 **params)
            budgets[name] = budget
            md = (f"### Fashion-MNIST, {len(data.ids)} images x 9 targets, k = {k} pixels\n\n"
                  + table1(recs, FMNIST_ORDER, budgets=budgets))
            write_text(self.results / "sparse_baselines_fmnist.md", md)
            return md

        md = ""
        if "budgeted" in args.sections:
            # C&W-l0 first: its average-case l0 is the budget k of the others (SAPF Sec. 4.1)
            cw = dict(steps=20 if q else 1000, initial_const=1.0)
            md = go("cw-l0", "C&W-ℓ0", f"{cw['steps']} steps/solve, c0=1", batch_size=90, **cw)
            wins = [r["l0"] for r in recs if r["success"]]
            k = max(1, round(sum(wins) / len(wins))) if wins else 50
            print(f"  matched sparsity k = {k} (C&W-ℓ0 average-case ℓ0)", flush=True)
            eps = (0.1, 0.2, 0.3, 0.5, 1.0)
            md = go("pgd-l0-linf", "PGD ℓ0+ℓ∞", f"k={k}, ε∈{list(eps)}, 50 steps",
                    k=k, eps=eps, steps=10 if q else 50, restarts=1)
            md = go("corner-search", "CornerSearch", f"k={k}, N_iter={20 if q else 100}",
                    batch_size=30, k=k, steps=20 if q else 100)
            if args.skip_sapf:
                self.notes.append("SAPF skipped (--skip-sapf).")
            elif "sapf" in available():
                sapf_kw = dict(k=k) if not q else dict(k=k, binary_search_steps=1, steps=1)
                md = go("sapf", "SAPF", f"k={k}, preset fast", batch_size=90, **sapf_kw)
            else:
                self.notes.append("SAPF is not registered yet: its row is missing.")
        if "free" in args.sections:
            md = go("sparsefool", "SparseFool", "λ=3 (targeted variant)", **sf)
            md = go("one-pixel", "One-Pixel", f"{op['k']} px, pop {op['popsize']}, {op['steps']} gens", **op)
        if "peers" in args.sections:
            md += "\n\n" + self.peers(model, data, recs, op, sf)
            write_text(self.results / "sparse_baselines_fmnist.md", md)
        return md

    def peers(self, model, data: Subset, ours: list[dict], op: dict, sf: dict) -> str:
        out = self.results / "sparse_baselines_peers.jsonl"
        ours = ours + [r for name in ("One-Pixel", "C&W-ℓ0") for r in read_records(self.jsonl("fmnist", name))
                       if not any(o["method"] == name for o in ours)]
        sub = data.head(self.args.peer_images)
        entries = [("One-Pixel, targeted", "sparseattack",
                    [r for r in ours if r["method"] == "One-Pixel" and r["image"] in sub.ids],
                    "DE/rand/1, F=0.5, no crossover, child checked every generation (Su et al.)")]
        try:
            theirs = run_protocol(model, torchattacks_attack("OnePixel"), sub, out, "torchattacks OnePixel",
                                  batch_size=9, pixels=op["k"], steps=op["steps"], popsize=op["popsize"],
                                  inf_batch=4096)
            entries.append(("One-Pixel, targeted", f"torchattacks {peer_version('torchattacks')}", theirs,
                            "scipy DE best1bin, F~U(0.5,1) dithering, recombination 1, popsize "
                            f"{op['popsize']}//3 x 3 dims; one image at a time; stops when the best member succeeds"))
        except ImportError as err:
            self.notes.append(f"torchattacks missing ({err}): no OnePixel/SparseFool peer rows.")
        # torchattacks' SparseFool is untargeted only: compare untargeted on the same images
        entries += self.untargeted_sparsefool(model, data, sf)
        # minimum-l0 reference points, targeted, all pairs
        entries.append(("min-ℓ0 reference", "sparseattack C&W-ℓ0", [r for r in ours if r["method"] == "C&W-ℓ0"],
                        "the k source"))
        steps = 50 if self.quick else 300
        for label, make, params, note in (
                ("adv-lib FMN-ℓ0", lambda: adv_lib_attack("fast_minimum_norm", "fmn"), dict(norm=0, steps=steps),
                 f"Pintor et al. 2021, {steps} steps"),
                ("adv-lib VFGA", lambda: adv_lib_attack("stochastic_sparse_attacks", "vfga"), {},
                 "Hajri et al. 2020, default iterations"),
                ("foolbox L0-FMN", lambda: foolbox_attack("L0FMNAttack"), dict(steps=steps),
                 f"Pintor et al. 2021, {steps} steps")):
            try:
                fn = make()
            except Exception as err:  # noqa: BLE001 - a peer that does not import is skipped
                self.notes.append(f"{label} skipped: {type(err).__name__}: {err}")
                continue
            try:
                recs = run_protocol(model, fn, data, out, label, batch_size=90, **params)
            except Exception as err:  # noqa: BLE001
                self.notes.append(f"{label} failed: {type(err).__name__}: {err}")
                continue
            entries.append(("min-ℓ0 reference", label, recs, note))
        return (f"### Peer implementations (Fashion-MNIST, same model and pairs; One-Pixel on the first "
                f"{len(sub.ids)} images x 9 targets)\n\n" + peer_table(entries))

    def untargeted_sparsefool(self, model, data: Subset, sf: dict) -> list:
        """SparseFool as its paper defines it (untargeted): ours vs torchattacks on the same images,
        and adv-lib's sigma-zero (untargeted only there)."""
        def run(method, label, **params):
            return untargeted(model, method, data, self.jsonl("fmnist", label), label, **params)

        entries = [("SparseFool, untargeted", "sparseattack",
                    run("sparsefool", "SparseFool untargeted, sparseattack", **sf),
                    "closed-form LinearSolver, batched, 10 DeepFool candidates fixed at x_0")]
        try:
            fn, label = torchattacks_attack("SparseFool"), f"torchattacks {peer_version('torchattacks')}"
            entries.append(("SparseFool, untargeted", label,
                            run(fn, f"SparseFool untargeted, {label}", **sf, overshoot=0.02),
                            "one image at a time, DeepFool over all classes, x_B = x_0 + λ(DeepFool(x_i) - x_0)"))
        except ImportError as err:
            self.notes.append(f"torchattacks SparseFool skipped: {err}")
        try:
            fn = adv_lib_attack("sigma_zero", "sigma_zero")
        except Exception as err:  # noqa: BLE001 - a peer that does not import is skipped
            self.notes.append(f"adv-lib σ-zero skipped: {type(err).__name__}: {err}")
            return entries
        entries.append(("min-ℓ0 reference, untargeted", "adv-lib σ-zero",
                        run(fn, "σ-zero untargeted, adv-lib", num_steps=300),
                        "Cinà et al. 2024, 300 steps (untargeted only in adv-lib)"))
        return entries

    def imagenet(self) -> str:
        args, q = self.args, self.quick
        try:
            x, y = imagenet_sample(args.imagenet_data)
        except FileNotFoundError as err:
            self.notes.append(f"ImageNet sample not found ({err}): ImageNet table skipped.")
            return ""
        model = models.load("efficientnet-lite0")
        data = first_correct(model, x, y, args.imagenet_images)
        k_entries = round(CW_L0_IMAGENET_FRACTION * x[0].numel())
        k_pixels = max(1, k_entries // x.shape[1])
        t = args.imagenet_targets
        pgd = dict(k=k_pixels, eps=(0.03, 0.063, 0.1), steps=3 if q else 20, restarts=1)
        sf = dict(lam=3.0, steps=2 if q else 10, deepfool_steps=20)
        op = dict(k=1, popsize=10 if q else 40, steps=2 if q else 10, eval_batch=40)
        runs = [("PGD ℓ0+ℓ∞", "pgd-l0-linf", pgd, f"k={k_pixels} px, ε∈{list(pgd['eps'])}, {pgd['steps']} steps"),
                ("SparseFool", "sparsefool", sf, f"λ=3, {sf['steps']} outer iterations (targeted variant)"),
                ("One-Pixel", "one-pixel", op, f"{op['k']} px, pop {op['popsize']}, {op['steps']} gens")]
        recs: list[dict] = []
        for name, method, params, _ in runs:
            recs += run_protocol(model, method, data, self.jsonl("imagenet", name), name, targets=t, batch_size=10,
                                 **params)
        self.notes.append("ImageNet: C&W-ℓ0 (hundreds of 1000-step ℓ2 rounds), CornerSearch (224·224·8 = 401k "
                          "one-pixel evaluations per image) and SAPF (thousands of gradient evaluations per pair) do "
                          "not run in reasonable time on this CPU and are left out; k is SAPF Table 1's C&W-ℓ0 average "
                          f"ℓ0 fraction ({CW_L0_IMAGENET_FRACTION:.3f} of the entries: {k_entries} entries = "
                          f"{k_pixels} pixels).")
        md = (f"### ImageNet sample (EfficientNet-Lite0, 224x224), {len(data.ids)} images x {t} seeded targets\n\n"
              + table1(recs, ["One-Pixel", "PGD ℓ0+ℓ∞", "SparseFool"],
                       budgets={name: budget for name, _, _, budget in runs}))
        write_text(self.results / "sparse_baselines_imagenet.md", md)
        return md


def main() -> None:
    p = argument_parser(__doc__)
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--peer-images", type=int, default=5)
    p.add_argument("--imagenet-images", type=int, default=5)
    p.add_argument("--imagenet-targets", type=int, default=2)
    p.add_argument("--imagenet-data", type=Path, default=IMAGENET_SAMPLE, help="default: %(default)s")
    p.add_argument("--sections", default="budgeted,free,peers,imagenet",
                   help="comma-separated parts to run (budgeted: C&W-l0 then the methods with its k; "
                        "free: SparseFool, One-Pixel; peers; imagenet); default all")
    p.add_argument("--skip-sapf", action="store_true")
    add_threads(p)
    p.add_argument("--quick", action="store_true", help="tiny schedules, for a smoke run")
    p.add_argument("--results", type=Path, default=RESULTS, help="default: %(default)s")
    args = p.parse_args()
    args.sections = set(args.sections.split(","))
    threads = set_threads(args.threads)
    bench = Baselines(args)
    start = time.time()
    parts = [f"## Sparse baselines of SAPF Table 1 (CPU, {threads} thread{'s' * (threads > 1)})",
             bench.fashion_mnist(), bench.imagenet() if "imagenet" in args.sections else ""]
    parts.append("Notes:\n" + "\n".join(f"- {n}" for n in bench.notes) if bench.notes else "")
    parts.append(f"Total wall time {time.time() - start:.0f} s.")
    md = "\n\n".join(part for part in parts if part)
    write_text(args.results / "sparse_baselines.md", md)
    print(md)


if __name__ == "__main__":
    main()

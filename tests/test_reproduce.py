"""`sparseattack reproduce` on the tiny budget: every table, figure and REPRODUCTION.md, resumable."""
import json

import numpy as np
import pytest
from PIL import Image

from sparseattack.cli import main
from sparseattack.eval import read_records
from sparseattack.reproduce import BUDGETS, TABLE1_ORDER, reproduce
from sparseattack.validation import ValidationError

FIGURES = ["fig1_targets.png", "fig3_group_sparsity.png", "fig4_sweep.png", "fig5_weighting.png"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    path = reproduce("fmnist", "tiny", out, progress=False)
    return out, path


def _lines(path):
    return path.read_text().splitlines()


def test_outputs_exist(tiny_run):
    out, path = tiny_run
    text = path.read_text()
    assert path == out / "REPRODUCTION.md"
    assert "--budget tiny" in text and "## Claims" in text and "## What stands in" in text
    for verdict_line in [l for l in text.splitlines() if l.startswith("| ") and "**" in l]:
        assert any(v in verdict_line for v in ("**reproduced**", "**not reproduced**", "**not applicable**"))
    tables = out / "fmnist" / "tables"
    for stem in ("table1", "sweep", "defense_fmnist-cw-pgd", "defense_fmnist-cw-distilled",
                 "defense_capped"):
        assert (tables / f"{stem}.md").exists(), stem
    csv = (tables / "table1.csv").read_text().splitlines()
    assert csv[0].startswith("method,budget,best_asr")
    # every method of both papers has a row, none silently left out
    assert len(csv) == 1 + len(TABLE1_ORDER)
    for name in FIGURES:
        img = np.asarray(Image.open(out / "fmnist" / "figures" / name).convert("L"), dtype=float)
        assert img.shape[0] > 150 and img.shape[1] > 300 and img.std() > 2, name
        assert f"fmnist/figures/{name}" in text


def test_records_name_their_outputs(tiny_run):
    out, _ = tiny_run
    recs = read_records(out / "fmnist" / "table1.jsonl")
    assert {r["method"] for r in recs} >= {"SAPF", "StrAttack", "C&W-l0"}
    for r in recs:
        assert (out / "fmnist" / "adv" / "table1").exists()
        assert r["adversarial"].endswith(".png")
        assert r["config"]["model"] == "fmnist-cw"
    facts = json.loads((out / "fmnist" / "facts.json").read_text())
    assert facts["k"] >= 1 and "table1" in facts and "sweep" in facts


def test_rerun_resumes_without_duplicates(tiny_run):
    out, _ = tiny_run
    table = out / "fmnist" / "table1.jsonl"
    before = _lines(table)
    # a killed run: the last record and half of another are lost
    table.write_text("\n".join(before[:-1]) + "\n" + before[-1][: len(before[-1]) // 2])
    reproduce("fmnist", "tiny", out, progress=False)
    after = _lines(table)
    assert len(after) == len(before)
    keys = [(json.loads(l)["method"], json.loads(l)["image"], json.loads(l)["target"]) for l in after]
    assert len(set(keys)) == len(keys)
    assert sorted(after[:-1]) == sorted(before[:-1])


def test_bad_arguments(tmp_path):
    with pytest.raises(ValidationError, match="--suite"):
        reproduce("cifar", "tiny", tmp_path)
    with pytest.raises(ValidationError, match="--budget"):
        reproduce("fmnist", "huge", tmp_path)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValidationError, match="is a file"):
        reproduce("fmnist", "tiny", f)
    assert main(["reproduce", "--suite", "imagenet", "--budget", "tiny", "--out", str(tmp_path / "r"),
                 "--imagenet-data", str(tmp_path)]) == 2


def test_budgets_state_their_size():
    assert BUDGETS["quick"].fmnist_images >= 2 and BUDGETS["full"].fmnist_images == 1000
    for b in BUDGETS.values():
        assert b.note


def test_quick_budget_shrinks_only_the_slow_methods_on_fmnist():
    from sparseattack.reproduce import _suite_caps

    quick = BUDGETS["quick"]
    assert _suite_caps(quick, "fmnist", "strattack") == {"binary_search_steps": 3, "refine_steps": 1000}
    assert _suite_caps(quick, "fmnist", "cw-linf")["steps"] == 100
    # C&W-l0 sets the matched k and SAPF is the method under test: both run at their defaults
    assert _suite_caps(quick, "fmnist", "cw-l0") == {} and _suite_caps(quick, "fmnist", "sapf") == {}
    assert _suite_caps(quick, "imagenet", "sapf")["polish_steps"] == 100
    assert _suite_caps(quick, "imagenet", "cw-l0")["steps"] == 100
    assert _suite_caps(BUDGETS["full"], "imagenet", "strattack") == {}


def test_parallel_suites_keep_a_finished_suite_when_the_other_fails(tmp_path):
    """--jobs 2 runs each suite in its own process: the ImageNet suite's bad folder is reported as
    the clear error it is, and the Fashion-MNIST suite, run beside it, keeps its records."""
    with pytest.raises(ValidationError, match="labels.csv"):
        reproduce("all", "tiny", tmp_path / "r", progress=False, jobs=2, imagenet_data=tmp_path / "empty")
    records = read_records(tmp_path / "r" / "fmnist" / "table1.jsonl")
    assert {r["method"] for r in records} >= {"C&W-l0", "SAPF", "StrAttack"}
    with pytest.raises(ValidationError, match="--jobs"):
        reproduce("fmnist", "tiny", tmp_path / "r2", jobs=0)

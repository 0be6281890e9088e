"""The papers' Table-1 layout and the number format (sparseattack.eval.tables), on hand-made records."""
from __future__ import annotations

import csv
import io
import math

import pytest

from sparseattack.eval.tables import HEADERS, format_value, markdown_table, table1, table1_csv, table1_rows


def _rec(method, image, target, success, l2, **extra):
    """A record of the `evaluate` schema; every norm is `l2` unless given."""
    rec = {"method": method, "image": image, "target": target, "success": success, "l0": l2, "l0_pixels": l2,
           "l1": l2, "l2": l2, "linf": l2, "gradients": 10.0, "seconds": 0.5}
    rec.update(extra)
    return rec


# method "a": image 0 fooled toward both targets (l2 1 and 3), image 1 toward one of two (l2 2; the
# failed target's l2 9 must count nowhere). Method "b": one image, one failed target.
RECORDS = [_rec("a", 0, 1, True, 1.0), _rec("a", 0, 2, True, 3.0),
           _rec("a", 1, 1, True, 2.0), _rec("a", 1, 2, False, 9.0, gradients=30.0, seconds=1.5),
           _rec("b", 0, 1, False, 4.0)]


def test_rows_follow_best_average_worst_semantics():
    rows = {r["method"]: r for r in table1_rows(RECORDS)}
    a = rows["a"]
    # average: 3 of 4 pairs; norms over the 3 successful pairs
    assert a["average_asr"] == 0.75 and a["average_l2"] == pytest.approx(2.0)
    # best: both images have a success; per image the smallest l2 (1 and 2)
    assert a["best_asr"] == 1.0 and a["best_l2"] == pytest.approx(1.5)
    # worst: only image 0 has every target fooled; its largest l2 (3)
    assert a["worst_asr"] == 0.5 and a["worst_l2"] == pytest.approx(3.0)
    # cost columns: the average-case row, over all pairs (failed ones too)
    assert a["gradients"] == pytest.approx(15.0) and a["seconds"] == pytest.approx(0.75)
    assert a["pairs"] == 4
    b = rows["b"]
    assert (b["best_asr"], b["average_asr"], b["worst_asr"]) == (0.0, 0.0, 0.0)
    assert all(math.isnan(b[f"{case}_l2"]) for case in ("best", "average", "worst"))


def test_criterion_picks_the_best_and_worst_target():
    recs = [_rec("m", 0, 1, True, 1.0, l0=50.0), _rec("m", 0, 2, True, 2.0, l0=10.0)]
    by_l2 = table1_rows(recs)[0]
    by_l0 = table1_rows(recs, criterion="l0")[0]
    assert (by_l2["best_l2"], by_l2["worst_l2"]) == (1.0, 2.0)
    assert (by_l0["best_l0"], by_l0["worst_l0"], by_l0["best_l2"]) == (10.0, 50.0, 2.0)


def test_markdown_structure_order_and_budget_column():
    md = table1(RECORDS, order=["b", "missing", "a"], budgets={"a": "k=3"})
    lines = md.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[:3] == ["method", "budget", "best ASR"]
    assert head[2:17] == [f"{case} {HEADERS[k]}" for case in ("best", "average", "worst")
                          for k in ("asr", "l0", "l1", "l2", "linf")]
    assert head[17:] == ["grads/pair", "s/pair", "pairs"]
    assert lines[1] == "|" + "---|" * len(head)
    assert len(lines) == 4  # "missing" has no records: no row
    cells_b = [c.strip() for c in lines[2].strip("|").split("|")]
    cells_a = [c.strip() for c in lines[3].strip("|").split("|")]
    assert len(cells_a) == len(cells_b) == len(head)
    assert cells_b[:3] == ["b", "", "0%"] and cells_b[3] == "-"  # no success: norms are "-"
    assert cells_a[:3] == ["a", "k=3", "100%"]
    assert cells_a[head.index("average ASR")] == "75%"
    assert cells_a[head.index("worst ℓ2")] == "3"
    assert cells_a[head.index("grads/pair")] == "15.0" and cells_a[-1] == "4"


def test_methods_missing_from_order_still_get_a_row():
    md = table1(RECORDS, order=["b"])
    assert [line.split("|")[1].strip() for line in md.splitlines()[2:]] == ["b", "a"]
    assert "budget" not in md.splitlines()[0]


def test_extra_average_columns_and_norms():
    recs = [_rec("m", 0, 1, True, 1.0, groups=44.25), _rec("m", 0, 2, False, 5.0, groups=196.0)]
    md = table1(recs, norms=("l0", "l2"), average=("groups", "gradients", "seconds"))
    head, _, row = md.splitlines()
    assert head.count("ℓ1") == 0 and head.count("ℓ0") == 3
    assert "groups | grads/pair | s/pair | pairs" in head
    assert "| 44.2 | 10.0 | 0.5 | 2 |" in row  # groups: over the successful pair only


def test_csv_variant_keeps_raw_numbers():
    text = table1_csv(RECORDS, order=["a", "b"], budgets={"a": "k=3"})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0])[:4] == ["method", "budget", "best_asr", "best_l0"]
    assert list(rows[0])[-3:] == ["gradients", "seconds", "pairs"]
    assert [r["method"] for r in rows] == ["a", "b"]
    assert float(rows[0]["average_asr"]) == 0.75 and float(rows[0]["best_l2"]) == pytest.approx(1.5)
    assert rows[1]["best_l2"] == "" and rows[1]["budget"] == ""


def test_format_value_rules():
    f = format_value
    # rates: at most one decimal, no trailing .0, never rounded to 100% or 0%
    assert [f("asr", v) for v in (1.0, 0.75, 0.228, 0.8055, 0.0)] == ["100%", "75%", "22.8%", "80.5%", "0%"]
    assert f("asr", 0.99999) == "99.9%" and f("asr", 0.0001) == "<0.1%"
    assert f("survival", 0.5) == "50%"
    # counts: no decimal from 100 up, one below
    assert [f("l0", v) for v in (572.4, 99.94, 39.2, 1.0)] == ["572", "99.9", "39.2", "1.0"]
    assert f("gradients", 5662.0) == "5662" and f("groups", 44.25) == "44.2"
    # other numbers: three significant digits, no decimal (nor exponent) from 1000 up
    assert [f("l2", v) for v in (0.0825, 2.5634, 0.549, 312.4, 3124.5)] == ["0.0825", "2.56", "0.549", "312", "3124"]
    assert f("seconds", 135.508) == "136" and f("ratio", 44.52) == "44.5"
    # missing values, ints and strings
    assert f("l2", float("nan")) == "-" and f("asr", None) == "-" and f("l2", float("inf")) == "∞"
    assert f("pairs", 180) == "180" and f("budget", "k=39") == "k=39"


def test_markdown_table():
    assert markdown_table(["a", "b"], [["1", 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    assert markdown_table(["a"], []) == "| a |\n|---|"


def test_refuses_what_summarize_refuses():
    with pytest.raises(ValueError, match="duplicated"):
        table1(RECORDS + RECORDS[:1])

"""The papers' result tables, and the one number format of every table this package writes.

Table 1 of SAPF (Fan et al. 2020) and of StrAttack (Xu et al. 2019) puts one method on each row
and three column groups side by side: the best, average and worst case, each with the attack
success rate (ASR) and the mean l0, l1, l2 and l_inf distortion; SAPF adds the cost. `table1`
writes that layout as Markdown and `table1_csv` as CSV, from the per-pair records of
`eval.evaluate` / `AttackResult.records()`, on top of `eval.summarize` (which defines the cases):

- average case: ASR over all pairs; norms over the successful pairs;
- best case: per image the successful target with the smallest `criterion` norm (default l2);
- worst case: per image the target with the largest one, a success only if every target of the
  image succeeded;
- the columns after the three groups (`average`, default gradient evaluations and seconds per
  pair) are taken from the average-case row: costs over all pairs, a norm (e.g. StrAttack's
  nonzero `groups`) over the successful pairs; then the number of pairs.

`format_value(key, value)` is the one number format (Markdown tables and benchmark reports):

- ASR and other rates (`PERCENT_KEYS`): a percentage with at most one decimal and no trailing
  ".0" (100%, 22.8%); a rate below 1 never shows as 100% nor one above 0 as 0% ("99.9%", "<0.1%");
- counts (`COUNT_KEYS`: l0, l0_pixels, groups, gradients, forwards): no decimal from 100 up,
  one below (572, 39.2);
- every other number: three significant digits, no decimal from 1000 up (0.0825, 2.56, 312, 3124);
- ints and strings as they are; None and NaN as "-".
"""
from __future__ import annotations

import csv
import io
import math
from typing import Iterable, Sequence

__all__ = ["CASES", "COUNT_KEYS", "HEADERS", "PERCENT_KEYS", "TABLE1_AVERAGE", "TABLE1_NORMS",
           "format_value", "markdown_table", "table1", "table1_csv", "table1_rows"]

CASES = ("best", "average", "worst")
TABLE1_NORMS = ("l0", "l1", "l2", "linf")
TABLE1_AVERAGE = ("gradients", "seconds")

PERCENT_KEYS = frozenset({"asr", "float_asr", "shipped_asr", "survival", "plain_rounding_survival", "top1"})
COUNT_KEYS = frozenset({"l0", "l0_pixels", "groups", "gradients", "forwards"})

# Column headers of the metric keys (Markdown).
HEADERS = {"asr": "ASR", "l0": "ℓ0", "l0_pixels": "ℓ0 px", "l1": "ℓ1", "l2": "ℓ2", "linf": "ℓ∞",
           "groups": "groups", "gradients": "grads/pair", "forwards": "forwards/pair", "seconds": "s/pair",
           "pairs": "pairs", "images": "images"}


def format_value(key: str, value) -> str:
    """One number as every table shows it (rules in the module docstring); `key` is the metric's
    name (asr, l0, l2, gradients, seconds, ...), which picks the rule."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    v = float(value)
    if math.isnan(v):
        return "-"
    if key in PERCENT_KEYS:
        text = f"{100 * v:.1f}"
        if text == "100.0" and v < 1:
            text = "99.9"
        elif text == "0.0" and v > 0:
            return "<0.1%"
        return (text[:-2] if text.endswith(".0") else text) + "%"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if key in COUNT_KEYS:
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def markdown_table(head: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A Markdown table of already formatted cells (anything else goes through `str`)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _columns(norms: Sequence[str], average: Sequence[str], budgets: dict | None) -> list[tuple[str, str, str]]:
    """(column key, metric key, Markdown header) of the wide layout, after `method`."""
    cols = [("budget", "budget", "budget")] if budgets is not None else []
    cols += [(f"{case}_{key}", key, f"{case} {HEADERS.get(key, key)}")
             for case in CASES for key in ("asr", *norms)]
    cols += [(key, key, HEADERS.get(key, key)) for key in average]
    return cols + [("pairs", "pairs", "pairs")]


def table1_rows(records: list[dict], order: Sequence[str] | None = None, *, budgets: dict | None = None,
                criterion: str = "l2", norms: Sequence[str] = TABLE1_NORMS,
                average: Sequence[str] = TABLE1_AVERAGE) -> list[dict]:
    """The wide layout as one dict per method, unformatted: `method`, `budget` (when `budgets`
    maps methods to a description), `{case}_{key}` for case in best/average/worst and key in
    asr + `norms`, the `average` keys from the average-case row, and `pairs`.

    Methods come in `order` first (names without records are skipped), then any other method in
    the order of its first record: no record is left out of the table."""
    from .protocol import summarize  # here, so that protocol may import this module's format

    keys = tuple(dict.fromkeys((*norms, *average, criterion)))
    by = {(r["method"], r["case"]): r for r in summarize(records, criterion=criterion, keys=keys)}
    methods = list(dict.fromkeys([*(order or []), *(r["method"] for r in records)]))
    out = []
    for m in methods:
        if (m, "average") not in by:
            continue
        row = {"method": m}
        if budgets is not None:
            row["budget"] = budgets.get(m, "")
        for case in CASES:
            row.update({f"{case}_{k}": by[(m, case)][k] for k in ("asr", *norms)})
        avg = by[(m, "average")]
        row.update({k: avg[k] for k in average})
        row["pairs"] = avg["pairs"]
        out.append(row)
    return out


def table1(records: list[dict], order: Sequence[str] | None = None, *, budgets: dict | None = None,
           criterion: str = "l2", norms: Sequence[str] = TABLE1_NORMS,
           average: Sequence[str] = TABLE1_AVERAGE) -> str:
    """SAPF / StrAttack Table 1 as Markdown: one row per method, best / average / worst column
    groups of ASR and `norms`, then the `average` columns and the number of pairs.

    records: per-pair records (`eval.evaluate`); order: the methods' row order (others follow);
    budgets: method -> a description for a `budget` column (no column when None); criterion: the
    norm that picks each image's best and worst target (`eval.summarize`)."""
    cols = _columns(norms, average, budgets)
    rows = table1_rows(records, order, budgets=budgets, criterion=criterion, norms=norms, average=average)
    return markdown_table(["method"] + [head for _, _, head in cols],
                          ([r["method"]] + [format_value(key, r[col]) for col, key, _ in cols] for r in rows))


def table1_csv(records: list[dict], order: Sequence[str] | None = None, *, budgets: dict | None = None,
               criterion: str = "l2", norms: Sequence[str] = TABLE1_NORMS,
               average: Sequence[str] = TABLE1_AVERAGE) -> str:
    """The rows of `table1` as CSV with the unformatted numbers (ASR as a fraction; an empty cell
    where a case has no successful pair). Columns: method, [budget], best_asr, best_l0, ...,
    average_asr, ..., worst_linf, the `average` keys, pairs."""
    rows = table1_rows(records, order, budgets=budgets, criterion=criterion, norms=norms, average=average)
    fields = ["method"] + [col for col, _, _ in _columns(norms, average, budgets)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()})
    return buf.getvalue()

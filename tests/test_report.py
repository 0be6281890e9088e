"""REPRODUCTION.md's claims as functions of measured facts: verdicts on facts with a known answer."""
import math

from sparseattack.report import NOT_APPLICABLE, NOT_REPRODUCED, REPRODUCED, claims

NAN = math.nan


def _row(asr, l0, l2=1.0):
    return {"pairs": 9, "asr": asr, "l0": l0, "l1": 5.0, "l2": l2, "linf": 0.5, "groups": NAN}


def _verdicts(facts, start):
    return {c[0].split(" (")[0]: (c[3], c[4]) for c in claims({"fmnist": facts}) if c[0].startswith(start)}


def _sweep(values_l2, values_l1, values_linf):
    return [{"method": "SAPF", "k": k, "asr": 1.0, "pairs": 9, "l0": k, "l1": a, "l2": b, "linf": c}
            for k, a, b, c in zip((5, 10, 20, 40), values_l1, values_l2, values_linf)]


def test_fig4_trends_follow_the_papers_directions():
    paper_like = _verdicts({"sweep": _sweep([2.0, 1.5, 1.2, 1.0], [3.0, 4.0, 5.0, 6.0], [0.9, 0.6, 0.4, 0.2])},
                           "As k grows")
    assert {v for v, _ in paper_like.values()} == {REPRODUCED} and len(paper_like) == 3
    # one step against the trend is tolerated, two are not; a net rise of linf never is
    mixed = _verdicts({"sweep": _sweep([2.0, 2.1, 1.2, 1.0], [3.0, 2.0, 5.0, 4.0], [0.2, 0.4, 0.6, 0.9])},
                      "As k grows")
    assert mixed["As k grows, l2 decreases"][0] == REPRODUCED
    assert mixed["As k grows, l1 increases"][0] == NOT_REPRODUCED
    assert mixed["As k grows, linf decreases"][0] == NOT_REPRODUCED
    assert "ASR 100-100%" in mixed["As k grows, l1 increases"][1]
    assert _verdicts({"sweep": _sweep([1, 1], [1, 1], [1, 1])}, "As k grows") == {}  # too few k to judge


def test_strattack_table1_orderings():
    table = {"sapf": _row(1.0, 38), "strattack": _row(1.0, 120), "strattack-overlap": _row(1.0, 150),
             "fgm-search": _row(0.3, 460), "ifgsm-search": _row(1.0, 590), "cw-l2": _row(1.0, 490), "cw-linf": _row(1.0, 650)}
    got = _verdicts({"table1": table, "k": 38}, "")
    assert got["StrAttack perturbs fewer entries than FGM, IFGSM and the dense C&W attacks"][0] == REPRODUCED
    assert got["Overlapping groups give a less sparse StrAttack"][0] == REPRODUCED
    assert got["FGM has the lowest ASR"][0] == REPRODUCED
    table["cw-l2"] = _row(1.0, 100)
    table["strattack-overlap"] = _row(0.0, NAN)
    table["fgm-search"] = _row(1.0, 460)
    table["ifgsm-search"] = _row(0.9, 590)
    got = _verdicts({"table1": table, "k": 38}, "")
    assert got["StrAttack perturbs fewer entries than FGM, IFGSM and the dense C&W attacks"][0] == NOT_REPRODUCED
    assert got["Overlapping groups give a less sparse StrAttack"][0] == NOT_APPLICABLE
    assert got["FGM has the lowest ASR"][0] == NOT_REPRODUCED

"""Hypothesis fuzzing of the API and the CLI: a clear error or a valid result, never a
torch-internal traceback, never a false success.

API: every registered attack (short settings from test_contract.FAST) on random batch sizes,
channel counts, image sizes, dtypes, values (NaN, inf, out of range, off the 8-bit grid), labels
(length, dtype, range), budgets k and unknown parameters. An error must be a
`validation.ValidationError` raised from sparseattack's own code (its message names the problem;
the CLI's exit 2); any other exception is a bug. A result must
have the inputs' shape and dtype, lie in [0, 1], and every changed output must be adversarial.
CLI: random option values for `attack` and `eval`: exit status 0, 1 or 2 (argparse's own usage
errors also exit 2), never an exception; a success the CLI reports holds on the saved PNG.
"""
from __future__ import annotations

import json
import traceback

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from sparseattack import run_attack
from sparseattack.cli import main
from sparseattack.validation import ValidationError

from test_contract import FAST

pytestmark = pytest.mark.filterwarnings("ignore")
CLASSES = 5


class TinyNet(nn.Module):
    """Any image size, 1 or 3 channels, 5 classes."""

    def __init__(self, channels: int):
        super().__init__()
        torch.manual_seed(channels)
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = nn.Linear(4, CLASSES)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


MODELS = {c: TinyNet(c).eval() for c in (1, 3)}


def _raised_by_us(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and "sparseattack" in frames[-1].filename.replace("\\", "/").split("/site-packages/")[-1]


FAULTS = ["nan", "inf", "negative", "above", "off-grid", "int", "double", "half", "3d", "empty",
          "labels-short", "labels-long", "labels-float", "labels-negative", "labels-too-large", "unknown-param",
          "k", "steps"]


@st.composite
def attack_calls(draw):
    """One call: a valid one half of the time, else one fault (bad images, labels or parameters)."""
    from sparseattack.attacks import get

    method = draw(st.sampled_from(sorted(FAST)))
    fault = draw(st.sampled_from(["none"] * len(FAULTS) + FAULTS))
    b = 0 if fault == "empty" else draw(st.integers(1, 3))
    c = draw(st.sampled_from([1, 3]))
    h, w = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.randint(0, 256, (b, c, h, w), generator=gen).float() / 255
    labels = torch.randint(0, CLASSES, (b,), generator=gen)
    params = dict(FAST[method])
    if fault == "nan":
        x[0, 0, 0, 0] = float("nan")
    elif fault == "inf":
        x[-1, -1, -1, -1] = float("inf")
    elif fault == "negative":
        x[0, 0, 0, 0] = -0.2
    elif fault == "above":
        x[0, 0, 0, 0] = 1.5
    elif fault == "off-grid":
        x = x * 0.999 + 1e-4
    elif fault == "int":
        x = (x * 255).to(torch.uint8)
    elif fault == "double":
        x = x.double()
    elif fault == "half":
        x = x.half()
    elif fault == "3d":
        x = x[:, 0]
    elif fault == "labels-short":
        labels = labels[1:]
    elif fault == "labels-long":
        labels = torch.cat([labels, labels[:1]])
    elif fault == "labels-float":
        labels = labels.float()
    elif fault == "labels-negative":
        labels[0] = -1
    elif fault == "labels-too-large":
        labels[-1] = CLASSES
    elif fault == "unknown-param":
        params["stepz"] = 3
    elif fault == "k":
        key = "k"
        params[key] = draw(st.sampled_from([0, -3, 1, 2, 0.5, 1.5, 10**7, "many", None, True]))
    elif fault == "steps":
        key = "steps"
        params[key] = draw(st.sampled_from([0, -1, 1, 2.5]))
    if draw(st.booleans()):
        labels = labels.int()
    targeted = draw(st.booleans())
    return method, c, x, labels, targeted, params


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attack_calls())
def test_api_fuzz(call):
    method, c, x, labels, targeted, params = call
    model = MODELS[c]
    targets = None
    if targeted and labels.dtype in (torch.int64, torch.int32) and len(labels) and (labels >= 0).all():
        targets = (labels + 1) % CLASSES
    try:
        res = run_attack(method, model, x, labels, targets=targets, **params)
    except ValidationError as err:
        assert _raised_by_us(err), "".join(traceback.format_exception(err))
        assert str(err)
        return
    assert res.adv.shape == x.shape and res.adv.dtype == x.dtype
    assert res.adv.min() >= 0 and res.adv.max() <= 1
    with torch.no_grad():
        pred = model(res.adv).argmax(1)
    changed = (res.adv != x).flatten(1).any(1)
    goal_ok = pred == targets if targets is not None else pred != labels
    assert goal_ok[changed].all(), "a changed output that is not adversarial"
    assert torch.equal(res.success, goal_ok)


OPTION_VALUES = {
    "--slice": ["0:2", "3", "2:1", "0:100000", "a:b", "-1:2", ":2"],
    "--targets": ["all", "1", "2", "0", "-2", "ten", "11"],
    "--batch-size": ["1", "7", "0", "-4", "x"],
    "--criterion": ["l2", "linf", "l7"],
    "--methods": ["fgsm", "ifgsm,fgsm", "nope", "", "fgsm,fgsm"],
    "--index": ["0", "1:3", "99999", "x"],
    "--target": ["Sneaker", "7", "10", "Dragon", "0"],
    "--method": ["fgsm", "ifgsm", "nope"],
}
PARAM_VALUES = ["eps=0.2", "eps=-1", "eps=x", "k=80", "fgsm.eps=0.1", "sapf.k=3", "steps=2", "=3", "noequals",
                "loss=ce", "loss=hinge", "ifgsm.steps=0"]


@st.composite
def cli_calls(draw):
    command = draw(st.sampled_from(["attack", "eval"]))
    keys = ["--slice", "--targets", "--batch-size", "--criterion", "--methods"] if command == "eval" else \
        ["--index", "--target", "--method"]
    argv = [command]
    for key in keys:
        if draw(st.booleans()):
            argv += [key, draw(st.sampled_from(OPTION_VALUES[key]))]
    if command == "eval" and "--slice" not in argv:
        argv += ["--slice", "0:2"]
    if command == "eval" and "--targets" not in argv:
        argv += ["--targets", "1"]
    if command == "eval" and "--methods" not in argv:
        argv += ["--methods", "fgsm"]
    if command == "attack" and "--method" not in argv:
        argv += ["--method", "fgsm"]
    for _ in range(draw(st.integers(0, 2))):
        argv += ["-p", draw(st.sampled_from(PARAM_VALUES))]
    if draw(st.booleans()):
        argv += ["--device", draw(st.sampled_from(["cpu", "tpu", "cuda:7"]))]
    return argv


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                               HealthCheck.function_scoped_fixture])
@given(argv=cli_calls())
def test_cli_fuzz(argv, tmp_path_factory, fmnist_test, capsys):
    out = tmp_path_factory.mktemp("cli")
    argv = argv + ["--out", str(out / "r.jsonl") if argv[0] == "eval" else str(out)]
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own usage errors
        assert stop.code == 2, argv
        return
    assert code in (0, 1, 2), (argv, code)
    err = capsys.readouterr().err
    if code == 2:
        assert "error:" in err, argv
    if argv[0] == "attack" and code in (0, 1):
        report = json.loads((out / "attack_report.json").read_text())
        assert code == (0 if all(p["png_success"] for p in report["pairs"]) else 1)

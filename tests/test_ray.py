"""The Ray backend of `evaluate` and `sparseattack eval` (eval.backends), on a local Ray instance of 2
CPUs started by this module: the same records as the local backend, a worker killed mid-run costs
nothing, a driver killed mid-run resumes."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import time

import pytest
import torch

ray = pytest.importorskip("ray")

from sparseattack.attacks import ifgsm  # noqa: E402
from sparseattack.cli import main  # noqa: E402
from sparseattack.eval import evaluate, read_records  # noqa: E402
from sparseattack.validation import ValidationError  # noqa: E402

# Fields that say when and where a batch ran, not what it found.
HOST_FIELDS = {"seconds", "device"}
# float32: the stated tolerance of a norm between the backends (relative; in practice they agree exactly).
FLOAT32_RTOL = 1e-5


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module (2 worker CPUs, no dashboard); its address."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def images(fmnist_test):
    x, y = fmnist_test
    return x[:6].clone(), y[:6].clone()


def _by_pair(records):
    return {(r["image"], r["target"]): r for r in records}


def _without(rec, keys):
    return {k: v for k, v in rec.items() if k not in keys}


def test_float64_records_equal_the_local_backend(fmnist_model, images, ray_address, tmp_path):
    """Bit-identical in float64, whatever the sharding: every field but the host fields with the
    same batches; success, prediction and every norm with other batches."""
    x, y = images
    model64, x64 = copy.deepcopy(fmnist_model).double(), x.double()
    kw = dict(targets=3, seed=1, quantize=False, progress=False, eps=0.2)
    local = evaluate(model64, "ifgsm", x64, y, batch_size=4, out=tmp_path / "local.jsonl", **kw)
    remote = evaluate(model64, "ifgsm", x64, y, batch_size=4, out=tmp_path / "ray.jsonl", backend="ray",
                      address=ray_address, **kw)
    assert len(local) == len(remote) >= 12
    assert [_without(r, HOST_FIELDS) for r in remote] == [_without(r, HOST_FIELDS) for r in local]
    assert {r["device"] for r in remote} == {"cpu"}
    # the driver wrote every record once (in the order the batches finished)
    assert _by_pair(read_records(tmp_path / "ray.jsonl")) == _by_pair(remote)
    assert len(read_records(tmp_path / "ray.jsonl")) == len(remote)

    resharded = evaluate(model64, "ifgsm", x64, y, batch_size=3, backend="ray", **kw)
    keys = ("success", "adv_pred", "float_success", "l0", "l0_pixels", "l1", "l2", "linf")
    assert [[r[k] for k in keys] for r in resharded] == [[r[k] for k in keys] for r in local]


def test_float32_records_match_the_local_backend(fmnist_model, images, ray_address, tmp_path):
    """The default path (float32, 8-bit outputs saved as PNGs by the driver): the same successes,
    norms within FLOAT32_RTOL, the same saved outputs."""
    x, y = images
    kw = dict(targets=2, seed=0, progress=False, eps=0.2, batch_size=4)
    local = evaluate(fmnist_model, "ifgsm", x, y, save_adversarial=tmp_path / "adv-local", **kw)
    remote = evaluate(fmnist_model, "ifgsm", x, y, save_adversarial=tmp_path / "adv-ray", backend="ray",
                      address=ray_address, **kw)
    assert [(r["image"], r["target"], r["success"]) for r in remote] == \
           [(r["image"], r["target"], r["success"]) for r in local]
    for a, b in zip(local, remote):
        for key in ("l0", "l1", "l2", "linf"):
            assert b[key] == pytest.approx(a[key], rel=FLOAT32_RTOL, abs=1e-7), (a["image"], a["target"], key)
        assert b["adversarial"] == a["adversarial"]
        assert (tmp_path / "adv-ray" / b["adversarial"]).is_file()
    assert sorted(os.listdir(tmp_path / "adv-ray")) == sorted(os.listdir(tmp_path / "adv-local"))


def _crash_on_second_call(calls_dir):
    """An ifgsm whose second call (over all workers) kills its worker process: `calls_dir` gets
    one file per call (created atomically, so concurrent calls count apart)."""
    def crashing_ifgsm(model, inputs, labels, *, targeted=False, quantize=True, eps=0.2):
        n = 1
        while True:
            try:
                os.close(os.open(os.path.join(calls_dir, f"call-{n}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                break
            except FileExistsError:
                n += 1
        if n == 2:
            os._exit(1)  # the worker dies mid-run, as on a lost machine
        return ifgsm(model, inputs, labels, targeted=targeted, quantize=quantize, eps=eps)
    return crashing_ifgsm


def test_a_killed_worker_costs_nothing(fmnist_model, images, ray_address, tmp_path):
    x, y = images
    calls = tmp_path / "calls"
    calls.mkdir()
    attack = _crash_on_second_call(str(calls))
    out = tmp_path / "r.jsonl"
    kw = dict(targets=2, seed=0, progress=False, batch_size=3)
    remote = evaluate(fmnist_model, attack, x, y, out=out, backend="ray", address=ray_address, **kw)
    batches = -(-len(remote) // 3)
    assert len(os.listdir(calls)) == batches + 1  # the killed batch ran again, once
    written = read_records(out)
    assert len(written) == len(remote) and _by_pair(written) == _by_pair(remote)  # each pair exactly once
    local = evaluate(fmnist_model, attack, x, y, **kw)  # the crash has happened: runs through here
    assert [(r["image"], r["target"], r["success"], r["l2"]) for r in remote] == \
           [(r["image"], r["target"], r["success"], r["l2"]) for r in local]
    assert sum(r["success"] for r in remote) > 0


def test_an_attack_error_is_not_retried(fmnist_model, images, ray_address, tmp_path):
    """An exception of the attack itself is a result, not a lost worker: raised once, as locally."""
    x, y = images
    calls = tmp_path / "calls"
    calls.mkdir()

    def failing(model, inputs, labels, *, targeted=False):
        os.close(os.open(os.path.join(str(calls), f"call-{len(os.listdir(calls))}"), os.O_CREAT | os.O_WRONLY))
        raise ValueError("the attack's own error")

    with pytest.raises(ValueError, match="the attack's own error"):
        evaluate(fmnist_model, failing, x[:1], y[:1], targets=1, progress=False, out=tmp_path / "r.jsonl",
                 backend="ray", address=ray_address)
    assert len(os.listdir(calls)) == 1
    assert read_records(tmp_path / "r.jsonl") == []


def _eval_command(out, address):
    return [sys.executable, "-m", "sparseattack", "eval", "--model", "fmnist-cw", "--methods", "ifgsm",
            "--slice", "0:2", "--targets", "all", "--batch-size", "1", "-p", "eps=0.2", "-p", "steps=300",
            "-p", "early_stop=false", "--out", str(out), "--backend", "ray", "--address", address]


def test_a_killed_driver_resumes(fmnist_test, ray_address, tmp_path):
    """`sparseattack eval --backend ray` killed (SIGKILL) once some batches are written, the file's
    last line then torn: the rerun does the rest, and every pair is in the file exactly once."""
    out = tmp_path / "r.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_eval_command(out, ray_address), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if out.exists() and out.read_text().count("\n") >= 1:
                break
            time.sleep(0.02)
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == -9, f"the run ended before it was killed:\n{err[-3000:]}"
    before = read_records(out)
    assert 1 <= len(before) < 18, len(before)  # 2 images x 9 targets
    with open(out, "a") as fh:
        fh.write('{"image": 0, "method": "ifg')  # as if killed in the middle of a write
    rerun = subprocess.run(_eval_command(out, ray_address), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = read_records(out)
    pairs = [(r["image"], r["target"]) for r in after]
    assert len(pairs) == len(set(pairs)) == 18
    assert len({r["config_hash"] for r in after}) == 1
    assert after[:len(before)] == before  # the finished batches were not run again


def test_bad_backend_is_refused(fmnist_model, images, monkeypatch):
    x, y = images
    with pytest.raises(ValidationError, match="backend must be one of local, ray"):
        evaluate(fmnist_model, "ifgsm", x[:1], y[:1], backend="spark", progress=False)
    with pytest.raises(ValidationError, match="ray backend only"):
        evaluate(fmnist_model, "ifgsm", x[:1], y[:1], address="auto", progress=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ValidationError, match=r"pip install sparseattack\[ray\]"):
        evaluate(fmnist_model, "ifgsm", x[:1], y[:1], backend="ray", progress=False)


def test_cli_takes_backend_and_address(capsys):
    for command in ("eval", "reproduce"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "--backend {local,ray}" in text and "--address ADDRESS" in text
    with pytest.raises(SystemExit) as stop:
        main(["eval", "--backend", "spark"])
    assert stop.value.code == 2
    capsys.readouterr()
    assert main(["eval", "--address", "auto"]) == 2  # an address without --backend ray
    assert "ray backend only" in capsys.readouterr().err

"""The evaluation layer: verified success, norms, gradient counts, protocol, resume, tables."""
import copy
import json

import pytest
import torch

import sparseattack
from sparseattack import run_attack
from sparseattack.eval import ConfigMismatch, config_hash
from sparseattack.attacks import ifgsm
from sparseattack.eval import evaluate, make_pairs, perturbation_norms, read_records, summarize, to_csv, to_markdown


def test_targeted_ifgsm_linf_and_l2(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    for norm, eps in (("linf", 0.3), ("l2", 4.0)):
        res = run_attack("ifgsm", fmnist_model, x, y, targets=t, norm=norm, eps=eps, steps=20)
        assert res.success.float().mean() >= 0.5, (norm, res.success)  # 94-98% measured on 64 pairs
        bound = res.norms["linf"] if norm == "linf" else res.norms["l2"]
        assert (bound <= eps + 1e-5).all()
        assert res.adv.min() >= 0 and res.adv.max() <= 1
        # success is the model's own verdict on the final image
        with torch.no_grad():
            assert torch.equal(fmnist_model(res.adv).argmax(1) == t, res.success)
        assert 0 < res.gradients <= 20 * len(x)


def test_success_is_rechecked_not_trusted(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs

    def liar(model, inputs, labels, *, targeted=False):
        return inputs + 5.0  # out of the box and not adversarial once clipped to white

    res = run_attack(liar, fmnist_model, x, y, targets=t)
    assert res.adv.max() <= 1  # clipped before re-checking
    with torch.no_grad():
        assert torch.equal(res.success, fmnist_model(torch.ones_like(x)).argmax(1) == t)


def test_norms_count_entries_and_pixels():
    d = torch.zeros(1, 3, 4, 4)
    d[0, :, 1, 1] = 0.5
    d[0, 0, 2, 2] = -1.0
    n = perturbation_norms(d)
    assert n["l0"].item() == 4 and n["l0_pixels"].item() == 2
    assert n["l1"].item() == pytest.approx(2.5) and n["linf"].item() == 1.0
    assert n["l2"].item() == pytest.approx((3 * 0.25 + 1) ** 0.5)


def test_batch_equals_one_at_a_time(fmnist_model, fmnist_pairs):
    """Exact in float64 (in float32 the batch size changes the last bits of a gradient, which a
    sign or an 8-bit rounding can turn into a whole step on another CPU)."""
    x, y, t = fmnist_pairs
    model64, x = copy.deepcopy(fmnist_model).double(), x.double()
    batch = ifgsm(model64, x, t, targeted=True, eps=0.1, early_stop=False)
    single = torch.cat([ifgsm(model64, x[i:i + 1], t[i:i + 1], targeted=True, eps=0.1, early_stop=False)
                        for i in range(len(x))])
    assert torch.equal(batch, single)


def test_make_pairs_all_and_seeded():
    labels = torch.tensor([0, 3, 7])
    assert len(make_pairs([0, 1, 2], labels, 10)) == 27
    p1 = make_pairs([0, 1, 2], labels, 1000, targets=3, seed=1)
    assert p1 == make_pairs([0, 1, 2], labels, 1000, targets=3, seed=1)
    assert p1 != make_pairs([0, 1, 2], labels, 1000, targets=3, seed=2)
    assert all(t != labels[i] for i, t in p1) and len(p1) == 9


def test_seeded_targets_follow_the_image_id_not_its_position(fmnist_model, fmnist_batch):
    """An image evaluated in a subset draws the targets it draws in the full run."""
    x, y = fmnist_batch
    full = evaluate(fmnist_model, "fgsm", x[:4], y[:4], targets=3, seed=5, progress=False, eps=0.01)
    alone = evaluate(fmnist_model, "fgsm", x[3:4], y[3:4], targets=3, seed=5, image_ids=[3],
                     progress=False, eps=0.01)
    assert len(alone) == 3
    assert [r["target"] for r in alone] == [r["target"] for r in full if r["image"] == 3]


def test_protocol_resumes_after_kill(fmnist_model, fmnist_batch, tmp_path, monkeypatch):
    from sparseattack.eval import backends  # where evaluate's batches call run_attack

    x, y = fmnist_batch
    x, y = x[:3], y[:3]
    out = tmp_path / "r.jsonl"
    full = evaluate(fmnist_model, "ifgsm", x, y, targets=2, seed=0, batch_size=2, out=out, progress=False, eps=0.2)
    assert len(full) == 6 and len(read_records(out)) == 6
    # simulate a kill: drop the last batch and leave a torn line behind
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:4]) + "\n" + lines[4][:17])
    calls = []

    def counted(*args, **kw):
        calls.append(len(args[2]))
        return run_attack(*args, **kw)

    monkeypatch.setattr(backends, "run_attack", counted)
    again = evaluate(fmnist_model, "ifgsm", x, y, targets=2, seed=0, batch_size=2, out=out, progress=False, eps=0.2)
    assert calls == [2]  # only the two unfinished pairs ran again
    assert [(r["image"], r["target"]) for r in again] == [(r["image"], r["target"]) for r in full]
    assert [r["success"] for r in again] == [r["success"] for r in full]
    assert sum(1 for r in read_records(out)) == 6


def test_records_carry_their_configuration(fmnist_model, fmnist_batch, tmp_path):
    x, y = fmnist_batch
    out = tmp_path / "r.jsonl"
    recs = evaluate(fmnist_model, "ifgsm", x[:2], y[:2], targets=1, out=out, progress=False, eps=0.2,
                    dataset="fashion-mnist")
    cfg = recs[0]["config"]
    assert cfg["params"] == {"early_stop": True, "eps": 0.2, "loss": "ce", "norm": "linf", "step_size": None,
                             "steps": 10}  # every parameter, defaults filled in
    assert cfg["model"] == "fmnist-cw" and len(cfg["model_sha256"]) == 16
    assert cfg["dataset"] == "fashion-mnist" and cfg["targets"] == 1 and cfg["seed"] == 0
    assert cfg["quantize"] is True and cfg["version"] == sparseattack.__version__
    assert all(r["config_hash"] == config_hash(cfg) for r in recs)
    assert read_records(out) == recs


def test_resume_refuses_another_configuration(fmnist_model, fmnist_batch, tmp_path):
    """The stale-resume bug: rerunning with other parameters or another model into the same file
    used to report the old records as the new run's."""
    x, y = fmnist_batch
    x, y = x[:2], y[:2]
    out = tmp_path / "r.jsonl"
    evaluate(fmnist_model, "ifgsm", x, y, targets=1, out=out, progress=False, eps=0.01)
    with pytest.raises(ConfigMismatch, match=r"params\.eps: 0\.01 -> 0\.3"):
        evaluate(fmnist_model, "ifgsm", x, y, targets=1, out=out, progress=False, eps=0.3)
    other = copy.deepcopy(fmnist_model)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    with pytest.raises(ConfigMismatch, match="model_sha256"):
        evaluate(other, "ifgsm", x, y, targets=1, out=out, progress=False, eps=0.01)
    with pytest.raises(ConfigMismatch, match="quantize"):
        evaluate(fmnist_model, "fgsm", x, y, targets=1, out=out, progress=False, quantize=False)
    assert len(read_records(out)) == 2  # nothing written by the refused runs
    recs = evaluate(fmnist_model, "ifgsm", x, y, targets=1, out=out, progress=False, eps=0.3, fresh=True)
    assert [r["config"]["params"]["eps"] for r in read_records(out)] == [0.3, 0.3]
    assert len(recs) == 2
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("r.old-")]
    assert len(moved) == 1 and len(read_records(moved[0])) == 2  # the old file is kept, aside


def test_complete_last_record_without_newline_is_kept(fmnist_model, fmnist_batch, tmp_path):
    x, y = fmnist_batch
    out = tmp_path / "r.jsonl"
    evaluate(fmnist_model, "fgsm", x[:2], y[:2], targets=2, out=out, progress=False, eps=0.05)
    out.write_text(out.read_text().rstrip("\n"))  # complete record, final newline lost
    evaluate(fmnist_model, "fgsm", x[:3], y[:3], targets=2, out=out, progress=False, eps=0.05)
    recs = read_records(out)
    assert len(recs) == 6 and len({(r["image"], r["target"]) for r in recs}) == 6


def test_one_writer_per_file_and_duplicates_refused(fmnist_model, fmnist_batch, tmp_path):
    from sparseattack.eval import OutputLock

    x, y = fmnist_batch
    out = tmp_path / "r.jsonl"
    with OutputLock(out):
        with pytest.raises(ValueError, match="being written by another"):
            evaluate(fmnist_model, "fgsm", x[:1], y[:1], targets=1, out=out, progress=False)
    recs = evaluate(fmnist_model, "fgsm", x[:2], y[:2], targets=1, out=out, progress=False)
    with pytest.raises(ValueError, match="duplicated pair"):
        summarize(recs + recs[:1])
    out.write_text(out.read_text() + out.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="duplicated pair"):
        evaluate(fmnist_model, "fgsm", x[:2], y[:2], targets=1, out=out, progress=False)


def test_success_is_judged_on_the_8bit_output(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    res = run_attack("ifgsm", fmnist_model, x, y, targets=t, eps=0.2)
    assert res.quantized and torch.equal((res.adv * 255).round() / 255, res.adv)
    with torch.no_grad():
        assert torch.equal(fmnist_model(res.adv).argmax(1) == t, res.success)
    # unchanged entries are bit-identical to the input; failures are the input itself
    assert torch.equal(res.adv[~res.success], x[~res.success])
    flt = run_attack("ifgsm", fmnist_model, x, y, targets=t, eps=0.2, quantize=False)
    assert not flt.quantized and flt.records()[0]["quantized"] is False
    with pytest.raises(ValueError, match="not 8-bit images"):
        run_attack("ifgsm", fmnist_model, x + 1e-3 * (x < 0.5), y, targets=t)


def test_bad_calls_are_clear_errors(fmnist_model, fmnist_pairs, tmp_path):
    x, y, t = fmnist_pairs
    train_mode = copy.deepcopy(fmnist_model).train()
    with pytest.raises(ValueError, match="training mode"):
        run_attack("fgsm", train_mode, x, y, targets=t)
    with pytest.raises(TypeError, match="float64 but the model's parameters are torch.float32"):
        run_attack("fgsm", fmnist_model, x.double(), y, targets=t)
    with pytest.raises(ValueError, match="inputs are on cpu but the model's parameters are on meta"):
        run_attack("fgsm", copy.deepcopy(fmnist_model).to("meta"), x, y, targets=t)  # a device mismatch
    res = run_attack("fgsm", copy.deepcopy(fmnist_model).double(), x.double(), y, targets=t)  # float64 works
    assert res.adv.dtype == torch.float64
    with pytest.raises(ValueError, match="shape \\(8,\\)"):
        run_attack("fgsm", fmnist_model, x, y[:3], targets=t[:3])
    with pytest.raises(TypeError, match="integer"):
        run_attack("fgsm", fmnist_model, x, y.float())
    with pytest.raises(ValueError, match="10 classes"):
        run_attack("fgsm", fmnist_model, x, y, targets=t + 10)
    with pytest.raises(ValueError, match="takes no parameter 'k'"):
        run_attack("ifgsm", fmnist_model, x, y, targets=t, k=80)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(fmnist_model, "fgsm", x, y, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="is a directory"):
        evaluate(fmnist_model, "fgsm", x, y, out=tmp_path, progress=False)


def test_summary_cases():
    recs = []
    for img, succ, l2s in ((0, [True, True], [1.0, 3.0]), (1, [True, False], [2.0, 9.0])):
        for tgt, (s, v) in enumerate(zip(succ, l2s)):
            recs.append({"method": "m", "image": img, "target": tgt, "success": s, "l0": v, "l0_pixels": v,
                         "l1": v, "l2": v, "linf": v, "gradients": 10.0, "seconds": 0.1})
    rows = {r["case"]: r for r in summarize(recs)}
    assert rows["average"]["asr"] == 0.75 and rows["average"]["l2"] == pytest.approx(2.0)
    assert rows["best"]["asr"] == 1.0 and rows["best"]["l2"] == pytest.approx(1.5)
    assert rows["worst"]["asr"] == 0.5 and rows["worst"]["l2"] == pytest.approx(3.0)
    md = to_markdown(list(rows.values()))
    assert "| m | best | 100% |" in md
    assert to_csv(list(rows.values())).splitlines()[0].startswith("method,case")
    json.dumps(rows)


def test_counting_wrapper_keeps_the_model_in_eval_mode(fmnist_model):
    from sparseattack.eval import CountingModel

    wrapper = CountingModel(fmnist_model)
    assert not wrapper.training
    wrapper.train(wrapper.training)  # what peer libraries do to "restore" the mode
    assert not fmnist_model.training
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    wrapper(x).sum().backward()
    assert (wrapper.forwards, wrapper.gradients) == (3, 3)


def test_registry_resolves_forwarded_parameters():
    """SAPF-GS / -VI forward SAPF's own keywords and schedule fields; each resolves with its value."""
    from sparseattack.attacks import get

    r = get("sapf-gs").resolve({"k": 80, "granularity": "pixel", "groups": "grid", "stage_steps": 7})
    assert (r["granularity"], r["groups"], r["stage_steps"], r["lambda2"]) == ("pixel", "grid", 7, 0.1)
    assert get("sapf").resolve({"k": 5, "preset": "paper"})["delta_steps"] == 2000
    assert get("sapf").resolve({"k": 5, "preset": "fast", "delta_steps": 7})["delta_steps"] == 7
    with pytest.raises(ValueError, match="must be int"):
        get("sapf-vi").resolve({"k": 5, "delta_steps": 2.5})
    with pytest.raises(ValueError, match="must be int"):
        get("sapf").resolve({"k": 5, "stage_steps": 2.5})
    # a field of the ADMM schedule under the (default) continuation preset is refused up front
    with pytest.raises(ValueError, match="delta_steps only apply to support='admm'"):
        get("sapf").resolve({"k": 5, "delta_steps": 7})


def test_registry_translates_old_names_with_a_warning():
    from sparseattack.attacks import get

    spec = get("cw-l2")
    with pytest.warns(DeprecationWarning) as caught:
        resolved = spec.resolve({"max_iterations": 7, "learning_rate": 0.05})
    assert sorted(str(w.message).split("'")[1] for w in caught) == ["learning_rate", "max_iterations"]
    assert resolved["steps"] == 7 and resolved["step_size"] == 0.05
    assert "max_iterations" not in resolved and not spec.accepts("max_iterations")
    assert spec.accepts("max_iterations", old_names=True)
    with pytest.raises(TypeError, match="both"):
        spec.resolve({"max_iterations": 7, "steps": 8})
    one_pixel = get("one-pixel")
    with pytest.warns(DeprecationWarning):
        assert one_pixel.resolve({"pixels": 3})["k"] == 3


def test_run_attack_takes_old_names_with_one_warning(fmnist_model, fmnist_pairs):
    import warnings

    x, y, t = fmnist_pairs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run_attack("one-pixel", fmnist_model, x[:2], y[:2], targets=t[:2], pixels=1, popsize=10, max_iter=1)
    deprecations = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 2 and all("one-pixel" in m for m in deprecations), deprecations
    assert res.params["k"] == 1 and res.params["steps"] == 1 and "pixels" not in res.params

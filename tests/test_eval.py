"""The evaluation layer: verified success, norms, gradient counts, protocol, resume, tables."""
import json

import pytest
import torch

from sparseattack import run_attack
from sparseattack.attacks import ifgsm
from sparseattack.eval import evaluate, make_pairs, perturbation_norms, read_records, summarize, to_csv, to_markdown


def test_targeted_ifgsm_linf_and_l2(fmnist_model, fmnist_pairs):
    x, y, t = fmnist_pairs
    for norm, eps in (("linf", 0.3), ("l2", 4.0)):
        res = run_attack("ifgsm", fmnist_model, x, y, targets=t, norm=norm, eps=eps, steps=20)
        assert res.success.float().mean() >= 0.75, (norm, res.success)
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
    x, y, t = fmnist_pairs
    batch = ifgsm(fmnist_model, x, t, targeted=True, eps=0.1, early_stop=False)
    single = torch.cat([ifgsm(fmnist_model, x[i:i + 1], t[i:i + 1], targeted=True, eps=0.1, early_stop=False)
                        for i in range(len(x))])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=0)


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


def test_protocol_resumes_after_kill(fmnist_model, fmnist_batch, tmp_path):
    x, y = fmnist_batch
    x, y = x[:3], y[:3]
    out = tmp_path / "r.jsonl"
    full = evaluate(fmnist_model, "ifgsm", x, y, targets=2, seed=0, batch_size=2, out=out, progress=False, eps=0.2)
    assert len(full) == 6 and len(read_records(out)) == 6
    # simulate a kill: drop the last batch and leave a torn line behind
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:4]) + "\n" + lines[4][:17])
    calls = []

    def counted(model, inputs, labels, **kw):
        calls.append(len(inputs))
        return ifgsm(model, inputs, labels, **kw)

    again = evaluate(fmnist_model, counted, x, y, targets=2, seed=0, batch_size=2, out=out, progress=False,
                     name="ifgsm", eps=0.2)
    assert calls == [2]  # only the two unfinished pairs ran again
    assert [(r["image"], r["target"]) for r in again] == [(r["image"], r["target"]) for r in full]
    assert sum(1 for r in read_records(out)) == 6


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

"""The command-line interface end to end on the shipped Fashion-MNIST net."""
import json

import pytest

from sparseattack.cli import main


def test_attack_writes_pngs_and_report(tmp_path, fmnist_test, capsys):
    code = main(["attack", "--model", "fmnist-cw", "--dataset", "fashion-mnist", "--index", "0",
                 "--method", "ifgsm", "--target", "Sneaker", "-p", "eps=0.3", "-p", "steps=20",
                 "--out", str(tmp_path), "--name", "x"])
    report = json.loads((tmp_path / "x_report.json").read_text())
    pair = report["pairs"][0]
    assert code == (0 if pair["success"] else 1)
    assert pair["target_name"] == "Sneaker" and pair["label_name"] == "Ankle boot"
    assert (tmp_path / "x_adv.png").stat().st_size > 0 and (tmp_path / "x_perturbation.png").stat().st_size > 0
    assert pair["linf"] <= 0.3 + 1e-6


def test_eval_writes_jsonl_and_tables(tmp_path, fmnist_test, capsys):
    out = tmp_path / "res.jsonl"
    assert main(["eval", "--model", "fmnist-cw", "--slice", "0:2", "--methods", "ifgsm", "--targets", "2",
                 "-p", "eps=0.2", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 4
    assert "| ifgsm | average |" in out.with_suffix(".md").read_text()


def test_errors_exit_2_with_message(capsys):
    assert main(["attack", "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["attack", "--image", "/does/not/exist.png"]) == 2
    assert "not found" in capsys.readouterr().err


def test_listing(capsys):
    assert main(["models"]) == 0 and "efficientnet-lite0" in capsys.readouterr().out
    assert main(["attacks"]) == 0 and "ifgsm" in capsys.readouterr().out


def test_eval_refuses_a_file_of_another_configuration(tmp_path, fmnist_test, capsys):
    out = tmp_path / "res.jsonl"
    base = ["eval", "--slice", "0:2", "--methods", "fgsm", "--targets", "1", "--out", str(out)]
    assert main(base + ["-p", "eps=0.01"]) == 0
    assert main(base + ["-p", "eps=0.3"]) == 2
    assert "params.eps: 0.01 -> 0.3" in capsys.readouterr().err
    assert main(base + ["-p", "eps=0.3", "--fresh"]) == 0
    assert [json.loads(line)["config"]["params"]["eps"] for line in out.read_text().splitlines()] == [0.3, 0.3]
    assert len(list(tmp_path.glob("res.old-*.jsonl"))) == 1


def test_default_eval_output_is_keyed_by_configuration(tmp_path, fmnist_test, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["eval", "--slice", "0:1", "--methods", "fgsm", "--targets", "1"]
    assert main(base + ["-p", "eps=0.01"]) == 0
    assert main(base + ["-p", "eps=0.3"]) == 0
    assert main(base + ["-p", "eps=0.3"]) == 0  # resumes its own file
    files = sorted((tmp_path / "outputs" / "eval").glob("fmnist-cw-*.jsonl"))
    assert len(files) == 2 and all(len(f.read_text().splitlines()) == 1 for f in files)


def test_eval_checks_everything_before_any_attack(tmp_path, fmnist_test, capsys):
    from sparseattack.cli import _method_params

    per = _method_params(["sapf", "ifgsm"], ["k=80", "eps=0.1", "ifgsm.steps=3", "linf_cap=0.5"])
    assert per == {"sapf": {"k": 80, "linf_cap": 0.5}, "ifgsm": {"eps": 0.1, "steps": 3}}
    # a 0.1 name reaches the methods that took it only where no method takes it under its current name
    with pytest.warns(DeprecationWarning, match="'max_iterations' is now 'steps'"):
        per = _method_params(["cw-l2", "fgsm"], ["max_iterations=5"])
    assert per == {"cw-l2": {"max_iterations": 5}, "fgsm": {}}
    out = tmp_path / "res.jsonl"
    cases = [(["--methods", "fgsm,ifgsm", "-p", "k=80"], "taken by none"),
             (["--methods", "fgsm,nope"], "unknown attack method 'nope'"),
             (["--methods", "fgsm", "--criterion", "l7"], "--criterion"),
             (["--methods", "fgsm", "-p", "sapf.k=3"], "does not use"),
             (["--methods", "ifgsm", "-p", "norm=l3"], "norm"),
             (["--methods", "fgsm", "--slice", "a:b"], "must look like"),
             (["--methods", "fgsm", "--out", str(tmp_path)], "is a directory")]
    for extra, message in cases:
        argv = ["eval", "--slice", "0:2", "--targets", "1"] + ([] if "--out" in extra else ["--out", str(out)]) + extra
        assert main(argv) == 2, extra
        assert message in capsys.readouterr().err, extra
        assert not out.exists() or out.read_text() == ""  # no attack ran


def test_eval_never_drops_an_image_silently(tmp_path, fmnist_test, capsys):
    from sparseattack.plots import save_image

    x, _ = fmnist_test
    folder = tmp_path / "imgs"
    for i in range(2):
        save_image(x[i], folder / f"{i}.png")
    (folder / "labels.csv").write_text("file,class_index\n0.png,9\n1.png,12\n")
    assert main(["eval", "--dataset", str(folder), "--slice", "0:2", "--methods", "fgsm", "--targets", "1",
                 "--out", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "labels.csv" in err and "line 3" in err
    (folder / "labels.csv").write_text("file,class_index\n0.png,9\n1.png,2\n")
    assert main(["eval", "--dataset", str(folder), "--slice", "0:2", "--methods", "fgsm", "--targets", "1",
                 "--out", str(tmp_path / "r.jsonl")]) == 0
    assert "2 of 2 images are classified correctly" in capsys.readouterr().out


def test_attack_own_grayscale_png_and_corrupt_files(tmp_path, fmnist_test, capsys):
    from sparseattack.plots import save_image

    x, _ = fmnist_test
    png = save_image(x[0], tmp_path / "shoe.png")
    assert main(["attack", "--image", str(png), "--method", "fgsm", "-p", "eps=0.3", "--out",
                 str(tmp_path / "o")]) in (0, 1)
    bad = tmp_path / "bad.png"
    bad.write_bytes(png.read_bytes()[:60])
    assert main(["attack", "--image", str(bad), "--method", "fgsm", "--out", str(tmp_path / "o")]) == 2
    assert "not an image or corrupt" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["attack", "--method", "fgsm", "--out", str(tmp_path / "afile")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_attack_reports_success_only_for_an_adversarial_saved_file(tmp_path, fmnist_test, capsys):
    from sparseattack.data import load_image
    from sparseattack import models

    code = main(["attack", "--index", "0:4", "--method", "sapf", "--target", "Sneaker", "-p", "k=80",
                 "-p", "stages=6", "--out", str(tmp_path), "--name", "s"])
    report = json.loads((tmp_path / "s_report.json").read_text())
    model = models.load("fmnist-cw")
    printed = capsys.readouterr().out
    for i, pair in enumerate(report["pairs"]):
        assert pair["png_equals_tensor"]  # 8-bit output: the PNG is exactly the tensor
        pred = model(load_image(pair["adversarial_png"], channels=1)).argmax(1).item()
        assert pair["png_success"] == (pred == 7)
    assert printed.count(": success") == sum(p["png_success"] for p in report["pairs"])
    assert code == (0 if all(p["png_success"] for p in report["pairs"]) else 1)


def test_traps(tmp_path, capsys, monkeypatch):
    import pytest

    import sparseattack.eval as ev
    from sparseattack.cli import DEMO_PARAMS

    seen = {}

    class Stop(Exception):
        pass

    def fake_run_attack(method, model, x, y, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(ev, "run_attack", fake_run_attack)
    with pytest.raises(Stop):  # demo -p adds to the demo's short schedule instead of dropping it
        main(["demo", "-p", "k=3000", "--out", str(tmp_path / "d")])
    assert seen["k"] == 3000 and seen["stage_steps"] == DEMO_PARAMS["sapf"]["stage_steps"]
    assert "Parameters: k=3000" in capsys.readouterr().out
    for argv in (["eval", "--batch-size", "0"], ["train", "fmnist", "--epochs", "0"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        assert "must be a positive integer" in capsys.readouterr().err
    assert main(["models", "--device", "cpu"]) == 0  # --device after the subcommand
    listing = capsys.readouterr().out
    from sparseattack import models
    for name in models.available():
        assert (("[not installed" in next(line for line in listing.splitlines() if line.startswith(name)))
                == (not models.installed(name)))
    assert main(["attack", "--device", "tpu"]) == 2
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "(default: 0:20)" in capsys.readouterr().out
    assert main(["attacks", "sapf"]) == 0
    assert "stage_steps" in capsys.readouterr().out


def test_user_errors_exit_2_and_bugs_surface(monkeypatch, capsys):
    import sparseattack.cli as cli
    from sparseattack.validation import ValidationError

    assert main(["attacks", "no-such-method"]) == 2
    assert "unknown attack method" in capsys.readouterr().err

    def buggy(args):
        raise ValueError("an internal inconsistency")   # a bug, not the user's input

    monkeypatch.setattr(cli, "cmd_models", buggy)
    with pytest.raises(ValueError, match="internal inconsistency"):
        main(["models"])

    def refused(args):
        raise ValidationError("bad input named here")

    monkeypatch.setattr(cli, "cmd_models", refused)
    assert main(["models"]) == 2
    assert "bad input named here" in capsys.readouterr().err


def test_cli_reexecutes_under_tcmalloc_when_installed_and_respects_the_opt_out(monkeypatch):
    """The command line re-runs itself under Debian's tcmalloc when it is installed (measured 1.9x
    faster on Lite0 on CPU, cli.use_fast_allocator); SPARSEATTACK_ALLOCATOR=system or a set
    LD_PRELOAD keep the process as it is; the preloaded library really loads into Python."""
    import os
    import subprocess
    import sys

    from sparseattack import cli

    calls = []
    monkeypatch.setattr(os, "execve", lambda exe, argv, env: calls.append((exe, argv, env)))
    monkeypatch.setattr(cli, "_tcmalloc_path", lambda: "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
    monkeypatch.setattr(sys, "argv", ["sparseattack", "eval", "--methods", "sapf"])
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("SPARSEATTACK_ALLOCATOR", raising=False)
    cli.use_fast_allocator()
    assert len(calls) == 1
    exe, argv, env = calls[0]
    assert argv == [sys.executable, "-m", "sparseattack", "eval", "--methods", "sapf"]
    assert env["LD_PRELOAD"].endswith("libtcmalloc_minimal.so.4") and env["SPARSEATTACK_ALLOCATOR"] != "tcmalloc"
    for name, value in (("SPARSEATTACK_ALLOCATOR", "system"), ("LD_PRELOAD", "/some/lib.so")):
        monkeypatch.setenv(name, value)
        cli.use_fast_allocator()
        monkeypatch.delenv(name)
    assert len(calls) == 1, "an opt-out or a chosen LD_PRELOAD must not re-execute"
    monkeypatch.setattr(cli, "_tcmalloc_path", lambda: None)
    cli.use_fast_allocator()
    assert len(calls) == 1, "no tcmalloc installed: nothing to do"
    monkeypatch.undo()
    lib = cli._tcmalloc_path()
    if lib:  # installed here (make setup): a Python under it runs and has it mapped
        out = subprocess.run([sys.executable, "-c", "print('tcmalloc' in open('/proc/self/maps').read())"],
                             capture_output=True, text=True, env={**os.environ, "LD_PRELOAD": lib}, timeout=60)
        assert out.stdout.strip() == "True", out.stderr

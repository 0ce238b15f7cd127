"""The command line end to end on a tiny synthetic benchmark (no files outside the repo)."""

import json

import pytest

from avgzsl.cli import main


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    assert main(["synth", "--out", str(out), "--scale", "0.05", "--quiet"]) == 0
    (root,) = [p for p in out.iterdir() if p.is_dir()]
    return root


def test_run_evaluate_and_table(tmp_path, tiny_root, capsys):
    run_dir = tmp_path / "run"
    code = main(["run", "--method", "avca", "--dataset", "UCF", "--root", str(tiny_root), "--out", str(run_dir),
                 "--quiet", "data.dataset=" + tiny_root.name, "train.epochs=2", "train.n_batches=3",
                 "train.batch_size=32"])
    assert code == 0
    res = json.loads((run_dir / "results.json").read_text())
    assert res["method"] == "avca" and res["dataset"] == tiny_root.name
    printed = capsys.readouterr().out
    assert f"{res['test']['HM']:.2f}" in printed  # the table shows the test numbers

    assert main(["evaluate", str(run_dir), "--json"]) == 0
    out = capsys.readouterr().out
    rescored = json.loads(out[out.index("{"):])
    assert rescored["test"]["HM"] == pytest.approx(res["test"]["HM"])
    assert rescored["test"]["ZSL"] == pytest.approx(res["test"]["ZSL"])

    assert main(["table", str(run_dir)]) == 0
    assert "| avca | 1 |" in capsys.readouterr().out
    assert main(["table", "--per-seed", str(run_dir)]) == 0
    per_seed = capsys.readouterr().out.strip().splitlines()[-1]
    assert per_seed.startswith(f"| avca | 0 | {res['best_epoch']} |") and f"{res['test']['ZSL']:.2f} |" in per_seed


def test_bad_override_is_a_clear_error(tiny_root, capsys):
    code = main(["run", "--root", str(tiny_root), "--quiet", "train.epochs=lots"])
    assert code == 2
    assert "train.epochs" in capsys.readouterr().err


def test_missing_root_is_a_clear_error(tmp_path, capsys):
    code = main(["run", "--root", str(tmp_path / "nowhere"), "--quiet", "train.epochs=1"])
    assert code == 2
    assert "nowhere" in capsys.readouterr().err


def test_demo_runs_the_whole_protocol(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path), "--scale", "0.05", "--epochs", "1", "--batches", "2", "--quiet"])
    assert code == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["best_epoch"] == 1
    assert "test" in capsys.readouterr().out


def test_ls_lists_methods(capsys):
    assert main(["ls"]) == 0
    assert "avca" in capsys.readouterr().out.split()


TINY = ["train.epochs=1", "train.n_batches=2", "train.batch_size=16"]


def test_ablate_writes_a_table_with_one_row_per_variant(tmp_path, tiny_root):
    out = tmp_path / "abl"
    code = main(["ablate", "--dataset", "UCF", "--root", str(tiny_root), "--seeds", "0", "1", "--variants", "base",
                 "daan", "--baseline", "avca", "--out", str(out), "--quiet", "data.dataset=" + tiny_root.name, *TINY])
    assert code == 0
    table = (out / "ablation.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert [r.split("|")[1].strip() for r in rows] == ["avca", "base", "daan"]
    assert all(r.split("|")[2].strip() == "2" for r in rows)  # two seeds each
    assert len(list(out.rglob("results.json"))) == 6


def test_sweep_writes_csv_and_figure(tmp_path, tiny_root):
    import csv

    out = tmp_path / "sweep"
    code = main(["sweep", "--method", "daan", "--key", "method.tcn_layers", "--values", "1", "3", "--seeds", "0",
                 "--dataset", "UCF", "--root", str(tiny_root), "--out", str(out), "--quiet",
                 "data.dataset=" + tiny_root.name, *TINY])
    assert code == 0
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [float(r["value"]) for r in rows] == [1.0, 3.0]
    assert (out / "sweep.png").stat().st_size > 1000
    saved = (out / "method.tcn_layers=3" / "seed0" / "config.yaml").read_text()
    assert "tcn_layers: 3" in saved


def test_ablate_refuses_an_unknown_variant_before_training(tmp_path, tiny_root, capsys):
    code = main(["ablate", "--root", str(tiny_root), "--variants", "base", "nosuch", "--out", str(tmp_path),
                 "--quiet", "data.dataset=" + tiny_root.name, *TINY])
    assert code == 2
    assert "nosuch" in capsys.readouterr().err
    assert not list(tmp_path.rglob("results.json"))  # not even the baseline ran


def test_sweep_resume_reuses_finished_runs_and_refuses_another_config(tmp_path, tiny_root, capsys, monkeypatch):
    import avgzsl.protocol

    out = tmp_path / "sweep"
    args = ["sweep", "--method", "daan", "--key", "method.gamma", "--seeds", "0", "--dataset", "UCF", "--root",
            str(tiny_root), "--out", str(out), "--quiet", "--resume", "data.dataset=" + tiny_root.name, *TINY]
    assert main([*args[:5], "--values", "0.3", *args[5:]]) == 0  # one process runs 0.3 ...
    first = json.loads((out / "method.gamma=0.3" / "seed0" / "results.json").read_text())
    calls = []
    real = avgzsl.protocol.run_protocol
    monkeypatch.setattr(avgzsl.protocol, "run_protocol", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    assert main([*args[:5], "--values", "0.3", "0.6", *args[5:]]) == 0  # ... the full sweep only adds 0.6
    assert [p.parent.name for p in calls] == ["method.gamma=0.6"]
    import csv

    rows = {float(r["value"]): r for r in csv.DictReader(open(out / "sweep.csv"))}
    assert sorted(rows) == [0.3, 0.6]
    assert float(rows[0.3]["HM_mean"]) == pytest.approx(first["test"]["HM"], abs=1e-4)  # the reused run's numbers
    capsys.readouterr()
    # a finished run made with other settings is not mixed in
    code = main([*args[:5], "--values", "0.3", *args[5:], "method.beta=0.5"])
    assert code == 2
    assert "method.beta" in capsys.readouterr().err

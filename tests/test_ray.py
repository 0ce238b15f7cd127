"""Runs as tasks of a Ray cluster (`--ray`): a local Ray instance that this module starts and stops itself
(loopback, 2 CPUs). Results equal a sequential run's; a run that raises is reported and the others finish;
rerunning with --resume redoes only what is missing; a worker killed mid-run continues from its last epoch.
Skips, saying why, where ray is not installed (pip install 'avgzsl[ray]').
"""

import json
import logging
import re
import sys

import pytest

import avgzsl
from avgzsl.cli import main
from avgzsl.data.synth import generate_benchmark

ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'avgzsl[ray]'")

SCHEDULE = {"epochs": 2, "n_batches": 3, "batch_size": 16, "progress": False, "num_threads": 1}
TIMING = {"train_seconds", "eval_seconds"}


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module (its start takes seconds), stopped at the end."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate_benchmark(tmp_path_factory.mktemp("synth"), scale=0.05, temporal=False, progress=False)


def _overrides(root):
    return {"data": {"dataset": root.name}, "train": dict(SCHEDULE)}


def _comparable(run_dir):
    """results.json and metrics.jsonl without timings and the folder's own name."""
    res = json.loads((run_dir / "results.json").read_text())
    for key in ("seconds", "run_dir"):
        res.pop(key, None)
    res["data"].pop("load_seconds", None)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return res, [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.fixture(scope="module")
def sequential(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("sequential")
    avgzsl.sweep("avca", "method.lr", [0.001, 0.002], "UCF", root, seeds=[0, 1], out=out, overrides=_overrides(root))
    return out


def _run_dirs(out):
    return sorted(p.parent.relative_to(out) for p in out.rglob("results.json"))


def test_a_sweep_on_ray_writes_the_runs_of_a_sequential_sweep(cluster, root, sequential, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="avgzsl")
    rows = avgzsl.sweep("avca", "method.lr", [0.001, 0.002], "UCF", root, seeds=[0, 1], out=tmp_path,
                        overrides=_overrides(root), ray=True)
    assert [r["n"] for r in rows] == [2, 2]
    assert _run_dirs(tmp_path) == _run_dirs(sequential) and len(_run_dirs(tmp_path)) == 4
    for rel in _run_dirs(sequential):
        assert _comparable(tmp_path / rel) == _comparable(sequential / rel), rel
    # two workers ran the four runs, each loading the benchmark once (not once per run)
    (line,) = [r.getMessage() for r in caplog.records if "benchmark load" in r.getMessage()]
    assert re.fullmatch(r"Ray: 2 worker\(s\) ran 4 run\(s\) with 2 benchmark load\(s\) in all", line), line


def test_a_failed_run_is_reported_the_others_finish_and_resume_redoes_only_it(cluster, root, tmp_path, capsys):
    out = tmp_path / "cmp"
    blocker = out / "avca" / "seed1"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")  # the worker cannot create the run's folder: the run raises there
    report = avgzsl.compare(["linear", "avca"], "UCF", root, seeds=[0, 1], out=out, overrides=_overrides(root),
                            ray="local")
    assert [(r["name"], r["n"]) for r in report["rows"]] == [("linear", 2), ("avca", 1)]
    (failed,) = report["failed"]
    assert failed["method"] == "avca" and failed["run"] == str(blocker)
    assert failed["reason"].startswith("FileExistsError")
    assert f"failed {blocker}: FileExistsError" in capsys.readouterr().err
    done = {p: p.stat().st_mtime_ns for p in out.rglob("results.json")}
    assert len(done) == 3

    blocker.unlink()
    args = ["compare", "--methods", "linear", "avca", "--dataset", "UCF", "--root", str(root), "--seeds", "0", "1",
            "--out", str(out), "--quiet", "--resume", f"data.dataset={root.name}",
            *[f"train.{k}={v}" for k, v in SCHEDULE.items() if k != "progress"], "--ray"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("finished ") == 1 and f"finished {blocker}" in err  # only the missing run ran
    assert {p: p.stat().st_mtime_ns for p in done} == done  # the finished runs were reused, not redone
    report = json.loads((out / "compare.json").read_text())
    assert [(r["name"], r["n"]) for r in report["rows"]] == [("linear", 2), ("avca", 2)] and not report["failed"]


def test_a_worker_killed_mid_run_continues_from_its_last_epoch(cluster, root, sequential, tmp_path, monkeypatch):
    monkeypatch.setenv("AVGZSL_KILL_AT", "1:1")  # reaches the workers; the worker SIGKILLs itself after epoch 1
    out = tmp_path / "run"
    ov = _overrides(root)
    ov["method"] = {"lr": 0.001}
    (res,) = avgzsl.run("avca", "UCF", root, seeds=[0], out=out, overrides=ov, ray=True)
    log = (out / "log.txt").read_text()
    assert "resuming" in log and "after stage 1 epoch 1" in log
    got, want = _comparable(out), _comparable(sequential / "method.lr=0.001" / "seed0")
    got[0].pop("label"), want[0].pop("label")
    assert got == want


def test_option_errors_are_one_line_before_anything_runs(root, tmp_path, capsys, monkeypatch):
    base = ["sweep", "--method", "avca", "--key", "method.lr", "--values", "0.001", "--dataset", "UCF", "--root",
            str(root), "--out", str(tmp_path / "x"), f"data.dataset={root.name}", "--seeds", "0"]
    cases = [
        (["--jobs", "2", "--ray"], "--jobs and --ray exclude each other"),
        (["--cpus-per-run", "2"], "use them with --ray"),
        (["--ray", "--cpus-per-run", "0"], "--cpus-per-run must be more than 0"),
        (["--ray", "train.epochs=1"], "--ray took 'train.epochs=1' as the cluster's address"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    assert main(base + ["--ray"]) == 2
    assert "error: --ray needs the optional dependency ray: pip install 'avgzsl[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing was written

"""Never lose a run: a killed run resumes mid-stage with identical results; finished work is never overwritten.

The kills are real: `avgzsl run` runs as a subprocess and SIGKILLs itself at an exact point
(AVGZSL_KILL_AT, a hook in the protocol), mid-stage 1 and mid-stage 2, before or after the epoch's training
state reached the disk. The resumed run must give results.json and metrics.jsonl identical to an
uninterrupted run, apart from timings.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from avgzsl.cli import main
from avgzsl.data.synth import generate_benchmark

SCHEDULE = ["train.epochs=4", "train.n_batches=6", "train.batch_size=32", "train.num_threads=1",
            "train.lr_patience=0"]
TIMING = {"train_seconds", "eval_seconds"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate_benchmark(tmp_path_factory.mktemp("synth"), scale=0.05, temporal=False, progress=False)


def _args(root, out, method="daan", extra=()):
    return ["run", "--method", method, "--dataset", "UCF", "--root", str(root), "--out", str(out), "--quiet",
            f"data.dataset={root.name}", *SCHEDULE, *extra]


def _subprocess(args, kill_at=None):
    env = dict(os.environ, AVGZSL_KILL_AT=kill_at or "")
    return subprocess.run([sys.executable, "-m", "avgzsl.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def _comparable(run_dir):
    res = json.loads((run_dir / "results.json").read_text())
    res.pop("seconds")
    res["data"].pop("load_seconds")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return res, [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.fixture(scope="module")
def uninterrupted(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    proc = _subprocess(_args(root, out))
    assert proc.returncode == 0, proc.stderr
    res, rows = _comparable(out)
    assert res["best_epoch"] >= 2, "the setting must give stage 2 at least two epochs to kill one mid-stage"
    assert not (out / "checkpoints" / "state.pt").exists()  # a finished run keeps only what the protocol uses
    return res, rows


@pytest.mark.parametrize("kill_at", ["1:2", "1:3:before-state", "2:1"])
def test_a_killed_run_resumes_with_identical_results(root, tmp_path, uninterrupted, kill_at):
    out = tmp_path / "run"
    killed = _subprocess(_args(root, out), kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "results.json").exists()
    log_before = (out / "log.txt").read_text()
    if kill_at == "1:2":  # without --resume the unfinished run is not started again over itself
        refused = _subprocess(_args(root, out))
        assert refused.returncode == 2 and "holds an unfinished run" in refused.stderr and "--resume" in refused.stderr
    resumed = _subprocess([*_args(root, out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert _comparable(out) == uninterrupted
    log_after = (out / "log.txt").read_text()
    assert log_after.startswith(log_before) and "resuming" in log_after  # appended, not wiped


def test_a_finished_run_is_never_overwritten_silently(root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(root, out, "linear")) == 0
    first = (out / "results.json").read_text()
    capsys.readouterr()
    assert main(_args(root, out, "linear", ["method.standardise=false"])) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "holds a finished run (linear, seed 0" in err and "--overwrite" in err
    assert (out / "results.json").read_text() == first
    # --resume with another config names the keys; --resume with the same one reuses the run
    assert main([*_args(root, out, "linear", ["method.standardise=false"]), "--resume"]) == 2
    assert "method.standardise" in capsys.readouterr().err
    assert main([*_args(root, out, "linear"), "--resume"]) == 0
    assert (out / "results.json").read_text() == first
    # --overwrite starts it again
    assert main([*_args(root, out, "linear", ["method.standardise=false"]), "--overwrite"]) == 0
    saved = (out / "config.yaml").read_text()
    assert "standardise: false" in saved


def test_every_folder_is_checked_before_anything_trains(root, tmp_path, capsys):
    out = tmp_path / "seeds"
    assert main(_args(root, out / "seed1", "linear")) == 0  # seed 1 exists already
    capsys.readouterr()
    assert main([*_args(root, out, "linear"), "--seeds", "0", "1"]) == 2
    assert "seed1 holds a finished run" in capsys.readouterr().err
    assert not (out / "seed0").exists()  # seed 0 was not trained before the refusal

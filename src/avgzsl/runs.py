"""A run directory: config, per-epoch metrics, checkpoints, log and results, all written atomically.

    <run_dir>/config.yaml        the resolved config (what `avgzsl run` was told, after YAML + overrides)
    <run_dir>/metrics.jsonl      one JSON object per epoch and stage
    <run_dir>/log.txt            the run's log
    <run_dir>/checkpoints/       stage1_best.pt, stage2_test.pt (and stage{1,2}_epoch{N}.pt with "all")
    <run_dir>/checkpoints/state.pt   the training state after the last finished epoch, while the run is
                                 unfinished (what `--resume` continues from); removed when the run finishes
    <run_dir>/results.json       final scores; written last, so its presence means the run finished

A folder that holds a run is never written over silently: continuing it needs resume, starting it again
needs overwrite (the policy: `avgzsl.experiments.plan_run`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

LOG = logging.getLogger("avgzsl")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: a killed writer leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDir:
    """Owns the files of one run."""

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.path / "checkpoints"
        self.metrics_file = self.path / "metrics.jsonl"
        self.results_file = self.path / "results.json"
        self.config_file = self.path / "config.yaml"
        self.log_file = self.path / "log.txt"
        self._handler: logging.Handler | None = None

    # --- what the folder holds -----------------------------------------------------------------------
    def holds_run(self) -> bool:
        return any(p.exists() for p in (self.config_file, self.metrics_file, self.results_file, self.checkpoints))

    @property
    def state_file(self) -> Path:
        return self.checkpoints / "state.pt"

    def describe(self) -> str:
        """What the folder holds, in words (for error messages)."""
        if self.results_file.exists():
            try:
                res = self.read_results()
                return (f"a finished run ({res.get('method')}, seed {res.get('seed')}, "
                        f"test HM {float(res['test']['HM']):.2f})")
            except (OSError, ValueError, KeyError, TypeError):
                return "a finished run"
        rows = self.read_metrics()
        if rows:
            return f"an unfinished run (last finished epoch: stage {rows[-1].get('stage')} epoch {rows[-1].get('epoch')})"
        return "an unfinished run (no epoch finished)"

    # --- life cycle ---------------------------------------------------------------------------------
    def start(self, fresh: bool = True) -> None:
        """Open the run's log. fresh: remove every file of an earlier run here first (the caller checked that
        this is allowed: an empty folder, or overwrite); else continue it, appending to its log."""
        if fresh:
            for stale in (self.metrics_file, self.results_file, self.log_file, self.config_file):
                stale.unlink(missing_ok=True)
            if self.checkpoints.is_dir():
                for f in self.checkpoints.iterdir():
                    if f.is_file() and (f.suffix == ".pt" or f.name.endswith(".tmp")):
                        f.unlink()
        self._handler = logging.FileHandler(self.log_file, mode="w" if fresh else "a")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger("avgzsl").addHandler(self._handler)
        logging.getLogger("avgzsl").setLevel(logging.INFO)

    def close(self) -> None:
        if self._handler is not None:
            logging.getLogger("avgzsl").removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def log_metrics(self, row: dict) -> None:
        # Appending one line is atomic enough: a killed run loses at most the line being written,
        # and readers skip a torn last line.
        with open(self.metrics_file, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    def read_metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_file)

    def truncate_metrics(self, stage: int, epoch: int) -> None:
        """Keep the rows up to (stage, epoch): a run killed after logging an epoch but before saving its
        training state logged a row that the resumed run will log again."""
        rows = [r for r in self.read_metrics() if (r.get("stage", 0), r.get("epoch", 0)) <= (stage, epoch)]
        atomic_write_text(self.metrics_file, "".join(json.dumps(r) + "\n" for r in rows))

    def save_state(self, state: dict) -> None:
        atomic_torch_save(self.state_file, state)

    def load_state(self) -> dict | None:
        return load_checkpoint(self.state_file) if self.state_file.exists() else None

    def clear_state(self) -> None:
        self.state_file.unlink(missing_ok=True)

    def save_checkpoint(self, name: str, state: dict) -> Path:
        path = self.checkpoints / f"{name}.pt"
        atomic_torch_save(path, state)
        return path

    def write_results(self, results: dict) -> None:
        atomic_write_json(self.results_file, results)

    def read_results(self) -> dict:
        with open(self.results_file) as fh:
            return json.load(fh)


def load_checkpoint(path: Path, device: str = "cpu") -> dict:
    """torch.load with weights only (no code runs from the file); a damaged or tampered file is a
    ValueError naming it, not a traceback from torch's unpickler."""
    import pickle

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"{path} is damaged or not a checkpoint of avgzsl ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120]}); rerun the run with --overwrite") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a checkpoint of avgzsl (holds a {type(state).__name__})")
    return state


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    if not Path(path).exists():
        return rows
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line of a killed run
    return rows

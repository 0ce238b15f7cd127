"""The two-stage AV-GZSL protocol (protocol.md section 5), written once for every method.

    stage 1   train on stage-1 train, score stage-1 val after every epoch (beta searched);
              keep the best epoch by val HM and its beta; ReduceLROnPlateau(max) on val HM
    stage 2   re-train from scratch, same hyper-parameters and seed, on stage-2 train
              (= stage-1 train + val), for exactly best_epoch epochs
    test      score the stage-2 model on test with stage 1's beta

Read it top to bottom: `run_protocol` calls `train_stage` twice and `score_phase` in between.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avgzsl.config import RunConfig, save_config
from avgzsl.data.sampling import BalancedBatchSampler
from avgzsl.data.types import Benchmark, Phase
from avgzsl.evaluation import GZSLScores, beta_grid, calibrate, gzsl_scores
from avgzsl.methods import DataDims, Method, get_method
from avgzsl.methods.layers import dropout_rng_state, seed_dropout, set_dropout_rng_state
from avgzsl.progress import progress
from avgzsl.runs import RunDir

LOG = logging.getLogger("avgzsl")


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return the generator that draws the batches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    seed_dropout(seed)
    return torch.Generator().manual_seed(seed)


def build_method(cfg: RunConfig, bench: Benchmark) -> Method:
    dims = DataDims(bench.audio_dim, bench.video_dim, bench.text_dim, bench.temporal)
    return get_method(cfg.method_name)(cfg.method, dims).to(cfg.train.device)


@torch.no_grad()
def phase_distances(method: Method, phase: Phase, class_text: torch.Tensor, batch_size: int, device: str,
                    normalise: bool = False) -> torch.Tensor:
    """[N, C] distances of the phase's samples to its search space (columns: phase.classes); normalise:
    between L2-normalised embeddings (train.score_distance=cosine, methods with the default distances)."""
    kw = {"normalise": True} if normalise else {}
    was_training = method.training
    method.eval()
    text = class_text[phase.classes].to(device)
    n = len(phase.samples)
    out = []
    for start in range(0, n, batch_size):
        index = torch.arange(start, min(n, start + batch_size))
        out.append(method.distances(phase.samples.batch(index).to(device), text, **kw).float().cpu())
    method.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, phase.classes.numel())


def score_phase(
    method: Method, phase: Phase, bench: Benchmark, cfg: RunConfig, betas: torch.Tensor | None = None,
) -> GZSLScores:
    """Scores of the phase: beta searched on the config's grid (extended with train.beta_extend), or the
    given `betas` (the test phase: stage 1's beta)."""
    dist = phase_distances(method, phase, bench.text, cfg.train.eval_batch_size, cfg.train.device,
                           normalise=cfg.train.score_distance == "cosine")
    if betas is not None:
        return gzsl_scores(dist, phase.samples.labels, phase.seen, phase.unseen, betas, class_ids=phase.classes)
    return calibrate(dist, phase.samples.labels, phase.seen, phase.unseen, beta_grid(*cfg.train.beta_grid),
                     class_ids=phase.classes, extend=cfg.train.beta_extend)


@dataclass
class StageResult:
    method: Method
    optimizer: torch.optim.Optimizer
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0  # 1-based; 0 = none
    best_val: GZSLScores | None = None
    lrs: list[float] = field(default_factory=list)  # learning rate used in each epoch
    seconds: float = 0.0


def train_stage(
    stage: int, bench: Benchmark, cfg: RunConfig, run: RunDir, epochs: int, replay_lrs: list[float] | None = None,
    resume_state: dict | None = None, carry: dict | None = None,
) -> StageResult:
    """Train one stage from scratch (or, with `resume_state`, from the end of the epoch it was saved at).

    Stage 1 validates every epoch; stage 2 only trains. After every epoch the whole training state (model,
    optimiser, scheduler, every random stream, bookkeeping, and `carry`: what a later stage needs of an
    earlier one) is saved atomically, so a killed run continues bit for bit.
    """
    t_start = time.perf_counter()
    generator = seed_everything(cfg.seed)
    train_phase = bench.phases["stage1_train" if stage == 1 else "stage2_train"]
    method = build_method(cfg, bench)
    optimizer = None if method.closed_form else method.configure_optimizer()
    scheduler = None  # lr_factor 1 = a constant rate (references that train without the plateau schedule)
    if optimizer is not None and cfg.train.lr_factor < 1.0:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=cfg.train.lr_factor, patience=cfg.train.lr_patience
        )
    sampler = None if method.closed_form else BalancedBatchSampler(
        train_phase.samples, bench.text, cfg.train.batch_size, generator, with_negatives=method.uses_negatives
    )
    result = StageResult(method, optimizer)
    checkpoint_all = cfg.train.save_checkpoints == "all"
    first = 1
    if resume_state is not None:
        first = _restore_state(resume_state, method, optimizer, scheduler, generator, result) + 1
        t_start -= result.seconds  # the stage's time so far counts

    epoch_bar = progress(range(first, epochs + 1), desc=f"stage {stage}", unit="epoch", initial=first - 1,
                         total=epochs, every=0, enabled=cfg.train.progress)
    for epoch in epoch_bar:
        row = {"stage": stage, "epoch": epoch}
        if optimizer is not None:
            if replay_lrs is not None:
                for group in optimizer.param_groups:
                    group["lr"] = replay_lrs[epoch - 1]
            row["lr"] = float(optimizer.param_groups[0]["lr"])
        result.lrs.append(row.get("lr", 0.0))

        method.train()
        t0 = time.perf_counter()
        if sampler is None:
            fitted = method.fit(train_phase.samples, bench.text, epoch)
            row["train_seconds"] = round(time.perf_counter() - t0, 3)
            row.update(fitted)
        else:
            sums = _train_batches(method, sampler, optimizer, cfg, epoch)
            row["train_seconds"] = round(time.perf_counter() - t0, 3)
            row.update({f"train_{k}": float(v) / cfg.train.n_batches for k, v in sums.items()})
        row.update(method.epoch_diagnostics())

        needs_val = stage == 1 or cfg.train.stage2_lr == "reference"
        if needs_val:
            t1 = time.perf_counter()
            val = score_phase(method, bench.phases["stage1_val"], bench, cfg)
            row["eval_seconds"] = round(time.perf_counter() - t1, 3)
            prefix = "val" if stage == 1 else "trained_on_val"  # stage-2 "val" is training data: label it so
            row.update({f"{prefix}_{k}": v for k, v in val.to_dict().items()})
            if replay_lrs is None and scheduler is not None:
                scheduler.step(val.HM)
            if stage == 1 and (result.best_val is None or val.HM > result.best_val.HM):
                result.best_val, result.best_epoch = val, epoch
                if cfg.train.save_checkpoints != "none":
                    run.save_checkpoint("stage1_best", _checkpoint(method, optimizer, cfg, stage, epoch))
            epoch_bar.set_postfix(HM=f"{val.HM:.2f}", ZSL=f"{val.ZSL:.2f}", best=result.best_epoch)
        if checkpoint_all:
            run.save_checkpoint(f"stage{stage}_epoch{epoch}", _checkpoint(method, optimizer, cfg, stage, epoch))
        run.log_metrics(row)
        result.history.append(row)
        result.seconds = time.perf_counter() - t_start
        _kill_point(stage, epoch, "before-state")
        run.save_state(_training_state(stage, epoch, method, optimizer, scheduler, generator, result, carry))
        _kill_point(stage, epoch, "after-state")
        LOG.info("stage %d epoch %d: %s", stage, epoch, {k: v for k, v in row.items() if k not in ("stage", "epoch")})

    result.seconds = time.perf_counter() - t_start
    return result


def _named_details(details: dict, class_names: list[str]) -> dict:
    """The evaluator's per-class details with class names instead of ids (for results.json)."""
    return {k: ({class_names[c]: v for c, v in d.items()} if isinstance(d, dict) else d) for k, d in details.items()}


def _kill_point(stage: int, epoch: int, where: str) -> None:
    """Test hook: with AVGZSL_KILL_AT="<stage>:<epoch>[:before-state]" the process SIGKILLs itself there
    (after saving that epoch's state by default), so tests can kill a real run at an exact point."""
    at = os.environ.get("AVGZSL_KILL_AT")
    if at and at.split(":")[:2] == [str(stage), str(epoch)] and (at.split(":") + ["after-state"])[2] == where:
        os.kill(os.getpid(), signal.SIGKILL)


def _training_state(stage: int, epoch: int, method: Method, optimizer, scheduler, generator: torch.Generator,
                    result: StageResult, carry: dict | None) -> dict:
    """Everything a resumed run needs to continue after `epoch` exactly as an uninterrupted one."""
    np_state = np.random.get_state()
    return {
        "stage": stage, "epoch": epoch,
        "model": method.state_dict(),
        "method_state": method.training_state(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": {
            "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
            "torch": torch.get_rng_state(),
            # GPU dropout draws from CUDA's generators (FastDropout): a resumed GPU run continues them
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            "sampler": generator.get_state(),
            "dropout": dropout_rng_state(),
        },
        "result": {"history": result.history, "best_epoch": result.best_epoch, "lrs": result.lrs,
                   "best_val": None if result.best_val is None else result.best_val.to_dict(with_grid=True),
                   "seconds": result.seconds},
        "carry": carry or {},
    }


def _restore_state(state: dict, method: Method, optimizer, scheduler, generator: torch.Generator,
                   result: StageResult) -> int:
    """Load a saved training state into a freshly built stage; returns the epoch it was saved at."""
    method.load_state_dict(state["model"])
    method.load_training_state(state["method_state"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    rng = _on_cpu(state["rng"])  # a state loaded with map_location=cuda has its generator states there too
    random.setstate(_tuples(rng["python"]))
    kind, keys, *rest = rng["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available() and len(rng["cuda"]) <= torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    generator.set_state(rng["sampler"])
    set_dropout_rng_state(rng["dropout"])
    saved = state["result"]
    result.history, result.best_epoch, result.lrs = list(saved["history"]), saved["best_epoch"], list(saved["lrs"])
    result.best_val = None if saved["best_val"] is None else GZSLScores(**saved["best_val"])
    result.seconds = saved["seconds"]
    return int(state["epoch"])


def _on_cpu(x):
    if isinstance(x, torch.Tensor):
        return x.cpu()
    if isinstance(x, dict):
        return {k: _on_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_on_cpu(v) for v in x)
    return x


def _tuples(x):
    """random.setstate wants the tuples that a save may have turned into lists."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def _train_batches(method: Method, sampler: BalancedBatchSampler, optimizer, cfg: RunConfig, epoch: int) -> dict:
    """n_batches optimisation steps; returns the sum of each loss term (tensors: no sync per step)."""
    device = cfg.train.device
    sums: dict[str, torch.Tensor] = {}
    for _ in progress(range(cfg.train.n_batches), desc=f"epoch {epoch}", unit="batch", leave=False,
                      enabled=cfg.train.progress, mininterval=0.5):
        batch = sampler.draw()
        if device != "cpu":
            batch = batch.to(device)
        terms = method.optimization_step(batch, optimizer)
        for k, v in terms.items():
            sums[k] = sums[k] + v if k in sums else v.clone()
    return sums


def _checkpoint(method: Method, optimizer, cfg: RunConfig, stage: int, epoch: int) -> dict:
    return {
        "method": cfg.method_name, "stage": stage, "epoch": epoch, "config": cfg.to_dict(),
        "model": method.state_dict(), "optimizer": None if optimizer is None else optimizer.state_dict(),
    }


def run_protocol(cfg: RunConfig, bench: Benchmark, output_dir: str | Path, label: str | None = None,
                 resume: bool = False) -> dict:
    """Stage 1 -> stage 2 -> test. Writes the run directory and returns results.json's content.

    resume: continue the unfinished run in output_dir from its last saved epoch (same config: the caller
    checks: `experiments.plan_run`), appending to its log and metrics; without a saved state it starts
    from scratch. Without resume, the folder is started afresh.
    """
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    build_method(cfg, bench)  # checks that need the data (e.g. DAAN's chunk count) fail before any file is written
    run = RunDir(output_dir)
    state = run.load_state() if resume else None
    run.start(fresh=state is None)
    try:
        if state is None:
            save_config(cfg, run.config_file)
        else:
            run.truncate_metrics(state["stage"], state["epoch"])
            LOG.info("resuming %s after stage %d epoch %d", run.path, state["stage"], state["epoch"])
        LOG.info("run %s: method %s on %s, seed %d", run.path, cfg.method_name, bench.name, cfg.seed)

        epochs = get_method(cfg.method_name).stage_epochs(cfg)
        if state is not None and state["stage"] == 2:
            s1 = state["carry"]["stage1"]
            stage1 = StageResult(None, None, best_epoch=s1["best_epoch"], best_val=GZSLScores(**s1["best_val"]),
                                 lrs=list(s1["lrs"]), seconds=s1["seconds"])
        else:
            stage1 = train_stage(1, bench, cfg, run, epochs, resume_state=state)
            state = None
        if stage1.best_val is None:
            raise RuntimeError("stage 1 produced no validation score (epochs must be >= 1)")
        best_epoch, beta = stage1.best_epoch, stage1.best_val.beta
        LOG.info("stage 1 best epoch %d, val %s", best_epoch, stage1.best_val.to_dict())

        replay = stage1.lrs[:best_epoch] if cfg.train.stage2_lr == "replay" else None
        carry = {"stage1": {"best_epoch": best_epoch, "best_val": stage1.best_val.to_dict(with_grid=True),
                            "lrs": stage1.lrs, "seconds": stage1.seconds}}
        stage2 = train_stage(2, bench, cfg, run, best_epoch, replay_lrs=replay, resume_state=state, carry=carry)
        if cfg.train.save_checkpoints != "none":
            run.save_checkpoint("stage2_test", _checkpoint(stage2.method, stage2.optimizer, cfg, 2, best_epoch))

        t1 = time.perf_counter()
        test = score_phase(stage2.method, bench.phases["test"], bench, cfg, betas=torch.tensor([beta], dtype=torch.float64))
        test_seconds = time.perf_counter() - t1

        results = {
            "method": cfg.method_name,
            "label": label or cfg.method_name,
            "dataset": bench.name,
            "seed": cfg.seed,
            "test": {k: getattr(test, k) for k in ("S", "U", "HM", "ZSL")},
            "beta": beta,
            "best_epoch": best_epoch,
            "beta_grid_top": float(stage1.best_val.per_beta["beta"][-1]),  # beta == this: the grid's edge chose
            "val": stage1.best_val.to_dict(),
            "test_details": _named_details(test.details, bench.class_names),
            "seconds": {
                "stage1": round(stage1.seconds, 3),
                "stage2": round(stage2.seconds, 3),
                "test": round(test_seconds, 3),
                "total": round(stage1.seconds + stage2.seconds + test_seconds, 3),
                "per_epoch_stage1": round(stage1.seconds / max(1, epochs), 3),
                "per_epoch_stage2": round(stage2.seconds / max(1, best_epoch), 3),
            },
            "data": {k: v for k, v in bench.info.items() if isinstance(v, (str, int, float, bool))},
            "config": cfg.to_dict(),
        }
        run.write_results(results)
        run.clear_state()  # only an unfinished run needs it
        LOG.info("test: %s (beta %.2f, epoch %d)", results["test"], beta, best_epoch)
        return results
    finally:
        run.close()

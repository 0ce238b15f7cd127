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
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from avgzsl.config import RunConfig, save_config
from avgzsl.data.sampling import BalancedBatchSampler
from avgzsl.data.types import Benchmark, Phase
from avgzsl.evaluation import GZSLScores, beta_grid, gzsl_scores
from avgzsl.methods import DataDims, Method, get_method
from avgzsl.methods.layers import seed_dropout
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
def phase_distances(method: Method, phase: Phase, class_text: torch.Tensor, batch_size: int, device: str) -> torch.Tensor:
    """[N, C] distances of the phase's samples to its search space (columns: phase.classes)."""
    was_training = method.training
    method.eval()
    text = class_text[phase.classes].to(device)
    n = len(phase.samples)
    out = []
    for start in range(0, n, batch_size):
        index = torch.arange(start, min(n, start + batch_size))
        out.append(method.distances(phase.samples.batch(index).to(device), text).float().cpu())
    method.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, phase.classes.numel())


def score_phase(
    method: Method, phase: Phase, bench: Benchmark, cfg: RunConfig, betas: torch.Tensor | None = None,
) -> GZSLScores:
    dist = phase_distances(method, phase, bench.text, cfg.train.eval_batch_size, cfg.train.device)
    grid = beta_grid(*cfg.train.beta_grid) if betas is None else betas
    return gzsl_scores(dist, phase.samples.labels, phase.seen, phase.unseen, grid, class_ids=phase.classes)


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
) -> StageResult:
    """Train one stage from scratch. Stage 1 validates every epoch; stage 2 only trains."""
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

    epoch_bar = tqdm(range(1, epochs + 1), desc=f"stage {stage}", unit="epoch", disable=not cfg.train.progress)
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
        LOG.info("stage %d epoch %d: %s", stage, epoch, {k: v for k, v in row.items() if k not in ("stage", "epoch")})

    result.seconds = time.perf_counter() - t_start
    return result


def _train_batches(method: Method, sampler: BalancedBatchSampler, optimizer, cfg: RunConfig, epoch: int) -> dict:
    """n_batches optimisation steps; returns the sum of each loss term (tensors: no sync per step)."""
    device = cfg.train.device
    sums: dict[str, torch.Tensor] = {}
    for _ in tqdm(range(cfg.train.n_batches), desc=f"epoch {epoch}", unit="batch", leave=False,
                  disable=not cfg.train.progress, mininterval=0.5):
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


def run_protocol(cfg: RunConfig, bench: Benchmark, output_dir: str | Path, label: str | None = None) -> dict:
    """Stage 1 -> stage 2 -> test. Writes the run directory and returns results.json's content."""
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    run = RunDir(output_dir)
    run.start()
    try:
        save_config(cfg, run.config_file)
        LOG.info("run %s: method %s on %s, seed %d", run.path, cfg.method_name, bench.name, cfg.seed)
        t0 = time.perf_counter()

        epochs = get_method(cfg.method_name).stage_epochs(cfg)
        stage1 = train_stage(1, bench, cfg, run, epochs)
        if stage1.best_val is None:
            raise RuntimeError("stage 1 produced no validation score (epochs must be >= 1)")
        best_epoch, beta = stage1.best_epoch, stage1.best_val.beta
        LOG.info("stage 1 best epoch %d, val %s", best_epoch, stage1.best_val.to_dict())

        replay = stage1.lrs[:best_epoch] if cfg.train.stage2_lr == "replay" else None
        stage2 = train_stage(2, bench, cfg, run, best_epoch, replay_lrs=replay)
        if cfg.train.save_checkpoints != "none":
            run.save_checkpoint("stage2_test", _checkpoint(stage2.method, stage2.optimizer, cfg, 2, best_epoch))

        t1 = time.perf_counter()
        test = score_phase(stage2.method, bench.phases["test"], bench, cfg, betas=torch.tensor([beta], dtype=torch.float64))
        test_seconds = time.perf_counter() - t1
        total = time.perf_counter() - t0

        results = {
            "method": cfg.method_name,
            "label": label or cfg.method_name,
            "dataset": bench.name,
            "seed": cfg.seed,
            "test": {k: getattr(test, k) for k in ("S", "U", "HM", "ZSL")},
            "beta": beta,
            "best_epoch": best_epoch,
            "val": stage1.best_val.to_dict(),
            "seconds": {
                "stage1": round(stage1.seconds, 3),
                "stage2": round(stage2.seconds, 3),
                "test": round(test_seconds, 3),
                "total": round(total, 3),
                "per_epoch_stage1": round(stage1.seconds / max(1, epochs), 3),
                "per_epoch_stage2": round(stage2.seconds / max(1, best_epoch), 3),
            },
            "data": {k: v for k, v in bench.info.items() if isinstance(v, (str, int, float, bool))},
        }
        run.write_results(results)
        LOG.info("test: %s (beta %.2f, epoch %d)", results["test"], beta, best_epoch)
        return results
    finally:
        run.close()

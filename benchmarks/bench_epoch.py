"""Speed of the protocol runner for one method: seconds per epoch, step vs bare step, evaluation, memory.

    python benchmarks/bench_epoch.py --method avca [--source ../shared/benchmarks/UCF] [--batches 500] [key=value ...]
    python benchmarks/bench_epoch.py --method tcaf --root data/synth/UCF --batches 300 --steps 30
        --json docs/bench_epoch_tcaf.json train.num_threads=1        (one command line)

- features: averaged or temporal as the method's config says (data.temporal, e.g. configs/UCF/tcaf.yaml);
  `--temporal` forces per-time-step features. A generated benchmark holds the kind the run reads.

- epoch: one stage-1 epoch through the real runner (`train_stage`): n_batches class-balanced batches
  (with negatives for methods that take them), then scoring of the stage-1 val split over the beta
  grid (what the protocol does).
- step vs bare step: the runner's per-batch cost (sampling by indexing + `optimization_step` +
  loss bookkeeping) against a bare forward/backward/Adam step of the same model on batches that
  are already in memory, medians of interleaved rounds. The ratio is the runner's overhead.
- evaluation: embedding + distances + the vectorised beta-grid scoring of stage-1 val and of test.
- peak memory: the process's max resident set size.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from avgzsl.config import build_config
from avgzsl.data.loading import load_benchmark
from avgzsl.data.sampling import BalancedBatchSampler
from avgzsl.data.synth import generate_benchmark
from avgzsl.protocol import build_method, score_phase, seed_everything, train_stage
from avgzsl.runs import RunDir


def _bare_steps(method, opt, batches, n_steps: int) -> float:
    """Seconds per forward/backward/Adam step on batches already in memory (no runner around it)."""
    method.train()
    t0 = time.perf_counter()
    for i in range(n_steps):
        opt.zero_grad(set_to_none=True)
        method.training_step(batches[i % len(batches)])["loss"].backward()
        opt.step()
    return (time.perf_counter() - t0) / n_steps


def step_vs_bare(cfg, bench, n_steps: int, rounds: int) -> tuple[float, float]:
    """Median seconds per runner step and per bare step, timed in interleaved rounds.

    The runner step is the real `train_stage` loop (sampling by indexing, `optimization_step`, loss
    bookkeeping) for n_steps batches; the bare step is the same model's forward/backward/Adam on
    pre-drawn batches. Interleaving makes a busy machine disturb both alike.
    """
    gen = seed_everything(cfg.seed)
    method = build_method(cfg, bench)
    opt = method.configure_optimizer()
    sampler = BalancedBatchSampler(bench.phases["stage1_train"].samples, bench.text, cfg.train.batch_size, gen,
                                   with_negatives=method.uses_negatives)
    batches = [sampler.draw() for _ in range(8)]
    _bare_steps(method, opt, batches, 3)  # warm-up
    short = copy.deepcopy(cfg)
    short.train.n_batches = n_steps
    runner, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            bare.append(_bare_steps(method, opt, batches, n_steps))
            stage = train_stage(1, bench, short, RunDir(tmp), epochs=1)
            runner.append(stage.history[0]["train_seconds"] / n_steps)
    return statistics.median(runner), statistics.median(bare)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="avca")
    p.add_argument("--dataset", default="UCF")
    p.add_argument("--source", default="../shared/benchmarks/UCF", help="class-split source for the synthetic data")
    p.add_argument("--root", default=None, help="an existing benchmark folder (skips generation)")
    p.add_argument("--batches", type=int, default=500)
    p.add_argument("--steps", type=int, default=50, help="steps per round of the step-vs-bare comparison")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--temporal", action="store_true", help="per-time-step features (data.temporal=true)")
    p.add_argument("--json", default=None, help="also write the numbers here")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    tmp = tempfile.TemporaryDirectory()
    overrides = [f"train.n_batches={args.batches}", "train.progress=false", "train.save_checkpoints=none"]
    overrides += ["data.temporal=true"] if args.temporal else []
    cfg = build_config(args.method, args.dataset, overrides + args.overrides)
    root = args.root
    if root is None:
        source = args.source if Path(args.source).is_dir() else None
        root = generate_benchmark(Path(tmp.name) / "data", source=source, scale=1.0, seed=0,
                                  temporal=cfg.data.temporal, progress=False)
        cfg.data.dataset = Path(root).name
    cfg.data.root = str(root)
    if cfg.train.num_threads and not args.threads:
        torch.set_num_threads(cfg.train.num_threads)  # train.num_threads=N works as --threads N
    t0 = time.perf_counter()
    bench = load_benchmark(cfg.data, progress=False)
    load_s = time.perf_counter() - t0

    step, bare = step_vs_bare(cfg, bench, args.steps, args.rounds)
    stage = train_stage(1, bench, cfg, RunDir(Path(tmp.name) / "run"), epochs=1)
    row = stage.history[0]
    t1 = time.perf_counter()
    score_phase(stage.method, bench.phases["test"], bench, cfg)
    test_eval = time.perf_counter() - t1

    out = {
        "method": args.method,
        "data": f"{bench.name} synthetic, scale 1, {'temporal' if bench.temporal else 'averaged'} features: "
                f"{len(bench.phases['stage1_train'].samples)} stage-1 train, "
                f"{len(bench.phases['stage1_val'].samples)} val, {len(bench.phases['test'].samples)} test samples",
        "batches_per_epoch": cfg.train.n_batches,
        "batch_size": cfg.train.batch_size,
        "threads": torch.get_num_threads(),
        "load_seconds": round(load_s, 2),
        "epoch_seconds": round(stage.seconds, 2),
        "train_seconds": row["train_seconds"],
        "val_eval_seconds": row["eval_seconds"],
        "test_eval_seconds": round(test_eval, 3),
        "epoch_step_ms": round(1000 * row["train_seconds"] / cfg.train.n_batches, 2),
        "step_ms": round(1000 * step, 2),
        "bare_step_ms": round(1000 * bare, 2),
        "step_over_bare": round(step / bare, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Experiments: several runs of the protocol, as a small Python API (the CLI is a thin layer over it).

    import avgzsl
    results = avgzsl.run(method="daan", dataset="UCF", root="data/synth/UCF", seeds=[0, 1, 2],
                         overrides=["train.epochs=15"], out="runs/daan")
    table = avgzsl.compare(methods=["avca", "daan", "linear"], dataset="UCF", root=..., seeds=[0, 1, 2])
    rows = avgzsl.ablate(method="daan", dataset="UCF", root=..., seeds=[0, 1, 2])
    rows = avgzsl.sweep(method="daan", key="method.gamma", values=[0.1, 0.3], dataset="UCF", root=...)
    scores = avgzsl.evaluate("runs/daan/seed0")

What this module owns: turning (method, dataset, seeds, overrides) into resolved configs and run
directories, loading each benchmark once for all the runs that read it, the resume policy (a finished
run with the same config is reused, one with another config is refused), and the files an experiment
writes next to its runs (ablation.md, sweep.csv/png, compare.md/json). The protocol itself is
`avgzsl.protocol`; tables and figures are `avgzsl.reports`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avgzsl.config import ConfigError, RunConfig, build_config, config_differences, load_yaml_text, parse_overrides

LOG = logging.getLogger("avgzsl")

Overrides = Sequence[str] | dict | None
OnResult = Callable[[dict], None] | None

__all__ = ["BenchmarkStore", "RunJob", "ablate", "compare", "evaluate", "execute", "run", "sweep"]


# --- benchmarks, loaded once ---------------------------------------------------------------------------
class BenchmarkStore:
    """Loads each distinct benchmark (data config) once and hands it to every run that reads it."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}

    @staticmethod
    def key(cfg: RunConfig) -> str:
        data = cfg.to_dict()["data"]
        data.pop("cache_dir", None)
        return json.dumps(data, sort_keys=True)

    def get(self, cfg: RunConfig):
        key = self.key(cfg)
        if key not in self._loaded:
            from avgzsl.data.loading import load_benchmark

            t0 = time.perf_counter()
            self._loaded[key] = load_benchmark(cfg.data, progress=cfg.train.progress)
            LOG.info("loaded %s in %.1f s", self._loaded[key].name, time.perf_counter() - t0)
        return self._loaded[key]


# --- configs and the resume policy ---------------------------------------------------------------------
def _override_list(root: str | Path | None, overrides: Overrides) -> list[str] | dict:
    """Overrides with `root` (if given) as data.root; a dict stays a dict (merged the same way)."""
    if isinstance(overrides, dict):
        tree = json.loads(json.dumps(overrides))
        if root is not None:
            tree.setdefault("data", {})["root"] = str(root)
        return tree
    items = list(overrides or [])
    return ([f"data.root={root}"] if root is not None else []) + items


def _with(overrides: list[str] | dict, extra: dict) -> list[str] | dict:
    """overrides + extra ({'method': {...}}), extra winning."""
    from avgzsl.config import _merge

    base = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides))
    return _merge(base, extra)


def plan_run(run_dir: Path, cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> str:
    """What to do with a run directory: "fresh" (start the run), "reuse" (a finished run with this config),
    or "continue" (an unfinished run with this config, from its last saved epoch).

    A folder that holds a run is never written over silently: without `resume` or `overwrite` that is an
    error naming the folder and what it holds, and with `resume` a run made with another config is an error
    naming the differing keys (never mixed into a table). `overwrite` starts the run again from scratch.
    """
    from avgzsl.runs import RunDir

    run = RunDir(run_dir, create=False)
    if not run.holds_run() or overwrite:
        return "fresh"
    if not resume:
        raise FileExistsError(f"{run_dir} holds {run.describe()}; pass --resume to continue or reuse it, or "
                              f"--overwrite to start it again (or choose another --out)")
    if not run.config_file.exists():  # killed before its config was written: nothing to continue
        return "fresh"
    differ = config_differences(read_run_config(run.config_file), cfg.to_dict())
    if differ:
        raise ConfigError(f"{run_dir} holds {run.describe()} made with another config (differs in "
                          f"{', '.join(differ)}); choose another --out, or --overwrite it")
    return "reuse" if run.results_file.exists() else "continue"


def read_run_config(path: Path) -> dict:
    """A run's saved config.yaml as a dict; a damaged file is an error naming it."""
    import yaml

    try:
        tree = load_yaml_text(Path(path).read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is damaged ({type(exc).__name__}); rerun with --overwrite") from None
    if not isinstance(tree, dict) or "method_name" not in tree:
        raise ConfigError(f"{path} is not a run's config (no method_name); rerun with --overwrite")
    return tree


def finished_run(run_dir: Path, cfg: RunConfig) -> dict | None:
    """results.json of a finished run in run_dir made with the same config, else None (see `plan_run`)."""
    if plan_run(run_dir, cfg, resume=True) != "reuse":
        return None
    return read_finished(run_dir)


def read_finished(run_dir: Path) -> dict:
    """results.json of the finished run in run_dir, with its "run_dir"."""
    res = json.loads((Path(run_dir) / "results.json").read_text())
    res.setdefault("run_dir", str(run_dir))
    return res


def finished_line(job: RunJob, res: dict, done: int, total: int, t0: float) -> str:
    """The progress line of a finished run: its folder, test HM / ZSL, seconds, and the overall count."""
    return (f"finished {job.run_dir}: HM {res['test']['HM']:.2f} ZSL {res['test']['ZSL']:.2f} "
            f"({res['seconds']['total']:.0f} s) [{count_line(done, total, t0)}]")


# --- jobs: one protocol run each, executed here or by worker processes ------------------------------------
@dataclass
class RunJob:
    """One protocol run: a resolved, checked config, its run directory and its table row name."""

    cfg: RunConfig
    run_dir: Path
    label: str | None = None
    group: str = ""  # which row / variant / value of the experiment it belongs to


@dataclass
class JobFailure:
    """A run that raised: which one and why (reported in tables instead of stopping the others)."""

    job: RunJob
    error: str


def _jobs(method: str, dataset: str, overrides: list[str] | dict, config_file: str | Path | None,
          seeds: Sequence[int], out: Path, label: str | None, per_seed: bool, group: str = "") -> list[RunJob]:
    """Build and check every seed's config (before any data loads or folder is written)."""
    jobs = []
    for seed in seeds:
        cfg = build_config(method, dataset, overrides, config_file)
        cfg.seed = int(seed)
        jobs.append(RunJob(cfg, out / f"seed{cfg.seed}" if per_seed else out, label, group or label or method))
    return jobs


_WORKER_STORE: BenchmarkStore | None = None  # a worker process's benchmarks, loaded once per process


def _run_job(job: RunJob, store: BenchmarkStore | None = None, resume: bool = False) -> dict:
    from avgzsl.protocol import run_protocol

    global _WORKER_STORE
    if store is None:
        _WORKER_STORE = _WORKER_STORE or BenchmarkStore()
        store = _WORKER_STORE
    res = run_protocol(job.cfg, store.get(job.cfg), job.run_dir, label=job.label, resume=resume)
    res.setdefault("run_dir", str(job.run_dir))
    return res


def usable_cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def execute(
    jobs: list[RunJob],
    *,
    n_jobs: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    benchmarks: BenchmarkStore | None = None,
    on_result: OnResult = None,
    keep_going: bool = False,
    ray: str | bool | None = None,
    cpus_per_run: float | None = None,
    gpus_per_run: float | None = None,
) -> tuple[list[dict | None], list[JobFailure]]:
    """Run `jobs`, n_jobs at a time (or as tasks of a Ray cluster); results in job order.

    Every run directory is checked first (`plan_run`), before anything trains: with `resume` finished runs
    are reused and unfinished ones continue from their last epoch; `overwrite` starts them again.

    With n_jobs > 1 every run is a worker process of its own pool (spawned: torch and fork do not mix),
    each worker loads a benchmark once for all the runs it gets, and the cores are split between the
    workers (train.num_threads = cores // n_jobs where it was left at 0): runs side by side that each take
    every core oversubscribe the machine many times over. One progress line per finished run.
    A run that raises is returned as a JobFailure when keep_going, else re-raised once the others finished.

    ray: None (here), "local" or True (a Ray instance started on this machine), or a cluster's address
    ("auto", "host:6379"): every run is then a task of that cluster with cpus_per_run CPUs (default 1, also
    its torch threads where train.num_threads is 0) and gpus_per_run GPUs (default 0; > 0 runs it on
    "cuda"), see `avgzsl.ray_backend`. Planning, run directories and failures are as above.
    """
    if n_jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {n_jobs}")
    if ray is False:
        ray = None
    if ray is None and (cpus_per_run is not None or gpus_per_run is not None):
        raise ConfigError("--cpus-per-run and --gpus-per-run are resources of Ray tasks: use them with --ray")
    if ray is not None:
        if n_jobs != 1:
            raise ConfigError("--jobs and --ray exclude each other: Ray runs as many runs at once as its CPUs "
                              "and GPUs hold (see --cpus-per-run, --gpus-per-run)")
        from avgzsl.ray_backend import prepare_jobs

        ray = "local" if ray is True else str(ray)
        cpus_per_run = 1.0 if cpus_per_run is None else float(cpus_per_run)
        gpus_per_run = 0.0 if gpus_per_run is None else float(gpus_per_run)
        prepare_jobs(jobs, ray, cpus_per_run, gpus_per_run)  # checks; the config each run saves: before planning
    results: list[dict | None] = [None] * len(jobs)
    if len({j.run_dir.resolve() for j in jobs}) < len(jobs):
        raise ConfigError("two runs of this experiment would share one run directory")
    plans = [plan_run(job.run_dir, job.cfg, resume, overwrite) for job in jobs]  # all checked before any runs
    todo = []
    for i, (job, plan) in enumerate(zip(jobs, plans)):
        if plan == "reuse":
            LOG.info("reusing the finished run %s", job.run_dir)
            res = read_finished(job.run_dir)
            results[i] = res
            if on_result is not None:
                on_result(res)
        else:
            todo.append(i)
    failures: list[JobFailure] = []
    if ray is not None and todo:
        from avgzsl.ray_backend import run_on_ray

        errors = run_on_ray(jobs, todo, plans, results, address=ray, cpus_per_run=cpus_per_run,
                            gpus_per_run=gpus_per_run, on_result=on_result)
        return results, _failures(jobs, errors, keep_going)
    if n_jobs <= 1 or len(todo) <= 1:
        store = benchmarks or BenchmarkStore()
        for i in todo:
            try:
                results[i] = _run_job(jobs[i], store, plans[i] == "continue")
            except (ValueError, FileNotFoundError, RuntimeError) as exc:
                if not keep_going:
                    raise
                failures.append(JobFailure(jobs[i], f"{type(exc).__name__}: {exc}".splitlines()[0]))
                continue
            if on_result is not None:
                on_result(results[i])
        return results, failures

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from avgzsl.progress import progress

    threads = max(1, usable_cores() // n_jobs)
    for i in todo:
        if jobs[i].cfg.train.num_threads == 0:
            jobs[i].cfg.train.num_threads = threads
        jobs[i].cfg.train.progress = False  # one combined display below, not n_jobs tangled bars
    errors: list[tuple[int, BaseException]] = []
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_run_job, jobs[i], None, plans[i] == "continue"): i for i in todo}
        bar = progress(total=len(todo), desc=f"runs ({n_jobs} at a time)", unit="run", every=60)
        t0 = time.perf_counter()
        for done, fut in enumerate(as_completed(futures), 1):
            i = futures[fut]
            bar.update(1)
            try:
                results[i] = fut.result()
            except Exception as exc:  # noqa: BLE001  (reported, the other runs go on)
                errors.append((i, exc))
                LOG.warning("run %s failed: %s", jobs[i].run_dir, exc)
                continue
            bar.write(finished_line(jobs[i], results[i], done, len(todo), t0))
            if on_result is not None:
                on_result(results[i])
        bar.close()
    return results, failures + _failures(jobs, errors, keep_going)


def _failures(jobs: list[RunJob], errors: list[tuple[int, BaseException]], keep_going: bool) -> list[JobFailure]:
    """The runs that raised in workers, as JobFailures (keep_going), else the first one raised, saying how
    many failed (after the others finished)."""
    if errors and not keep_going:
        i, exc = errors[0]
        raise type(exc)(f"{len(errors)} run(s) failed; the first, {jobs[i].run_dir}: {exc}") if isinstance(
            exc, (ValueError, FileNotFoundError, RuntimeError)) else exc
    return [JobFailure(jobs[i], f"{type(e).__name__}: {e}".splitlines()[0]) for i, e in errors]


def duration(seconds: float) -> str:
    """'45 s', '3 min 20 s', '2 h 05 min'."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def count_line(done: int, total: int, t0: float) -> str:
    """'3/12 runs, 1 min 20 s, about 3 min 40 s left' (left: the runs to go at the pace so far)."""
    elapsed = time.perf_counter() - t0
    left = f", about {duration(elapsed / done * (total - done))} left" if 0 < done < total else ""
    return f"{done}/{total} runs, {duration(elapsed)}{left}"


def _group_results(jobs: list[RunJob], results: list[dict | None]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for job, res in zip(jobs, results):
        groups.setdefault(job.group, [])
        if res is not None:
            groups[job.group].append(res)
    return groups


# --- run -----------------------------------------------------------------------------------------------
def run(
    method: str = "avca",
    dataset: str = "UCF",
    root: str | Path | None = None,
    *,
    seeds: Sequence[int] = (0,),
    out: str | Path | None = None,
    overrides: Overrides = None,
    config_file: str | Path | None = None,
    label: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    seed_dirs: bool | None = None,
    jobs: int = 1,
    benchmarks: BenchmarkStore | None = None,
    on_result: OnResult = None,
    ray: str | bool | None = None,
    cpus_per_run: float | None = None,
    gpus_per_run: float | None = None,
) -> list[dict]:
    """Run the two-stage protocol once per seed and return each run's results (results.json's content).

    Args:
        method, dataset: a registered method and the dataset whose YAML config (configs/<dataset>/<method>.yaml)
            gives the reference settings.
        root: the benchmark folder (same as the override data.root=...).
        seeds: one run per seed; run directories are out/seed<N> when there are several (or seed_dirs=True),
            else out itself. Default out: runs/<method>-<dataset>-<time>.
        overrides: ["section.key=value", ...] or a nested dict, applied over the YAML and config_file.
        label: the row name of these runs in tables (default: the method name).
        resume: reuse a seed's finished run made with the same config, or continue its unfinished one from
            its last epoch; a run made with another config is an error.
        overwrite: start the seeds' runs again even where their folders hold runs (without resume or
            overwrite, a folder holding a run is an error).
        jobs: runs at once, in worker processes that share the cores (see `execute`).
        ray, cpus_per_run, gpus_per_run: run every run as a task of a Ray cluster instead ("local" or True: one
            started on this machine; an address joins a running cluster), with these resources per run
            (see `execute`; the same keywords in ablate, sweep and compare).
        benchmarks: share loaded benchmarks with other calls (one load for many runs).
        on_result: called with each run's results as soon as it finishes.

    Every config is built and checked (unknown keys, wrong choices, a feature kind the method does not
    take) before any data loads or any folder is written.
    """
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("at least one seed is needed")
    out = Path(out) if out is not None else Path(f"runs/{method}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    per_seed = len(seeds) > 1 if seed_dirs is None else seed_dirs
    todo = _jobs(method, dataset, _override_list(root, overrides), config_file, seeds, out, label, per_seed)
    results, _ = execute(todo, n_jobs=jobs, resume=resume, overwrite=overwrite, benchmarks=benchmarks, on_result=on_result,
                         ray=ray, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
    return results


# --- ablate --------------------------------------------------------------------------------------------
def ablate(
    method: str = "daan",
    dataset: str = "UCF",
    root: str | Path | None = None,
    *,
    variants: Sequence[str] | None = None,
    baselines: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    out: str | Path = "runs/ablation",
    overrides: Overrides = None,
    config_file: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    reference: str | None = None,
    jobs: int = 1,
    benchmarks: BenchmarkStore | None = None,
    on_result: OnResult = None,
    ray: str | bool | None = None,
    cpus_per_run: float | None = None,
    gpus_per_run: float | None = None,
) -> list[dict]:
    """The method's ablation variants (its `ablation_variants()`), and baseline methods, over seeds.

    Writes out/ablation.md and out/ablation.json (mean ± std per row, and each row's paired difference
    to the `reference` row, default the first variant, with a 95 % interval) and returns the rows.
    `config_file` holds settings of `method`; baselines run at their own YAML config with `overrides`.
    """
    from avgzsl.methods import get_method
    from avgzsl.reports import add_differences, aggregate, markdown_table

    method_cls = get_method(method)
    declared = method_cls.ablation_variants()
    if not declared:
        raise ConfigError(f"method {method} declares no ablation variants")
    names = list(variants) if variants else list(declared)
    unknown = [n for n in names if n not in declared]
    if unknown:  # before any training, not after hours of it
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)} of {method}; known: {', '.join(declared)}")
    baselines = [b for b in (method_cls.ablation_baselines if baselines is None else baselines) if b]
    reference = reference or names[0]
    if reference not in names + baselines:
        raise ConfigError(f"reference row {reference!r} is neither a variant nor a baseline of this ablation")
    out = Path(out)
    ov = _override_list(root, overrides)
    todo = []
    for b in baselines:
        todo += _jobs(b, dataset, ov, None, seeds, out / b, b, True)
    for n in names:
        todo += _jobs(method, dataset, _with(ov, {"method": declared[n]}), config_file, seeds,
                      out / n.replace("+", "_"), n, True)
    results, _ = execute(todo, n_jobs=jobs, resume=resume, overwrite=overwrite, benchmarks=benchmarks, on_result=on_result,
                         ray=ray, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
    groups = _group_results(todo, results)
    rows = aggregate([r for r in results if r is not None])
    add_differences(rows, groups, reference)
    title = f"Ablation of {method} on {dataset} (test, mean ± std over seeds {' '.join(map(str, seeds))})"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.md").write_text(markdown_table(rows, title=title))
    (out / "ablation.json").write_text(json.dumps({"title": title, "rows": rows}, indent=2) + "\n")
    return rows


# --- sweep ---------------------------------------------------------------------------------------------
def sweep(
    method: str = "daan",
    key: str = "method.gamma",
    values: Sequence[Any] = (),
    dataset: str = "UCF",
    root: str | Path | None = None,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    out: str | Path = "runs/sweep",
    overrides: Overrides = None,
    config_file: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    jobs: int = 1,
    benchmarks: BenchmarkStore | None = None,
    on_result: OnResult = None,
    ray: str | bool | None = None,
    cpus_per_run: float | None = None,
    gpus_per_run: float | None = None,
) -> list[dict]:
    """One config key over values x seeds: writes out/sweep.csv and out/sweep.png (Figure-3 style),
    returns one aggregated row per value (with its "value")."""
    from avgzsl.reports import aggregate, plot_sweep, write_csv

    if not values:
        raise ConfigError("a sweep needs at least one value")
    out = Path(out)
    ov = _override_list(root, overrides)
    texts = [str(v) for v in values]
    todo = []
    for t in texts:
        todo += _jobs(method, dataset, _with(ov, parse_overrides([f"{key}={t}"])), config_file, seeds,
                      out / f"{key}={t}", f"{key}={t}", True)
    results, _ = execute(todo, n_jobs=jobs, resume=resume, overwrite=overwrite, benchmarks=benchmarks, on_result=on_result,
                         ray=ray, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
    groups = _group_results(todo, results)
    rows = []
    for t in texts:
        (row,) = aggregate(groups[f"{key}={t}"])
        row["value"] = load_yaml_text(t)
        rows.append(row)
    write_csv(rows, out / "sweep.csv", extra=("value",))
    plot_sweep(rows, key, out / "sweep.png", title=f"{method} on {dataset}: {key}")
    return rows


# --- compare -------------------------------------------------------------------------------------------
def compare(
    methods: Sequence[str] = ("avca", "daan", "linear"),
    dataset: str = "UCF",
    root: str | Path | None = None,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    out: str | Path = "runs/compare",
    overrides: Overrides = None,
    method_overrides: dict[str, Overrides] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    reference: str | None = "linear",
    jobs: int = 1,
    benchmarks: BenchmarkStore | None = None,
    on_result: OnResult = None,
    ray: str | bool | None = None,
    cpus_per_run: float | None = None,
    gpus_per_run: float | None = None,
) -> dict:
    """Several methods, each at its own reference config (+ `overrides`), over the same seeds.

    Writes out/compare.md (a DAAN-Table-I-style table: S / U / HM / ZSL mean ± std, minutes per run,
    seconds per epoch, the feature kind each method used) and out/compare.json, and returns the JSON's
    content: {"rows": [...], "failed": [{"method", "reason"}], "seeds": [...], ...}. Every row carries its
    paired difference to the `reference` method (default: the linear reference, when it is compared) in
    HM and ZSL with a 95 % interval over the seeds. A method that cannot run on the data (a feature kind it
    does not take, files missing for its kind, a run that fails) is listed with the reason instead of
    stopping the others.
    """
    from avgzsl.reports import add_differences, aggregate, compare_markdown

    out = Path(out)
    ov = _override_list(root, overrides)
    extra = method_overrides or {}
    store = benchmarks or BenchmarkStore()
    todo, failed, configs = [], [], {}
    for m in methods:
        job_ov = _with(ov, parse_overrides(list(extra[m])) if isinstance(extra.get(m), (list, tuple)) else extra.get(m, {}))
        try:
            method_jobs = _jobs(m, dataset, job_ov, None, seeds, out / m, m, True)
            store.get(method_jobs[0].cfg)  # e.g. no temporal files for a temporal method: say so, go on
        except (ValueError, KeyError, FileNotFoundError) as exc:
            reason = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).splitlines()[0]
            failed.append({"method": m, "reason": reason})
            LOG.warning("compare: %s cannot run: %s", m, reason)
            continue
        configs[m] = method_jobs[0].cfg
        todo += method_jobs
    results, failures = execute(todo, n_jobs=jobs, resume=resume, overwrite=overwrite, benchmarks=store, on_result=on_result,
                                keep_going=True, ray=ray, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
    failed += [{"method": f.job.group, "run": str(f.job.run_dir), "reason": f.error} for f in failures]
    groups = _group_results(todo, results)
    rows = []
    for m, cfg in configs.items():
        if not groups.get(m):
            continue
        (row,) = aggregate(groups[m])
        row["method"] = m
        row["features"] = ("temporal" if cfg.data.temporal else "averaged") + f" ({cfg.data.feature_set})"
        row["per_epoch_seconds"] = _mean([r["seconds"]["per_epoch_stage1"] for r in groups[m]])
        rows.append(row)
    if reference and groups.get(reference):
        add_differences(rows, {m: groups[m] for m in configs}, reference)
    title = f"{dataset}: test, mean ± std over seeds {' '.join(map(str, seeds))}"
    report = {"title": title, "dataset": dataset, "seeds": list(seeds), "rows": rows, "failed": failed}
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(compare_markdown(report))
    (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# --- evaluate ------------------------------------------------------------------------------------------
def evaluate(
    run_dir: str | Path,
    *,
    root: str | Path | None = None,
    checkpoint: str = "stage2_test",
    beta: float | None = None,
) -> dict:
    """Re-score a finished run from one of its checkpoints.

    Returns {"test": scores at the run's stage-1 beta (or `beta`), "test*": scores with beta searched on
    test (for reference only, never a result), "checkpoint": path}. `checkpoint` may be given with or
    without ".pt".
    """
    import torch

    from avgzsl.config import config_from_dict
    from avgzsl.data.loading import load_benchmark
    from avgzsl.protocol import build_method, score_phase
    from avgzsl.runs import RunDir

    run_dir = Path(run_dir)
    run_obj = RunDir(run_dir, create=False)
    if not run_obj.config_file.exists():
        raise FileNotFoundError(f"{run_obj.config_file} not found: is {run_dir} a run directory?")
    cfg = config_from_dict(read_run_config(run_obj.config_file))
    if root is not None:
        cfg.data.root = str(root)
    cfg.train.progress = False
    name = checkpoint[:-3] if checkpoint.endswith(".pt") else checkpoint
    ckpt_path = run_obj.checkpoints / f"{name}.pt"
    if not ckpt_path.exists():
        present = sorted(p.name for p in run_obj.checkpoints.glob("*.pt")) if run_obj.checkpoints.is_dir() else []
        raise FileNotFoundError(f"checkpoint {ckpt_path} not found"
                                + (f"; present: {', '.join(present)}" if present else
                                   " (was the run made with train.save_checkpoints=none?)"))
    bench = load_benchmark(cfg.data, progress=False)
    method = build_method(cfg, bench)
    from avgzsl.runs import load_checkpoint

    state = load_checkpoint(ckpt_path, cfg.train.device)
    try:
        method.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise ValueError(f"{ckpt_path} does not hold this run's model ({str(exc).splitlines()[0]})") from None
    results = run_obj.read_results() if run_obj.results_file.exists() else {}
    beta = beta if beta is not None else results.get("beta")
    scores: dict[str, Any] = {"checkpoint": str(ckpt_path)}
    if beta is not None:
        fixed = score_phase(method, bench.phases["test"], bench, cfg, torch.tensor([float(beta)], dtype=torch.float64))
        scores["test"] = fixed.to_dict()
    scores["test*"] = score_phase(method, bench.phases["test"], bench, cfg).to_dict()
    return scores

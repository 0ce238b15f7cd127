"""An experiment's runs on a Ray cluster (`--ray [ADDRESS]`): local by default, or joining a running cluster.

What this module owns: connecting to Ray, the pool of worker processes and handing them runs, the
resources of a run (--cpus-per-run, --gpus-per-run), retrying a run whose worker died, and the progress
lines. What a run *is* stays in `avgzsl.experiments`: the driver builds and checks every config and plans
every run directory (`plan_run`: fresh / reuse / continue, foreign folders refused) exactly as for a local
experiment, and a worker calls the same `experiments._run_job`, so a run directory written on Ray is the
one a local run writes: tables, --resume and `avgzsl evaluate` read it unchanged.

Why Ray core (actors) and not Ray Tune: our runs are independent protocol runs whose grid (methods x
variants x values x seeds), resume policy and run directories already live in `experiments`; Tune would
add its own trial folders, checkpoint layer, search space and result tables on top, to be kept in step
with ours. Ray core only executes.

Why a pool of actors rather than one plain task per run: a plain task's worker process may be reused by
the next task, but Ray assigns a task's GPU through CUDA_VISIBLE_DEVICES at task start, which a process
that already initialised CUDA cannot follow, so Ray starts a new process for every GPU task by default
(max_calls=1), and each would load the benchmark again. An actor holds its CPUs and GPU for its whole
life: it loads each benchmark once (its process's `experiments._WORKER_STORE`) for all the runs it is
given, and a GPU run's device is simply "cuda" (the actor's one visible GPU). The pool is as large as
the cluster's CPUs and GPUs allow when the experiment starts (at most one actor per run); runs are handed
out one at a time to whichever actor is free.

A worker that dies mid-run (killed, out of memory, its node lost) is restarted by Ray (max_restarts), and
the driver re-plans the run (`plan_run(..., resume=True)`: its folder holds the unfinished run it wrote)
and sends it again, so it continues from its last finished epoch (checkpoints/state.pt), up to
`RETRIES` times. A run that raises is not retried (it would raise again): it is returned as an error
that `experiments.execute` reports like a local run's, and the other runs go on.

On a cluster every node needs avgzsl (same version) installed, the data under the same path, and --out
on a file system that every node and the driver see (the driver reads finished runs for --resume).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import Any

from avgzsl.config import ConfigError

LOG = logging.getLogger("avgzsl")

RETRIES = 2  # re-sends of a run whose worker died (not of a run that raised)
START_TRIES = 60  # asks whether a restarting worker is up, START_WAIT seconds apart (a restart under load: seconds)
START_WAIT = 0.5
_ENV_PREFIX = "AVGZSL_"  # the driver's AVGZSL_* variables (cache dir, progress mode, test hooks) reach the workers

__all__ = ["RETRIES", "RunWorker", "connect", "prepare_jobs", "require_ray", "run_on_ray"]


def require_ray():
    """The ray module, or one error line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs the optional dependency ray: pip install 'avgzsl[ray]'") from None
    return ray


def _check_address(address: str) -> None:
    if "=" in address:  # argparse gave `--ray train.epochs=3` the override as its optional ADDRESS
        raise ConfigError(f"--ray took {address!r} as the cluster's address: put --ray after the overrides, or "
                          f"write --ray local")


def prepare_jobs(jobs: list, address: str, cpus_per_run: float, gpus_per_run: float) -> None:
    """Check the options (ray installed, the address, the resources) and put a run's resources in its
    config, before the run directories are planned (so that --resume compares the config it will save):
    torch threads = the run's CPUs where train.num_threads was left at 0, and train.device=cuda with a GPU
    (the actor's only visible one). No progress bars inside workers."""
    require_ray()
    _check_address(address)
    if cpus_per_run <= 0:
        raise ConfigError(f"--cpus-per-run must be more than 0, got {cpus_per_run}")
    if gpus_per_run < 0:
        raise ConfigError(f"--gpus-per-run must be 0 or more, got {gpus_per_run}")
    for job in jobs:
        t = job.cfg.train
        if t.num_threads == 0:
            t.num_threads = max(1, int(cpus_per_run))
        if gpus_per_run > 0:
            t.device = "cuda"
        elif t.device != "cpu":
            raise ConfigError(f"train.device={t.device} with --ray needs --gpus-per-run (e.g. 1): a Ray worker "
                              f"sees only the GPUs it was given")
        t.progress = False


def connect(address: str | None) -> bool:
    """Connect this process to Ray: a new local instance for None / "local", else the cluster at `address`
    ("auto": the one `ray start` runs on this machine; "host:6379"; "ray://host:10001").
    Returns whether this call started the connection (and so should end it); a process already connected
    (e.g. the caller ran ray.init itself) keeps its connection."""
    ray = require_ray()
    if ray.is_initialized():
        LOG.info("Ray: using this process's connection to %s", ray.get_runtime_context().gcs_address)
        return False
    target = "local" if address in (None, "local") else str(address)
    _check_address(target)
    try:
        ray.init(address=target, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"--ray {target}: cannot connect to a Ray cluster there ({first}); start one with "
                          f"`ray start --head`, or give no address for a local one") from None
    return True


class RunWorker:
    """A Ray actor: one worker process that runs protocol runs one after another.

    Its process's `experiments._WORKER_STORE` holds every benchmark it loaded, so each is loaded once
    for all the runs this worker gets (`stats` says how many loads that was)."""

    def __init__(self, cwd: str, env: dict[str, str]) -> None:
        os.environ.update(env)
        if os.path.isdir(cwd):  # relative --root / --out mean what they meant where the command ran
            os.chdir(cwd)
        self.runs = 0

    def ready(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid()}

    def run(self, job, resume: bool) -> dict:
        from avgzsl import experiments

        self.runs += 1
        return experiments._run_job(job, None, resume)

    def stats(self) -> dict:
        from avgzsl import experiments

        store = experiments._WORKER_STORE
        return {"host": socket.gethostname(), "pid": os.getpid(), "runs": self.runs,
                "loads": 0 if store is None else len(store._loaded)}  # the store loads each benchmark once


def _pool_size(ray, n_runs: int, cpus_per_run: float, gpus_per_run: float) -> int:
    total = ray.cluster_resources()
    cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
    fit = cpus / cpus_per_run
    if gpus_per_run > 0:
        fit = min(fit, gpus / gpus_per_run)
    n = min(n_runs, math.floor(fit + 1e-9))
    if n < 1:
        raise ConfigError(f"one run asks for {cpus_per_run:g} CPU(s) and {gpus_per_run:g} GPU(s), but the Ray "
                          f"cluster has {cpus:g} CPU(s) and {gpus:g} GPU(s) in all; lower --cpus-per-run / "
                          f"--gpus-per-run or add nodes")
    return n


def _restarting(exc: BaseException) -> bool:
    """Whether Ray says the actor is only unavailable for now (being restarted), not gone."""
    from ray.exceptions import ActorUnavailableError

    return isinstance(exc, ActorUnavailableError)


def run_on_ray(jobs: list, todo: list[int], plans: list[str], results: list[dict | None], *, address: str | None,
               cpus_per_run: float, gpus_per_run: float, on_result=None) -> list[tuple[int, BaseException]]:
    """Run jobs[i] for i in todo on Ray (plans[i]: "fresh" or "continue", from `plan_run`), filling
    results[i]; returns (i, exception) for each run that failed, after the others finished."""
    ray = require_ray()
    from ray.exceptions import RayError, RayTaskError

    from avgzsl.experiments import count_line, finished_line, plan_run, read_finished
    from avgzsl.progress import progress

    started = connect(address)
    actors: list[Any] = []
    try:
        n = _pool_size(ray, len(todo), cpus_per_run, gpus_per_run)
        env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIX)}
        # max_restarts: a worker that died comes back for the runs still to do; max_task_retries=0: the
        # driver re-sends a lost run itself, as "continue" (Ray would repeat the call as it was: "fresh").
        remote = ray.remote(RunWorker).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_restarts=-1,
                                               max_task_retries=0)
        actors = [remote.remote(os.getcwd(), env) for _ in range(n)]
        LOG.info("Ray: %d run(s) on %d worker(s) of %g CPU(s) and %g GPU(s) each", len(todo), n, cpus_per_run,
                 gpus_per_run)
        starting = {a.ready.remote(): a for a in actors}  # runs go only to workers that are up
        idle: list[Any] = []
        queue = list(todo)
        resume = {i: plans[i] == "continue" for i in todo}
        attempts = {i: 0 for i in todo}
        running: dict[Any, tuple[Any, int]] = {}
        errors: list[tuple[int, BaseException]] = []
        start_error = ""
        start_tries: dict[int, int] = {}
        t0 = time.perf_counter()
        done = 0
        bar = progress(total=len(todo), desc=f"runs (Ray, {n} at a time)", unit="run", every=60)
        while queue or running:
            while idle and queue:
                actor, i = idle.pop(), queue.pop(0)
                running[actor.run.remote(jobs[i], resume[i])] = (actor, i)
            if not running and not starting:
                raise ConfigError(f"no Ray worker of this experiment could start ({start_error}); is avgzsl, this "
                                  f"version, installed on every node?")
            (ref,), _ = ray.wait(list(running) + list(starting), num_returns=1)
            if ref in starting:
                actor = starting.pop(ref)
                try:
                    ray.get(ref)
                    idle.append(actor)
                except RayError as exc:
                    key = id(actor)
                    start_tries[key] = start_tries.get(key, 0) + 1
                    if _restarting(exc) and start_tries[key] <= START_TRIES:
                        # a killed worker being restarted answers "unavailable" for a moment: ask again
                        time.sleep(START_WAIT)
                        starting[actor.ready.remote()] = actor
                        continue
                    start_error = _reason(exc)  # could not be (re)started: the others carry on
                    LOG.warning("Ray: a worker could not start: %s", start_error)
                continue
            actor, i = running.pop(ref)
            job = jobs[i]
            try:
                res = ray.get(ref)
            except RayTaskError as exc:  # the run raised: it would raise again; report it
                cause = exc.cause if isinstance(exc.cause, Exception) else exc
                errors.append((i, cause))
                idle.append(actor)
                done += 1
                bar.update(1)
                bar.write(f"failed {job.run_dir}: {_reason(cause)} [{count_line(done, len(todo), t0)}]")
                continue
            except RayError as exc:  # the worker died (killed, out of memory, node lost): continue the run
                attempts[i] += 1
                why = _reason(exc)
                starting[actor.ready.remote()] = actor  # Ray restarts it; it takes runs again once it is up
                if attempts[i] > RETRIES:
                    errors.append((i, RuntimeError(f"its Ray worker died {attempts[i]} times (last: {why})")))
                    done += 1
                    bar.update(1)
                    bar.write(f"failed {job.run_dir}: its worker died {attempts[i]} times "
                              f"[{count_line(done, len(todo), t0)}]")
                    continue
                plan = _replan(plan_run, job)
                LOG.warning("Ray: the worker running %s died (%s); %s", job.run_dir, why,
                            {"continue": "continuing the run from its last epoch",
                             "fresh": "starting the run again", "reuse": "it had finished"}[plan])
                if plan != "reuse":
                    resume[i] = plan == "continue"
                    queue.insert(0, i)
                    continue
                res = read_finished(job.run_dir)
            results[i] = res
            idle.append(actor)
            done += 1
            bar.update(1)
            bar.write(finished_line(job, res, done, len(todo), t0))
            if on_result is not None:
                on_result(res)
        bar.close()
        try:
            stats = ray.get([a.stats.remote() for a in idle], timeout=60)  # every worker that is up is idle now
        except RayError:  # only for the log line below
            stats = []
        LOG.info("Ray: %d worker(s) ran %d run(s) with %d benchmark load(s) in all", len(stats),
                 sum(s["runs"] for s in stats), sum(s["loads"] for s in stats))
        return errors
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0]


def _replan(plan_run, job) -> str:
    """What to do with a run whose worker died: its folder holds what that worker wrote."""
    try:
        return plan_run(job.run_dir, job.cfg, resume=True)
    except ConfigError:
        # The folder still holds another config's run that this one was told to --overwrite: the worker died
        # before it started the run over.
        return "fresh"

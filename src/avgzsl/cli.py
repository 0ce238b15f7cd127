"""`avgzsl` command line: synth | run | evaluate | demo | ablate | sweep | table | ls."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

LOG = logging.getLogger("avgzsl")


# --- helpers ---------------------------------------------------------------------------------------
class _TqdmHandler(logging.StreamHandler):
    """Writes log lines through tqdm, so that they do not tear the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def _setup_logging(verbose: bool) -> None:
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    logger = logging.getLogger("avgzsl")
    logger.handlers = [h for h in logger.handlers if not isinstance(h, _TqdmHandler)]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _data_args(p: argparse.ArgumentParser, root_required: bool = True) -> None:
    p.add_argument("--dataset", default="UCF", help="UCF, ActivityNet or VGGSound (selects the YAML config)")
    p.add_argument("--root", required=root_required, help="the dataset folder holding class-split/ and features/")
    p.add_argument("--features", default=None, choices=["main", "cls"], help="feature set (default: config)")
    p.add_argument("--split", default=None, choices=["main_split", "cls_split"], help="class split (default: config)")
    p.add_argument("--temporal", action="store_true", help="per-second features (TCaF layout)")
    p.add_argument("--legacy-text-order", action="store_true",
                   help="reproduce the reference loaders' text-embedding misalignment")
    p.add_argument("--cache-dir", default=None, help="cache loaded tensors here (keyed by files and options)")
    p.add_argument("--config", default=None, help="extra YAML merged over configs/<dataset>/<method>.yaml")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished runs with the same config under --out instead of training them again")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.epochs=15 method.embedding_dropout=0.1")


def _data_overrides(args) -> list[str]:
    out = [f"data.root={args.root}"] if getattr(args, "root", None) else []
    if args.features:
        out.append(f"data.feature_set={args.features}")
    if args.split:
        out.append(f"data.split={args.split}")
    if args.temporal:
        out.append("data.temporal=true")
    if args.legacy_text_order:
        out.append("data.legacy_text_order=true")
    if args.cache_dir:
        out.append(f"data.cache_dir={args.cache_dir}")
    if args.quiet:
        out.append("train.progress=false")
    return out


def _load(cfg):
    from avgzsl.data.loading import load_benchmark

    t0 = time.perf_counter()
    bench = load_benchmark(cfg.data, progress=cfg.train.progress)
    LOG.info("loaded %s in %.1f s", bench.name, time.perf_counter() - t0)
    return bench


def _print_run(results: dict) -> None:
    from avgzsl.reports import scores_table

    val = dict(results["val"])
    test = dict(results["test"], beta=results["beta"])
    print(scores_table({"val": val, "test": test},
                       f"{results['method']} on {results['dataset']} (seed {results['seed']}, "
                       f"best epoch {results['best_epoch']}, {results['seconds']['total']:.0f} s)"))


# --- commands --------------------------------------------------------------------------------------
def cmd_synth(args) -> int:
    from avgzsl.data.synth import generate_benchmark

    kwargs = {} if args.difficulty is None else {"difficulty": args.difficulty}
    path = generate_benchmark(args.out, source=args.source, dataset=args.name, scale=args.scale, seed=args.seed,
                              temporal=not args.no_temporal, progress=not args.quiet, **kwargs)
    print(f"wrote synthetic benchmark to {path}")
    return 0


# Settings that do not change what a run computes: a finished run may be reused across them.
_RESUME_IGNORES = {"train.progress", "train.num_threads", "data.cache_dir"}


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _finished_run(run_dir: Path, cfg) -> dict | None:
    """results.json of a finished run in run_dir made with the same config (--resume), else None.

    A finished run with another config is an error, not silently mixed into a table.
    """
    from avgzsl.config import ConfigError, load_yaml_text
    from avgzsl.runs import RunDir

    run = RunDir(run_dir)
    if not run.results_file.exists():
        return None
    saved = _flatten(load_yaml_text(run.config_file.read_text()))
    wanted = _flatten(cfg.to_dict())
    differ = sorted(k for k in saved.keys() | wanted.keys()
                    if k not in _RESUME_IGNORES and saved.get(k) != wanted.get(k))
    if differ:
        raise ConfigError(f"--resume: {run_dir} holds a finished run with another config (differs in "
                          f"{', '.join(differ)}); choose another --out")
    return json.loads(run.results_file.read_text())


def _run_seeds(method: str, dataset: str, overrides: list[str], seeds: list[int], out: Path, config_file=None,
               label: str | None = None, bench_cache: dict | None = None, seed_dirs: bool | None = None,
               resume: bool = False) -> list[dict]:
    """Run the protocol once per seed; runs go to out/seed<N> (or to out itself for a single plain run).

    resume: reuse a seed's finished run (same config) instead of training it again, so an interrupted
    job continues where it stopped and several processes can share one output folder.
    """
    from avgzsl.config import build_config
    from avgzsl.protocol import run_protocol

    results = []
    cache = bench_cache if bench_cache is not None else {}  # one load serves every seed
    for seed in seeds:
        cfg = build_config(method, dataset, overrides, config_file)
        cfg.seed = seed
        run_dir = out / f"seed{seed}" if (len(seeds) > 1 if seed_dirs is None else seed_dirs) else out
        res = _finished_run(run_dir, cfg) if resume else None
        if res is not None:
            LOG.info("reusing the finished run %s", run_dir)
        else:
            key = json.dumps(cfg.to_dict()["data"], sort_keys=True)
            if key not in cache:
                cache[key] = _load(cfg)
            res = run_protocol(cfg, cache[key], run_dir, label=label)
        _print_run(res)
        results.append(res)
    return results


def cmd_run(args) -> int:
    out = Path(args.out or f"runs/{args.method}-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    seeds = args.seeds if args.seeds else [args.seed]
    results = _run_seeds(args.method, args.dataset, _data_overrides(args) + args.overrides, seeds, out, args.config,
                         label=args.label, resume=args.resume)
    if len(results) > 1:
        from avgzsl.reports import aggregate, markdown_table

        print(markdown_table(aggregate(results)))
    print(f"run directory: {out}")
    return 0


def cmd_evaluate(args) -> int:
    """Re-score a finished run: load its config and the stage-2 checkpoint, score test (and val)."""
    import torch

    from avgzsl.config import config_from_dict, load_yaml_text
    from avgzsl.protocol import build_method, score_phase
    from avgzsl.reports import scores_table
    from avgzsl.runs import RunDir

    run = RunDir(args.run_dir)
    if not run.config_file.exists():
        print(f"error: {run.config_file} not found: is {args.run_dir} a run directory?", file=sys.stderr)
        return 2
    cfg = config_from_dict(load_yaml_text(run.config_file.read_text()))
    if args.root:
        cfg.data.root = args.root
    cfg.train.progress = False
    ckpt_path = run.checkpoints / f"{args.checkpoint}.pt"
    if not ckpt_path.exists():
        print(f"error: checkpoint {ckpt_path} not found (was the run made with train.save_checkpoints=none?)",
              file=sys.stderr)
        return 2
    bench = _load(cfg)
    method = build_method(cfg, bench)
    state = torch.load(ckpt_path, map_location=cfg.train.device, weights_only=True)
    method.load_state_dict(state["model"])
    results = run.read_results() if run.results_file.exists() else {}
    beta = args.beta if args.beta is not None else results.get("beta")
    rows = {}
    searched = score_phase(method, bench.phases["test"], bench, cfg)
    if beta is not None:
        fixed = score_phase(method, bench.phases["test"], bench, cfg, torch.tensor([float(beta)], dtype=torch.float64))
        rows["test"] = fixed.to_dict()
    rows["test*"] = searched.to_dict()
    print(scores_table(rows, f"{ckpt_path} (test: beta of stage 1; test*: beta searched on test, for reference only)"))
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def cmd_demo(args) -> int:
    from avgzsl.config import build_config
    from avgzsl.data.loading import load_benchmark
    from avgzsl.data.synth import generate_benchmark
    from avgzsl.protocol import run_protocol

    out = Path(args.out)
    t0 = time.perf_counter()
    root = generate_benchmark(out / "data", source=None, dataset="Synthetic", scale=args.scale, seed=0,
                              temporal=False, progress=not args.quiet)
    overrides = [f"data.root={root}", "data.dataset=Synthetic", f"train.epochs={args.epochs}",
                 f"train.n_batches={args.batches}", "train.save_checkpoints=best"]
    if args.quiet:
        overrides.append("train.progress=false")
    cfg = build_config(args.method, "UCF", overrides)
    bench = load_benchmark(cfg.data, progress=not args.quiet)
    res = run_protocol(cfg, bench, out / "run")
    _print_run(res)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; run directory: {out / 'run'}")
    return 0


def cmd_ablate(args) -> int:
    from avgzsl.methods.daan import ablation_variants
    from avgzsl.reports import aggregate, markdown_table

    out = Path(args.out)
    base = _data_overrides(args) + args.overrides
    variants = ablation_variants()
    names = args.variants or list(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:  # before any training, not after hours of it
        print(f"error: unknown variant(s) {', '.join(unknown)}; known: {', '.join(variants)}", file=sys.stderr)
        return 2
    cache: dict = {}
    results = []
    if args.baseline:
        # --config holds DAAN settings: the baseline runs on its own YAML
        results += _run_seeds(args.baseline, args.dataset, base, args.seeds, out / args.baseline, label=args.baseline,
                              bench_cache=cache, seed_dirs=True, resume=args.resume)
    for name in names:
        extra = [f"method.{k}={json.dumps(v)}" for k, v in variants[name].items()]
        results += _run_seeds("daan", args.dataset, base + extra, args.seeds, out / name.replace("+", "_"),
                              args.config, label=name, bench_cache=cache, seed_dirs=True, resume=args.resume)
    table = markdown_table(aggregate(results), title=f"Ablation on {args.dataset} (test, mean ± std over seeds "
                                                      f"{' '.join(map(str, args.seeds))})")
    (out / "ablation.md").write_text(table)
    print(table)
    return 0


def cmd_sweep(args) -> int:
    from avgzsl.config import load_yaml_text
    from avgzsl.reports import aggregate, plot_sweep, write_csv

    out = Path(args.out)
    base = _data_overrides(args) + args.overrides
    cache: dict = {}
    rows = []
    for value in args.values:
        parsed = load_yaml_text(value)
        res = _run_seeds(args.method, args.dataset, base + [f"{args.key}={value}"], args.seeds,
                         out / f"{args.key}={value}", args.config, label=f"{args.key}={value}", bench_cache=cache,
                         seed_dirs=True, resume=args.resume)
        (row,) = aggregate(res)
        row["value"] = parsed
        rows.append(row)
    write_csv(rows, out / "sweep.csv", extra=("value",))
    plot_sweep(rows, args.key, out / "sweep.png", title=f"{args.method} on {args.dataset}: {args.key}")
    print(f"wrote {out / 'sweep.csv'} and {out / 'sweep.png'}")
    return 0


def cmd_table(args) -> int:
    from avgzsl.reports import aggregate, load_results, markdown_table, per_seed_table

    results = load_results(args.paths)
    if not results:
        print(f"error: no results.json under {' '.join(args.paths)}", file=sys.stderr)
        return 2
    print(markdown_table(aggregate(results, args.group_by)))
    if args.per_seed:
        print(per_seed_table(results, args.group_by))
    return 0


def cmd_ls(args) -> int:
    from avgzsl.methods import list_methods

    print("\n".join(list_methods()))
    return 0


# --- parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avgzsl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch to the console")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic benchmark in the real on-disk layout")
    p.add_argument("--out", required=True, help="output folder (the dataset folder is created inside)")
    p.add_argument("--source", default=None, help="a real class-split folder's parent, e.g. ../shared/benchmarks/UCF")
    p.add_argument("--name", default=None, help="dataset name (default: the source folder's name, or Synthetic)")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the real per-class sample counts")
    p.add_argument("--difficulty", type=float, default=None, help="0..1: class appearance not explained by text")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-temporal", action="store_true", help="skip the per-second (TCaF) files")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("run", help="run the two-stage protocol for one method")
    p.add_argument("--method", default="avca")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds, one run directory each")
    p.add_argument("--out", default=None, help="run directory (default runs/<method>-<dataset>-<time>)")
    p.add_argument("--label", default=None, help="row name in tables (default: the method name)")
    _data_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("evaluate", help="re-score a finished run from its checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--root", default=None, help="dataset folder, if it moved since the run")
    p.add_argument("--checkpoint", default="stage2_test", help="checkpoint name under checkpoints/")
    p.add_argument("--beta", type=float, default=None, help="calibration (default: the run's stage-1 beta)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="synthetic benchmark + full protocol with AVCA, no outside files")
    p.add_argument("--out", default="avgzsl-demo")
    p.add_argument("--method", default="avca")
    p.add_argument("--scale", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batches", type=int, default=80)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ablate", help="DAAN's Table II variants (and a baseline) over seeds -> markdown table")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=None, help="subset of: base base+qdma base+qdma+csgm_vc daan")
    p.add_argument("--baseline", default="avca", help="a method to add as a row ('' for none)")
    p.add_argument("--out", default="runs/ablation")
    _data_args(p)
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("sweep", help="sweep one config key over values and seeds -> CSV + Figure-3 style PNG")
    p.add_argument("--method", default="daan")
    p.add_argument("--key", required=True, help="e.g. method.tcn_layers or method.gamma")
    p.add_argument("--values", nargs="+", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/sweep")
    _data_args(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("table", help="markdown table (mean ± std over seeds) of finished runs")
    p.add_argument("paths", nargs="+", help="run directories or folders of runs")
    p.add_argument("--group-by", default="label", help="results.json field that names a row (label or method)")
    p.add_argument("--per-seed", action="store_true", help="also one row per run (seed, best epoch, beta, scores)")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("ls", help="list the registered methods")
    p.set_defaults(func=cmd_ls)
    return parser


def main(argv: list[str] | None = None) -> int:
    from avgzsl.config import ConfigError

    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, KeyError, ValueError) as exc:
        # Data and config problems: say what is wrong (the message names the file/key), no traceback.
        if args.verbose:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

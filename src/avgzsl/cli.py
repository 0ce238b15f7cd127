"""`avgzsl` command line: a thin layer over `avgzsl.experiments` (run, ablate, sweep, compare, evaluate),
the synthetic benchmark generator and the reports.

Commands: synth | run | evaluate | demo | ablate | sweep | compare | table | ls.
Every error a user can cause ends in one `error: ...` line and exit code 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from avgzsl import __version__

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
    p.add_argument("--dataset", default="UCF", help="UCF, ActivityNet or VGGSound: selects configs/<dataset>/<method>.yaml")
    p.add_argument("--root", required=root_required, help="the dataset folder holding class-split/ and features/")
    p.add_argument("--features", default=None,
                   help="feature set: main, cls or your own <name> (folder features/<name>_features) (default: config)")
    p.add_argument("--split", default=None, choices=["main_split", "cls_split"], help="class split (default: config)")
    p.add_argument("--temporal", action="store_true", help="per-second features (TCaF layout)")
    p.add_argument("--legacy-text-order", action="store_true",
                   help="reproduce the reference loaders' text-embedding misalignment")
    p.add_argument("--cache-dir", default=None, help="cache loaded tensors here (keyed by files and options)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished runs with the same config under --out instead of training them again")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once, in worker processes that split the cores between them")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.epochs=15 method.embedding_dropout=0.1")


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="extra YAML merged over configs/<dataset>/<method>.yaml")


def _overrides(args) -> list[str]:
    """The data options of the command line as overrides, then the user's own (which win)."""
    out = []
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
    return out + list(args.overrides)


def _print_run(results: dict) -> None:
    from avgzsl.reports import scores_table

    val = dict(results["val"])
    test = dict(results["test"], beta=results["beta"])
    print(scores_table({"val": val, "test": test},
                       f"{results.get('label') or results['method']} on {results['dataset']} (seed {results['seed']}, "
                       f"best epoch {results['best_epoch']}, {results['seconds']['total']:.0f} s)"))


# --- commands --------------------------------------------------------------------------------------
def cmd_synth(args) -> int:
    from avgzsl.data.synth import generate_benchmark

    kwargs = {} if args.difficulty is None else {"difficulty": args.difficulty}
    path = generate_benchmark(args.out, source=args.source, like=args.like, dataset=args.name, scale=args.scale,
                              seed=args.seed, temporal=not args.no_temporal, progress=not args.quiet, **kwargs)
    print(f"wrote synthetic benchmark to {path}")
    return 0


def cmd_run(args) -> int:
    from avgzsl import experiments
    from avgzsl.reports import aggregate, markdown_table

    out = Path(args.out or f"runs/{args.method}-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    results = experiments.run(args.method, args.dataset, args.root, seeds=args.seeds or [args.seed], out=out,
                              overrides=_overrides(args), config_file=args.config, label=args.label,
                              resume=args.resume, jobs=args.jobs, on_result=_print_run)
    if len(results) > 1:
        print(markdown_table(aggregate(results)))
    print(f"run directory: {out}")
    return 0


def cmd_evaluate(args) -> int:
    from avgzsl import experiments
    from avgzsl.reports import scores_table

    scores = experiments.evaluate(args.run_dir, root=args.root, checkpoint=args.checkpoint, beta=args.beta)
    if args.json:
        print(json.dumps(scores, indent=2))
        return 0
    rows = {k: v for k, v in scores.items() if k != "checkpoint"}
    print(scores_table(rows, f"{scores['checkpoint']} (test: beta of stage 1; test*: beta searched on test, "
                             f"for reference only)"))
    return 0


def cmd_demo(args) -> int:
    from avgzsl import experiments
    from avgzsl.data.synth import generate_benchmark

    out = Path(args.out)
    t0 = time.perf_counter()
    root = generate_benchmark(out / "data", source=None, dataset="Synthetic", scale=args.scale, seed=0,
                              temporal=False, progress=not args.quiet)
    overrides = ["data.dataset=Synthetic", f"train.epochs={args.epochs}", f"train.n_batches={args.batches}",
                 "train.save_checkpoints=best"] + (["train.progress=false"] if args.quiet else [])
    experiments.run(args.method, "UCF", root, out=out / "run", overrides=overrides, on_result=_print_run)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; run directory: {out / 'run'}")
    return 0


def cmd_ablate(args) -> int:
    from avgzsl import experiments
    from avgzsl.reports import markdown_table

    rows = experiments.ablate(args.method, args.dataset, args.root, variants=args.variants, baselines=args.baseline,
                              seeds=args.seeds, out=args.out, overrides=_overrides(args), config_file=args.config,
                              resume=args.resume, reference=args.reference, jobs=args.jobs, on_result=_print_run)
    print(markdown_table(rows))
    print(f"wrote {Path(args.out) / 'ablation.md'}")
    return 0


def cmd_sweep(args) -> int:
    from avgzsl import experiments

    experiments.sweep(args.method, args.key, args.values, args.dataset, args.root, seeds=args.seeds, out=args.out,
                      overrides=_overrides(args), config_file=args.config, resume=args.resume, jobs=args.jobs,
                      on_result=_print_run)
    out = Path(args.out)
    print(f"wrote {out / 'sweep.csv'} and {out / 'sweep.png'}")
    return 0


def cmd_compare(args) -> int:
    from avgzsl import experiments
    from avgzsl.reports import compare_markdown

    report = experiments.compare(args.methods, args.dataset, args.root, seeds=args.seeds, out=args.out,
                                 overrides=_overrides(args), resume=args.resume, reference=args.reference or None,
                                 jobs=args.jobs,
                                 on_result=_print_run)
    print(compare_markdown(report))
    out = Path(args.out)
    print(f"wrote {out / 'compare.md'} and {out / 'compare.json'}")
    return 0


def cmd_table(args) -> int:
    from avgzsl.reports import add_differences, aggregate, load_results, markdown_table, per_seed_table, row_name

    results = load_results(args.paths)
    if not results:
        raise FileNotFoundError(f"no results.json under {' '.join(args.paths)}")
    rows = aggregate(results, args.group_by)
    if args.reference:
        groups: dict[str, list[dict]] = {}
        for r in results:
            groups.setdefault(row_name(r, args.group_by), []).append(r)
        add_differences(rows, groups, args.reference)
    print(markdown_table(rows))
    if args.per_seed:
        print(per_seed_table(results, args.group_by))
    return 0


def cmd_ls(args) -> int:
    from avgzsl.methods import get_method, list_methods

    for name in list_methods():
        cls = get_method(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:<10} {'/'.join(cls.feature_kinds):<18} {doc}")
    return 0


# --- parser ----------------------------------------------------------------------------------------
class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, where it has one that the help text does not already state."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or "default" in text or not action.option_strings:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from avgzsl.methods import list_methods

    methods = list_methods()
    parser = argparse.ArgumentParser(prog="avgzsl", description=__doc__.split("\n\n")[0], formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"avgzsl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch to the console")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, formatter_class=_Help)

    from avgzsl.data.packaged import available

    p = add("synth", "write a synthetic benchmark in the real on-disk layout")
    p.add_argument("--out", required=True, help="output folder (the dataset folder is created inside)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--like", default=None, choices=available(),
                       help="a real benchmark packaged with avgzsl: its class splits, text and per-class counts")
    shape.add_argument("--source", default=None, help="a real benchmark folder to take class splits, text and "
                                                      "counts from, e.g. ../shared/benchmarks/UCF")
    p.add_argument("--name", default=None, help="dataset name (default: the source folder's name, or Synthetic)")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the real per-class sample counts")
    p.add_argument("--difficulty", type=float, default=None, help="0..1: class appearance not explained by text "
                                                                  "(default 0.75)")
    p.add_argument("--seed", type=int, default=0, help="everything is a function of the seed")
    p.add_argument("--no-temporal", action="store_true", help="skip the per-second (TCaF) files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    p = add("run", "run the two-stage protocol for one method (one run directory per seed)")
    p.add_argument("--method", default="avca", choices=methods, help="a registered method (avgzsl ls)")
    p.add_argument("--seed", type=int, default=0, help="the seed of a single run")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds, one run directory each")
    p.add_argument("--out", default=None, help="run directory (default runs/<method>-<dataset>-<time>)")
    p.add_argument("--label", default=None, help="row name in tables (default: the method name)")
    _config_arg(p)
    _data_args(p)
    p.set_defaults(func=cmd_run)

    p = add("evaluate", "re-score a finished run from its checkpoint")
    p.add_argument("run_dir", help="a run directory (holds config.yaml and checkpoints/)")
    p.add_argument("--root", default=None, help="dataset folder, if it moved since the run")
    p.add_argument("--checkpoint", default="stage2_test", help="checkpoint name under checkpoints/ (.pt optional)")
    p.add_argument("--beta", type=float, default=None, help="calibration (default: the run's stage-1 beta)")
    p.add_argument("--json", action="store_true", help="print only the scores as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = add("demo", "synthetic benchmark + the full protocol with one method, no outside files")
    p.add_argument("--out", default="avgzsl-demo", help="folder for the benchmark and the run")
    p.add_argument("--method", default="avca", choices=methods, help="a registered method")
    p.add_argument("--scale", type=float, default=0.5, help="benchmark size relative to UCF")
    p.add_argument("--epochs", type=int, default=5, help="epochs per stage")
    p.add_argument("--batches", type=int, default=80, help="batches per epoch")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = add("ablate", "a method's ablation variants (and baselines) over seeds -> ablation.md / .json")
    p.add_argument("--method", default="daan", choices=methods, help="the method whose variants to run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of every row")
    p.add_argument("--variants", nargs="+", default=None, help="a subset of the method's variants (default: all)")
    p.add_argument("--baseline", nargs="*", default=None,
                   help="methods added as rows at their own configs (default: the method's, DAAN: avca linear)")
    p.add_argument("--out", default="runs/ablation", help="output folder (one subfolder per row)")
    p.add_argument("--reference", default=None,
                   help="row that every other row is compared with, paired over seeds (default: the first variant)")
    _config_arg(p)
    _data_args(p)
    p.set_defaults(func=cmd_ablate)

    p = add("sweep", "sweep one config key over values and seeds -> sweep.csv + Figure-3 style sweep.png")
    p.add_argument("--method", default="daan", choices=methods, help="a registered method")
    p.add_argument("--key", required=True, help="e.g. method.tcn_layers or method.gamma")
    p.add_argument("--values", nargs="+", required=True, help="values of the key (YAML scalars)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of every value")
    p.add_argument("--out", default="runs/sweep", help="output folder (one subfolder per value)")
    _config_arg(p)
    _data_args(p)
    p.set_defaults(func=cmd_sweep)

    p = add("compare", "several methods at their reference configs over seeds -> compare.md / .json")
    p.add_argument("--methods", nargs="+", default=methods, choices=methods, help="registered methods")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of every method")
    p.add_argument("--out", default="runs/compare", help="output folder (one subfolder per method)")
    p.add_argument("--reference", default="linear",
                   help="method that every other is compared with, paired over seeds ('' for none)")
    _data_args(p)
    p.set_defaults(func=cmd_compare)

    p = add("table", "markdown table (mean ± std over seeds) of finished runs")
    p.add_argument("paths", nargs="+", help="run directories or folders of runs")
    p.add_argument("--group-by", default="label", help="results.json field that names a row (label or method)")
    p.add_argument("--per-seed", action="store_true", help="also one row per run (seed, best epoch, beta, scores)")
    p.add_argument("--reference", default=None,
                   help="row that every other row is compared with, paired over seeds (95 %% interval)")
    p.set_defaults(func=cmd_table)

    p = add("ls", "list the registered methods and the feature kinds they take")
    p.set_defaults(func=cmd_ls)
    return parser


def main(argv: list[str] | None = None) -> int:
    from avgzsl.config import ConfigError

    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, FileExistsError, KeyError, ValueError) as exc:
        # Data and config problems: say what is wrong (the message names the file/key), no traceback.
        if args.debug:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`avgzsl` command line: a thin layer over `avgzsl.experiments` (run, ablate, sweep, compare, evaluate),
the synthetic benchmark generator and the reports.

Commands: synth | extract | embed-classes | run | evaluate | demo | ablate | sweep | compare | table
| ceo | ls.
Every error a user can cause ends in one `error: ...` line and exit code 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import sys
import time
from pathlib import Path

import yaml

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
                   help="reuse finished runs with the same config under --out and continue unfinished ones from "
                        "their last epoch")
    p.add_argument("--overwrite", action="store_true",
                   help="start runs again whose folders under --out hold earlier runs (else that is an error)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once, in worker processes that split the cores between them")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="every run a task of a Ray cluster (pip install 'avgzsl[ray]'): a local one without "
                        "ADDRESS, else the cluster at ADDRESS (auto, host:6379); put it after the overrides")
    p.add_argument("--cpus-per-run", type=float, default=None,
                   help="with --ray: CPUs of each run, also its torch threads (default 1)")
    p.add_argument("--gpus-per-run", type=float, default=None,
                   help="with --ray: GPUs of each run (default 0; > 0 trains on cuda, fractions share a GPU)")
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


def _ray_args(args) -> dict:
    """--ray / --cpus-per-run / --gpus-per-run as keywords of the experiments API (checked there)."""
    return {"ray": args.ray, "cpus_per_run": args.cpus_per_run, "gpus_per_run": args.gpus_per_run}


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
    if args.gain is not None:
        kwargs["gain"] = args.gain
    path = generate_benchmark(args.out, source=args.source, like=args.like, dataset=args.name, scale=args.scale,
                              seed=args.seed, temporal=not args.no_temporal, progress=not args.quiet, **kwargs)
    print(f"wrote synthetic benchmark to {path}")
    return 0


def _needs_extract_extra() -> None:
    """A missing optional dependency of extract / embed-classes is a user error (one line, exit 2)."""
    for mod in ("transformers", "av"):
        try:
            __import__(mod)
        except ImportError:
            raise ValueError(f"this command needs the optional dependency {mod!r}: "
                             f"pip install 'avgzsl[extract]'") from None


def cmd_extract(args) -> int:
    from avgzsl.extract import ExtractOptions, extract

    _needs_extract_extra()

    opts = ExtractOptions(
        feature_set=args.features, clip_model=args.clip_model, clap_model=args.clap_model,
        local_files_only=args.local_files_only, device=args.device, batch_size=args.batch_size,
        batch_videos=args.batch_videos, workers=args.workers, temporal=not args.no_temporal,
        video_average=args.video_average, audio_average=args.audio_average, clip_seconds=args.clip_seconds,
        missing_stream=args.missing_stream, retry_failed=args.retry_failed, restart=args.restart,
        progress=not args.quiet)
    report = extract(args.out, class_split=args.class_split, videos=args.videos, videos_csv=args.videos_csv,
                     name_map=args.name_map, dataset=args.dataset, split=args.split, options=opts)
    run = report["manifest"]["run"]
    print(f"{report['videos_in_benchmark']} of {report['videos_listed']} videos in the benchmark at "
          f"{args.out} "
          f"({run['videos_computed']} extracted now, {run['videos_reused']} reused; "
          f"{len(report['skipped'])} left out, {len(report['zero_filled'])} zero-filled streams: "
          f"{report['report_file']})")
    if report["empty_classes"]:
        shown = ", ".join(f"{e['subsplit']}/{e['class']}" for e in report["empty_classes"][:10])
        raise ValueError(f"{len(report['empty_classes'])} class file(s) could not be written, the loader "
                         f"will refuse the benchmark: {shown} (reasons in {report['report_file']})")
    return 0


def cmd_embed_classes(args) -> int:
    from avgzsl.extract.text import embed_benchmark_classes, read_templates

    _needs_extract_extra()

    info = embed_benchmark_classes(
        args.root, dataset=args.dataset, feature_set=args.features, out=args.out, names_file=args.names,
        encoder=args.encoder, prompts=args.prompts, clip_model=args.clip_model, clap_model=args.clap_model,
        clip_templates=read_templates(args.clip_templates) if args.clip_templates else None,
        clap_templates=read_templates(args.clap_templates) if args.clap_templates else None,
        local_files_only=args.local_files_only, device=args.device)
    print(f"wrote {info['classes']} class embeddings ({info['encoder']}, {info['dim']}-d, "
          f"prompts {info['prompts']}) to {info['path']}")
    return 0


def cmd_run(args) -> int:
    from avgzsl import experiments
    from avgzsl.reports import aggregate, markdown_table

    out = Path(args.out or f"runs/{args.method}-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    results = experiments.run(args.method, args.dataset, args.root, seeds=args.seeds or [args.seed], out=out,
                              overrides=_overrides(args), config_file=args.config, label=args.label,
                              resume=args.resume, overwrite=args.overwrite, jobs=args.jobs, on_result=_print_run,
                              **_ray_args(args))
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
    from avgzsl.runs import RunDir

    out = Path(args.out)
    t0 = time.perf_counter()
    if RunDir(out / "run", create=False).holds_run() and not args.overwrite:  # before writing anything
        raise FileExistsError(f"{out / 'run'} holds the run of an earlier demo; pass --overwrite to replace it, "
                              f"or choose another --out")
    root = generate_benchmark(out / "data", source=None, dataset="Synthetic", scale=args.scale, seed=0,
                              temporal=False, progress=not args.quiet)
    overrides = ["data.dataset=Synthetic", f"train.epochs={args.epochs}", f"train.n_batches={args.batches}",
                 "train.save_checkpoints=best"] + (["train.progress=false"] if args.quiet else [])
    experiments.run(args.method, "UCF", root, out=out / "run", overrides=overrides, overwrite=args.overwrite,
                    on_result=_print_run)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; run directory: {out / 'run'}")
    return 0


def cmd_ablate(args) -> int:
    from avgzsl import experiments
    from avgzsl.reports import markdown_table

    rows = experiments.ablate(args.method, args.dataset, args.root, variants=args.variants, baselines=args.baseline,
                              seeds=args.seeds, out=args.out, overrides=_overrides(args), config_file=args.config,
                              resume=args.resume, overwrite=args.overwrite, reference=args.reference, jobs=args.jobs,
                              on_result=_print_run, **_ray_args(args))
    print(markdown_table(rows))
    print(f"wrote {Path(args.out) / 'ablation.md'}")
    return 0


def cmd_sweep(args) -> int:
    from avgzsl import experiments

    experiments.sweep(args.method, args.key, args.values, args.dataset, args.root, seeds=args.seeds, out=args.out,
                      overrides=_overrides(args), config_file=args.config, resume=args.resume,
                      overwrite=args.overwrite, jobs=args.jobs, **_ray_args(args),
                      on_result=_print_run)
    out = Path(args.out)
    print(f"wrote {out / 'sweep.csv'} and {out / 'sweep.png'}")
    return 0


def cmd_compare(args) -> int:
    from avgzsl import experiments
    from avgzsl.reports import compare_markdown

    report = experiments.compare(args.methods, args.dataset, args.root, seeds=args.seeds, out=args.out,
                                 overrides=_overrides(args), resume=args.resume, overwrite=args.overwrite,
                                 reference=args.reference or None,
                                 jobs=args.jobs, **_ray_args(args),
                                 on_result=_print_run)
    print(compare_markdown(report))
    out = Path(args.out)
    print(f"wrote {out / 'compare.md'} and {out / 'compare.json'}")
    return 0


def cmd_table(args) -> int:
    from avgzsl.reports import add_differences, aggregate, group_runs, load_results, markdown_table, per_seed_table

    results = load_results(args.paths)
    if not results:
        raise FileNotFoundError(f"no results.json under {' '.join(args.paths)}")
    rows = aggregate(results, args.group_by)
    if args.reference:
        add_differences(rows, group_runs(results, args.group_by), args.reference)
    print(markdown_table(rows))
    if args.per_seed:
        print(per_seed_table(results, args.group_by))
    return 0


def cmd_ceo(args) -> int:
    import dataclasses

    import torch

    from avgzsl.ceo import ceo, class_text
    from avgzsl.config import CEOConfig, ConfigError, DataConfig, _check_ceo, parse_overrides, update_dataclass

    tree = parse_overrides(args.overrides)
    extra = {k: v for k, v in tree.items() if k != "data"}
    extra.update({f"data.{k}": v for k, v in tree.get("data", {}).items() if k != "ceo"})
    if extra:
        raise ConfigError(f"avgzsl ceo takes data.ceo.<key>=value settings only, got {', '.join(extra)}")
    settings = update_dataclass(CEOConfig(), tree.get("data", {}).get("ceo", {}), "data.ceo")
    _check_ceo(settings)
    dataset = args.dataset or (Path(args.root).name if args.root else None) or "UCF"
    cfg = DataConfig(dataset=dataset, root=args.root or "", feature_set=args.features, temporal=args.temporal,
                     legacy_text_order=args.legacy_text_order, cache_dir=args.cache_dir)
    names, text = class_text(cfg, like=args.like)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache_dir).expanduser() / "ceo" if args.cache_dir else None
    res = ceo(text, settings, cache, use_cache=not args.no_cache)
    f = res.figures
    source = f"packaged {args.like}" if args.like else str(args.root)
    print(f"CEO on {args.like or dataset} ({len(names)} classes, {text.shape[1]}-d text, {source}): "
          f"{f['triplets_per_step']:,} triplets per step ({f['triplets']}), {f['seconds']:.1f} s"
          + (" (cached: the time of the original optimisation)" if f["cache_hit"] else ""))
    print(f"{'':<22}{'before':>9}{'after':>9}")
    print(f"{'min NN distance':<22}{f['min_nn_before']:>9.3f}{f['min_nn_after']:>9.3f}")
    print(f"{'mean NN distance':<22}{f['mean_nn_before']:>9.3f}{f['mean_nn_after']:>9.3f}")
    print(f"Spearman correlation of pairwise distances, text vs CEO: {f['spearman']:.3f}")
    if args.out:
        doc = {"dataset": args.like or dataset, "source": source, "classes": len(names), "text_dim": int(text.shape[1]),
               "settings": dataclasses.asdict(settings), **f}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.out}")
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
    p.add_argument("--gain", type=float, default=None, help="tanh gain of the random text-to-feature map (default "
                                                            "1.5); larger makes features a less linear function of text")
    p.add_argument("--seed", type=int, default=0, help="everything is a function of the seed")
    p.add_argument("--no-temporal", action="store_true", help="skip the per-second (TCaF) files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    from avgzsl.extract.encoders import DEFAULT_CLAP, DEFAULT_CLIP

    p = add("extract", "videos + a class split -> a benchmark: CLIP (video) / CLAP (audio) features, "
                       "averaged and per second (needs pip install 'avgzsl[extract]')")
    p.add_argument("--out", required=True, help="the benchmark folder to write (class-split/ and features/)")
    p.add_argument("--class-split", default=None,
                   help="a benchmark's class-split/ folder (with its per-split csvs)")
    p.add_argument("--videos", default=None,
                   help="folder of the video files (found by file stem, recursively); "
                        "with --videos-csv: the base of relative paths")
    p.add_argument("--videos-csv", default=None,
                   help="instead of --class-split: a csv of video,class,subsplit[,id]")
    p.add_argument("--name-map", default=None,
                   help="with --videos-csv: a csv original,manual of the classes' text names "
                        "(default: the class names)")
    p.add_argument("--dataset", default=None,
                   help="dataset name: file prefixes (default: the --out folder's name)")
    p.add_argument("--split", default="main_split", choices=["main_split", "cls_split"],
                   help="class split to read / write")
    p.add_argument("--features", default="clip", help="feature set name: folder features/<name>_features")
    p.add_argument("--clip-model", default=DEFAULT_CLIP, help="CLIP checkpoint: hub name or local folder")
    p.add_argument("--clap-model", default=DEFAULT_CLAP, help="CLAP checkpoint: hub name or local folder")
    p.add_argument("--local-files-only", action="store_true", help="never download model files")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=64, help="frames / audio clips per forward pass")
    p.add_argument("--batch-videos", type=int, default=8,
                   help="videos per inference chunk (the unit of resuming)")
    p.add_argument("--workers", type=int, default=2, help="decoding threads (0: decode in the main thread)")
    p.add_argument("--no-temporal", action="store_true",
                   help="only the averaged features (no per-second files)")
    p.add_argument("--video-average", default="middle", choices=["middle", "mean"],
                   help="averaged video feature: the middle frame (ClipClap) or the mean over seconds")
    p.add_argument("--audio-average", default="clip", choices=["clip", "mean"],
                   help="averaged audio feature: the centred clip (ClipClap) or the mean over seconds")
    p.add_argument("--clip-seconds", type=float, default=10.0, help="length of the centred audio clip")
    p.add_argument("--missing-stream", default="skip", choices=["skip", "zero"],
                   help="a video without audio (or video): leave it out, or give it zeros for that stream")
    p.add_argument("--retry-failed", action="store_true", help="decode again the videos that failed before")
    p.add_argument("--restart", action="store_true", help="discard the per-video results of an earlier run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_extract)

    p = add("embed-classes",
            "class names -> text embeddings (CLIP, CLAP or both, prompt ensembles) in the layout")
    p.add_argument("--root", default=None, help="benchmark folder: embeds its name map's manual names")
    p.add_argument("--names", default=None,
                   help="a file of class names, one per line (instead of the benchmark's)")
    p.add_argument("--out", default=None, help="the .npy to write (default: features/<set>_features/text/"
                                               "word_embeddings_<prefix>_normed.npy under --root)")
    p.add_argument("--dataset", default=None, help="dataset name: the file's prefix and the prompt set "
                                                   "(default: the --root folder's name)")
    p.add_argument("--features", default="clip", help="feature set whose text/ folder receives the file")
    p.add_argument("--encoder", default="clipclap", choices=["clip", "clap", "clipclap"],
                   help="CLIP text, CLAP text, or both concatenated (ClipClap)")
    p.add_argument("--prompts", default="auto", choices=["auto", "person", "generic", "name"],
                   help="prompt set; auto: person for UCF / ActivityNet, generic otherwise (as ClipClap)")
    p.add_argument("--clip-templates", default=None,
                   help="file of CLIP prompt templates, one per line with {}")
    p.add_argument("--clap-templates", default=None,
                   help="file of CLAP prompt templates, one per line with {}")
    p.add_argument("--clip-model", default=DEFAULT_CLIP, help="CLIP checkpoint: hub name or local folder")
    p.add_argument("--clap-model", default=DEFAULT_CLAP, help="CLAP checkpoint: hub name or local folder")
    p.add_argument("--local-files-only", action="store_true", help="never download model files")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, ...")
    p.set_defaults(func=cmd_embed_classes)

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
    p.add_argument("--overwrite", action="store_true", help="replace the run of an earlier demo in --out")
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

    p = add("ceo", "class embedding optimisation (EZ-AVGZL's CEO) of a benchmark's class text: its figures")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--like", default=None, choices=available(), help="a real benchmark packaged with avgzsl")
    where.add_argument("--root", default=None, help="a benchmark folder (class-split/ and the text file)")
    p.add_argument("--dataset", default=None, help="with --root: UCF, ActivityNet or VGGSound (default: the folder name)")
    p.add_argument("--features", default="main", help="with --root: the feature set whose text file to read")
    p.add_argument("--temporal", action="store_true", help="with --root: the per-second feature set's text file")
    p.add_argument("--legacy-text-order", action="store_true", help="the reference loaders' misaligned text rows")
    p.add_argument("--cache-dir", default=None, help="cache under <dir>/ceo, as data.cache_dir does "
                                                     "(default: $AVGZSL_CACHE_DIR/ceo or ~/.cache/avgzsl/ceo)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    p.add_argument("--out", default=None, help="also write the figures and settings to this JSON file")
    p.add_argument("overrides", nargs="*", help="CEO settings, data.ceo.<key>=value, e.g. data.ceo.alpha=0.1")
    p.set_defaults(func=cmd_ceo)

    p = add("ls", "list the registered methods and the feature kinds they take")
    p.set_defaults(func=cmd_ls)
    return parser


# --- errors ----------------------------------------------------------------------------------------
# What a user's input can cause: bad data or config (ConfigError, BenchmarkError, ... are ValueErrors), an
# unknown name (KeyError), a missing, unreadable, truncated or tampered file (OSError incl. h5py's, EOFError,
# UnpicklingError incl. the restricted unpickler's UnsafePickleError, YAMLError of a run's config.yaml).
# Each is one `error:` line, exit 2.
USER_ERRORS = (ValueError, KeyError, OSError, EOFError, pickle.UnpicklingError, yaml.YAMLError)
EXIT_USER_ERROR, EXIT_BUG, EXIT_INTERRUPTED = 2, 1, 130
RESUMABLE = ("run", "ablate", "sweep", "compare")


class _UsageError(Exception):
    """A command line argparse refuses (unknown option, invalid choice, missing argument)."""


def _one_line_usage_errors(parser: argparse.ArgumentParser) -> None:
    """argparse prints its usage block and then `prog: error: ...`; here one `error:` line, like every other error."""
    parsers = [parser]
    while parsers:
        p = parsers.pop()

        def error(message: str, prog: str = p.prog) -> None:
            raise _UsageError(f"{message}; see `{prog} --help`")

        p.error = error  # type: ignore[method-assign]
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += list(action.choices.values())


def _error_text(exc: BaseException) -> str:
    """The message of `exc` for the `error:` line: its first line, and the `  - ...` list that a BenchmarkError
    adds below it (one problem per line); other continuation lines only with --debug."""
    msg = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).strip() or type(exc).__name__
    first, *rest = msg.splitlines()
    listed = [line for line in rest if line.startswith(("  - ", "  ... "))]
    return "\n".join([first, *listed]) if listed and len(listed) == len(rest) else first


def main(argv: list[str] | None = None) -> int:
    """The `avgzsl` command. Returns the exit code: 0, 2 (an error the input caused: one `error:` line naming
    the file / key / class), 1 (an unexpected error, a bug: one line, the traceback with --debug), 130 (Ctrl-C)."""
    parser = build_parser()
    _one_line_usage_errors(parser)
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        hint = "; run the same command with --resume to continue" if args.command in RESUMABLE else ""
        print(f"interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `avgzsl table runs/ | head`: the reader left, nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (no second error when Python flushes stdout at exit)
        return 1
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"error: {_error_text(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # noqa: BLE001
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {_error_text(exc)} (rerun with --debug for the traceback, "
              f"and please report it)", file=sys.stderr)
        return EXIT_BUG


def entry() -> None:
    """The console script (and `python -m avgzsl.cli`): `main`, then exit with its code.

    After a Ctrl-C the process ends with os._exit(130) once the exit handlers have run and the streams are
    flushed. A plain exit is not enough: when the KeyboardInterrupt lands inside an `exec` of a string (a
    dataclass or namedtuple being built while a module imports), CPython 3.11 marks it as unhandled even
    though `main` caught it, and the interpreter then kills itself with SIGINT at shutdown (exit -2, not 130)."""
    code = main()
    if code == EXIT_INTERRUPTED:
        import atexit

        atexit._run_exitfuncs()  # noqa: SLF001  (what a normal exit would run: logging shutdown, temp files)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()

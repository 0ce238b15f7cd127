"""Wall time of one N-run comparison run three ways: sequentially, with --jobs 2, and on Ray (--ray).

    PYTHONPATH=src python benchmarks/bench_parallel.py --root data/synth/UCF [--dataset UCF]
        [--methods avca daan cjme linear] [--seeds 0 1 2] [--set train.epochs=3 train.n_batches=50]
        [--modes sequential jobs2 ray] [--ray-address ADDRESS] [--out bench_parallel.json] [--keep DIR]

Each way is the same `avgzsl compare` command line, run as a fresh process (so Ray's start-up, worker
start-up and every benchmark load count, as a user waits for them) into its own empty output folder; only
the execution option differs: `--jobs 1`, `--jobs 2`, `--ray [ADDRESS]`. The schedule is small and given
as overrides (`--set`, appended to the defaults; the last value of a key wins). Writes a JSON with, per way,
the wall time, the runs' own seconds summed (from their results.json), and the speed-up over the
sequential way, and prints a table. It also says which ways gave identical test scores: runs with
different torch thread counts may differ (a sequential run takes torch's default, every core, as a user's
would; --jobs 2 and --ray give each run cores // 2 and --cpus-per-run = 1 threads); add
`--set train.num_threads=1` to give every way the same.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from avgzsl.experiments import usable_cores

MODES = {"sequential": ["--jobs", "1"], "jobs2": ["--jobs", "2"], "ray": ["--ray"]}
SCHEDULE = ["train.epochs=3", "train.n_batches=50"]


def compare_command(args, out: Path, mode: str) -> list[str]:
    flags = list(MODES[mode]) + ([args.ray_address] if mode == "ray" and args.ray_address else [])
    # the execution option last: `--ray` takes an optional address and must not swallow an override
    return [sys.executable, "-m", "avgzsl.cli", "compare", "--methods", *args.methods, "--dataset", args.dataset,
            "--root", str(args.root), "--seeds", *map(str, args.seeds), "--out", str(out), "--quiet",
            *SCHEDULE, *args.set, *flags]


def scores(out: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(out)): json.loads(p.read_text()) for p in sorted(out.rglob("results.json"))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="the benchmark folder (e.g. made by `avgzsl synth`)")
    ap.add_argument("--dataset", default="UCF", help="selects configs/<dataset>/<method>.yaml")
    ap.add_argument("--methods", nargs="+", default=["avca", "daan", "cjme", "linear"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", nargs="*", default=[], help="more overrides, after the default small schedule "
                                                          f"({' '.join(SCHEDULE)})")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--ray-address", default=None, help="join this Ray cluster instead of starting a local one")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per way (default: none)")
    ap.add_argument("--out", default="bench_parallel.json", help="the JSON to write")
    ap.add_argument("--keep", default=None, help="keep the runs under this folder (default: a temporary one)")
    args = ap.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_parallel-"))
    env = dict(os.environ, AVGZSL_PROGRESS="plain")
    ways: dict[str, dict] = {}
    runs: dict[str, dict] = {}
    try:
        for mode in args.modes:
            out = work / mode
            if out.exists():
                shutil.rmtree(out)  # each way starts from an empty folder: nothing is reused
            cmd = compare_command(args, out, mode)
            print(f"{mode}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
            wall = time.perf_counter() - t0
            out.mkdir(parents=True, exist_ok=True)
            (out / "bench.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                print(proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"{mode} failed (exit {proc.returncode}); its output: {out / 'bench.log'}")
            runs[mode] = scores(out)
            ways[mode] = {"command": " ".join(cmd[2:]), "wall_seconds": round(wall, 2), "runs": len(runs[mode]),
                          "run_seconds_summed": round(sum(r["seconds"]["total"] for r in runs[mode].values()), 2)}
            print(f"{mode}: {wall:.1f} s for {len(runs[mode])} runs", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    base = ways.get("sequential", {}).get("wall_seconds")
    for w in ways.values():
        w["speedup_over_sequential"] = round(base / w["wall_seconds"], 3) if base else None
    groups: list[list[str]] = []  # ways whose runs gave identical test scores
    for m, rs in runs.items():
        for g in groups:
            if {k: r["test"] for k, r in rs.items()} == {k: r["test"] for k, r in runs[g[0]].items()}:
                g.append(m)
                break
        else:
            groups.append([m])
    report = {
        "what": f"avgzsl compare, {len(args.methods)} methods x {len(args.seeds)} seeds",
        "methods": args.methods, "seeds": args.seeds, "dataset": args.dataset, "root": str(args.root),
        "overrides": SCHEDULE + args.set,
        "machine": {"cpus": usable_cores(),
                    "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
                    "python": platform.python_version(), "platform": platform.platform()},
        "ways": ways,
        "identical_test_scores": groups,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| way | runs | wall s | runs' own s, summed | speed-up over sequential |")
    print("|---|---|---|---|---|")
    for m, w in ways.items():
        sp = f"{w['speedup_over_sequential']:.2f}x" if w["speedup_over_sequential"] else "-"
        print(f"| {m} | {w['runs']} | {w['wall_seconds']:.1f} | {w['run_seconds_summed']:.1f} | {sp} |")
    print("identical test scores: " + "; ".join(" = ".join(g) for g in groups))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

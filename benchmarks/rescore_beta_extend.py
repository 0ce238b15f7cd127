"""What `train.beta_extend=true` changes in finished runs, measured by re-scoring their checkpoints.

    python benchmarks/rescore_beta_extend.py runs/compare-ucf/daan runs/compare-ucf/avca --out docs/beta_extend_ucf

For each finished run (a run dir holding checkpoints/stage1_best.pt and stage2_test.pt): stage 1's best
model is re-scored on stage-1 val with the self-extending beta grid, and the stage-2 model is scored on
test at that beta, beside the run's own beta (its recorded test scores are re-derived as a check). Rows:
per run, then per folder the paired difference (extended - reference grid, seeds as pairs) in HM and
ZSL with a 95 % t interval.

What this does not capture: with the option on during training, stage 1's epoch selection also uses the
extended grid's val HM, so the best epoch (and with it stage 2's length) could change. This re-scoring
keeps each run's selected epoch; the calibration step alone is measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from avgzsl.config import config_from_dict
from avgzsl.experiments import BenchmarkStore, read_run_config
from avgzsl.protocol import build_method, score_phase
from avgzsl.reports import fmt_difference, fmt_mean_std, load_results, mean_std, paired_difference
from avgzsl.runs import load_checkpoint


def rescore(run_dir: Path, store: BenchmarkStore) -> dict:
    cfg = config_from_dict(read_run_config(run_dir / "config.yaml"))
    cfg.train.progress = False
    bench = store.get(cfg)
    method = build_method(cfg, bench)
    recorded = json.loads((run_dir / "results.json").read_text())
    method.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "stage1_best.pt", cfg.train.device)["model"])
    cfg.train.beta_extend = True
    val = score_phase(method, bench.phases["stage1_val"], bench, cfg)
    method.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "stage2_test.pt", cfg.train.device)["model"])
    out = {"run_dir": str(run_dir), "seed": recorded.get("seed"), "beta": recorded["beta"], "beta_extended": val.beta,
           "grid_top": float(val.per_beta["beta"][-1])}
    for name, beta in (("test", recorded["beta"]), ("test_extended", val.beta)):
        s = score_phase(method, bench.phases["test"], bench, cfg, torch.tensor([float(beta)], dtype=torch.float64))
        out[name] = {k: float(getattr(s, k)) for k in ("S", "U", "HM", "ZSL")}
    out["recorded_matches"] = abs(out["test"]["HM"] - float(recorded["test"]["HM"])) < 1e-6
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="folders of finished runs (one table row each)")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    store, rows, runs_out = BenchmarkStore(), [], []
    for folder in args.folders:
        runs = [rescore(Path(r["run_dir"]), store) for r in load_results([folder])]
        runs_out += runs
        ref = [{"seed": r["seed"], "test": r["test"]} for r in runs]
        ext = [{"seed": r["seed"], "test": r["test_extended"]} for r in runs]
        rows.append({"folder": str(folder), "n": len(runs), "betas": [r["beta"] for r in runs],
                     "betas_extended": [r["beta_extended"] for r in runs],
                     "HM": mean_std([r["test"]["HM"] for r in runs]),
                     "HM_extended": mean_std([r["test_extended"]["HM"] for r in runs]),
                     "dHM": paired_difference(ext, ref, "HM"), "dZSL": paired_difference(ext, ref, "ZSL"),
                     "recorded_matches": all(r["recorded_matches"] for r in runs)})
    lines = ["| runs | seeds | beta (reference grid) | beta (extended) | HM | HM extended | ΔHM [95 % CI] | ΔZSL [95 % CI] |",
             "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['folder']} | {r['n']} | {', '.join(f'{b:.2f}' for b in r['betas'])} | "
                     f"{', '.join(f'{b:.2f}' for b in r['betas_extended'])} | {fmt_mean_std(r['HM'], r['n'])} | "
                     f"{fmt_mean_std(r['HM_extended'], r['n'])} | {fmt_difference(r['dHM'])} | {fmt_difference(r['dZSL'])} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not all(r["recorded_matches"] for r in rows):
        print("warning: some re-scored runs do not reproduce their recorded test HM", file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "runs": runs_out}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

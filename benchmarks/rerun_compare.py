"""Paired comparison of two sets of the same runs (same rows, seeds and data), e.g. before and after a change
to how a method computes its step. One markdown table: each row's mean ± std in both sets, and the paired
difference (new - old) of HM and ZSL over the seeds with its 95 % t interval; then the DAAN-family steps
(differences between rows) recomputed on the new set.

    python benchmarks/rerun_compare.py runs/t2/ucf_averaged runs/t2v2/ucf_averaged --out docs/rerun_ucf_averaged.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from avgzsl.reports import fmt_difference, fmt_mean_std, group_runs, load_results, mean_std, paired_difference

STEPS = [("base+qdma", "base"), ("daan", "base+qdma"), ("daan", "base"), ("daan", "avca"), ("base", "avca"),
         ("linear", "daan")]


def rows(folder: Path) -> dict[str, list[dict]]:
    return group_runs(load_results([folder]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    old, new = rows(args.old), rows(args.new)
    lines = [f"Rows of {args.old} (old) and {args.new} (new): test, mean ± std over seeds; new - old paired over seeds.",
             "", "| row | old HM | new HM | new - old HM | old ZSL | new ZSL | new - old ZSL |", "|---|---|---|---|---|---|---|"]
    for name in [n for n in new if n in old]:
        cells = []
        for metric in ("HM", "ZSL"):
            o = [r["test"][metric] for r in old[name]]
            n = [r["test"][metric] for r in new[name]]
            cells += [fmt_mean_std(mean_std(o), len(o)), fmt_mean_std(mean_std(n), len(n)),
                      fmt_difference(paired_difference(new[name], old[name], metric))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Steps on the new set ({args.new}), paired over seeds:", "",
              "| step | ΔHM | ΔZSL |", "|---|---|---|"]
    for a, b in STEPS:
        if a in new and b in new:
            lines.append(f"| {a} - {b} | " + " | ".join(
                fmt_difference(paired_difference(new[a], new[b], m)) for m in ("HM", "ZSL")) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()

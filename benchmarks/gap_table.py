"""The linear-gap probes as one table: per probe and method, the paired difference to the unchanged method.

    python benchmarks/gap_table.py avca=runs/t2/ucf_averaged/avca,runs/gap/avca \
        daan=runs/t2/ucf_averaged/daan,runs/gap/daan tcaf=runs/gap/tcaf --linear runs/t2/ucf_averaged/linear \
        --out docs/gap_probes_ucf

Each METHOD=FOLDER[,FOLDER...] holds the method's unchanged runs (label METHOD) and its probe runs (labels
METHOD+PROBE, as benchmarks/gap_probes.sh writes them). Differences are paired over seeds (95 % t interval,
`*`: it excludes 0). The last rows give each method's unchanged mean and its gap to the linear reference.
Writes <out>.md and <out>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from avgzsl.reports import fmt_difference, fmt_mean_std, group_runs, load_results, mean_std, paired_difference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("methods", nargs="+", metavar="METHOD=FOLDER[,FOLDER]")
    ap.add_argument("--linear", required=True, help="the linear reference's runs on the same benchmark")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    groups: dict[str, dict[str, list[dict]]] = {}
    for spec in args.methods:
        method, folders = spec.split("=", 1)
        groups[method] = group_runs(load_results(folders.split(",")))  # a row never mixes configs
    linear = load_results([args.linear])
    probes = sorted({label.split("+", 1)[1] for rows in groups.values() for label in rows if "+" in label})
    head = "| probe | " + " | ".join(f"{m} ΔHM | {m} ΔZSL" for m in groups) + " |"
    lines = [head, "|---|" + "---|---|" * len(groups)]
    report: dict = {}
    for probe in probes:
        cells = []
        for method, rows in groups.items():
            for metric in ("HM", "ZSL"):
                runs = rows.get(f"{method}+{probe}")
                d = paired_difference(runs, rows[method], metric) if runs and method in rows else None
                report.setdefault(probe, {}).setdefault(method, {})[metric] = d
                cells.append("not run" if not runs else fmt_difference(d))
        lines.append(f"| {probe} | " + " | ".join(cells) + " |")
    unchanged, gap = [], []
    for method, rows in groups.items():
        for metric in ("HM", "ZSL"):
            stat = mean_std([float(r["test"][metric]) for r in rows[method]])
            unchanged.append(f"{fmt_mean_std(stat, len(rows[method]))} ({len(rows[method])})")
            d = paired_difference(rows[method], linear, metric)
            report.setdefault("unchanged - linear", {}).setdefault(method, {})[metric] = d
            gap.append(fmt_difference(d))
    lines.append("| (unchanged method, mean ± std) | " + " | ".join(unchanged) + " |")
    lines.append("| (unchanged method - linear) | " + " | ".join(gap) + " |")
    text = "\n".join(lines) + "\n"
    Path(args.out + ".md").write_text(text)
    Path(args.out + ".json").write_text(json.dumps(report, indent=1))
    print(text)


if __name__ == "__main__":
    main()

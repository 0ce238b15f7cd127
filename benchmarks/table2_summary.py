"""DAAN's Table II, component by component: the paired difference each step of the ablation makes, per setting.

    python benchmarks/table2_summary.py UCF-averaged=runs/t2/ucf_averaged UCF-temporal=runs/t2/ucf_temporal \
        ActivityNet-averaged=runs/t2/anet_averaged ActivityNet-temporal=runs/t2/anet_temporal \
        [--extra-avca UCF-temporal=runs/t2/ucf_averaged/avca ...] --out docs/table2_summary

Each folder is an `avgzsl ablate --method daan` output (rows labelled base, base+qdma, base+qdma+csgm_vc, daan,
avca, linear). A step is the row with the component against the row without it, paired over seeds, 95 % t
interval; `*` where it excludes 0. AVCA takes averaged features only: for a temporal setting `--extra-avca`
names the AVCA runs on the same benchmark's averaged features (the same videos, the same seeds).
Writes <out>.md and <out>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from avgzsl.reports import (check_one_config, fmt_difference, fmt_mean_std, group_runs, load_results, mean_std,
                            paired_difference)

STEPS = [  # (name, with, without)
    ("QDMA (base+qdma - base)", "base+qdma", "base"),
    ("CSGM V_c (base+qdma+csgm_vc - base+qdma)", "base+qdma+csgm_vc", "base+qdma"),
    ("CSGM V_o on top (daan - base+qdma+csgm_vc)", "daan", "base+qdma+csgm_vc"),
    ("CSGM as a whole (daan - base+qdma)", "daan", "base+qdma"),
    ("DAAN - Base", "daan", "base"),
    ("DAAN - AVCA", "daan", "avca"),
    ("linear - DAAN", "linear", "daan"),
]


def _pairs(arg: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in arg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("settings", nargs="+", metavar="NAME=FOLDER")
    ap.add_argument("--extra-avca", nargs="*", default=[], metavar="NAME=FOLDER")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    extra = _pairs(args.extra_avca)
    report, lines = {}, []
    header = "| step | " + " | ".join(f"{n} ΔHM | {n} ΔZSL" for n in _pairs(args.settings)) + " |"
    lines += [header, "|---|" + "---|---|" * len(_pairs(args.settings))]
    groups_by_setting = {}
    for name, folder in _pairs(args.settings).items():
        groups = group_runs(load_results([folder]))  # a row never mixes configs
        if name in extra:
            groups["avca"] = load_results([extra[name]])
            check_one_config("avca", groups["avca"])
        groups_by_setting[name] = groups
    for step, with_, without in STEPS:
        cells = []
        for name, groups in groups_by_setting.items():
            entry = {}
            for metric in ("HM", "ZSL"):
                d = (paired_difference(groups[with_], groups[without], metric)
                     if with_ in groups and without in groups else None)
                entry[metric] = d
                cells.append(fmt_difference(d))
            report.setdefault(step, {})[name] = entry
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    means = ["", "| row | " + " | ".join(f"{n} HM | {n} ZSL" for n in groups_by_setting) + " |",
             "|---|" + "---|---|" * len(groups_by_setting)]
    for label in ("avca", "linear", "base", "base+qdma", "base+qdma+csgm_vc", "daan"):
        cells = []
        for groups in groups_by_setting.values():
            for metric in ("HM", "ZSL"):
                runs = groups.get(label, [])
                if runs:
                    stat = mean_std([float(r["test"][metric]) for r in runs])
                    cells.append(f"{fmt_mean_std(stat, len(runs))} ({len(runs)})")
                else:
                    cells.append("-")
        means.append(f"| {label} | " + " | ".join(cells) + " |")
    # the reading question: per-second against averaged input, same benchmark and seeds (settings named
    # "<dataset>-temporal" and "<dataset>-averaged")
    kinds = ["", "| temporal - averaged | " + " | ".join(f"{v} ΔHM | {v} ΔZSL" for v in
                                                         ("base", "base+qdma", "daan", "linear")) + " |",
             "|---|" + "---|---|" * 4]
    for name in groups_by_setting:
        if not name.endswith("-temporal") or name[:-9] + "-averaged" not in groups_by_setting:
            continue
        t, a = groups_by_setting[name], groups_by_setting[name[:-9] + "-averaged"]
        cells = []
        for label in ("base", "base+qdma", "daan", "linear"):
            for metric in ("HM", "ZSL"):
                d = paired_difference(t[label], a[label], metric) if label in t and label in a else None
                report.setdefault("temporal - averaged", {}).setdefault(name[:-9], {}).setdefault(label, {})[metric] = d
                cells.append(fmt_difference(d))
        kinds.append(f"| {name[:-9]} | " + " | ".join(cells) + " |")
    text = "\n".join(means[1:] + [""] + lines + (kinds if len(kinds) > 3 else [])) + "\n"
    Path(args.out + ".md").write_text(text)
    Path(args.out + ".json").write_text(json.dumps(report, indent=1))
    print(text)


if __name__ == "__main__":
    main()

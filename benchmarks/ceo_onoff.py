"""CEO on/off: the same methods, seeds and schedule with the class text embeddings as given and after CEO.

    python benchmarks/ceo_onoff.py runs/ceo-off runs/ceo-on --out docs/ceo_onoff_ucf

`off` and `on` are two `avgzsl compare` folders (the second run with `data.class_embeddings=ceo`). For every
method in both: test S / U / HM / ZSL mean ± std with and without CEO, and the paired difference (on - off,
seeds as pairs) in HM and ZSL with its 95 % t interval; `*` marks an interval that excludes 0. Each side
must be one config per method (the table refuses mixed rows), and the two sides may differ only in
data.class_embeddings (and data.ceo.*); anything else is an error naming the keys.
Writes OUT.md and OUT.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from avgzsl.config import RESUME_IGNORES, config_differences
from avgzsl.reports import (METRICS, fmt_difference, fmt_mean_std, group_runs, load_results, mean_std,
                            paired_difference, run_config)


def by_method(folder: Path) -> dict[str, list[dict]]:
    runs = load_results([folder])
    if not runs:
        raise SystemExit(f"error: no results.json under {folder}")
    return group_runs(runs)  # refuses a row that mixes configs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("off", type=Path, help="compare folder run with the text embeddings as given")
    ap.add_argument("on", type=Path, help="compare folder run with data.class_embeddings=ceo")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    args = ap.parse_args(argv)
    off, on = by_method(args.off), by_method(args.on)
    rows = []
    for m in [m for m in off if m in on]:
        a, b = run_config(off[m][0]), run_config(on[m][0])
        if a is not None and b is not None:
            differ = [k for k in config_differences(a, b, RESUME_IGNORES | {"seed", "data.root"})
                      if not k.startswith("data.ceo") and k != "data.class_embeddings"]
            if differ:
                raise SystemExit(f"error: {m} differs between {args.off} and {args.on} in {', '.join(differ)}")
        row = {"method": m, "seeds": sorted(r["seed"] for r in on[m])}
        for side, runs in (("off", off[m]), ("on", on[m])):
            for k in METRICS:
                row[f"{k}_{side}"] = [*mean_std([float(r["test"][k]) for r in runs]), len(runs)]
        for k in ("HM", "ZSL"):
            row[f"d{k}"] = paired_difference(on[m], off[m], k)
        rows.append(row)
    head = "| method | HM text | HM CEO | ΔHM (CEO - text) [95 % CI] | ZSL text | ZSL CEO | ΔZSL [95 % CI] |"
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        cell = lambda k, s: fmt_mean_std(tuple(r[f"{k}_{s}"][:2]), r[f"{k}_{s}"][2])  # noqa: E731
        lines.append(f"| {r['method']} | {cell('HM', 'off')} | {cell('HM', 'on')} | {fmt_difference(r['dHM'])} | "
                     f"{cell('ZSL', 'off')} | {cell('ZSL', 'on')} | {fmt_difference(r['dZSL'])} |")
    text = "\n".join(lines) + "\n\n`*`: the 95 % interval of the paired difference (seeds as pairs) excludes 0.\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"off": str(args.off), "on": str(args.on), "rows": rows},
                                                           indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

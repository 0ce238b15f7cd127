"""Results as data: collect results.json files, aggregate over seeds, print tables, draw sweeps."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

METRICS = ("S", "U", "HM", "ZSL")


def load_results(paths: Iterable[str | Path]) -> list[dict]:
    """results.json of every run under `paths` (a run dir, a results.json, or a folder of runs).

    Other files among `paths` are passed over (a shell's `folder/*` also names ablation.md, compare.json, ...).
    """
    found: list[dict] = []
    for p in paths:
        p = Path(p)
        if p.is_file() and p.suffix != ".json":
            continue
        files = [p] if p.is_file() else sorted(p.rglob("results.json"))
        for f in files:
            try:
                with open(f) as fh:
                    res = json.load(fh)
            except ValueError as exc:
                raise ValueError(f"{f} is not valid JSON ({exc}); rerun that run or remove it") from None
            if f.name != "results.json" and not (isinstance(res, dict) and "test" in res and "method" in res):
                continue  # another report (ablation.json, compare.json), not a run's results
            res.setdefault("run_dir", str(f.parent))
            found.append(res)
    return found


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


# Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (standard tables).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the table up to 30, a Cornish-Fisher expansion beyond (error < 1e-3)."""
    if df < 1:
        raise ValueError("a t interval needs at least 2 paired values")
    if df <= 30:
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def paired_difference(runs: list[dict], reference: list[dict], metric: str = "HM") -> dict | None:
    """Mean test difference (runs - reference) in `metric` over the seeds both have, with a 95 % t interval.

    Seeds are the pairs: the same seed means the same data and the same batch-sampler draws. Returns
    {"n", "mean", "low", "high", "excludes_zero", "seeds"}, or None with fewer than 2 common seeds.
    """
    by_seed = {r.get("seed"): float(r["test"][metric]) for r in reference}
    pairs = [(r.get("seed"), float(r["test"][metric]) - by_seed[r.get("seed")]) for r in runs if r.get("seed") in by_seed]
    if len(pairs) < 2:
        return None
    diffs = [d for _, d in sorted(pairs)]
    mean, sd = mean_std(diffs)
    half = t_quantile_975(len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return {"n": len(diffs), "mean": mean, "low": mean - half, "high": mean + half,
            "excludes_zero": mean - half > 0 or mean + half < 0, "seeds": sorted(s for s, _ in pairs)}


def fmt_difference(d: dict | None) -> str:
    """`+1.23 [-0.40, +2.86]`, with `*` where the 95 % interval excludes 0; `n/a` without 2 paired seeds."""
    if d is None:
        return "n/a"
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" + (" *" if d["excludes_zero"] else "")


def add_differences(rows: list[dict], groups: dict[str, list[dict]], reference: str,
                    metrics: tuple[str, ...] = ("HM", "ZSL")) -> None:
    """Give every row {"vs": {"reference": name, metric: paired_difference}} against the reference row."""
    if reference not in groups:
        raise ValueError(f"reference row {reference!r} is not among the rows: {', '.join(groups)}")
    for row in rows:
        if row["name"] == reference:
            continue
        row["vs"] = {"reference": reference, **{m: paired_difference(groups[row["name"]], groups[reference], m)
                                                for m in metrics}}


def row_name(result: dict, group_key: str = "label") -> str:
    """The table row a run belongs to: its `group_key` field (label), else its method name."""
    return str(result.get(group_key) or result.get("method"))


def run_config(result: dict) -> dict | None:
    """The resolved config a run was made with: results.json's own copy, else its folder's config.yaml."""
    if isinstance(result.get("config"), dict):
        return result["config"]
    path = Path(result["run_dir"]) / "config.yaml" if result.get("run_dir") else None
    if path is not None and path.is_file():
        from avgzsl.config import load_yaml_text

        return load_yaml_text(path.read_text())
    return None


def check_one_config(name: str, runs: list[dict]) -> None:
    """A table row is one experiment: refuse runs made with different configs (seeds aside) under one name."""
    from avgzsl.config import RESUME_IGNORES, config_differences

    known = [(r, c) for r in runs if (c := run_config(r)) is not None]
    ignore = RESUME_IGNORES | {"seed", "data.root"}
    for r, c in known[1:]:
        differ = config_differences(known[0][1], c, ignore)
        if differ:
            where = f"{known[0][0].get('run_dir', '?')} vs {r.get('run_dir', '?')}"
            raise ValueError(f"row {name!r} would mix runs made with different configs (differ in "
                             f"{', '.join(differ)}: {where}); give them different labels (--label) or table "
                             f"them apart")


def group_runs(results: list[dict], group_key: str = "label") -> dict[str, list[dict]]:
    """{row name: its runs}, by `row_name`, in first-seen order; a row never mixes configs (`check_one_config`)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        groups[row_name(r, group_key)].append(r)
    for name, runs in groups.items():
        check_one_config(name, runs)
    return dict(groups)


def aggregate(results: list[dict], group_key: str = "label") -> list[dict]:
    """Group runs by `group_key` (falls back to the method name; `group_runs`) and average the test scores
    over seeds.

    A row never mixes configs (`check_one_config`). Besides mean ± std, a row counts the runs whose stage-1
    selection picked epoch 1 or 2 ("early") and whose beta is the top of the calibration grid ("beta_edge"),
    and averages the largest share of unseen test samples that the ZSL search puts on one class ("hub").
    """
    rows = []
    for name, runs in group_runs(results, group_key).items():
        row = {"name": name, "n": len(runs), "seeds": sorted(r.get("seed") for r in runs)}
        for m in METRICS:
            row[m] = mean_std([float(r["test"][m]) for r in runs])
        row["beta"] = mean_std([float(r["beta"]) for r in runs])
        row["best_epoch"] = mean_std([float(r["best_epoch"]) for r in runs])
        row["seconds"] = mean_std([float(r["seconds"]["total"]) for r in runs])
        row["early"] = sum(int(r["best_epoch"]) <= 2 for r in runs)
        tops = [(float(r["beta"]), float(r["beta_grid_top"])) for r in runs if "beta_grid_top" in r]
        row["beta_edge"] = sum(b >= top for b, top in tops) if tops else None
        hubs = [float(r["test_details"]["zsl_largest_share"]) for r in runs
                if "zsl_largest_share" in r.get("test_details", {})]
        row["hub"] = sum(hubs) / len(hubs) if hubs else None
        rows.append(row)
    return rows


def _flags(r: dict) -> str:
    """`| epoch <= 2 | beta at edge | hub |` cells of a row."""
    edge = "?" if r.get("beta_edge") is None else f"{r['beta_edge']}/{r['n']}"
    hub = "?" if r.get("hub") is None else f"{r['hub']:.2f}"
    return f" {r.get('early', 0)}/{r['n']} | {edge} | {hub} |"


FLAGS_NOTE = ("epoch ≤ 2: runs whose stage-1 selection picked epoch 1 or 2; β at edge: runs whose beta is the "
              "top of the calibration grid; hub: mean largest share of unseen test videos that the ZSL search "
              "puts on one class (1 / #unseen classes when spread evenly).")


def fmt_mean_std(stat: tuple[float, float], n: int, digits: int = 2) -> str:
    """`mean ± std` (sample std over n seeds); a single run shows its value alone (no invented ± 0)."""
    return f"{stat[0]:.{digits}f}" if n < 2 else f"{stat[0]:.{digits}f} ± {stat[1]:.{digits}f}"


def _difference_header(rows: list[dict]) -> tuple[str, list[str]]:
    ref = next((r["vs"]["reference"] for r in rows if "vs" in r), None)
    if ref is None:
        return "", []
    metrics = [m for m in METRICS if any(m in r.get("vs", {}) for r in rows)]
    return ref, metrics


def _difference_cells(row: dict, metrics: list[str]) -> str:
    if not metrics:
        return ""
    vs = row.get("vs")
    return "".join(f" {fmt_difference(vs[m]) if vs else 'reference'} |" for m in metrics)


def _difference_note(ref: str) -> str:
    return (f"\nΔ: paired difference to `{ref}` over the seeds both rows have (mean [95 % t interval]); "
            "`*`: the interval excludes 0.\n") if ref else ""


def markdown_table(rows: list[dict], title: str | None = None) -> str:
    """S / U / HM / ZSL as `mean ± std` in percent, one row per group (and paired differences to a
    reference row where `add_differences` gave them)."""
    ref, metrics = _difference_header(rows)
    lines = [f"### {title}", ""] if title else []
    lines.append("| model | seeds | S | U | HM | ZSL | best epoch | epoch ≤ 2 | β at edge | hub | minutes / run |"
                 + "".join(f" Δ{m} vs {ref} |" for m in metrics))
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(metrics))
    for r in rows:
        cells = [fmt_mean_std(r[m], r["n"]) for m in METRICS]
        lines.append(
            f"| {r['name']} | {r['n']} | " + " | ".join(cells) + f" | {r['best_epoch'][0]:.1f} |" + _flags(r)
            + f" {r['seconds'][0] / 60:.1f} |" + _difference_cells(r, metrics)
        )
    return "\n".join(lines) + "\n\n" + FLAGS_NOTE + "\n" + _difference_note(ref)


def compare_markdown(report: dict) -> str:
    """A DAAN-Table-I-style table of `experiments.compare`'s report, and the methods that could not run."""
    ref, metrics = _difference_header(report["rows"])
    lines = [f"### {report['title']}", "",
             "| method | features | seeds | S | U | HM | ZSL | best epoch | epoch ≤ 2 | β at edge | hub "
             "| minutes / run | seconds / epoch |" + "".join(f" Δ{m} vs {ref} |" for m in metrics),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(metrics)]
    for r in report["rows"]:
        cells = " | ".join(fmt_mean_std(r[m], r["n"]) for m in METRICS)
        lines.append(f"| {r['name']} | {r['features']} | {r['n']} | {cells} | {r['best_epoch'][0]:.1f} |"
                     + _flags(r) + f" {r['seconds'][0] / 60:.2f} | {r['per_epoch_seconds']:.2f} |"
                     + _difference_cells(r, metrics))
    lines += ["", FLAGS_NOTE]
    note = _difference_note(ref)
    if note:
        lines.append(note.rstrip("\n"))
    if report.get("failed"):
        lines += ["", "Could not run:", ""]
        lines += [f"- {f['method']}" + (f" ({f['run']})" if f.get("run") else "") + f": {f['reason']}"
                  for f in report["failed"]]
    return "\n".join(lines) + "\n"


def per_seed_table(results: list[dict], group_key: str = "label") -> str:
    """One markdown row per run: its group, seed, best epoch, stage-1 beta and test S / U / HM / ZSL."""
    lines = ["| run | seed | best epoch | beta | S | U | HM | ZSL |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (row_name(r, group_key), r.get("seed", 0))):
        cells = " | ".join(f"{float(r['test'][m]):.2f}" for m in METRICS)
        lines.append(f"| {row_name(r, group_key)} | {r.get('seed')} | {r['best_epoch']} | "
                     f"{float(r['beta']):.1f} | {cells} |")
    return "\n".join(lines) + "\n"


def scores_table(scores: dict[str, dict], title: str = "") -> str:
    """A readable table of one run's phases, e.g. {"val": {...}, "test": {...}}."""
    header = f"{title}\n" if title else ""
    lines = [f"{'phase':<8}{'S':>8}{'U':>8}{'HM':>8}{'ZSL':>8}{'beta':>8}"]
    for phase, s in scores.items():
        beta = s.get("beta")
        lines.append(
            f"{phase:<8}" + "".join(f"{float(s[m]):>8.2f}" for m in METRICS)
            + (f"{float(beta):>8.2f}" if beta is not None else f"{'':>8}")
        )
    return header + "\n".join(lines)


def write_csv(rows: list[dict], path: Path, extra: tuple[str, ...] = ()) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", *extra, "n"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")])
        for r in rows:
            writer.writerow(
                [r["name"], *[r.get(e, "") for e in extra], r["n"]]
                + [f"{r[m][i]:.4f}" for m in METRICS for i in (0, 1)]
            )


def plot_sweep(rows: list[dict], key: str, path: Path, title: str = "") -> None:
    """Figure-3 style: HM and ZSL (mean ± std over seeds) against the swept value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: float(r["value"]))
    xs = [float(r["value"]) for r in rows]
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=150)
    for metric, marker in (("HM", "o"), ("ZSL", "s")):
        ax.errorbar(xs, [r[metric][0] for r in rows], yerr=[r[metric][1] for r in rows],
                    marker=marker, capsize=3, label=metric)
    ax.set_xlabel(key)
    ax.set_ylabel("score (%)")
    ax.set_title(title or f"sweep of {key}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)

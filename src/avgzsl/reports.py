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
    """results.json of every run under `paths` (a run dir, a results.json, or a folder of runs)."""
    found: list[dict] = []
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() else sorted(p.rglob("results.json"))
        for f in files:
            with open(f) as fh:
                res = json.load(fh)
            res.setdefault("run_dir", str(f.parent))
            found.append(res)
    return found


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def row_name(result: dict, group_key: str = "label") -> str:
    """The table row a run belongs to: its `group_key` field (label), else its method name."""
    return str(result.get(group_key) or result.get("method"))


def aggregate(results: list[dict], group_key: str = "label") -> list[dict]:
    """Group runs by `group_key` (falls back to the method name) and average the test scores over seeds."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        groups[row_name(r, group_key)].append(r)
    rows = []
    for name, runs in groups.items():
        row = {"name": name, "n": len(runs), "seeds": sorted(r.get("seed") for r in runs)}
        for m in METRICS:
            row[m] = mean_std([float(r["test"][m]) for r in runs])
        row["beta"] = mean_std([float(r["beta"]) for r in runs])
        row["best_epoch"] = mean_std([float(r["best_epoch"]) for r in runs])
        row["seconds"] = mean_std([float(r["seconds"]["total"]) for r in runs])
        rows.append(row)
    return rows


def fmt_mean_std(stat: tuple[float, float], n: int, digits: int = 2) -> str:
    """`mean ± std` (sample std over n seeds); a single run shows its value alone (no invented ± 0)."""
    return f"{stat[0]:.{digits}f}" if n < 2 else f"{stat[0]:.{digits}f} ± {stat[1]:.{digits}f}"


def markdown_table(rows: list[dict], title: str | None = None) -> str:
    """S / U / HM / ZSL as `mean ± std` in percent, one row per group."""
    lines = [f"### {title}", ""] if title else []
    lines.append("| model | seeds | S | U | HM | ZSL | best epoch | minutes / run |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [fmt_mean_std(r[m], r["n"]) for m in METRICS]
        lines.append(
            f"| {r['name']} | {r['n']} | " + " | ".join(cells)
            + f" | {r['best_epoch'][0]:.1f} | {r['seconds'][0] / 60:.1f} |"
        )
    return "\n".join(lines) + "\n"


def compare_markdown(report: dict) -> str:
    """A DAAN-Table-I-style table of `experiments.compare`'s report, and the methods that could not run."""
    lines = [f"### {report['title']}", "",
             "| method | features | seeds | S | U | HM | ZSL | best epoch | minutes / run | seconds / epoch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        cells = " | ".join(fmt_mean_std(r[m], r["n"]) for m in METRICS)
        lines.append(f"| {r['name']} | {r['features']} | {r['n']} | {cells} | {r['best_epoch'][0]:.1f} | "
                     f"{r['seconds'][0] / 60:.2f} | {r['per_epoch_seconds']:.2f} |")
    if report.get("failed"):
        lines += ["", "Could not run:", ""]
        lines += [f"- {f['method']}: {f['reason']}" for f in report["failed"]]
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

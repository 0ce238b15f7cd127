"""Tables and the paired differences between rows."""

import math

import pytest

from avgzsl.reports import (add_differences, aggregate, fmt_difference, markdown_table, paired_difference,
                            t_quantile_975)


def _res(label, seed, hm, zsl=10.0):
    return {"label": label, "method": label, "seed": seed, "test": {"S": 50.0, "U": 20.0, "HM": hm, "ZSL": zsl},
            "beta": 1.0, "best_epoch": 3, "seconds": {"total": 60.0}}


def test_paired_difference_equals_the_hand_computation():
    ref = [_res("a", s, hm) for s, hm in [(0, 20.0), (1, 22.0), (2, 30.0), (7, 99.0)]]
    runs = [_res("b", s, hm) for s, hm in [(0, 21.0), (1, 24.0), (2, 33.0), (5, 0.0)]]
    d = paired_difference(runs, ref, "HM")  # seeds 0, 1, 2 pair up: differences 1, 2, 3
    half = 4.303 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n), sd = 1
    assert d["n"] == 3 and d["seeds"] == [0, 1, 2]
    assert d["mean"] == pytest.approx(2.0)
    assert (d["low"], d["high"]) == pytest.approx((2.0 - half, 2.0 + half))
    assert not d["excludes_zero"]
    tight = paired_difference([_res("b", s, 22.0 + 0.1 * s) for s in range(3)], ref[:3] + [_res("a", 3, 0.0)])
    # differences 2.0, 0.1, -7.8: wide; now a consistent one
    steady = paired_difference([_res("b", s, v + 1.0 + 0.01 * s) for s, v in [(0, 20.0), (1, 22.0), (2, 30.0)]],
                               ref[:3])
    assert steady["excludes_zero"] and steady["low"] > 0
    assert not tight["excludes_zero"]
    assert paired_difference(runs[:1], ref) is None  # one common seed: no interval
    assert fmt_difference(steady).endswith(" *") and fmt_difference(None) == "n/a"


def test_t_quantiles():
    assert t_quantile_975(1) == 12.706 and t_quantile_975(30) == 2.042
    assert t_quantile_975(40) == pytest.approx(2.021, abs=1e-3)
    assert t_quantile_975(120) == pytest.approx(1.980, abs=1e-3)


def test_tables_show_differences_and_single_runs_without_a_fake_spread():
    results = [_res("base", s, 20.0 + s) for s in range(3)] + [_res("new", s, 25.0 + s) for s in range(3)]
    results.append(_res("alone", 0, 30.0))
    rows = aggregate(results)
    groups = {}
    for r in results:
        groups.setdefault(r["label"], []).append(r)
    add_differences(rows, groups, "base")
    table = markdown_table(rows)
    new_row = next(line for line in table.splitlines() if line.startswith("| new |"))
    assert "+5.00 [+5.00, +5.00] *" in new_row  # the same +5 on every seed
    alone = next(line for line in table.splitlines() if line.startswith("| alone |"))
    assert "| 30.00 |" in alone and "±" not in alone and "n/a" in alone
    assert "reference" in next(line for line in table.splitlines() if line.startswith("| base |"))
    with pytest.raises(ValueError, match="reference row 'nosuch'"):
        add_differences(rows, groups, "nosuch")


def test_a_row_never_mixes_configs():
    a = [dict(_res("daan", s, 20.0), config={"method": {"pool": "mean"}, "seed": s}, run_dir=f"a/seed{s}")
         for s in range(2)]
    b = [dict(_res("daan", s, 25.0), config={"method": {"pool": "flatten"}, "seed": s}, run_dir=f"b/seed{s}")
         for s in range(2)]
    assert aggregate(a)[0]["n"] == 2  # seeds differ, configs do not: one row
    with pytest.raises(ValueError, match=r"row 'daan' would mix runs made with different configs \(differ in "
                                         r"method.pool: a/seed0 vs b/seed0\)"):
        aggregate(a + b)


def test_rows_count_early_epochs_beta_at_the_grid_edge_and_hubs():
    runs = [dict(_res("m", 0, 20.0), best_epoch=1, beta_grid_top=3.0, test_details={"zsl_largest_share": 0.5}),
            dict(_res("m", 1, 20.0), best_epoch=7, beta=3.0, beta_grid_top=3.0,
                 test_details={"zsl_largest_share": 0.3})]
    (row,) = aggregate(runs)
    assert (row["early"], row["beta_edge"], row["hub"]) == (1, 1, pytest.approx(0.4))
    line = next(x for x in markdown_table([row]).splitlines() if x.startswith("| m |"))
    assert "| 1/2 | 1/2 | 0.40 |" in line


def test_load_results_passes_over_reports_among_the_paths(tmp_path):
    import json

    from avgzsl.reports import load_results

    for seed in (0, 1):
        run = tmp_path / "daan" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(_res("daan", seed, 20.0 + seed)))
    (tmp_path / "ablation.md").write_text("| model |\n")
    (tmp_path / "ablation.json").write_text(json.dumps({"rows": [{"label": "daan"}]}))
    paths = sorted(tmp_path.iterdir())  # what a shell's `folder/*` names
    found = load_results(paths)
    assert sorted(r["seed"] for r in found) == [0, 1]
    broken = tmp_path / "daan" / "seed1" / "results.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_results([broken])

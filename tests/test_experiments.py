"""The Python API (avgzsl.run / compare / ablate / evaluate) and config checks made before any data loads."""

import json

import pytest

import avgzsl
from avgzsl.config import ConfigError, build_config
from avgzsl.data.synth import generate_benchmark
from avgzsl.methods import register_method
from toybench import ToyMethod

TINY = {"train": {"epochs": 2, "n_batches": 3, "batch_size": 16, "progress": False}}


@register_method("toy_temporal")
class ToyTemporal(ToyMethod):
    """The toy method, taking per-second features only (registered by this test)."""

    feature_kinds = ("temporal",)


@pytest.fixture(scope="module")
def averaged_root(tmp_path_factory):
    """A tiny synthetic benchmark with averaged files only (no per-second files)."""
    return generate_benchmark(tmp_path_factory.mktemp("synth"), scale=0.05, temporal=False, progress=False)


def test_a_wrong_choice_names_the_key_and_the_allowed_values():
    with pytest.raises(ConfigError, match=r"method.pool must be one of 'auto', 'mean', 'flatten'; got 'flat'"):
        build_config("daan", "UCF", ["method.pool=flat"])
    with pytest.raises(ConfigError, match=r"train.stage2_lr must be one of 'replay', 'reference'"):
        build_config("avca", "UCF", ["train.stage2_lr=replai"])
    with pytest.raises(ConfigError, match="train.epochs must be at least 1"):
        build_config("avca", "UCF", ["train.epochs=0"])


def test_a_feature_kind_the_method_does_not_take_is_refused_before_data_loads(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="avca takes averaged features, not temporal ones"):
        avgzsl.run("avca", "UCF", tmp_path / "no-such-benchmark", overrides=["data.temporal=true"], out=out)
    assert not out.exists()


def test_by_feature_set_settings_apply_only_to_their_feature_set(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("method:\n  lr: 0.002\nby_feature_set:\n  cls:\n    method:\n      lr: 0.005\n"
                     "    train:\n      batch_size: 64\n")
    main = build_config("avca", "UCF", [], extra)
    cls = build_config("avca", "UCF", ["data.feature_set=cls"], extra)
    assert (main.method.lr, main.train.batch_size) == (0.002, 256)
    assert (cls.method.lr, cls.train.batch_size) == (0.005, 64)
    # overrides still win over the feature set's section
    assert build_config("avca", "UCF", ["data.feature_set=cls", "method.lr=0.1"], extra).method.lr == 0.1
    extra.write_text("by_feature_set:\n  clss:\n    method:\n      lr: 0.005\n")
    with pytest.raises(ConfigError, match="unknown feature set"):
        build_config("avca", "UCF", [], extra)


def test_run_returns_every_seeds_results(tmp_path, averaged_root):
    results = avgzsl.run("linear", "UCF", averaged_root, seeds=[0, 1], out=tmp_path,
                         overrides={**TINY, "data": {"dataset": averaged_root.name}})
    assert [r["seed"] for r in results] == [0, 1]
    for r in results:
        on_disk = json.loads((tmp_path / f"seed{r['seed']}" / "results.json").read_text())
        assert on_disk["test"] == r["test"]


def test_compare_writes_a_table_and_lists_methods_that_cannot_run(tmp_path, averaged_root):
    report = avgzsl.compare(["linear", "toy", "toy_temporal"], "UCF", averaged_root, seeds=[0, 1], out=tmp_path,
                            overrides={**TINY, "data": {"dataset": averaged_root.name}})
    assert [r["name"] for r in report["rows"]] == ["linear", "toy"]
    assert all(r["n"] == 2 and r["features"] == "averaged (main)" for r in report["rows"])
    assert report["rows"][0]["per_epoch_seconds"] > 0
    (failed,) = report["failed"]
    assert failed["method"] == "toy_temporal" and "main_features_non_averaged" in failed["reason"]
    table = (tmp_path / "compare.md").read_text()
    assert "| linear | averaged (main) | 2 |" in table and "toy_temporal:" in table
    assert json.loads((tmp_path / "compare.json").read_text())["failed"] == report["failed"]


def test_ablate_runs_the_declared_variants_and_refuses_unknown_ones(tmp_path, averaged_root):
    with pytest.raises(ConfigError, match="unknown variant"):
        avgzsl.ablate("daan", "UCF", averaged_root, variants=["base", "nosuch"], out=tmp_path)
    with pytest.raises(ConfigError, match="declares no ablation variants"):
        avgzsl.ablate("avca", "UCF", averaged_root, out=tmp_path)
    assert not list(tmp_path.rglob("results.json"))
    rows = avgzsl.ablate("daan", "UCF", averaged_root, variants=["base"], baselines=["linear"], seeds=[0],
                         out=tmp_path, overrides={**TINY, "data": {"dataset": averaged_root.name}})
    assert [r["name"] for r in rows] == ["linear", "base"]
    assert (tmp_path / "ablation.md").exists() and (tmp_path / "ablation.json").exists()


def test_evaluate_takes_checkpoint_names_with_or_without_pt(tmp_path, averaged_root):
    (res,) = avgzsl.run("linear", "UCF", averaged_root, out=tmp_path,
                        overrides={**TINY, "data": {"dataset": averaged_root.name}})
    a = avgzsl.evaluate(tmp_path, checkpoint="stage2_test")
    b = avgzsl.evaluate(tmp_path, checkpoint="stage2_test.pt")
    assert a["test"] == b["test"]
    assert a["test"]["HM"] == pytest.approx(res["test"]["HM"])
    with pytest.raises(FileNotFoundError, match="present: stage1_best.pt, stage2_test.pt"):
        avgzsl.evaluate(tmp_path, checkpoint="nosuch")


def test_runs_in_worker_processes_give_the_same_results(tmp_path, averaged_root):
    ov = {**TINY, "data": {"dataset": averaged_root.name}, "train": {**TINY["train"], "num_threads": 1}}
    one = avgzsl.run("daan", "UCF", averaged_root, seeds=[0, 1], out=tmp_path / "one", overrides=ov, jobs=1)
    two = avgzsl.run("daan", "UCF", averaged_root, seeds=[0, 1], out=tmp_path / "two", overrides=ov, jobs=2)
    assert [r["test"] for r in one] == [r["test"] for r in two]
    assert [r["seed"] for r in two] == [0, 1]


def test_compare_reports_a_run_that_fails_and_finishes_the_others(tmp_path, averaged_root, monkeypatch):
    import avgzsl.experiments as ex

    real = ex._run_job

    def flaky(job, store=None, resume=False):
        if job.cfg.method_name == "toy" and job.cfg.seed == 1:
            raise RuntimeError("worker lost")
        return real(job, store, resume)

    monkeypatch.setattr(ex, "_run_job", flaky)
    report = avgzsl.compare(["linear", "toy"], "UCF", averaged_root, seeds=[0, 1], out=tmp_path,
                            overrides={**TINY, "data": {"dataset": averaged_root.name}})
    assert [(r["name"], r["n"]) for r in report["rows"]] == [("linear", 2), ("toy", 1)]
    (failed,) = report["failed"]
    assert failed["method"] == "toy" and "seed1" in failed["run"] and "worker lost" in failed["reason"]

"""The two-stage runner, with a toy method registered by this test (the runner doesn't know it)."""

import json
import os

import pytest
import torch
import yaml

from avgzsl.config import build_config
from avgzsl.protocol import run_protocol, score_phase
from toybench import make_benchmark


def _cfg(seed=0, **train):
    overrides = {"train": {"epochs": 4, "n_batches": 15, "batch_size": 32, "progress": False, **train}}
    cfg = build_config("toy", "UCF", overrides)
    cfg.seed = seed
    return cfg


@pytest.fixture(scope="module")
def bench():
    return make_benchmark()


def test_run_directory_holds_everything(tmp_path, bench):
    res = run_protocol(_cfg(), bench, tmp_path)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(res))
    assert set(on_disk["test"]) == {"S", "U", "HM", "ZSL"}
    for key in ("beta", "best_epoch", "val", "seconds"):
        assert key in on_disk
    assert 1 <= on_disk["best_epoch"] <= 4
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    stage1 = [r for r in rows if r["stage"] == 1]
    stage2 = [r for r in rows if r["stage"] == 2]
    assert [r["epoch"] for r in stage1] == [1, 2, 3, 4]
    # stage 2 trains exactly up to the best stage-1 epoch, and reports no validation as if it were one
    assert [r["epoch"] for r in stage2] == list(range(1, on_disk["best_epoch"] + 1))
    assert not any(k.startswith("val_") for r in stage2 for k in r)
    assert max(stage1, key=lambda r: r["val_HM"])["epoch"] == on_disk["best_epoch"]
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["method_name"] == "toy" and saved["train"]["epochs"] == 4
    assert (tmp_path / "checkpoints" / "stage1_best.pt").exists()
    assert (tmp_path / "checkpoints" / "stage2_test.pt").exists()
    assert "stage 1 best epoch" in (tmp_path / "log.txt").read_text()


def test_stage2_replays_stage1_learning_rates(tmp_path, bench):
    # patience 0 makes the plateau scheduler cut the rate after any epoch without improvement
    res = run_protocol(_cfg(epochs=5, lr_patience=0), bench, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lr1 = [r["lr"] for r in rows if r["stage"] == 1][: res["best_epoch"]]
    lr2 = [r["lr"] for r in rows if r["stage"] == 2]
    assert lr2 == lr1


def test_test_scores_use_stage1_beta_and_stage2_model(tmp_path, bench):
    res = run_protocol(_cfg(), bench, tmp_path)
    from avgzsl.protocol import build_method

    cfg = _cfg()
    method = build_method(cfg, bench)
    state = torch.load(tmp_path / "checkpoints" / "stage2_test.pt", weights_only=True)
    assert state["epoch"] == res["best_epoch"] and state["stage"] == 2
    method.load_state_dict(state["model"])
    again = score_phase(method, bench.phases["test"], bench, cfg, torch.tensor([res["beta"]], dtype=torch.float64))
    assert again.HM == pytest.approx(res["test"]["HM"])
    assert again.ZSL == pytest.approx(res["test"]["ZSL"])


def test_learns_something_transferable(tmp_path, bench):
    res = run_protocol(_cfg(epochs=6, n_batches=30), bench, tmp_path)
    # 4 unseen test classes: chance ZSL is 25 %
    assert res["test"]["ZSL"] > 40


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path, bench):
    a = run_protocol(_cfg(seed=3), bench, tmp_path / "a")
    b = run_protocol(_cfg(seed=3), bench, tmp_path / "b")
    c = run_protocol(_cfg(seed=4), bench, tmp_path / "c")
    assert a["test"] == b["test"] and a["val"] == b["val"]
    rows_a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    rows_c = (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()
    loss = lambda rows: [json.loads(r)["train_loss"] for r in rows]  # noqa: E731
    assert loss(rows_a) != loss(rows_c)
    assert c["seed"] == 4


def test_temporal_benchmark_runs_through_the_same_protocol(tmp_path):
    res = run_protocol(_cfg(epochs=2), make_benchmark(temporal=True), tmp_path)
    assert 0 <= res["test"]["HM"] <= 100


def test_killed_write_leaves_no_half_results_file(tmp_path, bench, monkeypatch):
    import avgzsl.runs as runs

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(_cfg(epochs=1, save_checkpoints="none"), bench, tmp_path)
    assert not (tmp_path / "results.json").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_unknown_override_key_names_the_key():
    from avgzsl.config import ConfigError

    with pytest.raises(ConfigError, match="train.epochz"):
        build_config("toy", "UCF", ["train.epochz=3"])
    with pytest.raises(ConfigError, match="expected an integer"):
        build_config("toy", "UCF", ["train.epochs=three"])


def test_unknown_stage2_lr_mode_is_refused(tmp_path, bench):
    with pytest.raises(ValueError, match="stage2_lr"):
        run_protocol(_cfg(stage2_lr="replai"), bench, tmp_path)


def test_override_words_stay_strings_and_exponents_are_numbers():
    # YAML 1.1 would read `off` as False (breaking method.csgm=off) and `1e-3` as a string.
    from avgzsl.config import parse_overrides

    tree = parse_overrides(["method.csgm=off", "method.noise=false", "train.stage2_lr=on"])
    assert tree == {"method": {"csgm": "off", "noise": False}, "train": {"stage2_lr": "on"}}
    cfg = build_config("daan", "UCF", ["method.csgm=off", "method.lr=1e-3", "method.noise=false"])
    assert cfg.method.csgm == "off" and cfg.method.lr == pytest.approx(1e-3) and cfg.method.noise is False

"""The protocol-level options of the linear-gap probes (issue 12): data.standardise, train.score_distance."""

import pytest
import torch

from avgzsl.config import ConfigError, DataConfig, build_config
from avgzsl.data.loading import standardise_features
from avgzsl.protocol import phase_distances, run_protocol, score_phase
from toybench import make_benchmark


@pytest.mark.parametrize("temporal", [False, True])
def test_standardise_uses_stage1_train_statistics_everywhere(temporal):
    bench = make_benchmark(temporal=temporal, seed=3)
    z = standardise_features(bench)
    for mod in ("audio", "video"):
        raw_train = getattr(bench.phases["stage1_train"].samples, mod).values.double()
        mean, std = raw_train.mean(0), raw_train.std(0)
        train = getattr(z.phases["stage1_train"].samples, mod).values
        torch.testing.assert_close(train.double().mean(0), torch.zeros(train.shape[1], dtype=torch.float64),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(train.double().std(0), torch.ones(train.shape[1], dtype=torch.float64),
                                   atol=1e-5, rtol=0)
        # test uses stage-1 train's statistics, not its own (that would look at test): its mean is not 0
        raw_test = getattr(bench.phases["test"].samples, mod)
        test = getattr(z.phases["test"].samples, mod)
        torch.testing.assert_close(test.values, ((raw_test.values.double() - mean) / std).float())
        assert test.values.double().mean(0).abs().max() > 0.05
        assert (test.offsets is None) == (not temporal)
        if temporal:
            assert torch.equal(test.offsets, raw_test.offsets)
    assert torch.equal(z.phases["test"].samples.labels, bench.phases["test"].samples.labels)
    assert z.info["standardised"]["audio"]["mean_of_stds"] > 0
    # the input benchmark is left as it was
    assert getattr(bench.phases["stage1_train"].samples, "audio").values.mean(0).abs().max() > 0.05


def test_load_benchmark_standardises_after_the_cache(tmp_path):
    from avgzsl.data.loading import load_benchmark
    from avgzsl.data.synth import generate_benchmark

    root = generate_benchmark(tmp_path / "synth", scale=0.05, temporal=False, progress=False)
    base = dict(root=str(root), temporal=False, cache_dir=str(tmp_path / "cache"), dataset="Synthetic")
    plain = load_benchmark(DataConfig(**base), progress=False)
    z = load_benchmark(DataConfig(**base, standardise=True), progress=False)
    assert z.info["cache"]["hit"] is True  # one cache entry: the raw features
    want = standardise_features(plain).phases["stage1_val"].samples.video.values
    torch.testing.assert_close(z.phases["stage1_val"].samples.video.values, want)
    assert "standardised" not in plain.info


def _cfg(**train):
    cfg = build_config("toy", "UCF", {"train": {"epochs": 2, "n_batches": 5, "batch_size": 16, "progress": False,
                                                **train}})
    return cfg


def test_cosine_scoring_is_l2_between_normalised_embeddings():
    bench = make_benchmark(seed=1)
    cfg = _cfg()
    from avgzsl.protocol import build_method

    torch.manual_seed(0)
    method = build_method(cfg, bench)
    phase = bench.phases["test"]
    l2 = phase_distances(method, phase, bench.text, 64, "cpu")
    cos = phase_distances(method, phase, bench.text, 64, "cpu", normalise=True)
    with torch.no_grad():
        s = torch.nn.functional.normalize(method.embed_samples(phase.samples.batch(torch.arange(len(phase.samples)))), dim=1)
        c = torch.nn.functional.normalize(method.embed_classes(bench.text[phase.classes]), dim=1)
    torch.testing.assert_close(cos, torch.cdist(s, c))
    assert not torch.allclose(l2, cos)
    assert float(cos.max()) <= 2.0 + 1e-5
    # the config's setting reaches the scores
    plain = score_phase(method, phase, bench, cfg)
    cosine = score_phase(method, phase, bench, _cfg(score_distance="cosine"))
    assert (plain.HM, plain.ZSL) != (cosine.HM, cosine.ZSL) or plain.beta != cosine.beta


def test_cosine_scoring_trains_the_same_model(tmp_path):
    bench = make_benchmark(seed=2)
    a = run_protocol(_cfg(), bench, tmp_path / "l2")
    b = run_protocol(_cfg(score_distance="cosine"), bench, tmp_path / "cos")
    # same training (losses per epoch identical); only the scoring differs
    import json

    la = [json.loads(x)["train_loss"] for x in (tmp_path / "l2" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["train_loss"] for x in (tmp_path / "cos" / "metrics.jsonl").read_text().splitlines()]
    assert la[:2] == lb[:2]
    assert a["config"]["train"]["score_distance"] == "l2" and b["config"]["train"]["score_distance"] == "cosine"


@pytest.mark.parametrize("method", ["cjme", "avgzslnet", "ezavgzl"])
def test_cosine_scoring_refused_for_methods_with_their_own_distances(method):
    with pytest.raises(ConfigError, match="score_distance"):
        build_config(method, "UCF", {"train": {"score_distance": "cosine"}})


def test_cosine_scoring_accepted_for_embedding_methods():
    for method in ("avca", "daan", "tcaf", "clipclap", "linear"):
        assert build_config(method, "UCF", {"train": {"score_distance": "cosine"}}).train.score_distance == "cosine"


def test_the_device_is_not_part_of_a_runs_identity():
    from avgzsl.config import config_differences

    a = build_config("avca", "UCF", {}).to_dict()
    b = dict(a, train=dict(a["train"], device="cuda:1", num_threads=3))
    assert config_differences(a, b) == []
    c = dict(a, train=dict(a["train"], epochs=3))
    assert config_differences(a, c) == ["train.epochs"]

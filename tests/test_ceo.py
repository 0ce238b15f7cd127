"""CEO (class embedding optimisation, avgzsl.ceo): separation and rank preservation on real and random text,
the vectorised rank loss against a naive triple loop, sampling, determinism, the cache, the data option
through the loader and the protocol, and the `avgzsl ceo` command."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

import avgzsl.ceo as ceo_mod
from avgzsl.ceo import (
    ExactRankLoss,
    apply_class_embeddings,
    ceo,
    class_text,
    optimise_class_embeddings,
    pairwise_distances,
    rank_loss,
    sample_triplets,
    separation_loss,
    spearman,
)
from avgzsl.config import CEOConfig, ConfigError, DataConfig, build_config
from avgzsl.experiments import BenchmarkStore
from avgzsl.protocol import run_protocol
from toybench import make_separable_benchmark

# 200 steps instead of 1000 keep the file fast; most of the separation has happened by then (UCF, alpha 0.5: min NN
# distance 0.468 -> 1.38, Spearman 0.64 after 200 steps; 1.40 and 0.54 after 1000).
FAST = CEOConfig(steps=200)
# Spearman bound at alpha 0.5. Separation alone (alpha = 1) gives 0.21 on UCF's text and 0.01 on the random
# vectors below, so the bound fails if the rank term does not act.
SPEARMAN_BOUND = 0.45


def _naive_rank_loss(dw: torch.Tensor, dt: torch.Tensor, margin: float) -> float:
    total, count = 0.0, 0
    n = len(dw)
    for c in range(n):
        for i in range(n):
            for j in range(n):
                if i == c or j == c or i == j:
                    continue
                s = (dt[c, i] > dt[c, j]).item() - (dt[c, i] < dt[c, j]).item()
                total += max(0.0, margin - s * (dw[c, i] - dw[c, j]).item())
                count += 1
    return total / count


def _check_ceo(text: torch.Tensor) -> dict:
    res = optimise_class_embeddings(text, FAST)
    f = res.figures
    assert res.embeddings.shape == text.shape
    torch.testing.assert_close(res.embeddings.norm(dim=1), torch.ones(len(text)))  # renormalised
    assert f["min_nn_after"] > f["min_nn_before"] + 0.1, f
    assert f["mean_nn_after"] > f["mean_nn_before"], f
    assert f["spearman"] > SPEARMAN_BOUND, f
    return f


def test_ceo_separates_the_real_ucf_text_and_keeps_its_distance_ranking():
    names, text = class_text(DataConfig(), like="UCF")
    assert text.shape == (101, 300) and len(names) == 101
    f = _check_ceo(text)
    assert f["triplets"] == "all"  # UCF's 999,900 triplets are used exactly
    assert f["min_nn_after"] > 2 * f["min_nn_before"], f  # 0.468 -> 1.39


def test_ceo_separates_random_embeddings_and_keeps_their_distance_ranking():
    text = torch.randn(60, 300, generator=torch.Generator().manual_seed(0))
    _check_ceo(text)


def test_without_the_rank_term_the_ranking_is_lost():
    """The contrast that makes SPEARMAN_BOUND meaningful: separation alone scrambles the distances."""
    text = torch.randn(60, 300, generator=torch.Generator().manual_seed(0))
    f = optimise_class_embeddings(text, CEOConfig(steps=FAST.steps, alpha=1.0)).figures
    assert f["spearman"] < SPEARMAN_BOUND / 2, f


def test_the_vectorised_rank_loss_equals_a_naive_triple_loop(monkeypatch):
    g = torch.Generator().manual_seed(1)
    old = pairwise_distances(torch.randn(7, 4, generator=g))
    old[2, 5] = old[5, 2] = old[2, 3]  # a tie in d^t: sign 0, the term is the constant m
    new = pairwise_distances(torch.randn(7, 4, generator=g))
    want = _naive_rank_loss(new, old, 0.3)
    torch.testing.assert_close(rank_loss(new, old, 0.3).item(), want, rtol=1e-5, atol=1e-6)
    # in several anchor blocks
    monkeypatch.setattr(ceo_mod, "_BLOCK_ELEMENTS", 2 * 49)
    exact = ExactRankLoss(old, 0.3)
    assert len(exact.blocks) == 4
    torch.testing.assert_close(exact(new).item(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(exact(new, "sum").item(), want * 7 * 6 * 5, rtol=1e-5, atol=1e-5)
    # the sampled form over every other class of each anchor is the same sum
    every = torch.stack([torch.tensor([k for k in range(7) if k != c]) for c in range(7)])
    torch.testing.assert_close(rank_loss(new, old, 0.3, every).item(), want, rtol=1e-5, atol=1e-6)


def test_the_rank_loss_gradient_equals_the_naive_loss_gradient():
    g = torch.Generator().manual_seed(2)
    old = pairwise_distances(torch.randn(6, 3, generator=g))
    w = torch.randn(6, 3, generator=g, dtype=torch.float64).requires_grad_(True)

    def naive(x):
        d = pairwise_distances(x)
        terms = [(0.2 - torch.sign(old[c, i] - old[c, j]) * (d[c, i] - d[c, j])).clamp_min(0)
                 for c, i, j in itertools.permutations(range(6), 3)]
        return torch.stack(terms).mean()

    (g_naive,) = torch.autograd.grad(naive(w), w)
    (g_vec,) = torch.autograd.grad(rank_loss(pairwise_distances(w), old.double(), 0.2), w)
    torch.testing.assert_close(g_vec, g_naive)


def test_sampled_triplets_are_valid_and_estimate_the_exact_mean():
    g = torch.Generator().manual_seed(0)
    sets = sample_triplets(12, 5, g)
    assert sets.shape == (12, 5)
    assert not (sets == torch.arange(12)[:, None]).any()  # never the anchor
    assert all(len(set(row.tolist())) == 5 for row in sets)  # distinct others
    old = pairwise_distances(torch.randn(12, 4, generator=g))
    new = pairwise_distances(torch.randn(12, 4, generator=g))
    estimates = torch.stack([rank_loss(new, old, 0.2, sample_triplets(12, 5, g)) for _ in range(400)])
    exact = rank_loss(new, old, 0.2)
    assert abs(estimates.mean() - exact) < 4 * estimates.std() / 20, (estimates.mean(), exact)


def test_sampled_and_exact_ceo_reach_the_same_figures():
    text = torch.randn(60, 300, generator=torch.Generator().manual_seed(0))
    exact = optimise_class_embeddings(text, FAST).figures
    sampled_settings = CEOConfig(steps=FAST.steps, exact_triplets=0, sampled_triplets=20_000)
    sampled = optimise_class_embeddings(text, sampled_settings).figures
    assert sampled["triplets"] == "sampled" and exact["triplets"] == "all"
    for key in ("min_nn_after", "mean_nn_after", "spearman"):
        assert abs(sampled[key] - exact[key]) < 0.05, (key, sampled, exact)


def test_ceo_is_deterministic_for_a_seed():
    text = torch.randn(30, 16, generator=torch.Generator().manual_seed(3))
    sampled = CEOConfig(steps=40, exact_triplets=0, sampled_triplets=2000)
    a = optimise_class_embeddings(text, sampled).embeddings
    b = optimise_class_embeddings(text, sampled).embeddings
    other_seed = CEOConfig(steps=40, exact_triplets=0, sampled_triplets=2000, seed=1)
    c = optimise_class_embeddings(text, other_seed).embeddings
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # another seed draws other triplets


def test_the_cache_is_hit_on_a_second_call_and_missed_when_a_setting_or_the_text_changes(tmp_path, monkeypatch):
    text = torch.randn(20, 8, generator=torch.Generator().manual_seed(4))
    s = CEOConfig(steps=20)
    first = ceo(text, s, tmp_path)
    assert first.figures["cache_hit"] is False and len(list(tmp_path.glob("ceo-*.pt"))) == 1
    calls = []
    real = ceo_mod.optimise_class_embeddings
    monkeypatch.setattr(ceo_mod, "optimise_class_embeddings", lambda *a: calls.append(a) or real(*a))
    second = ceo(text, s, tmp_path)
    assert second.figures["cache_hit"] is True and not calls
    assert torch.equal(second.embeddings, first.embeddings)
    assert second.figures["spearman"] == first.figures["spearman"]
    assert ceo(text, CEOConfig(steps=20, margin=0.2), tmp_path).figures["cache_hit"] is False
    assert ceo(text + 1e-3, s, tmp_path).figures["cache_hit"] is False
    assert len(calls) == 2 and len(list(tmp_path.glob("ceo-*.pt"))) == 3
    (tmp_path / f"ceo-{first.figures['key'][:24]}.pt").write_bytes(b"not a torch file")  # corrupt: recomputed
    assert ceo(text, s, tmp_path).figures["cache_hit"] is False


def test_separation_loss_and_spearman():
    d = pairwise_distances(torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]))
    torch.testing.assert_close(separation_loss(d, "sum"), torch.tensor(-(1.0 + 1.0 + 2.0)), atol=1e-5, rtol=0)
    t = torch.tensor
    assert spearman(t([1.0, 2.0, 3.0, 4.0]), t([10.0, 20.0, 30.0, 40.0])) == pytest.approx(1.0)
    assert spearman(t([1.0, 2.0, 3.0]), t([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert spearman(t([1.0, 1.0, 2.0]), t([1.0, 2.0, 3.0])) == pytest.approx(0.8660254)  # ties: average ranks


# --- the data option --------------------------------------------------------------------------------------
def test_class_embeddings_option_resolves_per_method_and_is_checked():
    assert build_config("linear", "UCF").data.class_embeddings == "text"
    assert build_config("ezavgzl", "UCF").data.class_embeddings == "ceo"
    assert build_config("ezavgzl", "UCF", ["method.ceo=false"]).data.class_embeddings == "text"
    assert build_config("avca", "UCF", ["data.class_embeddings=ceo"]).data.class_embeddings == "ceo"
    with pytest.raises(ConfigError, match="data.class_embeddings=text contradicts method.ceo=true"):
        build_config("ezavgzl", "UCF", ["data.class_embeddings=text"])
    with pytest.raises(ConfigError, match="data.ceo.alpha must be in"):
        build_config("linear", "UCF", ["data.ceo.alpha=2"])
    with pytest.raises(ConfigError, match="data.class_embeddings must be one of"):
        build_config("linear", "UCF", ["data.class_embeddings=w2v"])
    # the loaded benchmark depends on it: a separate BenchmarkStore entry
    a, b = build_config("linear", "UCF"), build_config("linear", "UCF", ["data.class_embeddings=ceo"])
    assert BenchmarkStore.key(a) != BenchmarkStore.key(b)


def test_runs_saved_before_the_option_still_resume_as_text_runs():
    from avgzsl.experiments import config_differences

    new = build_config("avca", "UCF").to_dict()
    old = build_config("avca", "UCF").to_dict()
    del old["data"]["class_embeddings"], old["data"]["ceo"]  # a config.yaml written before the option existed
    assert config_differences(old, new) == []
    other = build_config("avca", "UCF", ["data.ceo.alpha=0.2"]).to_dict()
    assert config_differences(new, other) == []  # CEO settings change nothing for a text run
    ceo_run = build_config("avca", "UCF", ["data.class_embeddings=ceo"]).to_dict()
    assert "data.class_embeddings" in config_differences(old, ceo_run)
    assert config_differences(ceo_run, build_config("avca", "UCF", ["data.class_embeddings=ceo",
                                                                    "data.ceo.alpha=0.2"]).to_dict()) == ["data.ceo.alpha"]


def test_ceo_for_another_method_through_the_protocol(tmp_path):
    """linear trains and is scored on CEO's class table; results.json records CEO and its figures."""
    bench = make_separable_benchmark(dim=16)
    overrides = {"train": {"progress": False, "save_checkpoints": "none"},
                 "data": {"class_embeddings": "ceo", "cache_dir": str(tmp_path / "cache"),
                          "ceo": {"steps": 100}}}
    cfg = build_config("linear", "UCF", overrides)
    optimised = apply_class_embeddings(bench, cfg.data)
    assert optimised.phases is bench.phases and not torch.equal(optimised.text, bench.text)
    res = run_protocol(cfg, optimised, tmp_path / "ceo")
    data = res["data"]
    assert data["class_embeddings"] == "ceo" and data["ceo_min_nn_after"] > data["ceo_min_nn_before"]
    assert res["test"]["ZSL"] > 50.0, res["test"]  # 4 unseen classes: chance 25
    plain = run_protocol(build_config("linear", "UCF", {"train": overrides["train"]}),
                         apply_class_embeddings(bench, DataConfig()), tmp_path / "text")
    assert plain["data"]["class_embeddings"] == "text" and "ceo_spearman" not in plain["data"]


def test_load_benchmark_applies_ceo(tmp_path):
    from avgzsl.data.loading import load_benchmark
    from avgzsl.data.synth import generate_benchmark

    root = generate_benchmark(tmp_path / "synth", scale=0.05, temporal=False, progress=False)
    base = dict(root=str(root), temporal=False, cache_dir=str(tmp_path / "cache"), dataset="Synthetic")
    plain = load_benchmark(DataConfig(**base), progress=False)
    with_ceo = DataConfig(**base, class_embeddings="ceo", ceo=CEOConfig(steps=30))
    optimised = load_benchmark(with_ceo, progress=False)
    assert plain.info["class_embeddings"] == "text" and optimised.info["class_embeddings"] == "ceo"
    assert optimised.info["ceo_cache_hit"] is False and optimised.info["ceo_spearman"] > 0.5
    want = optimise_class_embeddings(plain.text, CEOConfig(steps=30)).embeddings
    torch.testing.assert_close(optimised.text, want)
    again = load_benchmark(with_ceo, progress=False)
    assert again.info["ceo_cache_hit"] is True and torch.equal(again.text, optimised.text)
    assert (tmp_path / "cache" / "ceo").is_dir()


# --- the command ------------------------------------------------------------------------------------------
def test_ceo_command_prints_and_writes_the_figures(tmp_path, capsys):
    from avgzsl.cli import main

    out = tmp_path / "ceo.json"
    argv = ["ceo", "--like", "UCF", "--cache-dir", str(tmp_path), "--out", str(out), "data.ceo.steps=5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["dataset"] == "UCF" and doc["classes"] == 101 and doc["settings"]["steps"] == 5
    assert {"min_nn_before", "min_nn_after", "mean_nn_before", "mean_nn_after", "spearman", "seconds"} <= doc.keys()
    assert "Spearman" in printed and f"{doc['min_nn_before']:.3f}" in printed
    assert main(["ceo", "--cache-dir", str(tmp_path)]) == 2
    assert "error: no benchmark given" in capsys.readouterr().err
    assert main(["ceo", "--like", "UCF", "data.ceo.steps=-1"]) == 2
    assert "data.ceo.steps" in capsys.readouterr().err

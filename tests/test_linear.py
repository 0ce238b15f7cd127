"""The closed-form linear reference: the ridge solution, lambda chosen on stage-1 val, refit on stage 2."""

import json

import numpy as np
import pytest
import torch

from avgzsl.config import ConfigError, build_config
from avgzsl.data.types import Features
from avgzsl.methods import DataDims
from avgzsl.methods.linear import Linear, LinearConfig, time_mean
from avgzsl.protocol import run_protocol
from toybench import make_benchmark, make_separable_benchmark


def _numpy_ridge(x, y, lam, intercept):
    mu, sd = x.mean(0), x.std(0, ddof=1)
    z = (x - mu) / sd
    z0, y0 = (z.mean(0), y.mean(0)) if intercept else (np.zeros(z.shape[1]), np.zeros(y.shape[1]))
    w = np.linalg.solve((z - z0).T @ (z - z0) + lam * len(x) * np.eye(x.shape[1]), (z - z0).T @ (y - y0))
    return mu, sd, w, y0 - z0 @ w


@pytest.mark.parametrize("lam,intercept", [(0.01, False), (1.0, False), (0.01, True)])
def test_fit_equals_the_ridge_solution(lam, intercept):
    bench = make_benchmark(dim=6, text_dim=4)
    samples = bench.phases["stage1_train"].samples
    method = Linear(LinearConfig(lambdas=[lam], intercept=intercept), DataDims(6, 6, 4))
    assert method.fit(samples, bench.text, 1) == {"lambda": lam}
    x = torch.cat([samples.video.values, samples.audio.values], 1).double().numpy()
    y = bench.text[samples.labels].double().numpy()
    mu, sd, w, b = _numpy_ridge(x, y, lam, intercept)
    assert np.any(b != 0) == intercept
    np.testing.assert_allclose(method.weight.numpy(), w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(method.bias.numpy(), b, rtol=1e-4, atol=1e-6)
    batch = samples.batch(torch.arange(5))
    expected = ((x[:5] - mu) / sd) @ w + b
    np.testing.assert_allclose(method.embed_samples(batch).detach().numpy(), expected, rtol=1e-4, atol=1e-5)


def test_temporal_samples_are_averaged_over_real_steps_only():
    values = torch.arange(12.0).view(6, 2)
    f = Features(values, torch.tensor([0, 2, 6]))
    assert torch.allclose(time_mean(f), torch.tensor([[1.0, 2.0], [7.0, 8.0]]))
    # the batch path (padded + mask) agrees with the whole-set path
    from avgzsl.data.types import SampleSet

    s = SampleSet(f, f, torch.tensor([0, 1]))
    method = Linear(LinearConfig(standardise=False, intercept=False), DataDims(2, 2, 2, temporal=True))
    method.weight.copy_(torch.eye(4, 2))
    assert torch.allclose(method.embed_samples(s.batch(torch.tensor([0, 1]))), time_mean(f))


def test_lambda_is_chosen_on_stage1_val_and_refit_on_stage2(tmp_path):
    bench = make_separable_benchmark()
    lambdas = [1e-3, 1.0, 1e3]
    cfg = build_config("linear", "UCF", {"method": {"lambdas": lambdas}, "train": {"progress": False}})
    res = run_protocol(cfg, bench, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    stage1 = [r for r in rows if r["stage"] == 1]
    assert [r["lambda"] for r in stage1] == lambdas  # one candidate per "epoch"
    best = max(stage1, key=lambda r: r["val_HM"])
    assert res["best_epoch"] == best["epoch"]
    assert [r["lambda"] for r in rows if r["stage"] == 2][-1] == lambdas[res["best_epoch"] - 1]
    assert "lr" not in rows[0]  # no optimiser
    # a huge penalty maps everything onto the text mean: it cannot be the choice on separable data
    assert res["best_epoch"] != 3


def test_bad_lambdas_are_refused_when_the_config_is_built():
    with pytest.raises(ConfigError, match="method.lambdas"):
        build_config("linear", "UCF", {"method": {"lambdas": []}})
    with pytest.raises(ConfigError, match="method.lambdas"):
        build_config("linear", "UCF", {"method": {"lambdas": [-1.0]}})

"""The closed-form linear reference: ridge regression from audio-visual features to class text.

Ours, not a published method (baselines.md, "A closed-form linear reference"): z-score the
[video ; audio] feature of each video (per-second features are first averaged over their real steps),
fit W minimising ||X W - T||^2 + lambda N ||W||^2 in closed form, where T holds the text embedding of
each sample's class (optionally with an intercept b), and predict by L2 distance between X W and each class's text,
calibrated like every other method. It trains in seconds and belongs in every table: a deep method
that does not beat it has not earned its depth.

Protocol fit: the regularisation grid plays the role of epochs. Stage 1 fits one lambda per "epoch"
and scores stage-1 val after each, so the protocol picks lambda (and beta) on validation exactly as it
picks an epoch; stage 2 refits the chosen lambda on stage-2 train. The Gram matrix is computed once
per stage, so each further lambda costs one solve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from avgzsl.data.types import Batch, Features, SampleSet
from avgzsl.methods.base import DataDims, Method
from avgzsl.methods.registry import register_method

__all__ = ["Linear", "LinearConfig", "time_mean"]


@dataclass
class LinearConfig:
    """Ridge settings. lambdas are relative to the number of training samples (lambda N ||W||^2)."""

    lambdas: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0])
    modalities: Literal["both", "video", "audio"] = "both"
    standardise: bool = True  # z-score each feature dimension with the training mean and std
    # Fit b (the training texts' mean). Off: the map goes through the origin, so the ridge shrinks predictions
    # towards 0, equally far from every unit-norm class text; an intercept shrinks them towards the seen
    # classes' mean text and favours the unseen classes nearest to it (synthetic UCF: ZSL 23.8 vs 33.3).
    intercept: bool = False
    # Weight each training sample by 1 / (its class's count) so large classes do not dominate the fit
    # (the deep methods see class-balanced batches). Off: plain least squares over samples.
    class_balanced: bool = False


def time_mean(features: Features) -> Tensor:
    """[N, D] mean over the real time steps of each sample (averaged features are returned as they are)."""
    if not features.temporal:
        return features.values
    lengths = features.lengths()
    owner = torch.repeat_interleave(torch.arange(len(features)), lengths)
    sums = torch.zeros(len(features), features.dim, dtype=torch.float64).index_add_(0, owner, features.values.double())
    return (sums / lengths.clamp_min(1)[:, None]).float()


def _masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return x
    w = mask.to(x.dtype)[..., None]
    return (x * w).sum(1) / w.sum(1).clamp_min(1)


@register_method("linear")
class Linear(Method):
    """Ridge regression features -> text, in closed form; scored by L2 to the class texts."""

    Config = LinearConfig
    feature_kinds = ("averaged", "temporal")
    closed_form = True

    def __init__(self, cfg: LinearConfig, dims: DataDims):
        super().__init__(cfg, dims)
        in_dim = {"both": dims.video_dim + dims.audio_dim, "video": dims.video_dim, "audio": dims.audio_dim}[cfg.modalities]
        # Buffers, so that a fitted model is saved in and restored from checkpoints like any other.
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.register_buffer("weight", torch.zeros(in_dim, dims.text_dim))
        self.register_buffer("bias", torch.zeros(dims.text_dim))
        self._stats: tuple | None = None  # (samples id, X^T X, X^T T, n): one Gram matrix per stage

    @classmethod
    def check_config(cls, cfg) -> None:
        from avgzsl.config import ConfigError

        lambdas = cfg.method.lambdas
        if not lambdas or any(v < 0 for v in lambdas):
            raise ConfigError(f"method.lambdas must be a non-empty list of numbers >= 0, got {lambdas}")

    @classmethod
    def stage_epochs(cls, cfg) -> int:
        return len(cfg.method.lambdas)

    def _inputs(self, video: Tensor, audio: Tensor) -> Tensor:
        parts = {"both": (video, audio), "video": (video,), "audio": (audio,)}[self.cfg.modalities]
        return torch.cat(parts, dim=1)

    def _statistics(self, samples: SampleSet, class_text: Tensor) -> tuple[Tensor, ...]:
        """(X^T W X, X^T W (T - t0), x0, t0, n) of the stage's samples, with X the standardised features
        centred on their (weighted) mean x0 and t0 the text mean when fitting an intercept; W the sample
        weights, n their sum. Computed once per stage and reused for every lambda."""
        if self._stats is not None and self._stats[0] is samples:
            return self._stats[1]
        # On the CPU, where the samples are, whatever device the model is on: the fit is one small solve.
        x = self._inputs(time_mean(samples.video), time_mean(samples.audio)).double()
        if self.cfg.standardise:
            self.mean.copy_(x.mean(0))
            self.std.copy_(x.std(0).clamp_min(1e-6))
        x = (x - self.mean.double().cpu()) / self.std.double().cpu()
        y = class_text.cpu()[samples.labels].double()
        w = torch.ones(len(samples), 1, dtype=torch.float64)
        if self.cfg.class_balanced:
            _, inverse, counts = torch.unique(samples.labels, return_inverse=True, return_counts=True)
            w = (len(samples) / (counts.numel() * counts[inverse].double()))[:, None]
        n = float(w.sum())
        x0 = (w * x).sum(0) / n if self.cfg.intercept else torch.zeros(x.shape[1], dtype=x.dtype)
        t0 = (w * y).sum(0) / n if self.cfg.intercept else torch.zeros(y.shape[1], dtype=y.dtype)
        xc = x - x0
        stats = (xc.T @ (w * xc), xc.T @ (w * (y - t0)), x0, t0, n)
        self._stats = (samples, stats)
        return stats

    def fit(self, samples: SampleSet, class_text: Tensor, epoch: int) -> dict[str, float]:
        lam = float(self.cfg.lambdas[epoch - 1])
        xtx, xty, x0, t0, n = self._statistics(samples, class_text)
        eye = torch.eye(xtx.shape[0], dtype=xtx.dtype)
        weight = torch.linalg.solve(xtx + lam * n * eye, xty)
        self.weight.copy_(weight)
        self.bias.copy_(t0 - x0 @ weight)
        return {"lambda": lam}

    def embed_samples(self, batch: Batch) -> Tensor:
        x = self._inputs(_masked_mean(batch.video, batch.video_mask), _masked_mean(batch.audio, batch.audio_mask))
        return ((x - self.mean) / self.std) @ self.weight + self.bias

    def embed_classes(self, class_text: Tensor) -> Tensor:
        return class_text

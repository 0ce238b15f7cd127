"""What CJME and AVGZSLNet share: the three branch encoders f_a, f_v, f_t, their config fields, and the
per-modality distances of the prediction rule.

Read from the reference (ExplainableML/AVCA-GZSL): src/model.py (EmbeddingNet, EmbeddingNetCJME, TripletNet,
CJME._triplet_net, AVGZSLNet._triplet_net), main.py (the Adam optimiser), src/args.py (defaults) and
src/utils.py (evaluate_dataset, get_best_evaluation: how both models are scored).

- A branch is Linear(in, hidden) -> [BatchNorm1d] -> ReLU -> Dropout -> Linear(hidden, 64), with a final
  ReLU for CJME (EmbeddingNetCJME) and none for AVGZSLNet (EmbeddingNet). f_a, f_v: hidden 1024
  (--embeddings_hidden_size); f_t: hidden 300 (hard-coded). BN layers keep PyTorch's momentum 0.1 (the
  reference's --momentum only reaches AVCA). PyTorch's default initialisation (the reference never applies
  its `weights_init`).
- The reference calls every branch once per input tensor (positive and negative apart), so each call
  normalises with its own batch statistics; the methods keep that.
- Evaluation (evaluate_dataset, model in eval mode): a = f_a(audio), v = f_v(video), t_c = f_t(text of each
  class of the search space); plain L2 `cdist` of a and v to every t_c. The reported "both" score combines
  them (each method's `combine`); the "audio" / "video" scores use one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from avgzsl.data.types import Batch
from avgzsl.methods.base import DataDims, Method, OptimConfig
from avgzsl.methods.layers import FastDropout

__all__ = ["BranchNet", "TripletNetConfig", "TripletNetMethod"]


@dataclass
class TripletNetConfig(OptimConfig):
    """Fields both models have. Defaults: the reference run scripts (run_scripts/*/cjme.sh, avgzslnet.sh)."""

    lr: float = 1e-3  # --lr 0.001
    weight_decay: float = 0.0  # main.py builds optim.Adam(model.parameters(), lr=args.lr): no weight decay
    encoder_hidden: int = 1024  # --embeddings_hidden_size (hidden size of f_a, f_v); 0 = a single Linear
    text_hidden: int = 300  # hidden size of f_t (hard-coded 300 in the reference); 0 = a single Linear
    out_dim: int = 64  # output size of f_a, f_v, f_t (hard-coded 64)
    embedding_use_bn: bool = True  # --embedding_use_bn (every run script sets it)
    margin: float = 1.0  # --margin of every triplet term
    # Which distance scores a sample: "both" is the reference's reported evaluation (each method's rule);
    # "audio" / "video" are its single-branch evaluations, L2 of f_a(audio) or f_v(video) to f_t(text).
    prediction: Literal["both", "audio", "video"] = "both"


class BranchNet(nn.Sequential):
    """Linear -> [BatchNorm1d] -> ReLU -> Dropout -> Linear [-> ReLU]; a single Linear when hidden is 0.

    As the reference's EmbeddingNet (final_relu=False) and EmbeddingNetCJME (final_relu=True); the
    one-layer form has no ReLU in either.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int, dropout: float, use_bn: bool,
                 final_relu: bool):
        layers: list[nn.Module] = []
        if hidden:
            layers.append(nn.Linear(in_dim, hidden))
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden))
            layers += [nn.ReLU(), FastDropout(dropout), nn.Linear(hidden, out_dim)]
            if final_relu:
                layers.append(nn.ReLU())
        else:
            layers.append(nn.Linear(in_dim, out_dim))
        super().__init__(*layers)


class TripletNetMethod(Method):
    """Base of CJME and AVGZSLNet: encoders f_a, f_v, f_t and the distance of a sample to each class.

    Subclasses call `_build_encoders(dropout, final_relu)` in their __init__ and implement `combine`.
    """

    uses_negatives = True
    feature_kinds = ("averaged",)

    def __init__(self, cfg: TripletNetConfig, dims: DataDims):
        super().__init__(cfg, dims)
        if dims.temporal:
            raise ValueError(
                f"{type(self).__name__} takes averaged features (feature kind 'averaged', one vector per "
                "video); got temporal (per-second) features: set data.temporal=false"
            )

    def _build_encoders(self, dropout: float, final_relu: bool) -> None:
        cfg, dims = self.cfg, self.dims
        bn = cfg.embedding_use_bn
        self.f_a = BranchNet(dims.audio_dim, cfg.out_dim, cfg.encoder_hidden, dropout, bn, final_relu)
        self.f_v = BranchNet(dims.video_dim, cfg.out_dim, cfg.encoder_hidden, dropout, bn, final_relu)
        self.f_t = BranchNet(dims.text_dim, cfg.out_dim, cfg.text_hidden, dropout, bn, final_relu)

    def _check_training_batch(self, batch: Batch) -> Batch:
        if batch.negative is None or batch.text is None or batch.negative.text is None:
            raise ValueError(
                f"{type(self).__name__} trains on batches with text and a negative batch (uses_negatives)"
            )
        return batch.negative

    # --- scoring ------------------------------------------------------------------------------------
    def branch_distances(self, batch: Batch, class_text: Tensor) -> tuple[Tensor, Tensor]:
        """[B, C] L2 distances of f_a(audio) and of f_v(video) to f_t(class text)."""
        t = self.f_t(class_text)
        return torch.cdist(self.f_a(batch.audio), t), torch.cdist(self.f_v(batch.video), t)

    def combine(self, batch: Batch, d_audio: Tensor, d_video: Tensor) -> Tensor:
        """The method's "both" rule: [B, C] distances from the two branch distances."""
        raise NotImplementedError

    def distances(self, batch: Batch, class_text: Tensor) -> Tensor:
        d_a, d_v = self.branch_distances(batch, class_text)
        if self.cfg.prediction == "audio":
            return d_a
        if self.cfg.prediction == "video":
            return d_v
        return self.combine(batch, d_a, d_v)

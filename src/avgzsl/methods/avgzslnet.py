"""AVGZSLNet (Mazumder et al., WACV 2021) as the AVCA-GZSL reference trains and scores it.

This module owns the model (encoders from `_triplet_nets`, the cross-modal decoder), its loss and its
prediction rule. Read from ExplainableML/AVCA-GZSL: src/model.py (AVGZSLNet, EmbeddingNet, DecoderNet),
src/loss.py (AVGZSLLoss, CrossModalDecoderLoss, CompositeTripletLoss, TripletLoss, L2Loss), src/train.py
(train_step: positives, negatives, `criterion(*model(...))`), src/utils.py (evaluate_dataset,
get_best_evaluation, mode "both"), main.py and run_scripts/*/avgzslnet.sh (settings).

- f_a, f_v: in -> 1024 -> 64, f_t: 300 -> 300 -> 64 (Linear, BN, ReLU, Dropout 0.8, Linear; no final ReLU).
- Decoder f_dec, shared by all inputs: 64 -> 64 -> 300 (Linear, BN, ReLU, Dropout 0.5, Linear), outputs
  L2-normalised (--normalize_decoder_outputs). It decodes a+, v+, t+, a-, v- (five separate calls).
- Loss (all weights 1, margin 1, nothing detached), w+ the positive's raw text embedding:
  cross-modal decoder loss  l_rec = mean||dec(t+) - w+|| + mean||dec(a+) - w+|| + mean||dec(v+) - w+||
                            l_cta = T(dec(t+), dec(a+), dec(a-)),  l_ctv = T(dec(t+), dec(v+), dec(v-))
  composite triplet loss    l_ta = T(t+, a+, a-), l_at = T(a+, t+, t-),
                            l_tv = T(t+, v+, v-), l_vt = T(v+, t+, t-)
  with T = torch.nn.TripletMarginLoss(margin) (mean over the batch) and ||.|| the plain L2 norm (L2Loss).
- Prediction ("both"): d(f_a(a), f_t(w_c)) + d(f_v(v), f_t(w_c)), plain L2, encoder outputs (not decoded).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from avgzsl.data.types import Batch
from avgzsl.methods._triplet_nets import BranchNet, TripletNetConfig, TripletNetMethod
from avgzsl.methods.base import DataDims
from avgzsl.methods.layers import triplet
from avgzsl.methods.registry import register_method

__all__ = ["AVGZSLNet", "AVGZSLNetConfig"]


@dataclass
class AVGZSLNetConfig(TripletNetConfig):
    """AVGZSLNet's settings. Defaults: the reference's run scripts (the same for every dataset and
    feature set)."""

    embedding_dropout: float = 0.8  # --embedding_dropout (args.py default; no script sets it): f_a, f_v, f_t
    decoder_hidden: int = 64  # --decoder_hidden_size; 0 = a single Linear
    decoder_dropout: float = 0.5  # --decoder_dropout
    decoder_use_bn: bool = True  # --decoder_use_bn (every run script sets it)
    normalize_decoder_outputs: bool = True  # --normalize_decoder_outputs (every run script sets it)


@register_method("avgzslnet")
class AVGZSLNet(TripletNetMethod):
    """Three branch encoders into a 64-d space, a shared decoder back to the text space, triplet losses."""

    Config = AVGZSLNetConfig

    def __init__(self, cfg: AVGZSLNetConfig, dims: DataDims):
        super().__init__(cfg, dims)
        self._build_encoders(cfg.embedding_dropout, final_relu=False)
        self.f_dec = BranchNet(cfg.out_dim, dims.text_dim, cfg.decoder_hidden, cfg.decoder_dropout,
                               cfg.decoder_use_bn, final_relu=False)

    def decode(self, x: Tensor) -> Tensor:
        out = self.f_dec(x)
        return F.normalize(out, dim=1) if self.cfg.normalize_decoder_outputs else out

    def training_step(self, batch: Batch) -> dict[str, Tensor]:
        neg = self._check_training_batch(batch)
        w = batch.text
        # One call per input tensor, as the reference's TripletNet / DecoderNet: separate BN statistics.
        a_p, v_p, t_p = self.f_a(batch.audio), self.f_v(batch.video), self.f_t(w)
        a_q, v_q, t_q = self.f_a(neg.audio), self.f_v(neg.video), self.f_t(neg.text)
        dec_a_p, dec_v_p, dec_t_p = self.decode(a_p), self.decode(v_p), self.decode(t_p)
        dec_a_q, dec_v_q = self.decode(a_q), self.decode(v_q)

        margin = self.cfg.margin
        # reconstruction: plain (not squared) L2 distance to the positive's text, averaged over the batch
        l_rec = (torch.stack([dec_t_p, dec_a_p, dec_v_p]) - w).norm(dim=-1).mean(dim=-1).sum()
        # decoder-space triplets, stacked: [2, B, D] -> [2]
        l_cta, l_ctv = triplet(torch.stack([dec_t_p, dec_t_p]), torch.stack([dec_a_p, dec_v_p]),
                               torch.stack([dec_a_q, dec_v_q]), margin)
        # composite triplets in the embedding space: [4, B, 64] -> [4]
        l_ta, l_at, l_tv, l_vt = triplet(torch.stack([t_p, a_p, t_p, v_p]), torch.stack([a_p, t_p, v_p, t_p]),
                                         torch.stack([a_q, t_q, v_q, t_q]), margin)
        l_cmd = l_rec + l_cta + l_ctv
        l_ct = l_ta + l_at + l_tv + l_vt
        return {
            "loss": l_cmd + l_ct, "l_cmd": l_cmd, "l_ct": l_ct,
            "l_rec": l_rec, "l_cta": l_cta, "l_ctv": l_ctv,
            "l_ta": l_ta, "l_at": l_at, "l_tv": l_tv, "l_vt": l_vt,
        }

    def combine(self, batch: Batch, d_audio: Tensor, d_video: Tensor) -> Tensor:
        """The reference's "both" rule: the sum of the audio and the video distance."""
        return d_audio + d_video

"""CJME (Parida et al., WACV 2020) as the AVCA-GZSL reference trains and scores it.

This module owns the modality gate, CJME's loss (gate target from the entropies) and its prediction rule;
the encoders come from `_triplet_nets`. Read from ExplainableML/AVCA-GZSL: src/model.py (CJME,
EmbeddingNetCJME, TripletNet), src/loss.py (CJMELoss, CompositeCJMETripletLoss), src/train.py (train_step,
cjme branch: the class embeddings passed to the loss), src/dataset.py (map_embeddings_target: the text of
the training split's classes), src/utils.py (evaluate_dataset, get_best_evaluation, mode "both" with
args.cjme), main.py and run_scripts/*/cjme.sh (settings).

- f_a, f_v: in -> 1024 -> 64, f_t: 300 -> 300 -> 64 (Linear, BN, ReLU, Dropout, Linear, ReLU), dropout
  --dropout_baselines (0.2 UCF / ActivityNet, 0.0 VGGSound). No decoder.
- Gate: w = sigmoid(Linear(BN([x_a; x_v]))) of the raw input features, [B] in (0, 1); 1 means video.
- Loss (all weights 1, margin 1), a, v, t the embeddings of the positive, a-, v- the negative's:
    L_ct   = mean_i [(1 - w_i) T_i(t, a, a-) + w_i T_i(t, v, v-)]   (per-sample triplets, TripletMarginLoss)
    L_av   = MSE(a, v)
    L_gate = MSE(w, target), target_i = 0 if H_v,i - H_a,i - 0.1 > 0, else 1 if H_a,i - H_v,i - 0.1 > 0,
             else 0.5; H the entropy of softmax(a.detach() @ T^T) (resp. v), T = f_t(text of every training
             class) computed in train mode and detached (train.py projects them with the model in train mode).
  The reference also embeds the negative's text, t- = f_t(w-), unused by the loss; the pass is kept because
  it moves f_t's BN running statistics, which the evaluation uses.
- Prediction ("both"): the gate hard-thresholded at 0.5 (>= 0.5: video) picks, per sample, the video or
  the audio L2 distance to f_t(w_c).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avgzsl.data.types import Batch
from avgzsl.methods._triplet_nets import TripletNetConfig, TripletNetMethod
from avgzsl.methods.base import DataDims
from avgzsl.methods.layers import triplet
from avgzsl.methods.registry import register_method

__all__ = ["CJME", "CJMEConfig", "entropy_of_scores", "gate_target"]


@dataclass
class CJMEConfig(TripletNetConfig):
    """CJME's settings. Defaults: the reference's UCF run (run_scripts/UCF-GZSL/cjme.sh)."""

    dropout: float = 0.2  # --dropout_baselines: the dropout of f_a, f_v, f_t
    entropy_margin: float = 0.1  # CJMELoss.epsilon: how much one entropy must exceed the other to pick a side
    # The reference multiplies the gate [B, 1] by the per-sample triplet losses [B]; the product broadcasts to
    # [B, B], so its loss is mean(1 - w) * mean(T(t, a, a-)) + mean(w) * mean(T(t, v, v-)) and no sample's
    # gate meets its own triplets. False (default) weights each sample's triplets by its own gate; True
    # reproduces the reference.
    reference_gate_broadcast: bool = False
    # The reference's EmbeddingNetCJME ends with a ReLU (kept by default: its design, not a bug). False drops
    # it, as AVGZSLNet's EmbeddingNet: with few training classes the non-negative embeddings of unseen
    # samples can shrink towards 0 and all land on the class embedding of smallest norm.
    final_relu: bool = True


def entropy_of_scores(scores: Tensor) -> Tensor:
    """[B, C] scores -> [B] entropy of softmax(scores) (as Categorical(probs=softmax(scores)).entropy())."""
    log_p = scores.log_softmax(dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def gate_target(h_audio: Tensor, h_video: Tensor, margin: float = 0.1) -> Tensor:
    """The gate's target from the two entropies: 0 (audio) where video is more uncertain by more than
    `margin`, 1 (video) where audio is, 0.5 where neither exceeds the other by `margin`."""
    video_worse = h_video - h_audio - margin > 0
    audio_worse = h_audio - h_video - margin > 0
    half = torch.full_like(h_audio, 0.5)
    return torch.where(video_worse, torch.zeros_like(half),
                       torch.where(audio_worse, torch.ones_like(half), half))


@register_method("cjme")
class CJME(TripletNetMethod):
    """Three branch encoders into a 64-d space, and a gate that weighs (training) or picks (prediction)
    a modality."""

    Config = CJMEConfig

    def __init__(self, cfg: CJMEConfig, dims: DataDims):
        super().__init__(cfg, dims)
        self._build_encoders(cfg.dropout, final_relu=cfg.final_relu)
        n_in = dims.audio_dim + dims.video_dim
        self.gate_net = nn.Sequential(nn.BatchNorm1d(n_in), nn.Linear(n_in, 1), nn.Sigmoid())

    def gate(self, audio: Tensor, video: Tensor) -> Tensor:
        """[B] gate w in (0, 1) from the raw features; 1 means video."""
        return self.gate_net(torch.cat([audio, video], dim=1)).squeeze(1)

    def training_step(self, batch: Batch) -> dict[str, Tensor]:
        neg = self._check_training_batch(batch)
        if batch.class_text is None:
            raise ValueError("CJME trains on batches carrying the training classes' text (batch.class_text)")
        cfg = self.cfg
        # One call per input tensor, as the reference's TripletNet: separate BN statistics.
        a_p, v_p, t_p = self.f_a(batch.audio), self.f_v(batch.video), self.f_t(batch.text)
        a_q, v_q = self.f_a(neg.audio), self.f_v(neg.video)
        with torch.no_grad():
            self.f_t(neg.text)  # unused by the loss; the reference's pass moves f_t's BN running statistics
            classes = self.f_t(batch.class_text)  # train mode, detached: as train.py
        w = self.gate(batch.audio, batch.video)

        # Gate target: which modality's class posterior is less uncertain (embeddings detached).
        h_a = entropy_of_scores(a_p.detach() @ classes.T)
        h_v = entropy_of_scores(v_p.detach() @ classes.T)
        target = gate_target(h_a, h_v, cfg.entropy_margin)
        l_gate = F.mse_loss(w, target)

        # Per-sample triplets (anchor: text), [2, B, 1, D] -> [2, B].
        l_ta, l_tv = triplet(torch.stack([t_p, t_p]).unsqueeze(-2), torch.stack([a_p, v_p]).unsqueeze(-2),
                             torch.stack([a_q, v_q]).unsqueeze(-2), cfg.margin)
        if cfg.reference_gate_broadcast:
            l_ct = (1 - w).mean() * l_ta.mean() + w.mean() * l_tv.mean()
        else:
            l_ct = ((1 - w) * l_ta + w * l_tv).mean()
        l_av = F.mse_loss(a_p, v_p)
        return {
            "loss": l_ct + l_av + l_gate, "l_ct": l_ct, "l_av": l_av, "l_gate": l_gate,
            "l_ta": l_ta.mean(), "l_tv": l_tv.mean(),
            # diagnostics (no gradient): mean gate, share of samples the gate sends to video, mean target
            "gate_mean": w.detach().mean(), "gate_video": (w.detach() >= 0.5).float().mean(),
            "target_mean": target.mean(),
        }

    def combine(self, batch: Batch, d_audio: Tensor, d_video: Tensor) -> Tensor:
        """The reference's "both" rule for CJME: the thresholded gate picks the video (w >= 0.5) or the
        audio distance."""
        use_video = self.gate(batch.audio, batch.video) >= 0.5
        return torch.where(use_video[:, None], d_video, d_audio)

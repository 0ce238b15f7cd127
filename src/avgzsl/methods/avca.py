"""AVCA (Mercea et al., CVPR 2022): encoders, a 2-token transformer, and the alignment head (`alignment.py`).

Faithful to the reference (ExplainableML/AVCA-GZSL, src/model_improvements.py, class AVCA) by default;
every departure or reference quirk is a named switch of `AVCAConfig`.

What the reference does, as read from its code:
- Positives and negatives go through every network in separate calls, so each call's BatchNorm uses its
  own batch statistics; running statistics are updated once per call, in this order per network:
  encoders and W_proj: positive, negative; A_proj / V_proj: positive, negative, then P(R(theta)) (an
  unused `se_em_hat` pass); D: rho_w, rho_w-, rho_a, rho_a-, rho_v, rho_v-.
- After each optimiser step the training loop calls `get_embeddings` on the positives, still in train
  mode: one more running-statistics update of A_enc, V_enc, W_proj, A_proj, V_proj (with --momentum
  0.99 these final passes are what the evaluation's running statistics consist of).
- Evaluation scores theta_v (the video branch after attention) against theta_w of every class by L2
  (its "audio", "video" and "both" results are all this video evaluation).
- The loss is daan.md section 4's L = L_t + L_c + L_r, unweighted, nothing detached, the reconstructors
  targeting the encoder outputs phi_a, phi_v before attention.
- Quirks: --momentum reaches only the output BN of two-layer EmbeddingNets (hidden BN and one-layer
  nets keep 0.1); the attention output, which already holds phi through its residual connections, is
  added to phi again (phi counts twice); the position embeddings are not in the optimiser's parameter
  list, so they stay at their N(0, 1) initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from avgzsl.data.types import Batch
from avgzsl.methods.alignment import AlignmentHead, alignment_loss
from avgzsl.methods.base import DataDims, Method, OptimConfig, make_adam
from avgzsl.methods.layers import EmbeddingNet, TokenTransformer
from avgzsl.methods.registry import register_method

__all__ = ["AVCA", "AVCAConfig"]


@dataclass
class AVCAConfig(OptimConfig):
    """AVCA's hyper-parameters. Defaults: the reference's UCF main-feature run (run_scripts/UCF-GZSL/avca.sh)."""

    lr: float = 1e-3
    weight_decay: float = 1e-5  # the reference's own Adam (optimizer_gen) uses 1e-5
    # dropouts (reference --embedding_dropout / --decoder_dropout / --additional_dropout)
    embedding_dropout: float = 0.2  # A_enc, V_enc and the attention block
    decoder_dropout: float = 0.3  # A_proj, V_proj
    additional_dropout: float = 0.5  # W_proj, D, A_rec, V_rec
    momentum: float = 0.1  # BatchNorm momentum (reference --momentum)
    # sizes
    encoder_hidden: int = 512  # --embeddings_hidden_size (0 = one-layer encoders)
    phi_dim: int = 300  # encoder output / attention width (hard-coded 300 in the reference)
    decoder_hidden: int = 512  # --decoder_hidden_size: hidden size of A_proj, V_proj (0 = one layer)
    out_dim: int = 64  # joint space (params_model['dim_out'])
    depth: int = 1  # --depth_transformer
    heads: int = 3
    dim_head: int = 100
    mlp_dim: int = 64
    # loss
    margin: float = 1.0
    additional_triplets: bool = True  # --additional_triplets_loss (L_t)
    first_additional_triplet: float = 1.0
    second_additional_triplet: float = 1.0
    reg_loss: bool = True  # --reg_loss (L_r)
    # reference quirks (True = as the reference)
    # Reference passes --momentum only to the output BN of two-layer nets; False applies it to every BN.
    momentum_output_bn_only: bool = True
    # Reference adds phi to the transformer output, which already contains phi via its residuals.
    double_residual: bool = True
    # Reference leaves pos_emb1D out of its optimiser: the position embeddings stay at their random init.
    freeze_pos_emb: bool = True
    # Reference's extra train-mode passes that only move BN running statistics (used at evaluation):
    # P(R(theta)) after the loss forward, and get_embeddings on the positives after each optimiser step.
    # Off by default: they are side effects of the reference's logging code, add ~30 % to every step,
    # and leave the evaluation BN statistics following another random training batch. True reproduces them.
    reference_bn_updates: bool = False
    # Not in the reference: "frozen" keeps the text projection P_w at its random initialisation, a probe of
    # whether fitting P_w to the seen classes' texts alone costs unseen accuracy (README, "The linear gap").
    text_side: Literal["learned", "frozen"] = "learned"


@register_method("avca")
class AVCA(Method):
    """Audio-visual cross-attention: encoders, a 2-token transformer, and the alignment head."""

    Config = AVCAConfig
    uses_negatives = True

    def __init__(self, cfg: AVCAConfig, dims: DataDims):
        super().__init__(cfg, dims)
        if dims.temporal:
            raise ValueError("AVCA works on averaged features (data.temporal=false)")
        m = cfg.momentum
        other = 0.1 if cfg.momentum_output_bn_only else m  # momentum of the hidden BNs and one-layer nets
        enc_hidden = cfg.encoder_hidden or None
        self.A_enc = EmbeddingNet(dims.audio_dim, cfg.phi_dim, enc_hidden, cfg.embedding_dropout, m if enc_hidden else other,
                                  hidden_momentum=other)
        self.V_enc = EmbeddingNet(dims.video_dim, cfg.phi_dim, enc_hidden, cfg.embedding_dropout, m if enc_hidden else other,
                                  hidden_momentum=other)
        self.attention = TokenTransformer(
            cfg.phi_dim, cfg.depth, cfg.heads, cfg.dim_head, cfg.mlp_dim, cfg.embedding_dropout,
            n_tokens=2, train_pos_emb=not cfg.freeze_pos_emb,
        )
        dec_hidden = cfg.decoder_hidden or None
        self.head = AlignmentHead(
            cfg.phi_dim, dims.text_dim, cfg.out_dim, dec_hidden, cfg.decoder_dropout, cfg.additional_dropout,
            momentum=m if dec_hidden else other, hidden_momentum=other, single_momentum=other,
            text_side=cfg.text_side,
        )

    # --- forward pieces -----------------------------------------------------------------------------
    def encode(self, audio: Tensor, video: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(phi_a, phi_v, attended phi_a, attended phi_v), each [B, phi_dim]."""
        phi_a = self.A_enc(audio)
        phi_v = self.V_enc(video)
        return (phi_a, phi_v, *self.attend(phi_a, phi_v))

    def attend(self, phi_a: Tensor, phi_v: Tensor) -> tuple[Tensor, Tensor]:
        out = self.attention(torch.stack([phi_a, phi_v], dim=1))  # [B, 2, phi_dim], pos. embeddings inside
        if self.cfg.double_residual:
            return phi_a + out[:, 0], phi_v + out[:, 1]
        return out[:, 0], out[:, 1]

    # --- training -----------------------------------------------------------------------------------
    def training_step(self, batch: Batch) -> dict[str, Tensor]:
        neg = batch.negative
        if neg is None or batch.text is None:
            raise ValueError("AVCA trains on batches with text and a negative batch (uses_negatives)")
        cfg = self.cfg
        # Positives and negatives in separate calls: separate BatchNorm statistics, as the reference.
        phi_a = self.A_enc(batch.audio)
        phi_a_n = self.A_enc(neg.audio)
        phi_v = self.V_enc(batch.video)
        phi_v_n = self.V_enc(neg.video)
        att_a, att_v = self.attend(phi_a, phi_v)
        att_a_n, att_v_n = self.attend(phi_a_n, phi_v_n)  # no BN in the transformer
        pos = self.head(att_a, att_v, batch.text)
        # The reference also computes D(theta_w-), unused by the loss; D's running statistics never
        # reach the evaluation, so it is skipped.
        negative = self.head(att_a_n, att_v_n, neg.text, reconstruct=False, decode_text=False)
        if cfg.reference_bn_updates and self.training:
            self.head.project_reconstructions(pos)
        return alignment_loss(
            pos, negative, phi_a, phi_v, batch.text, margin=cfg.margin,
            first_triplet=cfg.first_additional_triplet, second_triplet=cfg.second_additional_triplet,
            use_l_t=cfg.additional_triplets, use_l_r=cfg.reg_loss,
        )

    def configure_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]  # frozen position embeddings excluded
        return make_adam(params, self.cfg)

    def optimization_step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
        terms = super().optimization_step(batch, optimizer)
        if self.cfg.reference_bn_updates and self.training:
            # The reference's training loop calls get_embeddings on the positives after each step, in
            # train mode: its only lasting effect is this update of the BN running statistics.
            with torch.no_grad():
                self._embeddings(batch.audio, batch.video, batch.text)
        return terms

    def _embeddings(self, audio: Tensor, video: Tensor, text: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(theta_a, theta_v, theta_w) as the reference's get_embeddings."""
        _, _, att_a, att_v = self.encode(audio, video)
        return self.head.P_a(att_a), self.head.P_v(att_v), self.head.P_w(text)

    # --- scoring ------------------------------------------------------------------------------------
    def embed_samples(self, batch: Batch) -> Tensor:
        """theta_v: the reference evaluates the video branch (after attention) only."""
        _, _, _, att_v = self.encode(batch.audio, batch.video)
        return self.head.P_v(att_v)

    def embed_classes(self, class_text: Tensor) -> Tensor:
        return self.head.embed_text(class_text)

"""ClipClap-GZSL (Kurzendoerfer et al., CVPRW 2024): one vector per video from CLIP (video) and CLAP (audio),
text from CLIP and CLAP text encoders, TCaF's head and loss on top.

This module owns ClipClap's config (`ClipClapConfig`) and model (`ClipClap`). Read from dkurzend/ClipClap-GZSL
src/clipclap_model.py (ClipClap_model: __init__, forward, compute_loss, get_embeddings), config/clipclap.yaml
and commands.sh (per-dataset lr / epochs), and baselines.md:

- o = O_enc([v; a]) (EmbeddingNet in -> 512: Linear, BN, ReLU, Dropout 0.1), video first as the reference
  concatenates; theta_o = O_proj(o) (512 -> 512 -> 64); rho_o = D_o(theta_o) (64 -> 512 -> 512).
- w' = W_enc(t) (text_dim -> 512, dropout 0.1); theta_w = W_proj(w') (512 -> 64);
  rho_w = D_w(theta_w) (64 -> 512).
- Loss: TCaF's (`avgzsl.methods.tcaf.tcaf_loss`): CE(theta_o . W_proj(W_enc(class texts))^T) + MSE(theta_o,
  theta_w) + MSE(rho_o, w') + MSE(rho_w, w'): the reconstruction target is the learned text encoding w'
  (not detached). W_enc and W_proj run twice per step (batch texts, then the training classes' texts), each
  call with its own BatchNorm statistics, as the reference.
- Prediction: theta_o against W_proj(W_enc(t_c)) of every class, plain L2 (protocol.md), beta grid
  linspace(0, 5, 76) (the configs' train.beta_grid).
- Inputs of any dimension: O_enc takes audio_dim + video_dim, W_enc text_dim (ClipClap's features are
  512 + 1024 and 512 + 1024 text; `avgzsl extract` with LAION's CLAP gives 512 + 512 and 1024 text).
- The reference's modality ablation (`--modality audio|video|both`, `--word_embeddings clip|wavcaps`) is
  `modality` / `text`: one input stream, and the CLIP ([:clip_text_dim]) or CLAP ([clip_text_dim:]) part of a
  concatenated text embedding (`avgzsl embed-classes --encoder clipclap` writes [clip; clap]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from avgzsl.data.types import Batch
from avgzsl.methods.base import DataDims, Method, OptimConfig
from avgzsl.methods.layers import EmbeddingNet
from avgzsl.methods.registry import register_method
from avgzsl.methods.tcaf import tcaf_loss

__all__ = ["ClipClap", "ClipClapConfig"]


@dataclass
class ClipClapConfig(OptimConfig):
    """ClipClap's hyper-parameters. Defaults: the reference's UCF run (config/clipclap.yaml, commands.sh)."""

    lr: float = 7e-5
    weight_decay: float = 1e-5  # the reference's Adam hard-codes 1e-5
    hidden: int = 512  # width of O_enc / W_enc outputs (hard-coded 512 in the reference)
    enc_dropout: float = 0.1  # O_enc, W_enc (hard-coded 0.1)
    proj_hidden: int = 512  # decoder_hidden_size: O_proj and D_o hidden layer (0 = one layer)
    o_dropout: float = 0.1  # decoder_dropout: O_proj, D_o
    w_dropout: float = 0.1  # additional_dropout: W_proj, D_w
    out_dim: int = 64  # dim_out: the joint space of theta_o and theta_w
    ce_loss: bool = True  # cross_entropy_loss
    reg_loss: bool = True  # reg_loss
    rec_loss: bool = True  # rec_loss
    # --modality: which stream(s) enter O_enc
    modality: Literal["both", "audio", "video"] = "both"
    # --word_embeddings: "both" = the whole text embedding; "clip" / "clap" = its first clip_text_dim
    # values / the rest; "auto" = the reference's pairing: both with both streams, clip text with video
    # only, clap text with audio only
    text: Literal["auto", "both", "clip", "clap"] = "auto"
    clip_text_dim: int = 512  # size of the CLIP part of a concatenated [clip; clap] text embedding


@register_method("clipclap")
class ClipClap(Method):
    """O_enc([v; a]) -> O_proj -> theta_o; W_enc(text) -> W_proj -> theta_w; decoders to W_enc's space; TCaF's
    loss."""

    Config = ClipClapConfig
    uses_negatives = False
    feature_kinds = ("averaged",)

    @classmethod
    def check_config(cls, cfg) -> None:
        from avgzsl.config import ConfigError

        m = cfg.method
        for key in ("hidden", "out_dim", "clip_text_dim"):
            if getattr(m, key) < 1:
                raise ConfigError(f"method.{key} must be >= 1, got {getattr(m, key)}")
        if m.proj_hidden < 0:
            raise ConfigError(f"method.proj_hidden must be >= 0 (0 = one layer), got {m.proj_hidden}")
        if not (m.ce_loss or m.reg_loss or m.rec_loss):
            raise ConfigError("method.ce_loss, reg_loss and rec_loss are all false: nothing to train")

    @classmethod
    def ablation_variants(cls) -> dict[str, dict]:
        """The reference's modality / text ablation (commands.sh); the text rows need [clip; clap] text."""
        return {
            "clipclap": {},
            "video only": {"modality": "video"},
            "audio only": {"modality": "audio"},
            "clip text": {"text": "clip"},
            "clap text": {"text": "clap"},
        }

    def __init__(self, cfg: ClipClapConfig, dims: DataDims):
        super().__init__(cfg, dims)
        if dims.temporal:
            raise ValueError("ClipClap takes averaged features (one vector per video), not temporal ones")
        self.text_part = self._text_part(cfg, dims)
        in_dim = {"both": dims.audio_dim + dims.video_dim, "audio": dims.audio_dim, "video": dims.video_dim}[
            cfg.modality
        ]
        text_dim = self.text_part[1] - self.text_part[0]
        proj_hidden = cfg.proj_hidden or None
        self.O_enc = EmbeddingNet(in_dim, cfg.hidden, None, cfg.enc_dropout)
        self.W_enc = EmbeddingNet(text_dim, cfg.hidden, None, cfg.enc_dropout)
        self.O_proj = EmbeddingNet(cfg.hidden, cfg.out_dim, proj_hidden, cfg.o_dropout)
        self.D_o = EmbeddingNet(cfg.out_dim, cfg.hidden, proj_hidden, cfg.o_dropout)
        self.W_proj = EmbeddingNet(cfg.hidden, cfg.out_dim, None, cfg.w_dropout)
        self.D_w = EmbeddingNet(cfg.out_dim, cfg.hidden, None, cfg.w_dropout)

    @staticmethod
    def _text_part(cfg: ClipClapConfig, dims: DataDims) -> tuple[int, int]:
        """[start, stop) of the text embedding that W_enc reads."""
        text = (
            cfg.text
            if cfg.text != "auto"
            else {"both": "both", "video": "clip", "audio": "clap"}[cfg.modality]
        )
        if text == "both":
            return 0, dims.text_dim
        if not 0 < cfg.clip_text_dim < dims.text_dim:
            raise ValueError(
                f"method.text={text} (or modality={cfg.modality} with text=auto) reads one part of a "
                f"concatenated [clip; clap] text embedding, split at method.clip_text_dim="
                f"{cfg.clip_text_dim}; the text embeddings have {dims.text_dim} values. Embed the "
                f"classes with `avgzsl embed-classes --encoder clipclap`, set method.clip_text_dim, or "
                f"use method.text=both"
            )
        return (0, cfg.clip_text_dim) if text == "clip" else (cfg.clip_text_dim, dims.text_dim)

    # --- parts ------------------------------------------------------------------------------------------
    def _input(self, batch: Batch) -> Tensor:
        if self.cfg.modality == "audio":
            return batch.audio.float()
        if self.cfg.modality == "video":
            return batch.video.float()
        return torch.cat(
            [batch.video.float(), batch.audio.float()], dim=1
        )  # [v; a], video first as the reference

    def _text(self, text: Tensor) -> Tensor:
        a, b = self.text_part
        return text if (a, b) == (0, text.shape[1]) else text[:, a:b]

    def embed_samples(self, batch: Batch) -> Tensor:
        return self.O_proj(self.O_enc(self._input(batch)))

    def embed_classes(self, class_text: Tensor) -> Tensor:
        return self.W_proj(self.W_enc(self._text(class_text)))

    # --- training -----------------------------------------------------------------------------------------
    def training_step(self, batch: Batch) -> dict[str, Tensor]:
        if batch.text is None or batch.classes is None or batch.class_text is None:
            raise ValueError(
                "ClipClap trains on batches with text, classes and class_text (training batches)"
            )
        cfg = self.cfg
        # Call order of the reference's forward, then compute_loss (it sets the BatchNorm running statistics).
        theta_o = self.O_proj(self.O_enc(self._input(batch)))
        w = self.W_enc(self._text(batch.text))
        rho_o = self.D_o(theta_o)
        theta_w = self.W_proj(w)
        rho_w = self.D_w(theta_w)
        class_theta = self.embed_classes(batch.class_text) if cfg.ce_loss else None
        return tcaf_loss(
            theta_o,
            theta_w,
            rho_o,
            rho_w,
            w,
            class_theta,
            batch.targets(),
            ce=cfg.ce_loss,
            reg=cfg.reg_loss,
            rec=cfg.rec_loss,
        )

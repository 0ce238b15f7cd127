"""TCaF (Mercea et al., ECCV 2022): temporal cross-attention over per-time-step audio and video features.

This module owns TCaF: its config (`TCaFConfig`), the model (`TCaF`: per-step encoders, token embedding,
masked multi-modal transformer with a CLS token, projection head), its loss (`tcaf_loss`) and its
sequence handling (fixed-length crops with the audio crop aligned to the video crop, timestamps,
attention masks). The audio-visual token encoder (everything before the projection head, with its config
fields `AVTokenConfig`) is the mixin `AVTokenEncoder`, so that methods built on TCaF's tokens (EZ-AVGZL)
reuse it. Faithful to the reference (ExplainableML/TCAF-GZSL) by default; each reference quirk
and each departure is a named `TCaFConfig` field with a one-line reason.

What the reference does, as read from its code (src/model_sequence.py unless said otherwise):
- `Multimodal_Sequence_Transformer.forward`: audio / 255, `F.normalize(video)`; per-step encoders
  A_enc, V_enc (EmbeddingNet in -> enc_hidden -> 300) on the flattened [B * T, D] steps; then
  `AudioVisualEmbedding`: each token gets [feature ; modality emb + Fourier time emb + padding emb]
  (the padding embedding only at padded steps), a 1x1 Conv1d (300 + 64 -> 300) per modality, dropout.
  Time emb: sin/cos of 2 pi [t, t] @ (10 * randn(2, 32)), then Linear(64, 64); t in seconds.
- `Transformer` of `TransformerLayer`s: x = x + Attn(LN(x)); x = x + FF(LN(x)) with ONE LayerNorm
  per layer, FF Linear-GELU-Dropout-Linear-Dropout, attention with bias-free q/k/v, output Linear +
  Dropout, no final norm. `NewAttention` masks: key and query both valid; with cross-attention only,
  the audio-audio and video-video blocks are masked, so audio tokens see CLS and video, video tokens
  see CLS and audio, CLS sees everything valid.
- Head: theta_o = O_proj(CLS output) (300 -> 512 -> 64), rho_o = D_o(theta_o) (64 -> 512 -> 300),
  theta_w = W_proj(w) (300 -> 64), rho_w = D_w(theta_w) (64 -> 300), every block an EmbeddingNet.
- `compute_loss`: CE(theta_o . W_proj(text of the training classes)^T, class position)
  + MSE(theta_o, theta_w) + MSE(w, rho_o) + MSE(w, rho_w), each weight 1. W_proj runs twice per step
  (batch texts, then class texts), so each call has its own BatchNorm statistics.
- `get_embeddings` (evaluation) passes no timestamps, so positions are integer indices there.
- src/dataset.py `DefaultCollator`: 'max' pads to the batch's longest; 'fixed' (ActivityNet) crops /
  pads video to max_len steps (train: random start in [0, diff - 1]; test: centre, diff // 2) and audio
  to round(max_len * rate_video * rate_audio) steps starting at round(start_v * rate_video / rate_audio);
  timestamps are index * rate from the start of the crop.
- src/train.py `train_step`: after every optimiser step, `get_embeddings` on the batch in train mode
  (its only lasting effect: one more BatchNorm running-statistics update).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avgzsl.data.types import Batch
from avgzsl.methods.base import DataDims, Method, OptimConfig
from avgzsl.methods.layers import EmbeddingNet, FastDropout
from avgzsl.methods.registry import register_method

__all__ = ["AVTokenConfig", "AVTokenEncoder", "TCaF", "TCaFConfig", "attention_mask", "crop_starts", "take_window",
           "tcaf_loss"]


@dataclass
class AVTokenConfig(OptimConfig):
    """TCaF's audio-visual token encoder (`AVTokenEncoder`): per-step encoders, token embedding, CLS
    transformer and sequence handling; shared by TCaF and methods built on its tokens (EZ-AVGZL).
    Defaults: the reference's UCF main-feature run (config/best/best_main/best_ucf.yaml)."""

    lr: float = 5e-5
    weight_decay: float = 1e-5  # the reference's Adam (optimizer_gen) hard-codes 1e-5
    # sizes
    enc_hidden: int = 256  # embeddings_hidden_size: A_enc, V_enc in -> enc_hidden -> dim (0 = one layer)
    dim: int = 300  # transformer_dim: encoder output, token and transformer width
    depth: int = 5  # transformer_depth
    heads: int = 8  # transformer_heads
    dim_head: int = 64  # transformer_dim_head
    mlp_dim: int = 128  # transformer_mlp_dim
    embed_dim: int = 64  # transformer_embedding_dim: modality / time / padding embeddings
    fourier_scale: float = 10.0  # transformer_embedding_fourier_scale
    # dropouts
    enc_dropout: float = 0.4  # embedding_dropout: A_enc, V_enc
    token_dropout: float = 0.2  # transformer_embedding_dropout: after the token projection
    transformer_dropout: float = 0.3  # transformer_dropout: attention output and feed-forward
    # attention pattern (use_self_attention / use_cross_attention); every best config uses "cross"
    attention: Literal["cross", "self", "both"] = "cross"
    # sequences: seconds per time step (main: SeLaVi 1 s / 1 s; cls: VGGish 0.96 s / C3D 0.64 s)
    audio_step_seconds: float = 1.0
    video_step_seconds: float = 1.0
    # fixed sequence length in video steps (ActivityNet: 60 random crop in training, 300 centre crop at
    # evaluation); 0 = no crop, the batch is padded to its longest sequence (UCF, VGGSound)
    train_crop_steps: int = 0
    eval_crop_steps: int = 0
    # Audio is divided by this. The reference divides every audio by 255. For VGGish (cls) audio, 0..255,
    # the data loader already applies that 1/255 to temporal cls features (data.loading.default_audio_scale),
    # so 1 here is the reference's scaling. On SeLaVi (main) audio, the reference's /255 leaves 65,000x less
    # input variance, near BatchNorm's eps; default 1, method.audio_divisor=255 on main reproduces it.
    audio_divisor: float = 1.0
    # samples per chunk when embedding for evaluation: bounds the [chunk, heads, N, N] attention memory
    # (the protocol scores up to train.eval_batch_size samples per call); no effect on the numbers
    eval_chunk_size: int = 128
    # --- reference quirks (default: the sane behaviour; the other value reproduces the reference) ---
    # Reference F.normalize(v) on [B, T, D] normalises each feature over time; "features" normalises
    # each step's feature vector (the evident intent); "none" leaves video as it is.
    video_norm: Literal["features", "time", "none"] = "features"
    # Reference evaluation passes no timestamps: positions are step indices at test but seconds in
    # training (the same for 1 s SeLaVi steps, not for C3D / VGGish). "indices" reproduces it.
    eval_positions: Literal["seconds", "indices"] = "seconds"
    # Reference fixed-length audio crop is round(L * rate_video * rate_audio) steps (37 for 60 C3D
    # steps, covering 35.5 s of a 38.4 s video window); "duration" covers the video window (40 steps).
    audio_crop_length: Literal["duration", "reference"] = "duration"
    # Reference random crop draws torch.randint(diff): start in [0, diff - 1], never the last window;
    # "uniform" draws from [0, diff]. "reference" reproduces it.
    crop_start: Literal["uniform", "reference"] = "uniform"
    # Reference encoders run on all B * T steps, so zero-padded steps enter BatchNorm's batch (and
    # running) statistics, and the batch's padding changes every sample's output in training. False
    # normalises over real steps only; True reproduces it (and pads fixed-length crops in training).
    bn_stats_with_padding: bool = False


@dataclass
class TCaFConfig(AVTokenConfig):
    """TCaF's hyper-parameters: the token encoder's (`AVTokenConfig`) and its projection head and loss.
    Defaults: the reference's UCF main-feature run (config/best/best_main/best_ucf.yaml)."""

    out_dim: int = 64  # dim_out: the joint space of theta_o and theta_w
    proj_hidden: int = 512  # decoder_hidden_size: hidden size of O_proj and D_o (0 = one layer)
    o_dropout: float = 0.2  # decoder_dropout: O_proj, D_o
    w_dropout: float = 0.1  # additional_dropout: W_proj, D_w
    # loss terms (cross_entropy_loss / reg_loss / rec_loss, all on in every best config)
    ce_loss: bool = True
    reg_loss: bool = True
    rec_loss: bool = True
    # Reference training loop calls get_embeddings on the batch after each step, in train mode: one more
    # BatchNorm running-statistics update of A_enc, V_enc, O_proj, W_proj. A side effect of its logging
    # code that costs ~1/3 of a forward per step; True reproduces it.
    reference_bn_updates: bool = False


# --- sequence handling ----------------------------------------------------------------------------------
def crop_starts(
    len_v: Tensor, len_a: Tensor, crop_v: int, crop_a: int, step_v: float, step_a: float,
    mode: Literal["random", "center"], reference_randint: bool = False,
) -> tuple[Tensor, Tensor]:
    """First step of each sample's video and audio window (as the reference collator, vectorised).

    Video: where a video is longer than `crop_v`, a random start (uniform over [0, diff], or [0, diff - 1]
    with `reference_randint`) or the centre start diff // 2; 0 elsewhere. Audio: the same time in seconds,
    round(start_v * step_v / step_a), at most len_a - crop_a, and 0 where the video is not cropped or the
    audio is not longer than `crop_a`. Random draws use torch's global RNG.
    """
    diff_v = len_v - crop_v
    diff_a = len_a - crop_a
    if mode == "center":
        start_v = torch.div(diff_v, 2, rounding_mode="floor")
    else:
        span = diff_v if reference_randint else diff_v + 1
        u = torch.rand(len_v.shape, dtype=torch.float64, device=len_v.device)
        start_v = (u * span.clamp_min(1)).floor().long()
    start_v = torch.where(diff_v > 0, start_v, torch.zeros_like(start_v))
    start_a = torch.round(start_v.double() * step_v / step_a).long()
    start_a = torch.minimum(start_a, diff_a).clamp_min(0)
    return start_v, start_a


def take_window(x: Tensor, mask: Tensor, start: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Steps start .. start + length - 1 of each sample: ([B, length, D] zero-padded, mask [B, length])."""
    b, t, d = x.shape
    idx = start[:, None] + torch.arange(length, device=x.device)
    valid = idx < mask.sum(1, keepdim=True)
    idx = idx.clamp_max(t - 1)
    out = x.gather(1, idx[..., None].expand(b, length, d)) * valid[..., None].to(x.dtype)
    return out, valid


def attention_mask(audio_mask: Tensor, video_mask: Tensor, pattern: str = "cross") -> Tensor:
    """[B, 1, N, N] boolean attention mask over [CLS; audio; video] (N = 1 + T_a + T_v), True = attend.

    A query may attend a key if the key is a real step (CLS always is) and the pattern allows the pair:
    "cross": CLS <-> everything, audio <-> video (no audio-audio, no video-video: the reference's best
    configs); "self": CLS <-> everything, audio <-> audio, video <-> video; "both": every pair.
    Padded queries get the same rows as real ones (their outputs are never used); since CLS is always
    allowed, no row is empty, so attention never produces NaN.
    """
    b, t_a = audio_mask.shape
    t_v = video_mask.shape[1]
    kind = torch.cat([torch.zeros(1, dtype=torch.long), torch.ones(t_a, dtype=torch.long),
                      torch.full((t_v,), 2, dtype=torch.long)]).to(audio_mask.device)
    q, k = kind[:, None], kind[None, :]
    if pattern == "cross":
        rule = (q == 0) | (k == 0) | (q != k)
    elif pattern == "self":
        rule = (q == 0) | (k == 0) | (q == k)
    elif pattern == "both":
        rule = torch.ones_like(q == k)
    else:
        raise ValueError(f"unknown attention pattern {pattern!r}")
    cls = torch.ones(b, 1, dtype=torch.bool, device=audio_mask.device)
    valid = torch.cat([cls, audio_mask, video_mask], 1)
    return (rule[None] & valid[:, None, :])[:, None]


def tcaf_loss(
    theta_o: Tensor, theta_w: Tensor, rho_o: Tensor, rho_w: Tensor, w: Tensor, class_theta: Tensor | None,
    targets: Tensor, ce: bool = True, reg: bool = True, rec: bool = True,
) -> dict[str, Tensor]:
    """TCaF's loss (compute_loss): l_ce + l_reg + l_rec, every weight 1.

    l_ce = CE(theta_o . class_theta^T, targets) (no temperature), l_reg = MSE(theta_o, theta_w),
    l_rec = MSE(w, rho_o) + MSE(w, rho_w). Switched-off terms are 0.
    Returns {'loss', 'l_ce', 'l_reg', 'l_rec'}.
    """
    zero = theta_o.new_zeros(())
    l_ce = F.cross_entropy(theta_o @ class_theta.t(), targets) if ce else zero
    l_reg = F.mse_loss(theta_o, theta_w) if reg else zero
    l_rec = F.mse_loss(rho_o, w) + F.mse_loss(rho_w, w) if rec else zero
    return {"loss": l_ce + l_reg + l_rec, "l_ce": l_ce, "l_reg": l_reg, "l_rec": l_rec}


# --- transformer over packed tokens -----------------------------------------------------------------------
@dataclass
class _Layout:
    """Where the packed tokens sit in the padded [B, N] sequence [CLS; audio; video].

    Tokens are kept packed, [M, dim] with only real steps (rows: B CLS tokens, then the real audio steps,
    then the real video steps), so per-token layers never compute padding; attention scatters them into
    the padded layout. scatter: [M] flat padded position (b * N + n) of each packed row.
    """

    batch: int
    length: int  # N
    scatter: Tensor
    mask: Tensor  # [B, 1, N, N]


class _Attention(nn.Module):
    """Multi-head attention with bias-free q / k / v (stacked in one Linear, each dim -> heads * dim_head)
    and an output Linear + dropout (the reference's NewAttention; its to_out exists for every size)."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.inner = heads * dim_head
        self.to_qkv = nn.Linear(dim, 3 * self.inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(self.inner, dim), FastDropout(dropout))

    def _padded_heads(self, rows: Tensor, lay: _Layout, parts: int) -> list[Tensor]:
        """[M, parts * inner] packed rows -> `parts` tensors [B, H, N, Dh], zeros at padded positions."""
        buf = rows.new_zeros(lay.batch * lay.length, rows.shape[1]).index_copy(0, lay.scatter, rows)
        # unbind + transpose views (no permute of the stacked tensor: its backward costs two extra copies)
        heads = buf.view(lay.batch, lay.length, parts, self.heads, self.dim_head).unbind(2)
        return [t.transpose(1, 2) for t in heads]

    def forward(self, h: Tensor, lay: _Layout, cls_only: bool = False) -> Tensor:
        """h: [M, dim] normalised packed tokens -> [M, dim] (or [B, dim] for the CLS queries only)."""
        b, n = lay.batch, lay.length
        w = self.to_qkv.weight
        if cls_only:
            # Only the CLS output is used after the last layer: queries of the B CLS rows only.
            q = F.linear(h[:b], w[: self.inner]).view(b, self.heads, 1, self.dim_head)
            k, v = self._padded_heads(F.linear(h, w[self.inner:]), lay, 2)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=lay.mask[:, :, :1])  # [B, H, 1, Dh]
            return self.to_out(out.reshape(b, self.inner))
        q, k, v = self._padded_heads(F.linear(h, w), lay, 3)  # each [B, H, N, Dh]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=lay.mask)  # scale 1 / sqrt(Dh) as reference
        out = out.transpose(1, 2).reshape(b * n, self.inner).index_select(0, lay.scatter)
        return self.to_out(out)


class _Layer(nn.Module):
    """Pre-norm layer; one LayerNorm shared by the attention and feed-forward inputs (as the reference)."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads, dim_head, dropout)
        self.ff = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), FastDropout(dropout),
            nn.Linear(mlp_dim, dim), FastDropout(dropout),
        )

    def forward(self, x: Tensor, lay: _Layout, cls_only: bool = False) -> Tensor:
        if cls_only:
            x = x[: lay.batch] + self.attn(self.norm(x), lay, cls_only=True)
        else:
            x = x + self.attn(self.norm(x), lay)
        return x + self.ff(self.norm(x))


class _TokenEmbedding(nn.Module):
    """AudioVisualEmbedding: [feature ; modality + Fourier time (+ padding) embedding] -> Linear -> dropout.

    The reference's per-modality 1x1 Conv1d (dim + embed_dim -> dim) is a Linear on each token; it is
    applied as feature @ W_x^T + (embedding @ W_e^T + b), the second part once per time step.
    The padding embedding is kept for parameter parity: the reference adds it only to padded steps,
    which attention masks out, so it never reaches an output (tokens here are real steps only).
    """

    def __init__(self, dim: int, embed_dim: int, fourier_scale: float, dropout: float):
        super().__init__()
        if embed_dim % 2:
            raise ValueError(f"embed_dim must be even (sin and cos halves), got {embed_dim}")
        self.dim = dim
        self.modal = nn.Embedding(2, embed_dim)  # 0 audio, 1 video
        self.fourier = nn.Linear(embed_dim, embed_dim)
        # fixed random Fourier matrix (a buffer, as the reference): sin / cos of 2 pi [t, t] @ fourier_randn
        self.register_buffer("fourier_randn", fourier_scale * torch.randn(2, embed_dim // 2))
        self.pad = nn.Embedding(1, embed_dim)
        self.proj = nn.ModuleList([nn.Linear(dim + embed_dim, dim), nn.Linear(dim + embed_dim, dim)])
        self.dropout = FastDropout(dropout)

    def time_embedding(self, times: Tensor) -> Tensor:
        """[T] timestamps -> [T, embed_dim]: Linear(sin, cos of 2 pi [t, t] @ randn)."""
        proj = (2.0 * math.pi * torch.stack([times, times], -1)) @ self.fourier_randn
        return self.fourier(torch.cat([proj.sin(), proj.cos()], -1))

    def forward(self, feats: Tensor, step: Tensor, times: Tensor, modality: int) -> Tensor:
        """feats [R, dim] of real steps, step [R] their time-step index, times [T] position of each index.

        Returns [R, dim]."""
        proj = self.proj[modality]
        emb = self.time_embedding(times) + self.modal.weight[modality]  # [T, embed_dim]
        per_step = F.linear(emb, proj.weight[:, self.dim:], proj.bias)  # [T, dim]
        return self.dropout(F.linear(feats, proj.weight[:, : self.dim]) + per_step[step])


@dataclass
class _Sequences:
    """A batch after cropping and input scaling: [B, T, D] sequences with masks, and positions per step."""

    audio: Tensor
    audio_mask: Tensor
    video: Tensor
    video_mask: Tensor
    times_a: Tensor  # [T_a] position of step index t (seconds, or the index itself)
    times_v: Tensor


# --- the audio-visual token encoder ------------------------------------------------------------------------
class AVTokenEncoder:
    """TCaF's audio-visual token encoder, as a mixin of a `Method` whose config is an `AVTokenConfig`.

    Per-step encoders A_enc / V_enc, token embedding, [CLS; audio; video] transformer with the attention
    pattern's mask, and the sequence handling (crops, input scaling, positions). Its modules are attributes
    of the method itself, so TCaF's parameter names (and checkpoints) stay those of the reference; a method
    built on TCaF's tokens (EZ-AVGZL) inherits it too instead of copying it.
    """

    cfg: AVTokenConfig

    @staticmethod
    def check_encoder_config(m: AVTokenConfig) -> None:
        """Range checks of the encoder's fields (ConfigError naming the key)."""
        from avgzsl.config import ConfigError

        for key in ("train_crop_steps", "eval_crop_steps", "enc_hidden"):
            if getattr(m, key) < 0:
                raise ConfigError(f"method.{key} must be >= 0 (0 = off), got {getattr(m, key)}")
        for key in ("depth", "heads", "dim_head", "mlp_dim", "dim", "eval_chunk_size"):
            if getattr(m, key) < 1:
                raise ConfigError(f"method.{key} must be >= 1, got {getattr(m, key)}")
        for key in ("audio_step_seconds", "video_step_seconds", "audio_divisor"):
            if not getattr(m, key) > 0:
                raise ConfigError(f"method.{key} must be > 0, got {getattr(m, key)}")
        if m.embed_dim < 2 or m.embed_dim % 2:
            raise ConfigError(f"method.embed_dim must be even and >= 2 (sin / cos halves), got {m.embed_dim}")

    def build_step_encoders(self, cfg: AVTokenConfig, dims: DataDims) -> None:
        """A_enc, V_enc: per-step EmbeddingNets to cfg.dim. Refuses averaged features."""
        if not dims.temporal:
            raise ValueError(f"{type(self).__name__} takes temporal features (per-time-step sequences, "
                             "data.temporal=true), not averaged features")
        enc_hidden = cfg.enc_hidden or None
        self.A_enc = EmbeddingNet(dims.audio_dim, cfg.dim, enc_hidden, cfg.enc_dropout)
        self.V_enc = EmbeddingNet(dims.video_dim, cfg.dim, enc_hidden, cfg.enc_dropout)

    def build_transformer(self, cfg: AVTokenConfig) -> None:
        """CLS token, token embedding and the transformer layers."""
        self.cls_token = nn.Parameter(torch.randn(1, cfg.dim))
        self.embedding = _TokenEmbedding(cfg.dim, cfg.embed_dim, cfg.fourier_scale, cfg.token_dropout)
        self.layers = nn.ModuleList([
            _Layer(cfg.dim, cfg.heads, cfg.dim_head, cfg.mlp_dim, cfg.transformer_dropout)
            for _ in range(cfg.depth)
        ])

    # --- sequences ------------------------------------------------------------------------------------
    def prepare(self, batch: Batch) -> _Sequences:
        """Crop (train: random, eval: centre; audio aligned in seconds), scale audio, normalise video."""
        cfg = self.cfg
        if batch.audio.dim() != 3 or batch.audio_mask is None or batch.video_mask is None:
            raise ValueError(f"{type(self).__name__} needs temporal batches: audio / video [B, T, D], audio_mask, "
                             "video_mask")
        audio, a_mask, video, v_mask = batch.audio, batch.audio_mask, batch.video, batch.video_mask
        crop_v = cfg.train_crop_steps if self.training else cfg.eval_crop_steps
        if crop_v > 0:
            ratio = cfg.video_step_seconds / cfg.audio_step_seconds if cfg.audio_crop_length == "duration" \
                else cfg.video_step_seconds * cfg.audio_step_seconds
            crop_a = max(1, round(crop_v * ratio))
            len_a, len_v = a_mask.sum(1), v_mask.sum(1)
            # The reference pads every fixed-length batch to the full crop; that only matters where padded
            # steps enter BatchNorm statistics (bn_stats_with_padding, training).
            pad_full = cfg.bn_stats_with_padding and self.training
            if pad_full or bool((len_v > crop_v).any()) or bool((len_a > crop_a).any()):
                start_v, start_a = crop_starts(
                    len_v, len_a, crop_v, crop_a, cfg.video_step_seconds, cfg.audio_step_seconds,
                    "random" if self.training else "center", reference_randint=cfg.crop_start == "reference",
                )
                out_v = crop_v if pad_full else min(crop_v, video.shape[1])
                out_a = crop_a if pad_full else min(crop_a, audio.shape[1])
                video, v_mask = take_window(video, v_mask, start_v, out_v)
                audio, a_mask = take_window(audio, a_mask, start_a, out_a)
        audio = audio / cfg.audio_divisor
        if cfg.video_norm == "features":
            video = F.normalize(video, dim=-1)
        elif cfg.video_norm == "time":
            video = F.normalize(video, dim=1)
        indices = not self.training and cfg.eval_positions == "indices"
        step_a = 1.0 if indices else cfg.audio_step_seconds
        step_v = 1.0 if indices else cfg.video_step_seconds
        times_a = torch.arange(audio.shape[1], device=audio.device, dtype=audio.dtype) * step_a
        times_v = torch.arange(video.shape[1], device=video.device, dtype=video.dtype) * step_v
        return _Sequences(audio, a_mask, video, v_mask, times_a, times_v)

    def eval_chunks(self, batch: Batch):
        """The batch in chunks of cfg.eval_chunk_size samples, each without the padding no sample of it needs."""
        for start in range(0, len(batch), self.cfg.eval_chunk_size):
            part = slice(start, start + self.cfg.eval_chunk_size)
            a_mask, v_mask = batch.audio_mask[part], batch.video_mask[part]
            t_a, t_v = int(a_mask.sum(1).max()), int(v_mask.sum(1).max())  # drop the chunk's extra padding
            yield Batch(batch.audio[part, :t_a], batch.video[part, :t_v], batch.labels[part],
                        audio_mask=a_mask[:, :t_a], video_mask=v_mask[:, :t_v])

    def _encode_steps(self, enc: EmbeddingNet, x: Tensor, mask: Tensor) -> Tensor:
        """Encoder on the real steps -> [R, dim] in row-major (sample, step) order."""
        if self.cfg.bn_stats_with_padding:
            b, t, d = x.shape
            return enc(x.reshape(b * t, d))[mask.reshape(-1)]
        return enc(x[mask])

    # --- forward --------------------------------------------------------------------------------------
    def _transformer(self, seq: _Sequences, cls_only: bool) -> tuple[Tensor, _Layout]:
        """Packed transformer output ([M, dim]; [B, dim] CLS rows only with cls_only) and its layout."""
        a_mask, v_mask = seq.audio_mask, seq.video_mask
        b, t_a = a_mask.shape
        t_v = v_mask.shape[1]
        n = 1 + t_a + t_v
        nz_a, nz_v = a_mask.nonzero(), v_mask.nonzero()  # row-major: the order of the encoder rows
        tok_a = self.embedding(self._encode_steps(self.A_enc, seq.audio, a_mask), nz_a[:, 1], seq.times_a, 0)
        tok_v = self.embedding(self._encode_steps(self.V_enc, seq.video, v_mask), nz_v[:, 1], seq.times_v, 1)
        x = torch.cat([self.cls_token.expand(b, -1), tok_a, tok_v])
        scatter = torch.cat([
            torch.arange(b, device=x.device) * n,
            nz_a[:, 0] * n + 1 + nz_a[:, 1],
            nz_v[:, 0] * n + 1 + t_a + nz_v[:, 1],
        ])
        lay = _Layout(b, n, scatter, attention_mask(a_mask, v_mask, self.cfg.attention))
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, lay, cls_only=(i == last and cls_only))
        return x, lay

    def cls_output(self, seq: _Sequences, all_tokens: bool = False) -> Tensor:
        """Transformer output of the CLS token, [B, dim] (all_tokens: every packed token, [M, dim])."""
        x, lay = self._transformer(seq, cls_only=not all_tokens)
        return x if all_tokens else x[: lay.batch]

    def tokens(self, seq: _Sequences) -> tuple[Tensor, Tensor]:
        """Every output token in the padded layout [CLS; audio; video]: ([B, N, dim], valid mask [B, N]).

        Padded positions hold zeros and are False in the mask; N = 1 + T_a + T_v of the (cropped) batch.
        """
        x, lay = self._transformer(seq, cls_only=False)
        padded = x.new_zeros(lay.batch * lay.length, x.shape[1]).index_copy(0, lay.scatter, x)
        cls = torch.ones(lay.batch, 1, dtype=torch.bool, device=x.device)
        valid = torch.cat([cls, seq.audio_mask, seq.video_mask], 1)
        return padded.view(lay.batch, lay.length, x.shape[1]), valid


# --- the method -----------------------------------------------------------------------------------------
@register_method("tcaf")
class TCaF(AVTokenEncoder, Method):
    """Per-step encoders, [CLS; audio; video] cross-attention transformer, CLS -> theta_o; text -> theta_w."""

    Config = TCaFConfig
    uses_negatives = False
    feature_kinds = ("temporal",)

    @classmethod
    def check_config(cls, cfg) -> None:
        from avgzsl.config import ConfigError

        m = cfg.method
        cls.check_encoder_config(m)
        if m.proj_hidden < 0:
            raise ConfigError(f"method.proj_hidden must be >= 0 (0 = off), got {m.proj_hidden}")
        if m.out_dim < 1:
            raise ConfigError(f"method.out_dim must be >= 1, got {m.out_dim}")

    def __init__(self, cfg: TCaFConfig, dims: DataDims):
        super().__init__(cfg, dims)
        # creation order as before the encoder was a mixin: the same seed gives the same initial weights
        self.build_step_encoders(cfg, dims)
        self.W_proj = EmbeddingNet(dims.text_dim, cfg.out_dim, None, cfg.w_dropout)
        self.D_w = EmbeddingNet(cfg.out_dim, dims.text_dim, None, cfg.w_dropout)
        self.build_transformer(cfg)
        proj_hidden = cfg.proj_hidden or None
        self.O_proj = EmbeddingNet(cfg.dim, cfg.out_dim, proj_hidden, cfg.o_dropout)
        # The reference's D_o ends at transformer_dim and is compared with w: both are 300 there.
        self.D_o = EmbeddingNet(cfg.out_dim, dims.text_dim, proj_hidden, cfg.o_dropout)

    def _theta_o(self, seq: _Sequences) -> Tensor:
        return self.O_proj(self.cls_output(seq))

    # --- training -------------------------------------------------------------------------------------
    def _loss(self, batch: Batch, seq: _Sequences) -> dict[str, Tensor]:
        if batch.text is None or batch.classes is None or batch.class_text is None:
            raise ValueError("TCaF trains on batches with text, classes and class_text (training batches)")
        cfg = self.cfg
        # Call order as the reference forward + compute_loss (it sets the BatchNorm running statistics).
        theta_o = self._theta_o(seq)
        rho_o = self.D_o(theta_o)
        theta_w = self.W_proj(batch.text)
        rho_w = self.D_w(theta_w)
        class_theta = self.W_proj(batch.class_text) if cfg.ce_loss else None
        return tcaf_loss(theta_o, theta_w, rho_o, rho_w, batch.text, class_theta, batch.targets(),
                         ce=cfg.ce_loss, reg=cfg.reg_loss, rec=cfg.rec_loss)

    def training_step(self, batch: Batch) -> dict[str, Tensor]:
        return self._loss(batch, self.prepare(batch))

    def optimization_step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
        seq = self.prepare(batch)
        optimizer.zero_grad(set_to_none=True)
        terms = self._loss(batch, seq)
        terms["loss"].backward()
        optimizer.step()
        if self.cfg.reference_bn_updates and self.training:
            # The reference's get_embeddings after the step, on the same (cropped) batch, in train mode,
            # without timestamps (positions = indices): it only moves BatchNorm running statistics.
            with torch.no_grad():
                idx = _Sequences(seq.audio, seq.audio_mask, seq.video, seq.video_mask,
                                 torch.arange(seq.times_a.numel()).to(seq.times_a),
                                 torch.arange(seq.times_v.numel()).to(seq.times_v))
                self._theta_o(idx)
                self.W_proj(batch.text)
        return {k: v.detach() for k, v in terms.items()}

    # --- scoring --------------------------------------------------------------------------------------
    def embed_samples(self, batch: Batch) -> Tensor:
        """theta_o of each sample, [B, out_dim]; in eval mode in chunks of eval_chunk_size samples."""
        if self.training:
            return self._theta_o(self.prepare(batch))
        out = [self.cls_token.new_zeros(0, self.cfg.out_dim)]
        out += [self._theta_o(self.prepare(chunk)) for chunk in self.eval_chunks(batch)]
        return torch.cat(out)

    def embed_classes(self, class_text: Tensor) -> Tensor:
        return self.W_proj(class_text)

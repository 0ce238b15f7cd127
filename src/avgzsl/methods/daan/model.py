"""DAAN (Discrepancy-Aware Attention Network): QDMA encoders, audio-visual cross-attention, AVCA's
alignment head and loss, and CSGM gradient modulation. See docs in `avgzsl/methods/daan/__init__.py`
and the specification daan.md; every reconstructed choice is a field of `DAANConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from avgzsl.data.types import Batch
from avgzsl.methods.alignment import AlignmentHead, alignment_loss
from avgzsl.methods.base import DataDims, Method, OptimConfig
from avgzsl.methods.daan.csgm import CSGM, MODALITIES, CSGMSettings
from avgzsl.methods.daan.qdma import QDMA, MLPEncoder
from avgzsl.methods.layers import FastDropout, TokenTransformer
from avgzsl.methods.registry import register_method


@dataclass
class DAANConfig(OptimConfig):
    """DAAN's hyper-parameters. Defaults: the paper's UCF settings; [R] marks a reconstructed choice,
    [AVCA] a value the paper does not give, taken from AVCA's UCF run."""

    lr: float = 1e-3  # paper
    weight_decay: float = 1e-5  # [AVCA]
    # --- sizes (paper: input 512, hidden 512, output 300)
    hidden_dim: int = 512
    out_dim: int = 300
    # --- dropouts and BatchNorm, AVCA's names and UCF values [AVCA]
    embedding_dropout: float = 0.2  # QDMA refinement (or the Base's MLP encoder)
    decoder_dropout: float = 0.3  # P_a, P_v
    additional_dropout: float = 0.5  # P_w, D, R_a, R_v
    momentum: float = 0.1  # every BatchNorm
    # --- QDMA (daan.md 1)
    use_qdma: bool = True  # False: the ablation's Base encoder, EmbeddingNet in -> mlp_hidden -> hidden
    mlp_hidden: int = 512  # Base encoder's hidden size (AVCA's encoder)
    n_tokens: int = 8  # [R] chunks of an averaged feature
    heads: int = 4  # [R] differential-attention heads
    attn_dim: int = 0  # [R] total width of V (2d per head); 0 = the token size
    beta: float = 1.15  # paper's w (UCF 1.15, ActivityNet 0.5, VGGSound 1.2); our reading of the damaged text
    beta_init: float = 0.2  # [R] refinement scale (1 - beta_init), Differential Transformer's first-layer value
    # The defaults of the next three depart from daan.md's literal QDMA, which collapses (README, "The QDMA
    # finding", and its temporal counterpart); `--config daan_md` restores the literal reading.
    # [R] how token outputs become one vector: "mean" (daan.md) or "flatten" (concatenate the chunk tokens;
    # averaged features only); auto: flatten for averaged features, mean over time steps for temporal ones.
    # Mean pooling of chunk tokens superimposes the 8 chunks in one 64-d vector.
    pool: Literal["auto", "mean", "flatten"] = "auto"
    # [R] add each token to its normalised attention output (the Differential Transformer's residual,
    # X + MultiHead(X)); daan.md has none. Without it nothing carries a token's own content past an attention
    # whose two maps, weighted 1 and -beta (beta 1.15), sum to -0.15.
    token_residual: bool = True
    # [R] LayerNorm the tokens before the attention (the Differential Transformer's pre-LN); daan.md has none.
    # None (auto): on for temporal features, where per-step features carry a large common offset, off for
    # averaged ones (not measured there).
    qdma_prenorm: bool | None = None
    qdma_norm: Literal["group", "none"] = "group"  # [R] group (daan.md: per-head GroupNorm of each token) | none (to ablate it)
    pos_emb: Literal["auto", "learned", "sinusoidal", "none"] = "auto"  # [R] auto | learned | sinusoidal | none (auto: learned chunks, sinusoidal time steps)
    use_tcn: bool = True
    tcn_layers: int = 2  # paper's n (UCF 2, ActivityNet 3, VGGSound 5)
    tcn_kernel: int = 3  # paper's k (UCF 3, ActivityNet 9, VGGSound 5)
    tcn_input: Literal["reshape", "tokens"] = "reshape"  # [R] reshape (o_m as a pseudo-sequence) | tokens (the token sequence)
    tcn_steps: int = 8  # [R] pseudo-sequence length for tcn_input=reshape (hidden / tcn_steps channels)
    # --- cross-attention (daan.md 2)
    cross: Literal["attention", "transformer", "none"] = "attention"  # attention (the spec's, default) | transformer (AVCA's 2-token) | none
    cross_heads: int = 4  # [R]
    cross_ffn_dim: int = 512  # [R]
    cross_dropout: float | None = None  # [R] None = embedding_dropout (as AVCA's attention block)
    # --- loss (daan.md 4)
    margin: float = 1.0
    # --- CSGM (daan.md 5)
    csgm: Literal["off", "vc", "full"] = "full"  # off | vc (convergence rate only: the ablation's CSGM(V_c)) | full
    gamma: float = 0.45  # paper (UCF 0.45, ActivityNet 0.5, VGGSound 0.6)
    rho: float = 1.0  # [R] steepness of eta = max(1 - tanh(rho relu(s - 1)), gamma)
    noise: bool = True  # paper's eps ~ N(0, std(G)^2) on the modulated gradient
    csgm_eps: float = 1e-2  # [R] N(x) = x / (x + margin) + csgm_eps
    csgm_negatives: bool = True  # [R] sample i's negative's QDMA pass gets sample i's eta too
    # --- scoring
    predict_from: Literal["video", "audio", "mean"] = "video"  # [R] video (AVCA: theta_v) | audio | mean (of theta_a and theta_v)
    # Not in the paper: "frozen" keeps the text projection P_w at its random initialisation, a probe of whether
    # fitting P_w to the seen classes' texts alone costs unseen accuracy (README, "The linear gap").
    text_side: Literal["learned", "frozen"] = "learned"


# The paper's Table II rows as method-config overrides (`avgzsl ablate --method daan`).
ABLATION_VARIANTS = {
    "base": {"use_qdma": False, "csgm": "off"},  # MLP encoders + cross-attention + the same head
    "base+qdma": {"use_qdma": True, "csgm": "off"},
    "base+qdma+csgm_vc": {"use_qdma": True, "csgm": "vc"},
    "daan": {"use_qdma": True, "csgm": "full"},
}


def ablation_variants() -> dict[str, dict]:
    """The paper's Table II rows as method-config overrides (a copy of ABLATION_VARIANTS)."""
    return {k: dict(v) for k, v in ABLATION_VARIANTS.items()}


# --- cross-attention --------------------------------------------------------------------------------
class CrossAttentionBlock(nn.Module):
    """x attends to ctx: x = LN(x + MHA(q=x, k=v=ctx)); x = LN(x + FFN(x)) (post-norm). [B, N, dim] -> same."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), FastDropout(dropout), nn.Linear(ffn_dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.drop = FastDropout(dropout)

    def forward(self, x: Tensor, ctx: Tensor) -> Tensor:
        x = self.norm1(x + self.drop(self._attend(x, ctx)))
        return self.norm2(x + self.drop(self.ff(x)))

    def _attend(self, x: Tensor, ctx: Tensor) -> Tensor:
        if ctx.shape[1] != 1:
            return self.attn(x, ctx, ctx, need_weights=False)[0]
        # One key: every softmax weight is exactly 1, so the output is out_proj(v_proj(ctx)) for each query.
        # Same values and gradients (Q and K get zero gradient either way), two of four matmuls fewer.
        dim = self.attn.embed_dim
        v = nn.functional.linear(ctx, self.attn.in_proj_weight[2 * dim:], self.attn.in_proj_bias[2 * dim:])
        return self.attn.out_proj(v).expand(-1, x.shape[1], -1)


class CrossAttention(nn.Module):
    """daan.md 2: audio attends to video and video to audio (separate weights), in parallel.

    With averaged features phi_a, phi_v are single tokens, so each softmax is over one key (= 1) and the
    attention reduces to a learned linear map of the other modality plus the residual; it is written for
    token sequences all the same.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.a_from_v = CrossAttentionBlock(dim, heads, ffn_dim, dropout)
        self.v_from_a = CrossAttentionBlock(dim, heads, ffn_dim, dropout)

    def forward(self, phi_a: Tensor, phi_v: Tensor) -> tuple[Tensor, Tensor]:
        a, v = phi_a[:, None], phi_v[:, None]
        return self.a_from_v(a, v)[:, 0], self.v_from_a(v, a)[:, 0]


class TwoTokenTransformer(nn.Module):
    """AVCA's alternative: one pre-norm transformer layer over [phi_a + pos0, phi_v + pos1] (trainable positions)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.net = TokenTransformer(dim, 1, heads, dim // heads, ffn_dim, dropout, n_tokens=2)

    def forward(self, phi_a: Tensor, phi_v: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(torch.stack([phi_a, phi_v], dim=1))  # residuals inside: out already holds phi
        return out[:, 0], out[:, 1]


class NoCross(nn.Module):
    def forward(self, phi_a: Tensor, phi_v: Tensor) -> tuple[Tensor, Tensor]:
        return phi_a, phi_v


# --- the method -------------------------------------------------------------------------------------
@register_method("daan")
class DAAN(Method):
    """QDMA per modality -> cross-attention -> AlignmentHead; loss L_t + L_c + L_r; CSGM in optimization_step."""

    Config = DAANConfig
    uses_negatives = True
    feature_kinds = ("averaged", "temporal")
    ablation_baselines = ("avca", "linear")

    @classmethod
    def ablation_variants(cls) -> dict[str, dict]:
        return ablation_variants()

    @classmethod
    def check_config(cls, cfg) -> None:
        from avgzsl.config import ConfigError

        m = cfg.method
        if not m.use_qdma:
            return
        if cfg.data.temporal and m.pool == "flatten":
            raise ConfigError("method.pool=flatten needs a fixed token count (averaged features); "
                              "use method.pool=mean with data.temporal=true")
        if cfg.data.temporal and m.pos_emb == "learned":
            raise ConfigError("method.pos_emb=learned needs a fixed token count (averaged features); use auto, "
                              "sinusoidal or none with data.temporal=true")
        if m.use_tcn and m.tcn_input == "reshape" and m.hidden_dim % m.tcn_steps:
            raise ConfigError(f"method.hidden_dim ({m.hidden_dim}) must be divisible by method.tcn_steps "
                              f"({m.tcn_steps}) for method.tcn_input=reshape")
        if m.attn_dim and m.attn_dim % (2 * m.heads):
            raise ConfigError(f"method.attn_dim ({m.attn_dim}) must be a multiple of 2 * method.heads ({2 * m.heads})")

    def __init__(self, cfg: DAANConfig, dims: DataDims):
        super().__init__(cfg, dims)
        h = cfg.hidden_dim
        self.enc_a = self._encoder(dims.audio_dim, dims.temporal)
        self.enc_v = self._encoder(dims.video_dim, dims.temporal)
        drop = cfg.embedding_dropout if cfg.cross_dropout is None else cfg.cross_dropout
        if cfg.cross == "attention":
            self.cross = CrossAttention(h, cfg.cross_heads, cfg.cross_ffn_dim, drop)
        elif cfg.cross == "transformer":
            self.cross = TwoTokenTransformer(h, cfg.cross_heads, cfg.cross_ffn_dim, drop)
        else:
            self.cross = NoCross()
        self.head = AlignmentHead(h, dims.text_dim, cfg.out_dim, None, cfg.decoder_dropout, cfg.additional_dropout,
                                  cfg.momentum, text_side=cfg.text_side)
        self.csgm: CSGM | None = None
        if cfg.csgm != "off":
            parts = {}
            for m, enc in zip(MODALITIES, (self.enc_a, self.enc_v)):
                for p, params in enc.part_parameters().items():
                    parts[(m, p)] = params
            settings = CSGMSettings(cfg.csgm, cfg.gamma, cfg.rho, cfg.noise, cfg.csgm_eps, cfg.margin,
                                    cfg.csgm_negatives)
            self.csgm = CSGM(settings, parts)

    def _encoder(self, in_dim: int, temporal: bool) -> nn.Module:
        cfg = self.cfg
        if not cfg.use_qdma:
            return MLPEncoder(in_dim, cfg.hidden_dim, cfg.mlp_hidden, cfg.embedding_dropout, cfg.momentum)
        return QDMA(
            in_dim, cfg.hidden_dim, temporal=temporal, n_tokens=cfg.n_tokens, beta=cfg.beta, beta_init=cfg.beta_init,
            heads=cfg.heads, attn_dim=cfg.attn_dim, pos_emb=cfg.pos_emb, dropout=cfg.embedding_dropout,
            momentum=cfg.momentum, use_tcn=cfg.use_tcn, tcn_layers=cfg.tcn_layers, tcn_kernel=cfg.tcn_kernel,
            tcn_input=cfg.tcn_input, tcn_steps=cfg.tcn_steps,
            pool=("mean" if temporal else "flatten") if cfg.pool == "auto" else cfg.pool,
            token_residual=cfg.token_residual, norm=cfg.qdma_norm,
            prenorm=temporal if cfg.qdma_prenorm is None else cfg.qdma_prenorm,
        )

    # --- forward pieces -----------------------------------------------------------------------------
    def _slots(self, modality: str, active: bool):
        if not active:
            return None
        return {p: self.csgm.slot(modality, p) for p in self.csgm.part_names}

    def encode(self, batch: Batch, modulate: bool = False) -> tuple[Tensor, Tensor]:
        """(phi_a, phi_v) [B, hidden]: the QDMA (or Base MLP) outputs; `modulate` wraps the CSGM slots."""
        phi_a = self.enc_a(batch.audio, batch.audio_mask, self._slots("audio", modulate))
        phi_v = self.enc_v(batch.video, batch.video_mask, self._slots("video", modulate))
        return phi_a, phi_v

    def _csgm_active(self) -> bool:
        return self.csgm is not None and self.training and torch.is_grad_enabled()

    # --- training -----------------------------------------------------------------------------------
    def training_step(self, batch: Batch) -> dict[str, Tensor]:
        neg = batch.negative
        if neg is None or batch.text is None:
            raise ValueError("DAAN trains on batches with text and a negative batch (uses_negatives)")
        active = self._csgm_active()
        # Positives and negatives in separate calls (separate BatchNorm statistics), as AVCA.
        phi_a, phi_v = self.encode(batch, modulate=active)
        phi_a_n, phi_v_n = self.encode(neg, modulate=active and self.cfg.csgm_negatives)
        # One cross-attention call for positives and negatives: it has no BatchNorm (each sample's arithmetic
        # is its own), and matrix products with twice the rows run closer to the CPU's peak.
        sizes = [phi_a.shape[0], phi_a_n.shape[0]]
        att_a, att_v = self.cross(torch.cat([phi_a, phi_a_n]), torch.cat([phi_v, phi_v_n]))
        (att_a, att_a_n), (att_v, att_v_n) = att_a.split(sizes), att_v.split(sizes)
        pos = self.head(att_a, att_v, batch.text)
        negative = self.head(att_a_n, att_v_n, neg.text, reconstruct=False, decode_text=False)
        terms = alignment_loss(pos, negative, phi_a, phi_v, batch.text, margin=self.cfg.margin)
        if active:
            # eta depends on this forward's embeddings; it is read by the backward pass.
            self.csgm.prepare(
                {"theta_a": pos.theta_a, "theta_v": pos.theta_v, "theta_w": pos.theta_w},
                {"theta_a": negative.theta_a, "theta_v": negative.theta_v, "theta_w": negative.theta_w},
            )
        return terms

    def optimization_step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
        """zero_grad -> loss (eta set) -> backward (modulated) -> V_o + noise -> optimiser step.

        With csgm = "off" this is exactly Method.optimization_step.
        """
        optimizer.zero_grad(set_to_none=True)
        terms = self.training_step(batch)
        terms["loss"].backward()
        if self._csgm_active():
            self.csgm.after_backward()
        optimizer.step()
        return {k: v.detach() for k, v in terms.items()}

    def training_state(self) -> dict:
        """CSGM's V_o of the previous step (the next step's optimisation rate)."""
        return {} if self.csgm is None or self.csgm.v_o is None else {"csgm_v_o": self.csgm.v_o.detach().cpu()}

    def load_training_state(self, state: dict) -> None:
        if self.csgm is not None and "csgm_v_o" in state:
            self.csgm.v_o = state["csgm_v_o"].to(next(self.parameters()).device)

    def epoch_diagnostics(self) -> dict[str, float]:
        """CSGM's epoch means: eta per modality and part, V_c, V_o, and the share of samples each dominates."""
        return {} if self.csgm is None else self.csgm.diagnostics()

    # --- scoring ------------------------------------------------------------------------------------
    def embed_samples(self, batch: Batch) -> Tensor:
        att_a, att_v = self.cross(*self.encode(batch))
        if self.cfg.predict_from == "video":
            return self.head.P_v(att_v)
        if self.cfg.predict_from == "audio":
            return self.head.P_a(att_a)
        return 0.5 * (self.head.P_a(att_a) + self.head.P_v(att_v))

    def embed_classes(self, class_text: Tensor) -> Tensor:
        return self.head.embed_text(class_text)

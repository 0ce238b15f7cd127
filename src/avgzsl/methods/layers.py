"""Reusable building blocks of the embedding methods (AVCA, DAAN, ...).

- `EmbeddingNet`: Linear -> BN -> ReLU -> Dropout [-> Linear -> BN -> ReLU -> Dropout], AVCA's block.
  Every output is non-negative (ReLU last).
- `TokenTransformer`: a pre-norm transformer over a few tokens (AVCA's audio-visual attention), with
  optional learned position embeddings added to the input tokens.
- `triplet`: mean triplet margin loss with L2 distance, numerically identical to
  torch.nn.TripletMarginLoss(margin) (eps 1e-6 inside the distance), vectorised over leading dims so
  that many triplet terms cost one set of kernels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EmbeddingNet", "FastDropout", "TokenTransformer", "dropout_rng_state", "mse_terms", "seed_dropout",
           "set_dropout_rng_state", "triplet"]

# PCG64 stream for dropout masks; re-seeded by avgzsl.protocol.seed_everything for reproducible runs.
_DROPOUT_RNG = np.random.default_rng(0)


def seed_dropout(seed: int) -> None:
    global _DROPOUT_RNG
    _DROPOUT_RNG = np.random.default_rng(seed)


def dropout_rng_state() -> dict:
    """The dropout stream's state (a resumed run continues the same masks)."""
    return _DROPOUT_RNG.bit_generator.state


def set_dropout_rng_state(state: dict) -> None:
    _DROPOUT_RNG.bit_generator.state = state


class FastDropout(nn.Module):
    """nn.Dropout with masks drawn from NumPy's PCG64 as 16-bit integers.

    Why: on CPU, torch's bernoulli_ is single-threaded and cost a quarter of an AVCA training step
    (~1.3 ms per [256, 512] mask on our 2-core machines); 16-bit integers from PCG64 cost ~0.2 ms.
    Same semantics as nn.Dropout (zero with probability p, scale the rest by 1 / (1 - p), identity
    in eval mode); p is quantised to k / 65536 (error < 8e-6, e.g. 0.2 -> 0.199997).
    On a GPU it is torch's dropout, drawn there from torch's CUDA generator (seeded by torch.manual_seed):
    a mask made on the CPU and copied over each call made an AVCA step on an H200 ~34 ms.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.threshold = int(round(self.p * 65536))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.threshold == 0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, training=True)
        bits = _DROPOUT_RNG.integers(0, 65536, size=tuple(x.shape), dtype=np.uint16)
        keep = (bits >= self.threshold).astype(np.float32) * np.float32(1.0 / (1.0 - self.p))
        return x * torch.from_numpy(keep).to(device=x.device, dtype=x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class EmbeddingNet(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Dropout, optionally preceded by a hidden layer of the same form.

    Args:
        in_dim, out_dim: input and output sizes.
        hidden_dim: size of the hidden layer; None (or 0) for the one-layer variant.
        dropout: dropout after every ReLU.
        momentum: BatchNorm momentum of the output BN.
        use_bn: whether to use BatchNorm (AVCA always does).
        hidden_momentum: BatchNorm momentum of the hidden BN; None = `momentum`. (AVCA's reference passes
            its --momentum only to the output BN of two-layer nets, the hidden BN keeping PyTorch's 0.1.)

    Input [B, in_dim] -> output [B, out_dim], >= 0.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int | None = None,
        dropout: float = 0.0,
        momentum: float = 0.1,
        use_bn: bool = True,
        hidden_momentum: float | None = None,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        sizes = [in_dim, hidden_dim, out_dim] if hidden_dim else [in_dim, out_dim]
        momenta = [momentum if hidden_momentum is None else hidden_momentum, momentum][-(len(sizes) - 1):]
        for d_in, d_out, mom in zip(sizes[:-1], sizes[1:], momenta):
            layers.append(nn.Linear(d_in, d_out))
            if use_bn:
                layers.append(nn.BatchNorm1d(d_out, momentum=mom))
            layers.append(nn.ReLU())
            layers.append(FastDropout(dropout))
        self.fc = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class _Attention(nn.Module):
    """Multi-head self-attention: bias-free qkv projection, softmax(q k^T / sqrt(dim_head)) v, output projection."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        # As the reference (and vit-pytorch): no output projection when one head already spans `dim`.
        self.to_out = (
            nn.Identity() if (heads == 1 and dim_head == dim) else nn.Sequential(nn.Linear(inner, dim), FastDropout(dropout))
        )

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # each [B, H, N, Dh]
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(Dh), no attention dropout (as reference)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class _FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), FastDropout(dropout), nn.Linear(hidden, dim), FastDropout(dropout))


class TokenTransformer(nn.Module):
    """Pre-norm transformer over a few tokens: per layer x = x + Attn(LN(x)); x = x + MLP(LN(x)).

    No final LayerNorm (as AVCA's reference). AVCA: dim 300, depth 1, 3 heads x 100, MLP 64, dropout =
    the embedding dropout, 2 tokens (audio, video).

    Args:
        n_tokens: if given, learned position embeddings [n_tokens, dim] (initialised N(0, 1) as the
            reference) are added to the input tokens first. `train_pos_emb=False` freezes them at their
            random initialisation (AVCA's reference never hands them to its optimiser).

    Input [B, N, dim] -> output [B, N, dim]. The output already contains the input (and the position
    embeddings) through the residual connections.
    """

    def __init__(
        self,
        dim: int = 300,
        depth: int = 1,
        heads: int = 3,
        dim_head: int = 100,
        mlp_dim: int = 64,
        dropout: float = 0.0,
        n_tokens: int | None = None,
        train_pos_emb: bool = True,
    ):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(depth):
            self.layers.append(
                nn.ModuleList([
                    nn.LayerNorm(dim), _Attention(dim, heads, dim_head, dropout),
                    nn.LayerNorm(dim), _FeedForward(dim, mlp_dim, dropout),
                ])
            )
        self.pos_emb = None
        if n_tokens:
            self.pos_emb = nn.Parameter(torch.randn(n_tokens, dim), requires_grad=train_pos_emb)

    def forward(self, x: Tensor) -> Tensor:
        if self.pos_emb is not None:
            x = x + self.pos_emb
        for norm1, attn, norm2, ff in self.layers:
            x = x + attn(norm1(x))
            x = x + ff(norm2(x))
        return x


def triplet(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0, eps: float = 1e-6) -> Tensor:
    """Mean triplet margin loss with L2 distance: mean_i max(0, margin + d(a_i, p_i) - d(a_i, n_i)).

    Same as torch.nn.TripletMarginLoss(margin=margin) (d(x, y) = ||x - y + eps||_2). Inputs [..., B, D]:
    the mean is over B only, so K stacked triplet terms [K, B, D] give K losses [K] in one go.
    """
    d_pos = (anchor - positive + eps).norm(dim=-1)
    d_neg = (anchor - negative + eps).norm(dim=-1)
    return (margin + d_pos - d_neg).clamp_min(0).mean(dim=-1)


def mse_terms(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error over the last two dims ([..., B, D] -> [...]); F.mse_loss per stacked term."""
    return (x - y).square().mean(dim=(-2, -1))

"""QDMA: the Quality-Discrepancy Mitigation Attention unit (daan.md section 1), and the Base's MLP encoder.

One unit per modality maps a feature (one averaged vector [B, D], or a padded sequence [B, T, D] with a
mask) to phi_m in R^hidden:

    tokens X  ->  differential attention  ->  per-head GroupNorm, mean over tokens  ->
    Linear -> BN -> ReLU -> Dropout, times (1 - beta_init)  =  o_m          (part "attn")
    o_m reshaped into a pseudo-sequence  ->  causal TCN  ->  last step  ->  Linear  =  y_m   (part "tcn")
    phi_m = o_m + y_m

Both parts accept CSGM `EtaSlot`s: the gradient arriving at a part's output is scaled per sample and
the gradient leaving its input is unscaled again (see `csgm.py`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avgzsl.methods.daan.csgm import EtaSlot, scale_grad_in, scale_grad_out
from avgzsl.methods.layers import EmbeddingNet


# --- differential attention ---------------------------------------------------------------------------
class DifferentialAttention(nn.Module):
    """Multi-head differential attention (daan.md eq. 1, as the Differential Transformer).

    Per head h: Q = X W^Q_h and K = X W^K_h are [T, 2d], split into halves (Q1, Q2), (K1, K2) of d
    columns; V = X W^V_h is [T, 2d]; O_h = (softmax(Q1 K1^T / sqrt d) - beta softmax(Q2 K2^T / sqrt d)) V.
    Weight layout: columns [h*2d, h*2d + d) of W^Q / W^K are head h's Q1 / K1, the next d its Q2 / K2.
    With beta = 0 this is exactly ordinary softmax attention with queries Q1, keys K1 (tests).

    Input [B, T, dim] (+ mask [B, T], True on real tokens) -> [B, T, heads, 2d].
    """

    def __init__(self, dim: int, attn_dim: int, heads: int, beta: float):
        super().__init__()
        if attn_dim % (2 * heads):
            raise ValueError(f"attention width {attn_dim} must be a multiple of 2 * heads = {2 * heads}")
        self.heads, self.d, self.beta = heads, attn_dim // (2 * heads), beta
        self.q = nn.Linear(dim, attn_dim, bias=False)
        self.k = nn.Linear(dim, attn_dim, bias=False)
        self.v = nn.Linear(dim, attn_dim, bias=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, t, _ = x.shape
        h, d = self.heads, self.d
        # One product for Q, K and V (three small matmuls cost three times the dispatch and backward calls).
        qkv = F.linear(x, torch.cat([self.q.weight, self.k.weight, self.v.weight]))
        q, k, v = qkv.split(2 * h * d, dim=-1)
        q = q.reshape(b, t, h, 2, d).permute(3, 0, 2, 1, 4)  # [2, B, H, T, d]
        k = k.reshape(b, t, h, 2, d).permute(3, 0, 2, 1, 4)
        v = v.reshape(b, t, h, 2 * d).transpose(1, 2)  # [B, H, T, 2d]
        # Scores laid out [key, query] and the softmax taken over the keys (dim -2): on a CPU, a softmax along
        # a short last dimension (8 chunk tokens) is about 4x slower than one along the dimension before it.
        scores = k @ q.transpose(-1, -2) / math.sqrt(d)  # [2, B, H, T_key, T_query]
        if mask is not None:
            scores = scores.masked_fill(~mask[None, :, None, :, None], float("-inf"))
        att = scores.softmax(dim=-2)
        # beta = 0: att[0] - 0 * att[1] == att[0] bit for bit (att[1] is finite).
        out = (att[0] - self.beta * att[1]).transpose(-1, -2) @ v  # [B, H, T, 2d]
        return out.transpose(1, 2)  # [B, T, H, 2d]


class TokenGroupNorm(nn.GroupNorm):
    """nn.GroupNorm of [N, C] rows (each token's output, one group per head), computed as a LayerNorm over
    each group's channels and the per-channel affine: the same values and parameters, and on a CPU about half
    the time of the native group-norm kernels forward and backward for groups this short (16 channels)."""

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape
        g = c // self.num_groups
        y = F.layer_norm(x.view(n, self.num_groups, g), (g,), eps=self.eps).view(n, c)
        return torch.addcmul(self.bias, y, self.weight)


# --- temporal convolution bypass ----------------------------------------------------------------------
class CausalConv1d(nn.Conv1d):
    """Conv1d padded on the left only: output step t sees inputs <= t. [B, C, T] -> [B, C', T].

    `time_major` computes the same convolution on [B, T, C] as one matrix product over the k shifted copies
    of the input (unfold + matmul): DAAN's TCN runs tiny sequences (8 steps of 64 channels), where a
    convolution kernel spends most of its time outside the arithmetic, its backward above all.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1):
        super().__init__(c_in, c_out, kernel, dilation=dilation)
        self.left = (kernel - 1) * dilation

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.left, 0)))

    def time_major(self, x: Tensor) -> Tensor:
        """[B, T, C] -> [B, T, C']: the forward convolution on time-major input."""
        t, (k,), (d,) = x.shape[1], self.kernel_size, self.dilation
        padded = F.pad(x, (0, 0, self.left, 0))
        cols = torch.cat([padded[:, j * d: j * d + t] for j in range(k)], dim=-1)  # [B, T, k*C], tap-major
        return F.linear(cols, self.tap_weight(), self.bias)

    def tap_weight(self) -> Tensor:
        """The kernel as [C', k*C] in tap-major order (oldest tap first), to multiply stacked shifted inputs."""
        return self.weight.permute(0, 2, 1).reshape(self.out_channels, -1)


class TCN(nn.Module):
    """y = D(C(x)) + x (daan.md eq. 3): causal conv C, then `layers` dilated causal convs (dilation 1, 2, 4, ...).

    A ReLU precedes every dilated conv; the last conv is linear so the bypass can add or subtract
    (reconstructed: the paper names C, D, R only). Channels stay `channels` so the residual needs no
    projection. [B, C, T] -> [B, C, T]; causal (tests).
    """

    def __init__(self, channels: int, layers: int, kernel: int):
        super().__init__()
        self.causal = CausalConv1d(channels, channels, kernel)
        self.dilated = nn.ModuleList(CausalConv1d(channels, channels, kernel, dilation=2**i) for i in range(layers))

    def forward(self, x: Tensor) -> Tensor:
        xt = x.transpose(1, 2)  # time-major: each conv is one matmul (CausalConv1d.time_major)
        return (self._last().time_major(self._into_last(xt)) + xt).transpose(1, 2)

    def at_steps(self, x: Tensor, idx: Tensor) -> Tensor:
        """forward(x)[b, :, idx[b]] for each sample b: [B, C, T], idx [B] -> [B, C].

        QDMA reads one step per sample (the last real one), so the last convolution is evaluated at that
        step only: its k taps gathered from the layer below (zeros left of the start, as the causal padding).
        Same values as forward(); a third of the TCN's arithmetic less with two layers.
        """
        xt = x.transpose(1, 2)
        h, last = self._into_last(xt), self._last()
        (k,), (d,) = last.kernel_size, last.dilation
        taps = idx[:, None] - d * torch.arange(k - 1, -1, -1, device=idx.device)  # [B, k], oldest first
        rows = torch.arange(h.shape[0], device=h.device)[:, None]
        cols = (h[rows, taps.clamp_min(0)] * (taps >= 0)[..., None].to(h.dtype)).flatten(1)  # [B, k*C]
        return F.linear(cols, last.tap_weight(), last.bias) + xt[rows[:, 0], idx]

    def _last(self) -> CausalConv1d:
        return self.dilated[-1] if len(self.dilated) else self.causal

    def _into_last(self, xt: Tensor) -> Tensor:
        """The last conv's input, time-major [B, T, C]: every conv before it, a ReLU before each dilated conv."""
        if not len(self.dilated):
            return xt
        h = self.causal.time_major(xt)
        for conv in self.dilated[:-1]:
            h = conv.time_major(F.relu(h))
        return F.relu(h)


def sinusoidal(t: int, dim: int, device=None, dtype=None) -> Tensor:
    """[t, dim] sine/cosine position code (time steps of temporal features; no length limit)."""
    pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(t, dim, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return out.to(dtype or torch.float32)


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over dim 1 of [B, T, C], over real steps only."""
    if mask is None:
        return x.mean(dim=1)
    w = mask.to(x.dtype)[..., None]
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1)


def last_index(y: Tensor, mask: Tensor | None) -> Tensor:
    """[B] index of the last real step of each sample of y [B, C, T] (masks are True on a prefix)."""
    if mask is None:
        return torch.full((y.shape[0],), y.shape[2] - 1, dtype=torch.long, device=y.device)
    return (mask.long().sum(dim=1) - 1).clamp_min(0)


# --- the unit -----------------------------------------------------------------------------------------
class QDMA(nn.Module):
    """One modality's QDMA unit. forward(x [B, D] or [B, T, D], mask, slots) -> phi [B, hidden].

    Args:
        in_dim: feature size D.
        hidden: output size (512).
        temporal: whether inputs are [B, T, D] sequences (tokens = time steps) or one vector
            (tokens = `n_tokens` chunks of D / n_tokens).
        beta: weight of the second softmax (the paper's w).
        beta_init: the refinement's (1 - beta_init) scale.
        heads, attn_dim: attention heads and total width of V (0 = the token size); each head's
            Q1/K1 have attn_dim / (2 heads) columns.
        pos_emb: "auto" (learned for chunk tokens, sinusoidal for time steps), "learned",
            "sinusoidal" or "none". Chunk tokens need one: attention + mean pooling is otherwise blind
            to which chunk a value came from.
        dropout, momentum: of the refinement's Linear -> BN -> ReLU -> Dropout.
        use_tcn, tcn_layers, tcn_kernel: the temporal bypass.
        tcn_input: "reshape" (o_m as tcn_steps steps of hidden / tcn_steps channels) or "tokens"
            (the token sequence itself).
        pool: "mean" over tokens (daan.md) or "flatten" (concatenate chunk tokens; averaged features only).
        token_residual: add each token to its normalised attention output (as in a Differential
            Transformer layer, X + MultiHead(X)); off in daan.md. Without it every token's output is a
            mixture of the same projected chunks, so chunk identity is lost (README, QDMA finding).
        norm: "group" (per-head GroupNorm of each token's output, daan.md) or "none" (for ablating it).
        prenorm: LayerNorm the tokens before the attention (the Differential Transformer's pre-LN,
            X + MultiHead(LN(X)) with token_residual); off in daan.md, whose unit reads raw features.
    """

    part_names = ("attn", "tcn")

    def __init__(self, in_dim: int, hidden: int, temporal: bool = False, n_tokens: int = 8, beta: float = 0.5,
                 beta_init: float = 0.2, heads: int = 4, attn_dim: int = 0, pos_emb: str = "auto",
                 dropout: float = 0.0, momentum: float = 0.1, use_tcn: bool = True, tcn_layers: int = 2,
                 tcn_kernel: int = 3, tcn_input: str = "reshape", tcn_steps: int = 8, pool: str = "mean",
                 token_residual: bool = False, norm: str = "group", prenorm: bool = False):
        super().__init__()
        self.temporal = temporal
        if temporal:
            self.n_tokens, token_dim = None, in_dim
        else:
            if in_dim % n_tokens:
                raise ValueError(f"feature size {in_dim} is not divisible by n_tokens = {n_tokens} (method.n_tokens): "
                                 f"choose a divisor of {in_dim}")
            self.n_tokens, token_dim = n_tokens, in_dim // n_tokens
        if pos_emb == "auto":
            pos_emb = "sinusoidal" if temporal else "learned"
        if pos_emb not in ("learned", "sinusoidal", "none"):
            raise ValueError(f"pos_emb must be auto, learned, sinusoidal or none, got {pos_emb!r}")
        if pos_emb == "learned" and temporal:
            raise ValueError("pos_emb 'learned' needs a fixed token count; use 'sinusoidal' for temporal features")
        self.pos_kind = pos_emb
        self.pos = nn.Parameter(torch.randn(n_tokens, token_dim) * 0.02) if pos_emb == "learned" else None
        attn_dim = attn_dim or token_dim
        if token_residual and attn_dim != token_dim:
            raise ValueError(f"token_residual needs attn_dim == token size ({token_dim}), got attn_dim = {attn_dim}: "
                             f"set method.attn_dim=0 (the token size) or method.token_residual=false")
        self.token_residual = token_residual
        self.prenorm = nn.LayerNorm(token_dim) if prenorm else nn.Identity()
        self.attn = DifferentialAttention(token_dim, attn_dim, heads, beta)
        if norm not in ("group", "none"):
            raise ValueError(f"norm must be 'group' or 'none', got {norm!r}")
        # per head and per token (applied to [B*T, C])
        self.norm = TokenGroupNorm(heads, attn_dim) if norm == "group" else nn.Identity()
        if pool not in ("mean", "flatten"):
            raise ValueError(f"pool must be 'mean' or 'flatten', got {pool!r}")
        if pool == "flatten" and temporal:
            raise ValueError("pool 'flatten' needs a fixed token count (averaged features); use 'mean' for temporal")
        self.pool = pool
        pooled_dim = attn_dim * (n_tokens if pool == "flatten" else 1)
        self.refine = EmbeddingNet(pooled_dim, hidden, dropout=dropout, momentum=momentum)
        self.scale = 1.0 - beta_init

        self.use_tcn, self.tcn_input = use_tcn, tcn_input
        if tcn_input not in ("reshape", "tokens"):
            raise ValueError(f"tcn_input must be 'reshape' or 'tokens', got {tcn_input!r}")
        if use_tcn:
            if tcn_input == "reshape":
                if hidden % tcn_steps:
                    raise ValueError(f"hidden {hidden} is not divisible by tcn_steps = {tcn_steps}")
                self.tcn_steps, channels = tcn_steps, hidden // tcn_steps
            else:
                channels = token_dim
            self.tcn = TCN(channels, tcn_layers, tcn_kernel)
            self.tcn_out = nn.Linear(channels, hidden)

    def part_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters of each CSGM part: "attn" (tokens' positions, attention, refinement) and "tcn"."""
        attn = [p for p in (self.pos,) if p is not None]
        attn += [*self.prenorm.parameters(), *self.attn.parameters(), *self.norm.parameters(),
                 *self.refine.parameters()]
        parts = {"attn": attn}
        if self.use_tcn:
            parts["tcn"] = [*self.tcn.parameters(), *self.tcn_out.parameters()]
        return parts

    def tokens(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if self.temporal:
            if x.dim() != 3:
                raise ValueError(f"temporal QDMA expects [B, T, D], got {tuple(x.shape)}")
            if mask is not None:
                x = x * mask[..., None].to(x.dtype)  # padding never enters a value or the TCN
        else:
            if x.dim() != 2:
                raise ValueError(f"QDMA on averaged features expects [B, D], got {tuple(x.shape)}")
            x, mask = x.view(x.shape[0], self.n_tokens, -1), None
        return x, mask

    def forward(self, x: Tensor, mask: Tensor | None = None,
                slots: dict[str, EtaSlot] | None = None) -> Tensor:
        slots = slots or {}
        x = scale_grad_in(x, slots.get("attn"))  # a no-op for raw features (no gradient to send upstream)
        tok, mask = self.tokens(x, mask)
        if self.pos is not None:
            tok = tok + self.pos
        elif self.pos_kind == "sinusoidal":
            tok = tok + sinusoidal(tok.shape[1], tok.shape[2], tok.device, tok.dtype)
        b, t, _ = tok.shape
        o = self.attn(self.prenorm(tok), mask).reshape(b * t, -1)
        o = self.norm(o).view(b, t, -1)
        if self.token_residual:
            o = o + tok
        o = self.refine(o.flatten(1) if self.pool == "flatten" else masked_mean(o, mask)) * self.scale
        o = scale_grad_out(o, slots.get("attn"))
        if not self.use_tcn:
            return o
        if self.tcn_input == "reshape":
            src = scale_grad_in(o, slots.get("tcn"))
            seq, seq_mask = src.view(b, self.tcn_steps, -1).transpose(1, 2), None
        else:
            # Sequence input (positions are implicit in a convolution: raw tokens, not tok + pos).
            src = scale_grad_in(self.tokens(x, mask if self.temporal else None)[0], slots.get("tcn"))
            seq, seq_mask = src.transpose(1, 2), mask
        y = self.tcn_out(self.tcn.at_steps(seq, last_index(seq, seq_mask)))
        y = scale_grad_out(y, slots.get("tcn"))
        return o + y


class MLPEncoder(nn.Module):
    """The ablation's Base encoder: AVCA's EmbeddingNet in -> 512 -> hidden (temporal input: masked mean first)."""

    part_names = ("enc",)

    def __init__(self, in_dim: int, hidden: int, mid: int = 512, dropout: float = 0.0, momentum: float = 0.1):
        super().__init__()
        self.net = EmbeddingNet(in_dim, hidden, hidden_dim=mid, dropout=dropout, momentum=momentum)

    def part_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {"enc": list(self.net.parameters())}

    def forward(self, x: Tensor, mask: Tensor | None = None, slots: dict[str, EtaSlot] | None = None) -> Tensor:
        if x.dim() == 3:
            x = masked_mean(x, mask)
        return scale_grad_out(self.net(x), (slots or {}).get("enc"))

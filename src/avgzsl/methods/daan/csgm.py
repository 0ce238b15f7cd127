"""CSGM: contrastive sample-level gradient modulation (daan.md section 5).

For every sample i, modality m and QDMA part p (attention or TCN bypass) CSGM scales the gradient
that part's parameters receive from sample i by eta_i[m, p], slowing down the modality that dominates
*that* sample, never below the floor gamma, and adds Gaussian noise to the modulated gradient.

How the per-sample scaling is done without per-sample backward passes (daan.md 5.5)
------------------------------------------------------------------------------------
A part f with parameters Theta maps its input x to y = f(x; Theta). Two identity functions with custom
backward passes are wrapped around it:

    y = ScaleOut( f( ScaleIn(x, slot) ), slot )

ScaleOut multiplies the gradient arriving at y_i by eta_i, so Theta's gradient becomes
sum_i eta_i dL/dy_i dy_i/dTheta; ScaleIn divides the gradient leaving through x_i by eta_i, so
everything upstream of the part receives its own, unmodulated gradient. eta is read at backward
time from an `EtaSlot` that the model fills after the forward pass has produced the embeddings the
factor depends on (the factor is computed from detached distances: it is a constant of the step).

Exactness. Both statements hold exactly when f treats samples independently (dy_i/dx_j = 0 and
y_i depends on Theta only through x_i for i != j): Linear, convolutions, attention within a sample,
GroupNorm/LayerNorm, eval-mode BatchNorm. The QDMA refinement contains a BatchNorm: in training mode
it couples the samples of a batch through the batch statistics, so "sample i's gradient" then means
"the gradient that flows through sample i's output y_i" (it still contains terms from the other
samples' inputs via the statistics), and the division at the input is exact only up to those
cross-sample terms. For the attention part this division never matters (its input is the raw
feature, which has no parameters upstream); the TCN part has no BatchNorm, so the TCN's own
modulation and the division that protects the attention part from it are exact.
`tests/test_csgm.py` checks the identity against an explicit per-sample loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

MODALITIES = ("audio", "video")


# --- gradient-scaling pair ------------------------------------------------------------------------
class EtaSlot:
    """Holder of one part's per-sample factor [B], read by the backward pass (None = no modulation)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Tensor | None = None


def _per_sample(eta: Tensor, grad: Tensor) -> Tensor:
    return eta.reshape(-1, *([1] * (grad.dim() - 1))).to(grad.dtype)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies (or, with divide, divides) sample i's gradient by eta_i."""

    @staticmethod
    def forward(ctx, x: Tensor, slot: EtaSlot, divide: bool) -> Tensor:
        ctx.slot, ctx.divide = slot, divide
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        eta = ctx.slot.value
        if eta is None:
            return grad, None, None
        factor = _per_sample(eta, grad)
        return (grad / factor if ctx.divide else grad * factor), None, None


def scale_grad_out(x: Tensor, slot: EtaSlot | None) -> Tensor:
    """Identity forward; backward multiplies the gradient of sample i by slot.value[i]."""
    if slot is None or not x.requires_grad:
        return x
    return _ScaleGrad.apply(x, slot, False)


def scale_grad_in(x: Tensor, slot: EtaSlot | None) -> Tensor:
    """Identity forward; backward divides the gradient of sample i by slot.value[i] (undoes scale_grad_out upstream)."""
    if slot is None or not x.requires_grad:
        return x
    return _ScaleGrad.apply(x, slot, True)


# --- the factor -------------------------------------------------------------------------------------
def squash(x: Tensor, margin: float, eps: float) -> Tensor:
    """N(x) = x / (x + margin) + eps: maps a distance gap >= 0 into [eps, 1 + eps) (reconstructed form)."""
    return x / (x + margin) + eps


def gap(m: Tensor, e: Tensor, n: Tensor) -> Tensor:
    """delta(m, e, n) = max(d(n, e) - d(m, e), 0): how much closer m is to the anchor e than n is. [B]."""
    return (torch.linalg.vector_norm(n - e, dim=-1) - torch.linalg.vector_norm(m - e, dim=-1)).clamp_min(0)


def convergence_rate(theta_m: Tensor, theta_w: Tensor, theta_m_neg: Tensor, theta_w_neg: Tensor,
                     margin: float = 1.0, eps: float = 1e-2) -> Tensor:
    """V_c[m] = N(delta(m+, w+, m-)) * N(delta(w+, m+, w-)) per sample (daan.md 5.1). [B]."""
    m_to_w = squash(gap(theta_m, theta_w, theta_m_neg), margin, eps)  # m+ nearer to w+ than m- is
    w_to_m = squash(gap(theta_w, theta_m, theta_w_neg), margin, eps)  # w+ nearer to m+ than w- is
    return m_to_w * w_to_m


def modulation_factor(r_m: Tensor, r_other: Tensor, gamma: float, rho: float) -> tuple[Tensor, Tensor]:
    """eta = max(1 - tanh(rho * relu(s - 1)), gamma) with s = r_m / r_other (daan.md 5.3).

    Returns (eta, s). A balanced sample (r_m == r_other) gets s = 1 and eta = 1 exactly; the
    sub-dominant modality (s <= 1) always keeps eta = 1.
    """
    s = r_m / r_other
    eta = (1 - torch.tanh(rho * torch.relu(s - 1))).clamp_min(gamma)
    return eta, s


@dataclass
class CSGMSettings:
    mode: str = "full"  # "off" | "vc" (convergence rate only) | "full" (V_c * V_o)
    gamma: float = 0.45
    rho: float = 1.0
    noise: bool = True
    eps: float = 1e-2
    margin: float = 1.0
    negatives: bool = True  # also scale the gradient arriving through sample i's negative by eta_i


class CSGM:
    """Per-step state of CSGM for one model: the slots, V_o of the previous step, the diagnostics.

    `parts` maps (modality, part name) to that part's parameters; the part names are the same for both
    modalities (QDMA: "attn", "tcn"; the Base's MLP encoder: "enc").

    Use per training step: the model's forward wraps each part with `slot(m, p)`; once the projected
    embeddings exist, `prepare(...)` computes eta and fills the slots; after `loss.backward()`,
    `after_backward()` records V_o for the next step, adds the noise and empties the slots.
    Nothing here calls .item(): the diagnostics stay on the device until `diagnostics()`.
    """

    def __init__(self, settings: CSGMSettings, parts: dict[tuple[str, str], list[nn.Parameter]]):
        if settings.mode not in ("vc", "full"):
            raise ValueError(f"CSGM mode must be 'vc' or 'full' here, got {settings.mode!r}")
        if not 0 < settings.gamma <= 1:
            raise ValueError(f"csgm gamma must be in (0, 1], got {settings.gamma}")
        self.s = settings
        self.part_names = sorted({p for _, p in parts}, key=("attn", "tcn", "enc").index)
        for m in MODALITIES:
            for p in self.part_names:
                if (m, p) not in parts:
                    raise ValueError(f"CSGM needs part {p!r} for both modalities; {m} lacks it")
        self.parts = parts
        self.slots = {key: EtaSlot() for key in parts}
        self.v_o: Tensor | None = None  # [2, P] of the previous step; None = no step yet (ratio 1)
        self._acc: Tensor | None = None
        self._steps = 0

    def slot(self, modality: str, part: str) -> EtaSlot:
        return self.slots[(modality, part)]

    # --- forward side -------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, pos: dict[str, Tensor], neg: dict[str, Tensor]) -> Tensor:
        """Fill the slots from the projected embeddings (dicts of theta_a, theta_v, theta_w). Returns eta [2, P, B]."""
        vc = torch.stack([
            convergence_rate(pos[k], pos["theta_w"], neg[k], neg["theta_w"], self.s.margin, self.s.eps)
            for k in ("theta_a", "theta_v")
        ])  # [2, B]
        n_parts = len(self.part_names)
        r = vc[:, None, :].expand(2, n_parts, vc.shape[1])
        if self.s.mode == "full" and self.v_o is not None:
            # V_o is a per-modality, per-part scalar (the same for all samples of the step).
            r = r * (self.v_o + 1e-30)[:, :, None]
        eta_a, s_a = modulation_factor(r[0], r[1], self.s.gamma, self.s.rho)
        eta_v, s_v = modulation_factor(r[1], r[0], self.s.gamma, self.s.rho)
        eta = torch.stack([eta_a, eta_v])  # [2, P, B]
        s = torch.stack([s_a, s_v])
        for mi, m in enumerate(MODALITIES):
            for pi, p in enumerate(self.part_names):
                self.slots[(m, p)].value = eta[mi, pi]
        self._accumulate(eta, vc, s)
        return eta

    # --- after backward -----------------------------------------------------------------------------
    @torch.no_grad()
    def after_backward(self) -> None:
        """Record V_o = ||G||^2 / ||Theta||^2 per modality and part (for the next step), then add the noise."""
        if self.s.mode == "full":
            rows = []
            for m in MODALITIES:
                row = []
                for p in self.part_names:
                    params = [q for q in self.parts[(m, p)] if q.grad is not None]
                    if not params:
                        row.append(torch.ones((), device=self.parts[(m, p)][0].device))
                        continue
                    g2 = torch.stack(torch._foreach_norm([q.grad for q in params])).square().sum()
                    t2 = torch.stack(torch._foreach_norm(params)).square().sum()
                    row.append(g2 / t2.clamp_min(1e-30))
                rows.append(torch.stack(row))
            self.v_o = torch.stack(rows)
        if self.s.noise:
            for params in self.parts.values():
                for q in params:
                    g = q.grad
                    if g is not None and g.numel() > 1:
                        # OGM-GE's "GE": N(0, std(G)^2), per tensor, on the modulated gradient.
                        g.add_(torch.randn_like(g) * g.std(correction=0))
        for slot in self.slots.values():
            slot.value = None

    # --- diagnostics ---------------------------------------------------------------------------------
    def _accumulate(self, eta: Tensor, vc: Tensor, s: Tensor) -> None:
        vo = self.v_o if self.v_o is not None else torch.ones(eta.shape[:2], device=eta.device)
        vec = torch.cat([
            eta.mean(-1).flatten(),  # [2P]
            vc.mean(-1),  # [2]
            vo.flatten().to(eta.dtype),  # [2P]
            (s > 1).to(eta.dtype).mean(-1).flatten(),  # [2P]
        ])
        self._acc = vec if self._acc is None else self._acc + vec
        self._steps += 1

    def diagnostic_names(self) -> list[str]:
        mp = [f"{m}_{p}" for m in MODALITIES for p in self.part_names]
        return ([f"csgm/eta_{k}" for k in mp] + [f"csgm/vc_{m}" for m in MODALITIES]
                + [f"csgm/vo_{k}" for k in mp] + [f"csgm/dominant_{k}" for k in mp])

    def diagnostics(self) -> dict[str, float]:
        """Epoch means of the accumulated numbers (one device sync), then reset."""
        if self._acc is None:
            return {}
        values = (self._acc / self._steps).tolist()
        out = dict(zip(self.diagnostic_names(), values))
        if self.s.mode != "full":
            out = {k: v for k, v in out.items() if not k.startswith("csgm/vo_")}
        self._acc, self._steps = None, 0
        return out

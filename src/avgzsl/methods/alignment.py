"""AVCA's alignment head and loss, shared by the methods built on AVCA's recipe (AVCA, DAAN).

- `AlignmentHead`: projections P_a, P_v, P_w into a joint space, a shared decoder D back to the text
  space, reconstructors R_a, R_v back to the projection inputs (every block an `EmbeddingNet`).
- `alignment_loss`: L = L_t + L_c + L_r of daan.md section 4, which is AVCA's full loss (triplets with a
  negative sample, reconstruction and regularisation terms).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avgzsl.methods.layers import EmbeddingNet, mse_terms, triplet

__all__ = ["AlignmentHead", "HeadOutput", "alignment_loss"]


@dataclass
class HeadOutput:
    """Outputs of `AlignmentHead` for one batch ([B, *] each).

    theta_*: projections into the joint space (out_dim); rho_*: the shared decoder's outputs (text_dim);
    rec_a, rec_v: the reconstructors' outputs R(theta) (phi_dim). Entries the call did not compute are None.
    """

    theta_a: Tensor
    theta_v: Tensor
    theta_w: Tensor
    rho_a: Tensor | None = None
    rho_v: Tensor | None = None
    rho_w: Tensor | None = None
    rec_a: Tensor | None = None
    rec_v: Tensor | None = None


class AlignmentHead(nn.Module):
    """Projections P_a, P_v, P_w into a joint space, shared decoder D back to the text space, and
    reconstructors R_a, R_v back to the projection inputs. Every block is an EmbeddingNet.

    AVCA: phi_dim 300, proj_hidden 512, out_dim 64 (P_a/P_v 300->512->64, P_w 300->64, D 64->300,
    R 64->300). DAAN: phi_dim 512, proj_hidden None, out_dim 300 (P 512->300, P_w 300->300, D 300->300,
    R 300->512).

    Args:
        phi_dim: size of the audio / video inputs of P_a, P_v and of the reconstructions.
        text_dim: size of the text embedding w (input of P_w, output of D).
        out_dim: size of the joint space (theta).
        proj_hidden: hidden size of P_a, P_v (None: one layer).
        proj_dropout: dropout of P_a, P_v (AVCA's --decoder_dropout).
        dropout: dropout of P_w, D, R_a, R_v (AVCA's --additional_dropout).
        momentum: BN momentum of the output BN of P_a, P_v.
        hidden_momentum: BN momentum of P_a / P_v's hidden BN (None = momentum).
        single_momentum: BN momentum of the one-layer nets P_w, D, R_a, R_v (None = momentum).
        text_side: "learned" (P_w trained, as the references) or "frozen" (P_w keeps its random
            initialisation: no gradient reaches its weights; its BatchNorm and dropout work as usual). A
            probe of the linear gap: a learned P_w is fit to the seen classes' texts only (30 on UCF's
            stage 1), while the linear reference has nothing to learn on the text side.
    """

    def __init__(
        self,
        phi_dim: int,
        text_dim: int,
        out_dim: int,
        proj_hidden: int | None = None,
        proj_dropout: float = 0.0,
        dropout: float = 0.0,
        momentum: float = 0.1,
        hidden_momentum: float | None = None,
        single_momentum: float | None = None,
        text_side: str = "learned",
    ):
        super().__init__()
        if text_side not in ("learned", "frozen"):
            raise ValueError(f"method.text_side must be 'learned' or 'frozen', got {text_side!r}")
        single = momentum if single_momentum is None else single_momentum
        self.P_a = EmbeddingNet(phi_dim, out_dim, proj_hidden, proj_dropout, momentum, hidden_momentum=hidden_momentum)
        self.P_v = EmbeddingNet(phi_dim, out_dim, proj_hidden, proj_dropout, momentum, hidden_momentum=hidden_momentum)
        self.P_w = EmbeddingNet(text_dim, out_dim, None, dropout, single)
        if text_side == "frozen":
            self.P_w.requires_grad_(False)
        self.D = EmbeddingNet(out_dim, text_dim, None, dropout, single)
        self.R_a = EmbeddingNet(out_dim, phi_dim, None, dropout, single)
        self.R_v = EmbeddingNet(out_dim, phi_dim, None, dropout, single)

    def forward(
        self, phi_a: Tensor, phi_v: Tensor, w: Tensor, reconstruct: bool = True, decode_text: bool = True
    ) -> HeadOutput:
        """theta = P(.), rho = D(theta), rec = R(theta) of one batch: phi_a, phi_v [B, phi_dim], w [B, text_dim].

        Each network is called once per batch, so positives and negatives passed in two calls get their
        own BatchNorm statistics (as the reference). For negatives, the loss needs neither the
        reconstructions nor rho_w: `reconstruct=False, decode_text=False` skips them.
        """
        theta_w = self.P_w(w)
        rho_w = self.D(theta_w) if decode_text else None
        theta_v = self.P_v(phi_v)
        theta_a = self.P_a(phi_a)
        rec_v = self.R_v(theta_v) if reconstruct else None
        rec_a = self.R_a(theta_a) if reconstruct else None
        rho_a = self.D(theta_a)
        rho_v = self.D(theta_v)
        return HeadOutput(theta_a, theta_v, theta_w, rho_a, rho_v, rho_w, rec_a, rec_v)

    @torch.no_grad()
    def project_reconstructions(self, out: HeadOutput) -> None:
        """Reference quirk: P_a(rec_a) and P_v(rec_v) are computed and discarded. In train mode this only
        updates P_a / P_v's BatchNorm running statistics, which the evaluation uses; call it after the
        positive and negative forwards to keep the reference's order of updates."""
        if out.rec_a is not None:
            self.P_a(out.rec_a)
        if out.rec_v is not None:
            self.P_v(out.rec_v)

    def embed_text(self, w: Tensor) -> Tensor:
        return self.P_w(w)


def alignment_loss(
    pos: HeadOutput,
    neg: HeadOutput,
    phi_a: Tensor,
    phi_v: Tensor,
    w: Tensor,
    margin: float = 1.0,
    first_triplet: float = 1.0,
    second_triplet: float = 1.0,
    use_l_t: bool = True,
    use_l_r: bool = True,
) -> dict[str, Tensor]:
    """L = L_t + L_c + L_r of daan.md section 4 (= AVCA's loss), t = triplet margin (L2), d = MSE.

    Args:
        pos: head outputs of the positives (needs rho_w, rec_a, rec_v); neg: of the negatives (needs
            theta_*, rho_a, rho_v).
        phi_a, phi_v: targets of the reconstructors (AVCA: encoder outputs before attention).
        w: text embeddings of the positives' classes (target of the decoder).
        first_triplet, second_triplet: weights of L_t's two pairs (reference --first/second_additional_triplet).
        use_l_t, use_l_r: reference --additional_triplets_loss and --reg_loss (both on in every run script).

    Returns {'loss', 'l_t', 'l_c', 'l_r', 'l_rec', 'l_ct', 'l_w'} (scalars, in the graph); loss = l_t + l_c + l_r
    and l_c = l_rec + l_ct + l_w. Nothing is detached (as the reference).
    """
    ta, tv, tw = pos.theta_a, pos.theta_v, pos.theta_w
    ta_n, tv_n, tw_n = neg.theta_a, neg.theta_v, neg.theta_w
    # All 8 triplets over theta in one batched computation. Rows 0-3: L_t; rows 4-7: l_w.
    #   L_t = t(ta, tw, ta-) + t(tv, tw, tv-) + t(tw, ta, tw-) + t(tw, tv, tw-)
    #   l_w = t(tw, ta, ta-) + t(ta, tw, tw-) + t(tw, tv, tv-) + t(tv, tw, tw-)
    t_theta = triplet(
        torch.stack([ta, tv, tw, tw, tw, ta, tw, tv]),
        torch.stack([tw, tw, ta, tv, ta, tw, tv, tw]),
        torch.stack([ta_n, tv_n, tw_n, tw_n, ta_n, tw_n, tv_n, tw_n]),
        margin,
    )
    # l_ct = t(rho_w, rho_a, rho_a-) + t(rho_w, rho_v, rho_v-)
    rw = pos.rho_w
    t_rho = triplet(torch.stack([rw, rw]), torch.stack([pos.rho_a, pos.rho_v]), torch.stack([neg.rho_a, neg.rho_v]), margin)
    # l_rec = d(rho_a, w) + d(rho_v, w) + d(rho_w, w)
    l_rec = mse_terms(torch.stack([pos.rho_a, pos.rho_v, rw]), w).sum()
    l_ct = t_rho.sum()
    l_w = t_theta[4:].sum()
    l_c = l_rec + l_ct + l_w
    terms = {"l_rec": l_rec, "l_ct": l_ct, "l_w": l_w, "l_c": l_c}
    loss = l_c
    if use_l_t:
        l_t = first_triplet * (t_theta[0] + t_theta[1]) + second_triplet * (t_theta[2] + t_theta[3])
        loss = loss + l_t
    else:
        l_t = torch.zeros_like(l_c)
    if use_l_r:
        # L_r = d(R_a(ta), phi_a) + d(R_v(tv), phi_v) + d(tv, tw) + d(ta, tw)
        l_r = mse_terms(torch.stack([pos.rec_a, pos.rec_v]), torch.stack([phi_a, phi_v])).sum() + mse_terms(
            torch.stack([tv, ta]), tw
        ).sum()
        loss = loss + l_r
    else:
        l_r = torch.zeros_like(l_c)
    terms.update(loss=loss, l_t=l_t, l_r=l_r)
    return terms

"""AVCA, its alignment head / loss, and the shared layers. Small and fast (CPU, tiny models)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from avgzsl.config import build_config
from avgzsl.data.types import Batch
from avgzsl.methods import DataDims, get_method
from avgzsl.methods.alignment import AlignmentHead, alignment_loss
from avgzsl.methods.avca import AVCA, AVCAConfig
from avgzsl.methods.layers import EmbeddingNet, FastDropout, TokenTransformer, triplet

TEXT_DIM = 300
SMALL = dict(encoder_hidden=32, phi_dim=24, decoder_hidden=32, out_dim=16, heads=3, dim_head=8, mlp_dim=16)


def small_model(dims=DataDims(20, 12, TEXT_DIM), **kw) -> AVCA:
    return AVCA(AVCAConfig(**{**SMALL, **kw}), dims)


def random_batch(n=16, dims=DataDims(20, 12, TEXT_DIM), n_classes=4, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % n_classes
    text = torch.randn(n_classes, dims.text_dim, generator=g)

    def make(lab):
        return Batch(torch.randn(len(lab), dims.audio_dim, generator=g), torch.randn(len(lab), dims.video_dim, generator=g),
                     lab, text[lab])

    batch = make(labels)
    batch.negative = make((labels + 1) % n_classes)
    return batch


# --- layers -----------------------------------------------------------------------------------------
def test_embedding_net_structure_and_momenta():
    net = EmbeddingNet(10, 6, hidden_dim=8, dropout=0.3, momentum=0.99, hidden_momentum=0.1)
    kinds = [type(m) for m in net.fc]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, FastDropout] * 2
    assert net.fc[1].momentum == 0.1 and net.fc[5].momentum == 0.99 and net.fc[3].p == 0.3
    one = EmbeddingNet(10, 6, momentum=0.5)
    assert [type(m) for m in one.fc] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, FastDropout] and one.fc[1].momentum == 0.5
    out = net(torch.randn(5, 10))
    assert out.shape == (5, 6) and (out >= 0).all()


def test_triplet_matches_torch_and_vectorises():
    g = torch.Generator().manual_seed(1)
    a, p, n = (torch.randn(3, 7, 5, generator=g) for _ in range(3))
    ref = torch.stack([nn.TripletMarginLoss(margin=1.0)(a[k], p[k], n[k]) for k in range(3)])
    torch.testing.assert_close(triplet(a, p, n, 1.0), ref)
    torch.testing.assert_close(triplet(a[0], p[0], n[0], 0.3), nn.TripletMarginLoss(margin=0.3)(a[0], p[0], n[0]))


def test_token_transformer_shape_and_frozen_positions():
    t = TokenTransformer(dim=12, depth=2, heads=3, dim_head=4, mlp_dim=8, n_tokens=2, train_pos_emb=False)
    assert t(torch.randn(4, 2, 12)).shape == (4, 2, 12)
    assert not t.pos_emb.requires_grad
    # pre-norm with residuals: zero the residual branches' outputs and the block is x + pos
    for layer in t.layers:
        nn.init.zeros_(layer[1].to_out[0].weight), nn.init.zeros_(layer[1].to_out[0].bias)
        nn.init.zeros_(layer[3][3].weight), nn.init.zeros_(layer[3][3].bias)
    x = torch.randn(4, 2, 12)
    torch.testing.assert_close(t(x), x + t.pos_emb)


# --- AVCA -------------------------------------------------------------------------------------------
def test_registered_and_config():
    assert get_method("avca") is AVCA and AVCA.uses_negatives
    cfg = AVCAConfig()
    assert (cfg.lr, cfg.weight_decay, cfg.out_dim, cfg.phi_dim, cfg.margin) == (1e-3, 1e-5, 64, 300, 1.0)


def test_full_size_shapes():
    dims = DataDims(512, 512, TEXT_DIM)
    model = AVCA(AVCAConfig(), dims)
    assert model.head.P_a.fc[0].in_features == 300 and model.head.P_a.fc[4].out_features == 64
    assert model.head.P_w.fc[0].out_features == 64 and model.head.D.fc[0].out_features == 300
    assert model.head.R_a.fc[0].out_features == 300 and model.A_enc.fc[4].out_features == 300
    batch = random_batch(8, dims)
    terms = model.training_step(batch)
    assert terms["loss"].shape == () and terms["loss"].requires_grad
    model.eval()
    assert model.embed_samples(batch).shape == (8, 64)
    assert model.embed_classes(torch.randn(5, TEXT_DIM)).shape == (5, 64)
    assert model.distances(batch, torch.randn(5, TEXT_DIM)).shape == (8, 5)


def test_embeddings_non_negative():
    model = small_model()
    batch = random_batch()
    head = model.head
    _, _, att_a, att_v = model.encode(batch.audio, batch.video)
    out = head(att_a, att_v, batch.text)
    for name in ("theta_a", "theta_v", "theta_w", "rho_a", "rho_v", "rho_w", "rec_a", "rec_v"):
        assert (getattr(out, name) >= 0).all(), name
    model.eval()
    assert (model.embed_samples(batch) >= 0).all() and (model.embed_classes(batch.text) >= 0).all()


def test_loss_terms_sum():
    terms = small_model().training_step(random_batch())
    assert {"loss", "l_t", "l_c", "l_r", "l_rec", "l_ct", "l_w"} <= set(terms)
    torch.testing.assert_close(terms["loss"], terms["l_t"] + terms["l_c"] + terms["l_r"])
    torch.testing.assert_close(terms["l_c"], terms["l_rec"] + terms["l_ct"] + terms["l_w"])
    assert all(v.shape == () for v in terms.values())


def test_alignment_loss_matches_term_by_term():
    """daan.md section 4 written out with torch's TripletMarginLoss / MSELoss, one term at a time."""
    torch.manual_seed(0)
    head = AlignmentHead(phi_dim=10, text_dim=7, out_dim=5, proj_hidden=8)
    phi_a, phi_v, w, phi_a_n, phi_v_n, w_n = (torch.randn(6, d) for d in (10, 10, 7, 10, 10, 7))
    p = head(phi_a, phi_v, w)
    n = head(phi_a_n, phi_v_n, w_n, reconstruct=False, decode_text=False)
    assert n.rec_a is None and n.rho_w is None
    t, d = nn.TripletMarginLoss(margin=1.0), nn.MSELoss()
    l_t = t(p.theta_a, p.theta_w, n.theta_a) + t(p.theta_v, p.theta_w, n.theta_v) \
        + t(p.theta_w, p.theta_a, n.theta_w) + t(p.theta_w, p.theta_v, n.theta_w)
    l_rec = d(p.rho_a, w) + d(p.rho_v, w) + d(p.rho_w, w)
    l_ct = t(p.rho_w, p.rho_a, n.rho_a) + t(p.rho_w, p.rho_v, n.rho_v)
    l_w = t(p.theta_w, p.theta_a, n.theta_a) + t(p.theta_a, p.theta_w, n.theta_w) \
        + t(p.theta_w, p.theta_v, n.theta_v) + t(p.theta_v, p.theta_w, n.theta_w)
    l_r = d(p.rec_a, phi_a) + d(p.rec_v, phi_v) + d(p.theta_v, p.theta_w) + d(p.theta_a, p.theta_w)
    got = alignment_loss(p, n, phi_a, phi_v, w)
    for key, want in dict(l_t=l_t, l_rec=l_rec, l_ct=l_ct, l_w=l_w, l_r=l_r, loss=l_t + l_rec + l_ct + l_w + l_r).items():
        torch.testing.assert_close(got[key], want, msg=key)
    off = alignment_loss(p, n, phi_a, phi_v, w, use_l_t=False, use_l_r=False)
    torch.testing.assert_close(off["loss"], l_rec + l_ct + l_w)


def test_daan_head_dims():
    head = AlignmentHead(phi_dim=512, text_dim=300, out_dim=300, proj_hidden=None)
    out = head(torch.randn(4, 512), torch.randn(4, 512), torch.randn(4, 300))
    assert out.theta_a.shape == (4, 300) and out.rho_v.shape == (4, 300) and out.rec_a.shape == (4, 512)
    assert len(head.P_a.fc) == 4


def test_loss_decreases_on_separable_problem():
    torch.manual_seed(0)
    dims, n_classes, n = DataDims(20, 12, TEXT_DIM), 4, 32
    g = torch.Generator().manual_seed(3)
    means_a, means_v = torch.randn(n_classes, 20, generator=g) * 3, torch.randn(n_classes, 12, generator=g) * 3
    text = torch.randn(n_classes, TEXT_DIM, generator=g)

    def batch_of(lab):
        return Batch(means_a[lab] + 0.3 * torch.randn(n, 20, generator=g),
                     means_v[lab] + 0.3 * torch.randn(n, 12, generator=g), lab, text[lab])

    model = small_model(dims, embedding_dropout=0.0, decoder_dropout=0.0, additional_dropout=0.0)
    model.train()
    opt = model.configure_optimizer()
    losses = []
    for _ in range(30):
        lab = torch.randint(0, n_classes, (n,), generator=g)
        b = batch_of(lab)
        b.negative = batch_of((lab + torch.randint(1, n_classes, (n,), generator=g)) % n_classes)
        losses.append(model.optimization_step(b, opt)["loss"])
    losses = torch.stack(losses)
    assert torch.isfinite(losses).all()
    assert losses[-5:].mean() < 0.6 * losses[:5].mean(), losses


def test_embed_samples_deterministic_in_eval():
    model = small_model()
    opt = model.configure_optimizer()
    batch = random_batch()
    model.optimization_step(batch, opt)  # move the BN running statistics away from their init
    model.eval()
    first = model.embed_samples(batch)
    torch.testing.assert_close(model.embed_samples(batch), first, rtol=0, atol=0)
    # one sample's embedding does not depend on the rest of its batch
    part = Batch(batch.audio[:3], batch.video[:3], batch.labels[:3])
    torch.testing.assert_close(model.embed_samples(part), first[:3])


def _tracked(bn_owner: EmbeddingNet) -> list[int]:
    return [int(m.num_batches_tracked) for m in bn_owner.fc if isinstance(m, nn.BatchNorm1d)]


@pytest.mark.parametrize("reference", [True, False])
def test_reference_bn_updates(reference):
    """Reference order per step: encoders pos, neg (+ get_embeddings pass); P_a/P_v pos, neg (+ P(R(theta)),
    + get_embeddings pass); W_proj pos, neg (+ get_embeddings pass); R once."""
    model = small_model(reference_bn_updates=reference)
    opt = model.configure_optimizer()
    model.optimization_step(random_batch(), opt)
    extra = int(reference)
    assert _tracked(model.A_enc) == [2 + extra] * 2
    assert _tracked(model.head.P_v) == [2 + 2 * extra] * 2
    assert _tracked(model.head.P_w) == [2 + extra]
    assert _tracked(model.head.R_a) == [1]


def test_momentum_placement_and_frozen_positions():
    ref = small_model(momentum=0.99)
    assert [m.momentum for m in ref.A_enc.fc if isinstance(m, nn.BatchNorm1d)] == [0.1, 0.99]
    assert [m.momentum for m in ref.head.P_a.fc if isinstance(m, nn.BatchNorm1d)] == [0.1, 0.99]
    assert ref.head.P_w.fc[1].momentum == 0.1 and ref.head.D.fc[1].momentum == 0.1
    everywhere = small_model(momentum=0.99, momentum_output_bn_only=False)
    assert all(m.momentum == 0.99 for m in everywhere.modules() if isinstance(m, nn.BatchNorm1d))
    # position embeddings: frozen (reference) vs trained
    pos0 = ref.attention.pos_emb.detach().clone()
    opt = ref.configure_optimizer()
    assert all(p is not ref.attention.pos_emb for group in opt.param_groups for p in group["params"])
    ref.optimization_step(random_batch(), opt)
    torch.testing.assert_close(ref.attention.pos_emb.detach(), pos0, rtol=0, atol=0)
    trained = small_model(freeze_pos_emb=False)
    pos0 = trained.attention.pos_emb.detach().clone()
    trained.optimization_step(random_batch(), trained.configure_optimizer())
    assert not torch.equal(trained.attention.pos_emb.detach(), pos0)


def test_double_residual_switch():
    model = small_model()
    model.eval()
    phi_a, phi_v = torch.rand(5, 24), torch.rand(5, 24)
    out = model.attention(torch.stack([phi_a, phi_v], 1))
    a, v = model.attend(phi_a, phi_v)
    torch.testing.assert_close(a, phi_a + out[:, 0])
    model.cfg.double_residual = False
    a, v = model.attend(phi_a, phi_v)
    torch.testing.assert_close(v, out[:, 1])


# --- configs ----------------------------------------------------------------------------------------
# baselines.md, AVCA: dropouts (embedding / decoder / additional), BN momentum, batch size, main features
SPEC = {
    "UCF": (0.2, 0.3, 0.5, 0.1, 256),
    "ActivityNet": (0.2, 0.2, 0.1, 0.99, 256),
    "VGGSound": (0.0, 0.0, 0.1, 0.1, 64),
}


@pytest.mark.parametrize("dataset", sorted(SPEC))
def test_yaml_configs(dataset):
    cfg = build_config("avca", dataset)
    m, t = cfg.method, cfg.train
    assert isinstance(m, AVCAConfig)
    assert (m.embedding_dropout, m.decoder_dropout, m.additional_dropout, m.momentum, t.batch_size) == SPEC[dataset]
    assert (m.lr, m.weight_decay, t.epochs, t.n_batches) == (1e-3, 1e-5, 50, 500)
    from avgzsl.config import default_config_path

    first = default_config_path(dataset, "avca").read_text().splitlines()[0]
    assert first.startswith("# avgzsl run --method avca --dataset " + dataset)


def test_fast_dropout_matches_dropout_semantics():
    from avgzsl.methods.layers import FastDropout, seed_dropout

    drop = FastDropout(0.2)
    x = torch.ones(400, 500, requires_grad=True)
    seed_dropout(0)
    y = drop(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.2) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.8))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # gradient = mask / (1 - p)
    seed_dropout(0)
    assert torch.equal(drop(x), y)  # reproducible from the seed
    assert not torch.equal(drop(x), y)  # and a fresh mask each call
    drop.eval()
    assert torch.equal(drop(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x)

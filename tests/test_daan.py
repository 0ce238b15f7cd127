"""DAAN: differential attention, causal TCN, masks, the Table II variants training, configs.

Run: PYTHONPATH=src python -m pytest tests/test_daan.py -q   (CSGM itself: tests/test_csgm.py)
"""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from avgzsl.config import CONFIG_DIR, build_config
from avgzsl.data.types import Batch
from avgzsl.methods import DataDims, get_method
from avgzsl.methods.daan import DAAN, DAANConfig, ablation_variants
from avgzsl.methods.daan.model import CrossAttention
from avgzsl.methods.daan.qdma import QDMA, TCN, DifferentialAttention, TokenGroupNorm


def small_cfg(**kw) -> DAANConfig:
    base = dict(hidden_dim=32, out_dim=16, n_tokens=4, heads=2, tcn_steps=4, cross_heads=2, cross_ffn_dim=32,
                mlp_hidden=32, embedding_dropout=0.1, decoder_dropout=0.1, additional_dropout=0.1)
    base.update(kw)
    return DAANConfig(**base)


# --- (a) differential attention -------------------------------------------------------------------
def _halves(att: DifferentialAttention, x: torch.Tensor):
    """Q1, Q2, K1, K2 [B, H, T, d] and V [B, H, T, 2d] from the module's weights (layout in its docstring)."""
    b, t, _ = x.shape
    h, d = att.heads, att.d
    q = (x @ att.q.weight.T).view(b, t, h, 2 * d).transpose(1, 2)
    k = (x @ att.k.weight.T).view(b, t, h, 2 * d).transpose(1, 2)
    v = (x @ att.v.weight.T).view(b, t, h, 2 * d).transpose(1, 2)
    return q[..., :d], q[..., d:], k[..., :d], k[..., d:], v


@pytest.mark.parametrize("masked", [False, True])
def test_beta_zero_is_softmax_attention(masked):
    torch.manual_seed(0)
    att = DifferentialAttention(dim=12, attn_dim=16, heads=2, beta=0.0)
    x = torch.randn(3, 5, 12)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool) if masked else None
    out = att(x, mask).transpose(1, 2)  # [B, H, T, 2d]
    q1, _, k1, _, v = _halves(att, x)
    scores = q1 @ k1.transpose(-1, -2) / math.sqrt(att.d)
    if masked:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    manual = scores.softmax(-1) @ v
    torch.testing.assert_close(out, manual, rtol=1e-6, atol=1e-7)
    sdpa = F.scaled_dot_product_attention(q1, k1, v, attn_mask=None if mask is None else mask[:, None, None, :])
    torch.testing.assert_close(out, sdpa, rtol=1e-5, atol=1e-6)


def test_beta_subtracts_the_second_softmax():
    torch.manual_seed(0)
    att = DifferentialAttention(dim=12, attn_dim=16, heads=2, beta=0.8)
    x = torch.randn(3, 5, 12)
    q1, q2, k1, k2, v = _halves(att, x)
    a1 = (q1 @ k1.transpose(-1, -2) / math.sqrt(att.d)).softmax(-1)
    a2 = (q2 @ k2.transpose(-1, -2) / math.sqrt(att.d)).softmax(-1)
    torch.testing.assert_close(att(x).transpose(1, 2), (a1 - 0.8 * a2) @ v, rtol=1e-6, atol=1e-7)


# --- (b) causal TCN -------------------------------------------------------------------------------
@pytest.mark.parametrize("layers,kernel", [(2, 3), (3, 9), (5, 5)])
def test_tcn_is_causal(layers, kernel):
    torch.manual_seed(0)
    tcn = TCN(channels=6, layers=layers, kernel=kernel)
    x = torch.randn(2, 6, 12)
    y = tcn(x)
    for t in range(11):
        x2 = x.clone()
        x2[:, :, t + 1:] = torch.randn_like(x2[:, :, t + 1:]) * 10
        y2 = tcn(x2)
        torch.testing.assert_close(y2[:, :, :t + 1], y[:, :, :t + 1], rtol=0, atol=0)
        assert not torch.allclose(y2[:, :, t + 1:], y[:, :, t + 1:])  # later steps do see the change
    # ...and step t does depend on earlier steps (the dilations reach back).
    x3 = x.clone()
    x3[:, :, 0] += 1
    assert not torch.allclose(tcn(x3)[:, :, min(11, layers)], y[:, :, min(11, layers)])


@pytest.mark.parametrize("layers,kernel", [(0, 3), (2, 3), (3, 9), (5, 5)])
def test_tcn_matmul_form_equals_the_convolutions(layers, kernel):
    # The TCN runs each causal conv as one matmul over shifted copies (time_major) and its last conv only at
    # the steps read (at_steps); both must equal nn.Conv1d's own convolution, values and gradients.
    torch.manual_seed(0)
    tcn = TCN(channels=6, layers=layers, kernel=kernel)
    x = torch.randn(4, 6, 11, requires_grad=True)
    h = tcn.causal(x)  # nn.Conv1d's forward on left-padded input
    for conv in tcn.dilated:
        h = conv(F.relu(h))
    reference = h + x
    torch.testing.assert_close(tcn(x), reference, rtol=1e-5, atol=1e-5)
    idx = torch.tensor([10, 0, 3, 7])
    rows = reference[torch.arange(4), :, idx]
    got = tcn.at_steps(x, idx)
    torch.testing.assert_close(got, rows, rtol=1e-5, atol=1e-5)
    g_ref = torch.autograd.grad(rows.square().sum(), [x, *tcn.parameters()])
    g_got = torch.autograd.grad(got.square().sum(), [x, *tcn.parameters()])
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_token_group_norm_equals_group_norm():
    torch.manual_seed(0)
    ours, ref = TokenGroupNorm(4, 64), torch.nn.GroupNorm(4, 64)
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(50, 64) * 3 + 1
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    g_ours = torch.autograd.grad(ours(x).square().sum(), list(ours.parameters()))
    g_ref = torch.autograd.grad(ref(x).square().sum(), list(ref.parameters()))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_cross_attention_is_per_sample():
    # DAAN's training step sends positives and negatives through the cross-attention in one call.
    torch.manual_seed(0)
    cross = CrossAttention(16, 2, 32, dropout=0.1).eval()
    a, v, a2, v2 = (torch.randn(5, 16) for _ in range(4))
    joint = cross(torch.cat([a, a2]), torch.cat([v, v2]))
    for got, want in zip(joint, (torch.cat(p) for p in zip(cross(a, v), cross(a2, v2)))):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# --- (f) temporal features and masks --------------------------------------------------------------
@pytest.mark.parametrize("tcn_input", ["reshape", "tokens"])
def test_qdma_padding_does_not_change_the_output(tcn_input):
    torch.manual_seed(0)
    q = QDMA(16, 32, temporal=True, heads=2, beta=1.15, tcn_input=tcn_input, tcn_steps=4).eval()
    lengths = torch.tensor([3, 5, 1, 4])
    x = torch.randn(4, 5, 16)
    mask = torch.arange(5)[None] < lengths[:, None]
    out = q(x * mask[..., None], mask)
    # Garbage in the padding, and extra padding steps: same output.
    x_long = torch.cat([x, torch.randn(4, 3, 16)], dim=1)
    mask_long = torch.arange(8)[None] < lengths[:, None]
    x_long[~mask_long] = torch.randn(int((~mask_long).sum()), 16) * 100
    torch.testing.assert_close(q(x_long, mask_long), out, rtol=1e-5, atol=1e-6)
    # Each sample alone (its exact length, no padding) gives the same output as in the padded batch.
    for i, n in enumerate(lengths.tolist()):
        alone = q(x[i:i + 1, :n], torch.ones(1, n, dtype=torch.bool))
        torch.testing.assert_close(alone, out[i:i + 1], rtol=1e-5, atol=1e-6)


def test_daan_temporal_padding_invariance():
    torch.manual_seed(0)
    model = DAAN(small_cfg(), DataDims(16, 32, 8, temporal=True)).eval()
    lengths = torch.tensor([2, 6, 4])
    mask = torch.arange(6)[None] < lengths[:, None]
    a, v = torch.randn(3, 6, 16) * mask[..., None], torch.randn(3, 6, 32) * mask[..., None]
    emb = model.embed_samples(Batch(a, v, torch.zeros(3, dtype=torch.long), None, mask, mask))
    pad = torch.arange(9)[None] < lengths[:, None]
    a2, v2 = torch.randn(3, 9, 16) * 50, torch.randn(3, 9, 32) * 50
    a2[:, :6][mask], v2[:, :6][mask] = a[mask], v[mask]
    a2[pad], v2[pad] = torch.cat([a, torch.zeros(3, 3, 16)], 1)[pad], torch.cat([v, torch.zeros(3, 3, 32)], 1)[pad]
    emb2 = model.embed_samples(Batch(a2, v2, torch.zeros(3, dtype=torch.long), None, pad, pad))
    torch.testing.assert_close(emb2, emb, rtol=1e-5, atol=1e-6)


# --- (e) every variant learns a tiny problem ------------------------------------------------------
def tiny_problem(n_classes=6, dim_a=16, dim_v=32, text_dim=8, temporal=False, seed=0):
    """A batch sampler: features are a class-dependent linear map of the class text plus noise."""
    g = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(n_classes, text_dim, generator=g), dim=1)
    map_a, map_v = torch.randn(text_dim, dim_a, generator=g), torch.randn(text_dim, dim_v, generator=g)

    def side(labels):
        a = text[labels] @ map_a + 0.3 * torch.randn(len(labels), dim_a, generator=g)
        v = text[labels] @ map_v + 0.3 * torch.randn(len(labels), dim_v, generator=g)
        if not temporal:
            return Batch(a, v, labels, text[labels])
        t = 4
        lengths = torch.randint(1, t + 1, (len(labels),), generator=g)
        mask = torch.arange(t)[None] < lengths[:, None]
        a = (a[:, None] + 0.1 * torch.randn(len(labels), t, dim_a, generator=g)) * mask[..., None]
        v = (v[:, None] + 0.1 * torch.randn(len(labels), t, dim_v, generator=g)) * mask[..., None]
        return Batch(a, v, labels, text[labels], mask, mask.clone())

    def batch(b=32):
        labels = torch.randint(0, n_classes, (b,), generator=g)
        other = (labels + torch.randint(1, n_classes, (b,), generator=g)) % n_classes
        out = side(labels)
        out.negative = side(other)
        return out

    return batch


@pytest.mark.parametrize("variant,temporal", [(v, False) for v in ablation_variants()] + [("daan", True)])
def test_variant_loss_decreases(variant, temporal):
    torch.manual_seed(0)
    cfg = small_cfg(**ablation_variants()[variant])
    model = DAAN(cfg, DataDims(16, 32, 8, temporal=temporal))
    opt = model.configure_optimizer()
    batch = tiny_problem(temporal=temporal)
    model.train()
    losses = torch.stack([model.optimization_step(batch(), opt)["loss"] for _ in range(40)])
    assert torch.isfinite(losses).all()
    assert losses[-8:].mean() < 0.8 * losses[:8].mean(), losses
    if cfg.csgm != "off":
        diag = model.epoch_diagnostics()
        assert diag and all(math.isfinite(v) for v in diag.values())


@pytest.mark.parametrize("method", ["daan", "avca"])
def test_frozen_text_side_keeps_p_w_at_its_initialisation(method):
    # method.text_side=frozen (a linear-gap probe): P_w's weights never change, the rest still learns.
    torch.manual_seed(0)
    if method == "daan":
        cfg = small_cfg(text_side="frozen")
    else:
        cfg = get_method("avca").Config(phi_dim=12, encoder_hidden=16, decoder_hidden=16, heads=2, dim_head=6,
                                        mlp_dim=16, out_dim=8, text_side="frozen")
    model = get_method(method)(cfg, DataDims(16, 32, 8))
    before = {k: v.clone() for k, v in model.head.P_w.named_parameters()}
    others = {k: v.clone() for k, v in model.head.P_a.named_parameters()}
    assert before
    opt = model.configure_optimizer()
    batch = tiny_problem()
    model.train()
    steps = 40 if method == "daan" else 150  # AVCA's loss falls more slowly at these sizes (learned side alike)
    losses = torch.stack([model.optimization_step(batch(), opt)["loss"] for _ in range(steps)])
    assert losses[-8:].mean() < 0.8 * losses[:8].mean(), losses
    for k, v in model.head.P_w.named_parameters():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert any(not torch.equal(v, others[k]) for k, v in model.head.P_a.named_parameters())
    with pytest.raises(ValueError, match="text_side"):
        get_method(method)(type(cfg)(**{**cfg.__dict__, "text_side": "fixed"}), DataDims(16, 32, 8))


def test_variants_are_what_table_ii_says():
    v = ablation_variants()
    assert list(v) == ["base", "base+qdma", "base+qdma+csgm_vc", "daan"]
    assert v["base"] == {"use_qdma": False, "csgm": "off"}
    assert v["base+qdma"]["use_qdma"] and v["base+qdma"]["csgm"] == "off"
    assert v["base+qdma+csgm_vc"]["csgm"] == "vc" and v["daan"]["csgm"] == "full"
    base = DAAN(DAANConfig(**v["base"]), DataDims(512, 512, 300))
    assert not any("QDMA" in type(m).__name__ for m in base.modules()) and base.csgm is None
    full = DAAN(DAANConfig(**v["daan"]), DataDims(512, 512, 300))
    assert full.csgm is not None and full.csgm.part_names == ["attn", "tcn"]


# --- configs --------------------------------------------------------------------------------------
PAPER = {  # beta (w), gamma, k, n, batch size
    "UCF": (1.15, 0.45, 3, 2, 256),
    "ActivityNet": (0.5, 0.5, 9, 3, 256),
    "VGGSound": (1.2, 0.6, 5, 5, 64),
}


@pytest.mark.parametrize("dataset", list(PAPER))
def test_dataset_configs(dataset):
    cfg = build_config("daan", dataset)
    m = cfg.method
    beta, gamma, k, n, bs = PAPER[dataset]
    assert (m.beta, m.gamma, m.tcn_kernel, m.tcn_layers, cfg.train.batch_size) == (beta, gamma, k, n, bs)
    assert (m.lr, cfg.train.epochs, m.hidden_dim, m.out_dim, m.csgm) == (1e-3, 50, 512, 300, "full")
    path = CONFIG_DIR / dataset / "daan.yaml"
    assert path.read_text().startswith("# avgzsl run --method daan")
    get_method("daan")(m, DataDims(512, 512, 300))  # builds


def test_ablation_config_files_match_the_variants():
    folder = CONFIG_DIR / "UCF" / "daan-ablation"
    files = {p.stem: p for p in folder.glob("*.yaml")}
    assert set(files) == {name.replace("+", "_") for name in ablation_variants()}
    for name, overrides in ablation_variants().items():
        path = files[name.replace("+", "_")]
        assert yaml.safe_load(Path(path).read_text())["method"] == overrides
        cfg = build_config("daan", "UCF", config_file=path)
        assert all(getattr(cfg.method, k) == val for k, val in overrides.items())


def test_single_key_cross_attention_shortcut_equals_full_attention():
    from avgzsl.methods.daan.model import CrossAttentionBlock

    torch.manual_seed(0)
    block = CrossAttentionBlock(dim=16, heads=4, ffn_dim=8, dropout=0.0).eval()
    x, ctx = torch.randn(5, 1, 16), torch.randn(5, 1, 16)
    full = block.attn(x, ctx, ctx, need_weights=False)[0]
    torch.testing.assert_close(block._attend(x, ctx), full)


def test_flatten_pooling_keeps_which_chunk_said_what():
    torch.manual_seed(0)
    q = QDMA(16, 8, n_tokens=4, heads=2, pool="flatten", pos_emb="none", use_tcn=False).eval()
    mean = QDMA(16, 8, n_tokens=4, heads=2, pool="mean", pos_emb="none", use_tcn=False).eval()
    x = torch.randn(3, 16)
    swapped = x.view(3, 4, 4).flip(1).reshape(3, 16)  # same chunks, other order
    # without positions, attention + mean pooling cannot tell the two apart; flattening can
    torch.testing.assert_close(mean(x), mean(swapped))
    assert not torch.allclose(q(x), q(swapped))
    with pytest.raises(ValueError, match="flatten"):
        QDMA(16, 8, temporal=True, pool="flatten")


def test_token_residual_carries_each_chunk_past_the_attention():
    torch.manual_seed(0)
    x, other = torch.randn(3, 16), torch.randn(3, 16)
    outs = {}
    for residual in (False, True):
        q = QDMA(16, 8, n_tokens=4, heads=2, pool="flatten", use_tcn=False, token_residual=residual).eval()
        with torch.no_grad():
            q.attn.v.weight.zero_()  # the attention says nothing: only the residual can carry the input
        outs[residual] = (q(x), q(other))
    torch.testing.assert_close(*outs[False])  # without it, every input gives the same output
    assert not torch.allclose(*outs[True])
    # it is the sum of the normalised attention output and the (position-coded) tokens
    q = QDMA(16, 8, n_tokens=4, heads=2, pool="flatten", use_tcn=False, token_residual=True).eval()
    tok = x.view(3, 4, 4) + q.pos
    o = q.norm(q.attn(tok).reshape(12, -1)).view(3, 4, -1) + tok
    torch.testing.assert_close(q(x), q.refine(o.flatten(1)) * q.scale)
    with pytest.raises(ValueError, match="token_residual"):
        QDMA(16, 8, n_tokens=4, heads=2, attn_dim=8, token_residual=True)
    model = DAAN(small_cfg(token_residual=True, pool="flatten"), DataDims(16, 16, 12, False))
    assert model.enc_a.token_residual and model.enc_v.token_residual


def test_qdma_norm_none_skips_the_group_norm():
    torch.manual_seed(0)
    x = torch.randn(3, 16)
    q = QDMA(16, 8, n_tokens=4, heads=2, use_tcn=False, norm="none").eval()
    tok = x.view(3, 4, 4) + q.pos
    torch.testing.assert_close(q(x), q.refine(q.attn(tok).reshape(3, 4, -1).mean(1)) * q.scale)
    grouped = QDMA(16, 8, n_tokens=4, heads=2, use_tcn=False).eval()
    grouped.load_state_dict(q.state_dict(), strict=False)  # same weights, plus the GroupNorm
    assert not torch.allclose(grouped(x), q(x))
    with pytest.raises(ValueError, match="norm"):
        QDMA(16, 8, n_tokens=4, heads=2, norm="layer")
    assert DAAN(small_cfg(qdma_norm="none"), DataDims(16, 16, 12, False)).enc_v.norm.__class__ is torch.nn.Identity

"""TCaF: structure against the reference, masks, loss, padding invariance, crops, learning, reproducibility.

Small and fast (CPU, tiny models), except the parameter count, which builds the UCF main model once.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from avgzsl.config import ConfigError, build_config, default_config_path
from avgzsl.data.types import Batch
from avgzsl.methods import DataDims, get_method
from avgzsl.methods.layers import seed_dropout
from avgzsl.methods.tcaf import TCaF, TCaFConfig, attention_mask, crop_starts, take_window, tcaf_loss
from avgzsl.protocol import run_protocol
from toybench import make_benchmark

DIMS = DataDims(10, 12, 6, temporal=True)
SMALL = dict(enc_hidden=16, dim=24, depth=2, heads=2, dim_head=8, mlp_dim=16, embed_dim=8, out_dim=8,
             proj_hidden=16)
NO_DROPOUT = dict(enc_dropout=0.0, token_dropout=0.0, transformer_dropout=0.0, o_dropout=0.0, w_dropout=0.0)


def small_model(dims=DIMS, **kw) -> TCaF:
    return TCaF(TCaFConfig(**{**SMALL, **kw}), dims)


def temporal_batch(n=8, dims=DIMS, n_classes=3, seed=0, max_len=7) -> Batch:
    """Zero-padded sequences of random, different audio and video lengths, with the training-batch fields."""
    g = torch.Generator().manual_seed(seed)
    len_a = torch.randint(1, max_len + 1, (n,), generator=g)
    len_v = torch.randint(1, max_len + 1, (n,), generator=g)
    len_a[0] = len_v[1] = max_len  # audio and video longest in different samples

    def seq(lengths, dim):
        mask = torch.arange(int(lengths.max()))[None] < lengths[:, None]
        return torch.randn(n, mask.shape[1], dim, generator=g).abs() * mask[..., None], mask

    audio, a_mask = seq(len_a, dims.audio_dim)
    video, v_mask = seq(len_v, dims.video_dim)
    classes = torch.tensor([2, 5, 9][:n_classes])
    labels = classes[torch.arange(n) % n_classes]
    class_text = nn.functional.normalize(torch.randn(n_classes, dims.text_dim, generator=g), dim=1)
    text = class_text[torch.searchsorted(classes, labels)]
    return Batch(audio, video, labels, text, a_mask, v_mask, classes=classes, class_text=class_text)


def pad_to(batch: Batch, t_a: int, t_v: int) -> Batch:
    """The same samples padded with more zero steps."""
    def pad(x, mask, t):
        extra = t - x.shape[1]
        return nn.functional.pad(x, (0, 0, 0, extra)), nn.functional.pad(mask, (0, extra))

    audio, a_mask = pad(batch.audio, batch.audio_mask, t_a)
    video, v_mask = pad(batch.video, batch.video_mask, t_v)
    return Batch(audio, video, batch.labels, batch.text, a_mask, v_mask, classes=batch.classes,
                 class_text=batch.class_text)


def one_sample(batch: Batch, i: int) -> Batch:
    la, lv = int(batch.audio_mask[i].sum()), int(batch.video_mask[i].sum())
    return Batch(batch.audio[i:i + 1, :la], batch.video[i:i + 1, :lv], batch.labels[i:i + 1],
                 audio_mask=batch.audio_mask[i:i + 1, :la], video_mask=batch.video_mask[i:i + 1, :lv])


# --- structure vs the reference ---------------------------------------------------------------------
def test_ucf_main_parameter_count_matches_the_reference():
    """Parameters of the reference Multimodal_Sequence_Transformer with best_main/best_ucf.yaml, by module."""
    enc = (512 * 256 + 256) + 2 * 256 + (256 * 300 + 300) + 2 * 300  # A_enc / V_enc: Linear, BN, Linear, BN
    w_proj = (300 * 64 + 64) + 2 * 64
    d_w = (64 * 300 + 300) + 2 * 300
    cls_token = 300
    embedding = 2 * 64 + (64 * 64 + 64) + 64 + 2 * (364 * 300 + 300)  # modal, fourier Linear, pad, 2 conv1x1
    # q, k, v (no bias), output Linear, FF, one LayerNorm
    layer = 3 * 300 * 512 + (512 * 300 + 300) + (300 * 128 + 128) + (128 * 300 + 300) + 2 * 300
    o_proj = (300 * 512 + 512) + 2 * 512 + (512 * 64 + 64) + 2 * 64
    d_o = (64 * 512 + 512) + 2 * 512 + (512 * 300 + 300) + 2 * 300
    want = 2 * enc + w_proj + d_w + cls_token + embedding + 5 * layer + o_proj + d_o
    model = TCaF(build_config("tcaf", "UCF").method, DataDims(512, 512, 300, temporal=True))
    assert sum(p.numel() for p in model.parameters()) == want == 4_521_764
    # sizes, layer order, and one LayerNorm shared by attention and feed-forward in each layer
    assert len(model.layers) == 5
    for layer in model.layers:
        assert sum(isinstance(m, nn.LayerNorm) for m in layer.modules()) == 1
        assert layer.attn.to_qkv.weight.shape == (3 * 8 * 64, 300) and layer.attn.to_qkv.bias is None
        assert [type(m) for m in layer.ff][:2] == [nn.Linear, nn.GELU] and layer.ff[0].out_features == 128
    assert [m.out_features for m in model.A_enc.fc if isinstance(m, nn.Linear)] == [256, 300]
    assert [m.out_features for m in model.O_proj.fc if isinstance(m, nn.Linear)] == [512, 64]
    assert [m.out_features for m in model.D_o.fc if isinstance(m, nn.Linear)] == [512, 300]
    assert [m.out_features for m in model.W_proj.fc if isinstance(m, nn.Linear)] == [64]
    assert [m.out_features for m in model.D_w.fc if isinstance(m, nn.Linear)] == [300]
    assert model.embedding.fourier_randn.shape == (2, 32) and model.embedding.proj[0].in_features == 364
    assert {model.A_enc.fc[3].p, model.O_proj.fc[3].p, model.W_proj.fc[3].p} == {0.4, 0.2, 0.1}
    assert model.layers[0].ff[2].p == 0.3 and model.embedding.dropout.p == 0.2


def test_cross_attention_mask():
    a_mask = torch.tensor([[True, True, False]])
    v_mask = torch.tensor([[True, False]])
    m = attention_mask(a_mask, v_mask, "cross")[0, 0].int()
    # positions: 0 CLS, 1-3 audio (3 padded), 4-5 video (5 padded); rows are queries
    want = torch.tensor([
        [1, 1, 1, 0, 1, 0],  # CLS: every real token
        [1, 0, 0, 0, 1, 0],  # audio: CLS and real video only
        [1, 0, 0, 0, 1, 0],
        [1, 0, 0, 0, 1, 0],  # padded query: never used, but never an empty row (no NaN)
        [1, 1, 1, 0, 0, 0],  # video: CLS and real audio only
        [1, 1, 1, 0, 0, 0],
    ])
    assert torch.equal(m, want)
    both = attention_mask(a_mask, v_mask, "both")[0, 0].int()
    assert torch.equal(both, torch.tensor([1, 1, 1, 0, 1, 0]).expand(6, 6))
    self_only = attention_mask(a_mask, v_mask, "self")[0, 0].int()
    assert self_only[1].tolist() == [1, 1, 1, 0, 0, 0] and self_only[4].tolist() == [1, 0, 0, 0, 1, 0]


def test_audio_tokens_see_only_cls_and_video():
    """One layer, cross-attention: changing one audio step changes CLS and the video tokens of its sample,
    not the other audio tokens (nor any other sample)."""
    torch.manual_seed(0)
    model = small_model(depth=1).eval()
    batch = temporal_batch()
    seq = model.prepare(batch)
    before = model.cls_output(seq, all_tokens=True)
    seq.audio = seq.audio.clone()
    seq.audio[0, 0] += 1.0
    after = model.cls_output(seq, all_tokens=True)
    changed = (after - before).abs().amax(1) > 1e-6
    n = len(batch)
    n_a = int(batch.audio_mask.sum())
    owner_a = batch.audio_mask.nonzero()[:, 0]
    owner_v = batch.video_mask.nonzero()[:, 0]
    assert changed[0] and not changed[1:n].any()  # CLS of sample 0 only
    audio_changed = changed[n:n + n_a]
    assert audio_changed[0] and not audio_changed[1:].any()  # only the changed step itself (residual)
    assert torch.equal(changed[n + n_a:], owner_v == 0)  # every video token of sample 0, nothing else
    assert int((owner_a == 0).sum()) > 1  # the test has other audio tokens in sample 0 to watch


# --- loss -------------------------------------------------------------------------------------------
def test_loss_by_hand():
    theta_o = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    class_theta = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([0, 2])
    theta_w = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    w = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    rho_o = torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 1.0]])
    rho_w = w.clone()
    # scores: [1, 0, 1] (target 0) and [0, 1, 1] (target 2): both -log(e / (2e + 1))
    ce = math.log(2 * math.e + 1) - 1
    reg = (0 + 1 + 0 + 1) / 4
    rec = 2 / 6 + 0
    got = tcaf_loss(theta_o, theta_w, rho_o, rho_w, w, class_theta, targets)
    for key, want in dict(l_ce=ce, l_reg=reg, l_rec=rec, loss=ce + reg + rec).items():
        assert got[key].item() == pytest.approx(want, rel=1e-6), key
    off = tcaf_loss(theta_o, theta_w, rho_o, rho_w, w, class_theta, targets, ce=False, reg=False)
    assert off["loss"].item() == pytest.approx(rec, rel=1e-6) and off["l_ce"].item() == 0


def test_training_step_wiring():
    """training_step = tcaf_loss of theta_o, W_proj(text), D_o, D_w, W_proj(class texts), label positions."""
    torch.manual_seed(0)
    model = small_model(**NO_DROPOUT).train()
    batch = temporal_batch()
    terms = model.training_step(batch)
    assert set(terms) == {"loss", "l_ce", "l_reg", "l_rec"} and terms["loss"].requires_grad
    assert torch.equal(batch.targets(), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    theta_o = model.O_proj(model.cls_output(model.prepare(batch)))
    theta_w = model.W_proj(batch.text)
    want = tcaf_loss(theta_o, theta_w, model.D_o(theta_o), model.D_w(theta_w), batch.text,
                     model.W_proj(batch.class_text), batch.targets())
    for key in terms:
        torch.testing.assert_close(terms[key], want[key], msg=key)
    # no triplets, no negatives
    assert not TCaF.uses_negatives and TCaF.feature_kinds == ("temporal",)


# --- padding invariance -----------------------------------------------------------------------------
def test_eval_embedding_independent_of_padding_and_batch():
    torch.manual_seed(0)
    model = small_model()
    opt = model.configure_optimizer()
    batch = temporal_batch()
    for _ in range(2):
        model.optimization_step(batch, opt)  # move the BatchNorm running statistics off their init
    model.eval()
    emb = model.embed_samples(batch)
    padded = model.embed_samples(pad_to(batch, batch.audio.shape[1] + 5, batch.video.shape[1] + 3))
    torch.testing.assert_close(padded, emb)
    for i in range(len(batch)):
        torch.testing.assert_close(model.embed_samples(one_sample(batch, i)), emb[i:i + 1])
    model.cfg.eval_chunk_size = 3  # chunked evaluation gives the same numbers
    torch.testing.assert_close(model.embed_samples(batch), emb)


@pytest.mark.parametrize("bn_stats_with_padding", [False, True])
def test_train_mode_padding_invariance(bn_stats_with_padding):
    """Training mode, dropout on: padded steps never enter a computation (packed tokens, BatchNorm over real
    steps), so the same seeds give the same loss for any padding. The reference quirk breaks it."""
    torch.manual_seed(0)
    model = small_model(bn_stats_with_padding=bn_stats_with_padding).train()
    batch = temporal_batch()
    longer = pad_to(batch, batch.audio.shape[1] + 4, batch.video.shape[1] + 6)
    losses = []
    for b in (batch, longer):
        seed_dropout(1)
        torch.manual_seed(1)
        losses.append(model.training_step(b)["loss"])
    if bn_stats_with_padding:
        assert not torch.allclose(losses[0], losses[1])
    else:
        torch.testing.assert_close(losses[0], losses[1])


# --- crops ------------------------------------------------------------------------------------------
def test_centre_crop_and_aligned_audio():
    len_v, len_a = torch.tensor([10, 5, 20, 9]), torch.tensor([7, 3, 14, 9])
    # cls steps: C3D 0.64 s, VGGish 0.96 s; 8 video steps = 5.12 s = 5.33 audio steps -> 5
    start_v, start_a = crop_starts(len_v, len_a, 8, 5, 0.64, 0.96, "center")
    assert start_v.tolist() == [1, 0, 6, 0]
    # audio starts at the video start in seconds (round(s * 0.64 / 0.96)), at most len_a - 5, 0 if not cropped
    assert start_a.tolist() == [1, 0, 4, 0]
    x = torch.arange(20.0)[None, :, None].expand(4, 20, 1)
    mask = torch.arange(20)[None] < len_v[:, None]
    win, valid = take_window(x * mask[..., None], mask, start_v, 8)
    assert win[2, :, 0].tolist() == list(range(6, 14)) and valid[2].all()
    assert valid[1].tolist() == [True] * 5 + [False] * 3 and win[1, 5:].abs().sum() == 0


@pytest.mark.parametrize("mode", ["uniform", "reference"])
def test_random_crop_range_and_alignment(mode):
    torch.manual_seed(0)
    n = 4000
    len_v = torch.full((n,), 12)
    len_a = torch.full((n,), 9)
    start_v, start_a = crop_starts(len_v, len_a, 10, 7, 0.64, 0.96, "random",
                                   reference_randint=mode == "reference")
    # diff = 2: starts 0, 1, 2 uniformly; the reference (torch.randint(diff)) never starts at 2
    assert set(start_v.tolist()) == ({0, 1, 2} if mode == "uniform" else {0, 1})
    assert torch.equal(start_a, torch.round(start_v * 0.64 / 0.96).long().clamp_max(2))


def test_model_crops_train_random_eval_centre():
    cfg = dict(train_crop_steps=4, eval_crop_steps=6, audio_step_seconds=0.96, video_step_seconds=0.64)
    model = small_model(**cfg)
    batch = temporal_batch(max_len=12)
    model.train()
    torch.manual_seed(0)
    seq = model.prepare(batch)
    assert seq.video.shape[1] == 4 and seq.audio.shape[1] == round(4 * 0.64 / 0.96)
    assert torch.allclose(seq.times_v, torch.arange(4) * 0.64)
    assert torch.allclose(seq.times_a, torch.arange(3) * 0.96)
    model.eval()
    seq = model.prepare(batch)
    assert seq.video.shape[1] == 6 and seq.audio.shape[1] == 4
    i = int(batch.video_mask.sum(1).argmax())  # a 12-step video: centre crop starts at 3
    want = nn.functional.normalize(batch.video[i, 3:9], dim=-1)
    torch.testing.assert_close(seq.video[i], want)
    la = int(batch.audio_mask[i].sum())
    start_a = max(0, min(round(3 * 0.64 / 0.96), la - 4))
    got = seq.audio[i, : min(4, la)]
    torch.testing.assert_close(got, batch.audio[i, start_a:start_a + min(4, la)] / model.cfg.audio_divisor)
    # the reference's audio crop length: round(L * rate_v * rate_a) -> 37 for 60 C3D steps, not 40
    assert round(60 * 0.64 / 0.96) == 40
    long = temporal_batch(n=2, max_len=80)
    for choice, want_len in (("duration", 40), ("reference", 37)):
        m = small_model(train_crop_steps=60, audio_step_seconds=0.96, video_step_seconds=0.64,
                        audio_crop_length=choice).train()
        assert m.prepare(long).audio.shape[1] == want_len


def test_quirk_switches():
    batch = temporal_batch()
    model = small_model().eval()
    assert torch.allclose(model.prepare(batch).video.norm(dim=-1)[batch.video_mask], torch.tensor(1.0))
    model.cfg.video_norm = "time"  # the reference's F.normalize on [B, T, D]: over time
    assert torch.allclose(model.prepare(batch).video.norm(dim=1), torch.tensor(1.0))
    model.cfg.audio_step_seconds = 0.96
    assert torch.allclose(model.prepare(batch).times_a, torch.arange(7) * 0.96)
    model.cfg.eval_positions = "indices"  # the reference evaluates without timestamps
    assert torch.allclose(model.prepare(batch).times_a, torch.arange(7.0))
    model.train()  # training always uses seconds
    assert torch.allclose(model.prepare(batch).times_a, torch.arange(7) * 0.96)
    assert torch.equal(model.prepare(batch).audio, batch.audio)  # main: audio as it is
    model.cfg.audio_divisor = 255.0  # the reference on SeLaVi (main) audio
    torch.testing.assert_close(model.prepare(batch).audio, batch.audio / 255)


def test_reference_bn_updates():
    batch = temporal_batch()
    for reference, want in ((False, (1, 1, 2)), (True, (2, 2, 3))):
        model = small_model(reference_bn_updates=reference)
        model.optimization_step(batch, model.configure_optimizer())
        # BatchNorm updates per step: A_enc, O_proj once; W_proj for batch texts and class texts
        # (+1 each for the reference's get_embeddings pass)
        got = tuple(int(net.fc[1].num_batches_tracked) for net in (model.A_enc, model.O_proj, model.W_proj))
        assert got == want


# --- it learns, refuses averaged features, is reproducible ------------------------------------------
LEARN = {
    "train": {"epochs": 4, "n_batches": 50, "batch_size": 32, "progress": False, "save_checkpoints": "none"},
    "method": {**SMALL, "dim": 32, "dim_head": 16, "mlp_dim": 32, "out_dim": 16, "enc_hidden": 32,
               "proj_hidden": 32, "lr": 1e-3, **{k: 0.1 for k in NO_DROPOUT}},
}


def test_learns_something_transferable(tmp_path):
    # text_dim 4: the 6 seen classes span the text space, so unseen classes are reachable from seen ones
    # (with the default 8-d text, 6 classes leave unseen directions no method learns: AVCA is at chance too)
    bench = make_benchmark(temporal=True, text_dim=4)
    res = run_protocol(build_config("tcaf", "UCF", LEARN), bench, tmp_path)
    assert res["test"]["ZSL"] > 45, res  # 4 unseen test classes: chance is 25 %


def test_same_seed_same_numbers(tmp_path):
    bench = make_benchmark(temporal=True, text_dim=4)
    short = {"train": {**LEARN["train"], "epochs": 2, "n_batches": 10}, "method": LEARN["method"]}
    a = run_protocol(build_config("tcaf", "UCF", short), bench, tmp_path / "a")
    b = run_protocol(build_config("tcaf", "UCF", short), bench, tmp_path / "b")
    assert a["test"] == b["test"] and a["val"] == b["val"] and a["best_epoch"] == b["best_epoch"]
    rows = [(tmp_path / r / "metrics.jsonl").read_text() for r in "ab"]
    drop_times = lambda text: [{k: v for k, v in json.loads(line).items() if "seconds" not in k}  # noqa: E731
                               for line in text.splitlines()]
    assert drop_times(rows[0]) == drop_times(rows[1])


def test_refuses_averaged_features():
    with pytest.raises(ValueError, match="temporal"):
        TCaF(TCaFConfig(), DataDims(512, 512, 300, temporal=False))
    with pytest.raises(ConfigError, match="temporal"):
        build_config("tcaf", "UCF", ["data.temporal=false"])


# --- configs ----------------------------------------------------------------------------------------
# baselines.md TCaF table: lr, plateau, depth, heads, dim_head, transformer drop, token drop, enc hidden,
# enc drop, O_proj drop, W_proj drop
SPEC = {
    ("UCF", "main"): (5e-5, False, 5, 8, 64, 0.3, 0.2, 256, 0.4, 0.2, 0.1),
    ("VGGSound", "main"): (7e-5, False, 8, 6, 128, 0.5, 0.2, 128, 0.2, 0.2, 0.2),
    ("ActivityNet", "main"): (7e-5, True, 8, 3, 128, 0.3, 0.2, 128, 0.2, 0.1, 0.1),
    ("UCF", "cls"): (7e-5, True, 6, 8, 64, 0.3, 0.2, 512, 0.3, 0.1, 0.1),
    ("VGGSound", "cls"): (6e-5, False, 8, 8, 64, 0.5, 0.1, 512, 0.2, 0.2, 0.1),
    ("ActivityNet", "cls"): (7e-5, True, 6, 8, 64, 0.4, 0.2, 512, 0.3, 0.1, 0.1),
}


@pytest.mark.parametrize("dataset,feature_set", sorted(SPEC))
def test_yaml_configs(dataset, feature_set):
    cfg = build_config("tcaf", dataset, [f"data.feature_set={feature_set}"])
    m, t = cfg.method, cfg.train
    got = (m.lr, t.lr_factor < 1, m.depth, m.heads, m.dim_head, m.transformer_dropout, m.token_dropout,
           m.enc_hidden, m.enc_dropout, m.o_dropout, m.w_dropout)
    assert got == SPEC[dataset, feature_set]
    assert cfg.data.temporal and (t.epochs, t.n_batches, t.batch_size, m.weight_decay) == (50, 300, 64, 1e-5)
    assert t.lr_factor in (0.1, 1.0) and t.lr_patience == 3
    # SeLaVi: 1 s steps, audio as it is; VGGish 0.96 s (0..255: the loader divides by 255, not the model
    # again), C3D 0.64 s
    steps = (m.audio_step_seconds, m.video_step_seconds, m.audio_divisor)
    assert steps == ((1.0, 1.0, 1.0) if feature_set == "main" else (0.96, 0.64, 1.0))
    crops = (m.train_crop_steps, m.eval_crop_steps)
    assert crops == ((60, 300) if dataset == "ActivityNet" else (0, 0))
    first = default_config_path(dataset, "tcaf").read_text().splitlines()[0]
    assert first.startswith(f"# avgzsl run --method tcaf --dataset {dataset}")
    assert get_method("tcaf") is TCaF and TCaFConfig() == build_config("tcaf", "UCF").method


def test_config_checks():
    with pytest.raises(ConfigError, match="method.train_crop_steps"):
        build_config("tcaf", "UCF", ["method.train_crop_steps=-1"])
    with pytest.raises(ConfigError, match="method.video_norm"):
        build_config("tcaf", "UCF", ["method.video_norm=frames"])

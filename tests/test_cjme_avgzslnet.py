"""CJME and AVGZSLNet: structure vs the reference, losses and prediction rules by hand, learning, configs.

Run: python -m pytest -q tests/test_cjme_avgzslnet.py
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avgzsl.config import build_config, default_config_path
from avgzsl.data.types import Batch
from avgzsl.methods import DataDims, get_method
from avgzsl.methods.avgzslnet import AVGZSLNet, AVGZSLNetConfig
from avgzsl.methods.cjme import CJME, CJMEConfig, entropy_of_scores, gate_target
from avgzsl.methods.layers import FastDropout
from avgzsl.protocol import run_protocol
from toybench import make_benchmark

DIMS = DataDims(20, 12, 10)
SMALL = dict(encoder_hidden=24, text_hidden=16, out_dim=8)


def random_batch(n=16, dims=DIMS, n_classes=5, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(n_classes, dims.text_dim, generator=g), dim=1)
    labels = torch.arange(n) % n_classes

    def make(lab):
        return Batch(torch.randn(len(lab), dims.audio_dim, generator=g),
                     torch.randn(len(lab), dims.video_dim, generator=g), lab, text[lab])

    batch = make(labels)
    batch.negative = make((labels + 1 + torch.arange(n) % (n_classes - 1)) % n_classes)
    batch.classes, batch.class_text = torch.arange(n_classes), text
    return batch


def l2(x, y):
    """The reference's L2Loss: per-row Euclidean distance."""
    return (x - y).pow(2).sum(1).pow(0.5)


def pairwise(x, y):
    return (x[:, None, :] - y[None, :, :]).pow(2).sum(-1).sqrt()


# --- structure vs the reference (src/model.py) -------------------------------------------------------
LAYERS = [nn.Linear, nn.BatchNorm1d, nn.ReLU, FastDropout, nn.Linear]


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_avgzslnet_structure():
    model = AVGZSLNet(AVGZSLNetConfig(), DataDims(512, 512, 300))
    # EmbeddingNet(in, hidden, 64): Linear, BN, ReLU, Dropout, Linear (no final ReLU)
    for net, sizes in [(model.f_a, (512, 1024, 64)), (model.f_v, (512, 1024, 64)),
                       (model.f_t, (300, 300, 64)), (model.f_dec, (64, 64, 300))]:
        assert [type(m) for m in net] == LAYERS
        assert (net[0].in_features, net[0].out_features, net[4].out_features) == sizes
        assert net[1].momentum == 0.1
    assert [net[3].p for net in (model.f_a, model.f_v, model.f_t, model.f_dec)] == [0.8, 0.8, 0.8, 0.5]
    # f_a, f_v: 512*1024+1024 + 2*1024 + 1024*64+64; f_t: 300*300+300 + 600 + 300*64+64;
    # f_dec: 64*64+64 + 128 + 64*300+300
    assert n_params(model) == 2 * 592_960 + 110_164 + 23_788 == 1_319_872
    model.eval()
    batch = random_batch(6, DataDims(512, 512, 300))
    assert model.distances(batch, torch.randn(7, 300)).shape == (6, 7)
    assert get_method("avgzslnet") is AVGZSLNet and AVGZSLNet.uses_negatives
    assert AVGZSLNet.feature_kinds == ("averaged",)


def test_cjme_structure():
    model = CJME(CJMEConfig(), DataDims(512, 512, 300))
    # EmbeddingNetCJME: the same layers plus a final ReLU; no decoder
    for net, sizes in [(model.f_a, (512, 1024, 64)), (model.f_v, (512, 1024, 64)),
                       (model.f_t, (300, 300, 64))]:
        assert [type(m) for m in net] == LAYERS + [nn.ReLU]
        assert (net[0].in_features, net[0].out_features, net[4].out_features) == sizes
        assert net[3].p == 0.2
    assert [type(m) for m in model.gate_net] == [nn.BatchNorm1d, nn.Linear, nn.Sigmoid]
    assert model.gate_net[0].num_features == 1024 and model.gate_net[1].out_features == 1
    assert not hasattr(model, "f_dec")
    # encoders as AVGZSLNet's, plus the gate: BN(1024) 2048 + Linear(1024, 1) 1025
    assert n_params(model) == 2 * 592_960 + 110_164 + 3_073 == 1_299_157
    assert get_method("cjme") is CJME and CJME.uses_negatives and CJME.feature_kinds == ("averaged",)
    no_relu = CJME(CJMEConfig(final_relu=False), DataDims(512, 512, 300))
    assert all([type(m) for m in net] == LAYERS for net in (no_relu.f_a, no_relu.f_v, no_relu.f_t))


@pytest.mark.parametrize("name", ["cjme", "avgzslnet"])
def test_refuses_temporal_features(name):
    cls = get_method(name)
    with pytest.raises(ValueError, match="averaged.*temporal"):
        cls(cls.Config(**SMALL), DataDims(16, 16, 8, temporal=True))


@pytest.mark.parametrize("name", ["cjme", "avgzslnet"])
def test_refuses_batches_without_negatives(name):
    cls = get_method(name)
    batch = random_batch()
    batch.negative = None
    with pytest.raises(ValueError, match="negative"):
        cls(cls.Config(**SMALL), DIMS).training_step(batch)


# --- losses by hand (src/loss.py) --------------------------------------------------------------------
def test_avgzslnet_loss_by_hand():
    torch.manual_seed(0)
    cfg = AVGZSLNetConfig(**SMALL, decoder_hidden=6, embedding_dropout=0.0, decoder_dropout=0.0)
    model = AVGZSLNet(cfg, DIMS)
    model.train()
    batch, neg = random_batch(), None
    neg = batch.negative
    got = model.training_step(batch)
    # train-mode outputs depend only on the input (batch statistics), so the calls can be repeated here
    a1, v1, t1 = model.f_a(batch.audio), model.f_v(batch.video), model.f_t(batch.text)
    a2, v2, t2 = model.f_a(neg.audio), model.f_v(neg.video), model.f_t(neg.text)
    dec = lambda x: F.normalize(model.f_dec(x))  # noqa: E731
    x_ta1, x_tv1, x_tt1, x_ta2, x_tv2 = dec(a1), dec(v1), dec(t1), dec(a2), dec(v2)
    assert torch.allclose(x_ta1.norm(dim=1), torch.ones(16))
    T = nn.TripletMarginLoss(margin=1.0)
    x_t1 = batch.text
    want = {
        "l_rec": l2(x_tt1, x_t1).mean() + l2(x_ta1, x_t1).mean() + l2(x_tv1, x_t1).mean(),
        "l_cta": T(x_tt1, x_ta1, x_ta2), "l_ctv": T(x_tt1, x_tv1, x_tv2),
        "l_ta": T(t1, a1, a2), "l_at": T(a1, t1, t2), "l_tv": T(t1, v1, v2), "l_vt": T(v1, t1, t2),
    }
    want["l_cmd"] = want["l_rec"] + want["l_cta"] + want["l_ctv"]
    want["l_ct"] = want["l_ta"] + want["l_at"] + want["l_tv"] + want["l_vt"]
    want["loss"] = want["l_cmd"] + want["l_ct"]
    assert set(got) == set(want)
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, msg=key)
    assert got["loss"].requires_grad and all(v.shape == () for v in got.values())


def test_gate_target_and_entropy():
    h_a = torch.tensor([1.00, 1.00, 1.00, 1.25, 2.00, 0.50])
    h_v = torch.tensor([1.00, 1.05, 1.25, 1.00, 0.50, 0.55])
    # video more uncertain by > 0.1 -> 0 (audio); audio more uncertain by > 0.1 -> 1 (video); else 0.5
    torch.testing.assert_close(gate_target(h_a, h_v, 0.1), torch.tensor([0.5, 0.5, 0.0, 1.0, 1.0, 0.5]))
    torch.testing.assert_close(gate_target(h_a, h_v, 0.01), torch.tensor([0.5, 0.0, 0.0, 1.0, 1.0, 0.0]))
    scores = torch.randn(7, 5, generator=torch.Generator().manual_seed(0)) * 3
    scores[0] = torch.tensor([40.0, 0, 0, 0, 0])  # nearly one-hot
    ref = torch.distributions.Categorical(probs=torch.softmax(scores, dim=1)).entropy()
    torch.testing.assert_close(entropy_of_scores(scores), ref, rtol=1e-5, atol=1e-6)


def _reference_target(h_a, h_v, eps=0.1):
    """CJMELoss.forward's masks, literally."""
    res_video, res_audio = h_v - h_a - eps, h_a - h_v - eps
    target = torch.ones(h_v.size())
    target[res_video > 0] = 0
    target[(res_video <= 0) == (res_audio <= 0)] = 0.5
    return target


@pytest.mark.parametrize("broadcast", [False, True])
def test_cjme_loss_by_hand(broadcast):
    torch.manual_seed(0)
    model = CJME(CJMEConfig(**SMALL, dropout=0.0, reference_gate_broadcast=broadcast), DIMS)
    with torch.no_grad():  # larger embeddings: entropies far enough apart to give targets other than 0.5
        for net in (model.f_a, model.f_v, model.f_t):
            net[4].weight.mul_(4.0)
    model.train()
    batch = random_batch(n=24, seed=3)
    neg = batch.negative
    got = model.training_step(batch)
    a1, v1, t1 = model.f_a(batch.audio), model.f_v(batch.video), model.f_t(batch.text)
    a2, v2 = model.f_a(neg.audio), model.f_v(neg.video)
    classes = model.f_t(batch.class_text)  # train mode, as train.py
    # gate by hand: BN with batch statistics, Linear, sigmoid
    x = torch.cat([batch.audio, batch.video], 1)
    bn, lin = model.gate_net[0], model.gate_net[1]
    x_bn = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias
    w = torch.sigmoid(x_bn @ lin.weight.T + lin.bias)  # [B, 1], as the reference
    def entropy(e):
        probs = torch.softmax(e.detach() @ classes.detach().T, dim=1)
        return torch.distributions.Categorical(probs).entropy()

    target = _reference_target(entropy(a1), entropy(v1))
    assert len(target.unique()) >= 2  # the case exercises the target
    T = nn.TripletMarginLoss(margin=1.0, reduction="none")
    l_ta, l_tv = T(t1, a1, a2), T(t1, v1, v2)
    if broadcast:
        l_ct = ((1 - w) * l_ta + w * l_tv).mean()  # the reference's [B, 1] * [B] -> [B, B]
    else:
        l_ct = ((1 - w[:, 0]) * l_ta + w[:, 0] * l_tv).mean()
    mse = nn.MSELoss()
    want = {"l_ct": l_ct, "l_av": mse(a1, v1), "l_gate": mse(w, target[:, None]), "l_ta": l_ta.mean(),
            "l_tv": l_tv.mean(), "target_mean": target.mean(), "gate_mean": w.mean()}
    want["loss"] = want["l_ct"] + want["l_av"] + want["l_gate"]
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, msg=key)
    if broadcast:
        other = ((1 - w[:, 0]) * l_ta + w[:, 0] * l_tv).mean()
    else:
        other = ((1 - w) * l_ta + w * l_tv).mean()
    assert not torch.allclose(got["l_ct"], other)  # the two weightings differ on this case
    # the class embeddings and entropies carry no gradient into the gate target: loss backprops fine
    got["loss"].backward()
    assert model.gate_net[1].weight.grad is not None and model.f_t[0].weight.grad is not None


def test_cjme_moves_text_bn_statistics_like_the_reference():
    """f_t runs on w+, w- and the class texts each step (the reference's passes): 3 BN updates."""
    model = CJME(CJMEConfig(**SMALL), DIMS)
    model.training_step(random_batch())
    assert int(model.f_t[1].num_batches_tracked) == 3
    assert int(model.f_a[1].num_batches_tracked) == 2 and int(model.gate_net[0].num_batches_tracked) == 1


# --- prediction rules (src/utils.py, evaluate_dataset / get_best_evaluation, mode "both") -------------
def test_avgzslnet_prediction_by_hand():
    torch.manual_seed(0)
    model = AVGZSLNet(AVGZSLNetConfig(**SMALL), DIMS)
    batch = random_batch()
    model.optimization_step(batch, model.configure_optimizer())  # move the BN running statistics
    model.eval()
    text = torch.randn(7, DIMS.text_dim)
    t = model.f_t(text)
    d_a, d_v = pairwise(model.f_a(batch.audio), t), pairwise(model.f_v(batch.video), t)
    torch.testing.assert_close(model.distances(batch, text), d_a + d_v)
    model.cfg.prediction = "audio"
    torch.testing.assert_close(model.distances(batch, text), d_a)
    model.cfg.prediction = "video"
    torch.testing.assert_close(model.distances(batch, text), d_v)


def test_cjme_prediction_picks_the_gated_modality():
    torch.manual_seed(0)
    model = CJME(CJMEConfig(**SMALL), DIMS).eval()
    batch = random_batch(n=10)
    # Gate = sigmoid(50 * audio[:, 0]) in eval mode (BN at its initial running statistics: ~identity).
    lin = model.gate_net[1]
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[0, 0] = 50.0
    sign = torch.tensor([1.0, -1, -1, 1, 1, -1, 1, -1, -1, -1])
    batch.audio[:, 0] = sign
    use_video = sign > 0
    assert torch.equal(model.gate(batch.audio, batch.video) >= 0.5, use_video)
    text = torch.randn(6, DIMS.text_dim)
    t = model.f_t(text)
    d_a, d_v = pairwise(model.f_a(batch.audio), t), pairwise(model.f_v(batch.video), t)
    got = model.distances(batch, text)
    torch.testing.assert_close(got[use_video], d_v[use_video])
    torch.testing.assert_close(got[~use_video], d_a[~use_video])
    assert not torch.allclose(d_a, d_v, atol=1e-3)  # picking the wrong modality would show


# --- learning and reproducibility through the protocol ---------------------------------------------
# Small nets, low dropout; text_dim 3 so that the 6 stage-2 training classes span the text space.
LEARN = {
    "cjme": dict(encoder_hidden=32, text_hidden=16, out_dim=16, dropout=0.0),
    "avgzslnet": dict(encoder_hidden=32, text_hidden=16, out_dim=16, decoder_hidden=16,
                      embedding_dropout=0.2),
}


def _learn_cfg(name):
    train = {"epochs": 6, "n_batches": 40, "batch_size": 32, "progress": False, "save_checkpoints": "none"}
    return build_config(name, "UCF", {"train": train, "method": LEARN[name]})


@pytest.fixture(scope="module")
def bench():
    return make_benchmark(text_dim=3)


@pytest.fixture(scope="module")
def first_runs(bench, tmp_path_factory):
    # Module-scoped fixtures run before conftest's per-test one-thread fixture: set it here too, so that
    # the reproducibility test compares runs made with the same number of threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for name in LEARN:
            path = tmp_path_factory.mktemp(name)
            out[name] = (run_protocol(_learn_cfg(name), bench, path), path)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("name", list(LEARN))
def test_learns_transferable_embeddings(name, first_runs):
    res, _ = first_runs[name]
    assert res["test"]["ZSL"] >= 50, res  # 4 unseen test classes: chance is 25 %


@pytest.mark.parametrize("name", list(LEARN))
def test_same_seed_same_numbers(name, first_runs, bench, tmp_path):
    res, path = first_runs[name]
    again = run_protocol(_learn_cfg(name), bench, tmp_path)
    assert again["test"] == res["test"] and again["val"] == res["val"]
    assert again["best_epoch"] == res["best_epoch"]
    rows = lambda p: [{k: v for k, v in json.loads(line).items() if "seconds" not in k}  # noqa: E731
                      for line in (p / "metrics.jsonl").read_text().splitlines()]
    assert rows(path) == rows(tmp_path)


# --- configs (run_scripts/*/cjme.sh, avgzslnet.sh; main.py) -------------------------------------------
CJME_DROPOUT = {"UCF": 0.2, "ActivityNet": 0.2, "VGGSound": 0.0}


@pytest.mark.parametrize("dataset", sorted(CJME_DROPOUT))
@pytest.mark.parametrize("feature_set", ["main", "cls"])
def test_yaml_configs(dataset, feature_set):
    for name in ("cjme", "avgzslnet"):
        cfg = build_config(name, dataset, [f"data.feature_set={feature_set}"])
        m, t = cfg.method, cfg.train
        assert (m.lr, m.weight_decay, t.epochs, t.n_batches, t.batch_size) == (1e-3, 0.0, 50, 500, 256)
        assert (m.encoder_hidden, m.text_hidden, m.out_dim, m.margin) == (1024, 300, 64, 1.0)
        assert m.embedding_use_bn
        first = default_config_path(dataset, name).read_text().splitlines()[0]
        assert first.startswith(f"# avgzsl run --method {name} --dataset {dataset}")
        if name == "cjme":
            assert isinstance(m, CJMEConfig) and m.dropout == CJME_DROPOUT[dataset]
            assert (m.entropy_margin, m.reference_gate_broadcast, m.final_relu) == (0.1, False, True)
        else:
            assert isinstance(m, AVGZSLNetConfig)
            assert (m.embedding_dropout, m.decoder_dropout, m.decoder_hidden) == (0.8, 0.5, 64)
            assert m.decoder_use_bn and m.normalize_decoder_outputs

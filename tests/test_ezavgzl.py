"""EZ-AVGZL: AVLA scores without leakage across the batch, the classes or padded steps; chunked scoring; the
contrastive loss against the formula; training lowers the loss; configs, CEO switch and ablation variants.

Small and fast (CPU, tiny models)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from avgzsl.ceo import apply_class_embeddings
from avgzsl.config import DATASETS, build_config
from avgzsl.data.sampling import BalancedBatchSampler
from avgzsl.data.types import Batch
from avgzsl.methods import DataDims, get_method
from avgzsl.methods.ezavgzl import AVLA, EZAVGZL, EZAVGZLConfig, contrastive_loss
from avgzsl.methods.layers import seed_dropout
from avgzsl.methods.tcaf import AVTokenEncoder, TCaF
from avgzsl.protocol import run_protocol
from toybench import make_separable_benchmark

DIMS = DataDims(10, 12, 6, temporal=True)
SMALL = dict(enc_hidden=16, dim=24, depth=2, heads=2, dim_head=8, mlp_dim=16, embed_dim=8, avla_heads=2,
             avla_dim_head=8)


def small_model(dims=DIMS, **kw) -> EZAVGZL:
    return EZAVGZL(EZAVGZLConfig(**{**SMALL, **kw}), dims)


def temporal_batch(n=7, dims=DIMS, seed=0, max_len=6) -> Batch:
    """Zero-padded sequences of different audio and video lengths (the longest in different samples)."""
    g = torch.Generator().manual_seed(seed)
    len_a = torch.randint(1, max_len + 1, (n,), generator=g)
    len_v = torch.randint(1, max_len + 1, (n,), generator=g)
    len_a[0] = len_v[1] = max_len

    def seq(lengths, dim):
        mask = torch.arange(max_len)[None] < lengths[:, None]
        return torch.randn(n, max_len, dim, generator=g).abs() * mask[..., None], mask

    audio, a_mask = seq(len_a, dims.audio_dim)
    video, v_mask = seq(len_v, dims.video_dim)
    return Batch(audio, video, torch.arange(n) % 3, audio_mask=a_mask, video_mask=v_mask)


def one_sample(batch: Batch, i: int, pad: int = 0) -> Batch:
    """Sample i alone, without the batch's padding (pad > 0: with that many extra zero steps instead)."""
    la, lv = int(batch.audio_mask[i].sum()), int(batch.video_mask[i].sum())

    def part(x, mask, length):
        x, mask = x[i:i + 1, :length], mask[i:i + 1, :length]
        return nn.functional.pad(x, (0, 0, 0, pad)), nn.functional.pad(mask, (0, pad))

    audio, a_mask = part(batch.audio, batch.audio_mask, la)
    video, v_mask = part(batch.video, batch.video_mask, lv)
    return Batch(audio, video, batch.labels[i:i + 1], audio_mask=a_mask, video_mask=v_mask)


CLASSES = nn.functional.normalize(torch.randn(5, DIMS.text_dim, generator=torch.Generator().manual_seed(9)), 1)


@pytest.mark.parametrize("kw", [{}, {"avla_layer": "attention"}, {"avla_tokens": "av"},
                                {"similarity": "cosine"}], ids=["block", "attention", "av-tokens", "cosine"])
def test_scores_of_a_batch_equal_each_sample_scored_alone(kw):
    """No leakage across the batch or across padded steps: sample i's row is its score alone, unpadded or
    padded with more zero steps, and each class's column does not depend on the other classes."""
    torch.manual_seed(0)
    model = small_model(**kw).eval()
    batch = temporal_batch()
    with torch.no_grad():
        full = model.similarities(batch, CLASSES)
        assert full.shape == (len(batch), len(CLASSES))
        for i in range(len(batch)):
            torch.testing.assert_close(model.similarities(one_sample(batch, i), CLASSES)[0], full[i])
            torch.testing.assert_close(model.similarities(one_sample(batch, i, pad=3), CLASSES)[0], full[i])
        torch.testing.assert_close(model.similarities(batch, CLASSES[[3, 1]]), full[:, [3, 1]])
    assert full.std() > 1e-4  # not a constant


def test_padded_steps_are_masked_out_of_the_keys():
    """Garbage in padded steps (instead of zeros) changes nothing: the masks, not the zeros, keep them out."""
    torch.manual_seed(0)
    model = small_model().eval()
    batch = temporal_batch()
    noisy = Batch(batch.audio + 5.0 * (~batch.audio_mask)[..., None],
                  batch.video + 5.0 * (~batch.video_mask)[..., None],
                  batch.labels, audio_mask=batch.audio_mask, video_mask=batch.video_mask)
    with torch.no_grad():
        torch.testing.assert_close(model.similarities(noisy, CLASSES), model.similarities(batch, CLASSES))


def test_chunked_scoring_equals_unchunked():
    torch.manual_seed(0)
    chunked = small_model(eval_chunk_size=2, eval_class_chunk=2).eval()
    whole = small_model(eval_chunk_size=100, eval_class_chunk=100).eval()
    whole.load_state_dict(chunked.state_dict())
    batch = temporal_batch(n=7)
    with torch.no_grad():
        a, b = chunked.distances(batch, CLASSES), whole.distances(batch, CLASSES)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, -whole.similarities(batch, CLASSES))  # distances are negated similarities


def test_avla_is_the_attention_then_a_linear_map_to_a_scalar():
    """The literal layer against an explicit computation, one sample and one class at a time."""
    torch.manual_seed(1)
    avla = AVLA(text_dim=6, dim=8, heads=2, dim_head=4, layer="attention").eval()
    tokens = torch.randn(3, 5, 8)
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 1, 0, 1]], dtype=torch.bool)
    w = torch.randn(4, 6)
    got = avla(tokens, valid, w)
    wq = avla.to_q.weight.view(2, 4, 6)
    wk, wv = avla.to_kv.weight[:8].view(2, 4, 8), avla.to_kv.weight[8:].view(2, 4, 8)
    for b in range(3):
        x = avla.norm(tokens[b][valid[b]])
        for c in range(4):
            heads = []
            for h in range(2):
                q, k, v = wq[h] @ w[c], x @ wk[h].T, x @ wv[h].T
                heads.append(torch.softmax(k @ q / 2.0, 0) @ v)
            out = avla.to_out(torch.cat(heads))
            torch.testing.assert_close(got[b, c], avla.score(out)[0])


def test_contrastive_loss_is_the_formula_over_the_batch_samples():
    """-log exp(s(x_i, w_{y_i})) / sum_{k in batch} exp(s(x_i, w_{y_k})), one term per sample k."""
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([4, 1, 4, 4, 7, 1])
    classes, target, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    sims = torch.randn(6, 3, generator=g)
    naive = 0.0
    for i in range(6):
        denom = sum(math.exp(sims[i, target[k]]) for k in range(6))
        naive -= math.log(math.exp(sims[i, target[i]]) / denom)
    torch.testing.assert_close(contrastive_loss(sims, target, counts.float().log()).item(), naive / 6)
    once = contrastive_loss(sims, target)  # each class of the batch once: plain cross-entropy
    torch.testing.assert_close(once, nn.functional.cross_entropy(sims, target))


@pytest.mark.parametrize("kw", [{}, {"similarity": "cosine"}], ids=["avla", "cosine"])
def test_training_lowers_the_loss(kw):
    bench = make_separable_benchmark(temporal=True, dim=16)
    torch.manual_seed(0)
    seed_dropout(0)
    dims = DataDims(bench.audio_dim, bench.video_dim, bench.text_dim, temporal=True)
    model = EZAVGZL(EZAVGZLConfig(**{**SMALL, "lr": 3e-3, **kw}), dims)
    opt = model.configure_optimizer()
    train = bench.phases["stage1_train"].samples
    sampler = BalancedBatchSampler(train, bench.text, 32, torch.Generator().manual_seed(0))
    losses = [float(model.optimization_step(sampler.draw(), opt)["loss"]) for _ in range(40)]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.3, losses


def test_the_encoder_is_tcafs_and_ezavgzl_has_no_tcaf_head():
    assert issubclass(EZAVGZL, AVTokenEncoder) and issubclass(TCaF, AVTokenEncoder)
    torch.manual_seed(0)
    model = small_model()
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert names == {"A_enc", "V_enc", "cls_token", "embedding", "layers", "avla"}
    torch.manual_seed(0)
    assert {n.split(".")[0] for n, _ in small_model(similarity="cosine").named_parameters()} == (
        names - {"avla"} | {"proj"})


def test_configs_ceo_switch_and_ablation_variants():
    cls = get_method("ezavgzl")
    variants = cls.ablation_variants()
    assert list(variants) == ["ez-avgzl", "no_ceo", "no_avla", "no_ceo_no_avla"]
    want = {"ez-avgzl": ("ceo", "avla"), "no_ceo": ("text", "avla"), "no_avla": ("ceo", "cosine"),
            "no_ceo_no_avla": ("text", "cosine")}
    for name, over in variants.items():
        cfg = build_config("ezavgzl", "UCF", {"method": over})
        assert (cfg.data.class_embeddings, cfg.method.similarity) == want[name], name
    for ds in DATASETS:
        cfg = build_config("ezavgzl", ds)
        assert cfg.data.temporal and cfg.data.class_embeddings == "ceo" and cfg.method.similarity == "avla"
        assert cfg.train.beta_grid[1] > 3.0  # logits need a wider calibration grid than L2 distances
        tcaf = build_config("tcaf", ds)
        for key in ("depth", "heads", "dim_head", "enc_hidden", "lr", "train_crop_steps", "eval_crop_steps"):
            assert getattr(cfg.method, key) == getattr(tcaf.method, key), (ds, key)  # TCaF's encoder settings
    assert build_config("ezavgzl", "UCF", ["data.feature_set=cls"]).method.audio_step_seconds == 0.96


def test_ezavgzl_on_ceo_embeddings_through_the_protocol(tmp_path):
    bench = make_separable_benchmark(temporal=True, dim=16)
    overrides = {"train": {"epochs": 2, "n_batches": 5, "batch_size": 24, "progress": False,
                           "save_checkpoints": "none"},
                 "data": {"cache_dir": str(tmp_path / "cache"), "ceo": {"steps": 50}},
                 "method": {**SMALL, "lr": 3e-3}}
    cfg = build_config("ezavgzl", "UCF", overrides)
    res = run_protocol(cfg, apply_class_embeddings(bench, cfg.data), tmp_path / "run")
    data = res["data"]
    assert data["class_embeddings"] == "ceo" and data["ceo_min_nn_after"] > data["ceo_min_nn_before"]
    assert set(res["test"]) == {"S", "U", "HM", "ZSL"}

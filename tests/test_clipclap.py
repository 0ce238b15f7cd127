"""ClipClap: the reference's sizes, input order, loss wiring, modality / text ablation (no extra needed)."""

import pytest
import torch

from avgzsl.config import ConfigError, build_config
from avgzsl.data.types import Batch
from avgzsl.methods.base import DataDims
from avgzsl.methods.clipclap import ClipClap, ClipClapConfig

# ClipClap's own features: CLIP video 512, WavCaps audio 1024, text [clip 512; clap 1024]
REF = DataDims(audio_dim=1024, video_dim=512, text_dim=1536)


def _batch(dims: DataDims, n: int = 16, n_classes: int = 4, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % n_classes
    class_text = torch.randn(n_classes, dims.text_dim, generator=g)
    return Batch(
        torch.randn(n, dims.audio_dim, generator=g),
        torch.randn(n, dims.video_dim, generator=g),
        labels,
        text=class_text[labels],
        classes=torch.arange(n_classes),
        class_text=class_text,
    )


def test_reference_sizes():
    m = ClipClap(ClipClapConfig(), REF)
    # O_enc 1536 -> 512, W_enc 1536 -> 512, O_proj 512 -> 512 -> 64, D_o 64 -> 512 -> 512, W_proj 512 -> 64,
    # D_w 64 -> 512, every Linear followed by BatchNorm: ~2.2M parameters (baselines.md)
    assert m.O_enc.fc[0].in_features == 1536 and m.W_enc.fc[0].in_features == 1536
    assert sum(p.numel() for p in m.parameters()) == 2_237_824
    m.eval()
    b = _batch(REF)
    assert m.embed_samples(b).shape == (16, 64) and m.embed_classes(b.class_text).shape == (4, 64)


def test_video_comes_first_in_the_joint_input():
    m = ClipClap(ClipClapConfig(), DataDims(6, 4, 8)).eval()
    b = _batch(DataDims(6, 4, 8))
    with torch.no_grad():
        m.O_enc.fc[0].weight[:, 4:] = 0  # columns 4.. read the audio if video is first
        base = m.embed_samples(b)
        b.audio = b.audio + 1.0
        assert torch.equal(m.embed_samples(b), base)
        b.video = b.video + 1.0
        assert not torch.allclose(m.embed_samples(b), base)


def test_reconstruction_target_is_the_learned_text_encoding():
    """Only the reconstruction terms on: W_enc still receives gradient (its output is the target); with a
    fixed target (TCaF's raw text) it would receive none."""
    torch.manual_seed(0)
    m = ClipClap(ClipClapConfig(ce_loss=False, reg_loss=False), DataDims(6, 4, 8))
    terms = m.training_step(_batch(DataDims(6, 4, 8)))
    assert terms["l_ce"].item() == 0 and terms["l_reg"].item() == 0 and terms["l_rec"].detach().item() > 0
    terms["loss"].backward()
    assert m.W_enc.fc[0].weight.grad.abs().sum() > 0
    assert m.O_enc.fc[0].weight.grad.abs().sum() > 0


def test_modality_and_text_parts():
    dims = DataDims(audio_dim=6, video_dim=4, text_dim=10)
    audio_only = ClipClap(ClipClapConfig(modality="audio", clip_text_dim=3), dims)
    assert audio_only.O_enc.fc[0].in_features == 6 and audio_only.text_part == (3, 10)  # auto: CLAP text
    video_only = ClipClap(ClipClapConfig(modality="video", clip_text_dim=3), dims)
    assert video_only.O_enc.fc[0].in_features == 4 and video_only.text_part == (0, 3)  # auto: CLIP text
    both = ClipClap(ClipClapConfig(text="clap", clip_text_dim=3), dims).eval()
    b = _batch(dims)
    base = both.embed_classes(b.class_text)
    t = b.class_text.clone()
    t[:, :3] += 5.0  # the CLIP part is not read
    assert torch.equal(both.embed_classes(t), base)
    with pytest.raises(ValueError, match="clip_text_dim"):
        ClipClap(ClipClapConfig(text="clip"), DataDims(6, 4, 10))  # 512 is not inside a 10-d text embedding
    assert set(ClipClap.ablation_variants()) == {
        "clipclap",
        "video only",
        "audio only",
        "clip text",
        "clap text",
    }


def test_configs_carry_the_reference_schedule_and_beta_grid():
    for dataset, epochs, lr in (("UCF", 20, 7e-5), ("ActivityNet", 15, 1e-4), ("VGGSound", 15, 1e-4)):
        cfg = build_config("clipclap", dataset)
        assert (cfg.train.epochs, cfg.method.lr, cfg.train.batch_size, cfg.train.n_batches) == (
            epochs,
            lr,
            64,
            300,
        )
        assert cfg.train.beta_grid == [0.0, 5.0, 76.0] and cfg.data.temporal is False
    with pytest.raises(ConfigError, match="nothing to train"):
        build_config(
            "clipclap", "UCF", ["method.ce_loss=false", "method.reg_loss=false", "method.rec_loss=false"]
        )
    with pytest.raises(ConfigError, match="takes averaged"):
        build_config("clipclap", "UCF", ["data.temporal=true"])

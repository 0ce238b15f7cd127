"""Real media and random CLIP / CLAP checkpoints, for tests and benchmarks of extraction without downloads.

- `make_video`: a few seconds of encoded video (PyAV; MPEG-4 part 2 or H.264) with an AAC soundtrack: a bar of
  the class's colour moving in the class's direction, and a tone at the class's frequency. Frame i carries
  its index in a grey square in the corner, so a test can tell which frame was picked.
- `save_tiny_clip` / `save_tiny_clap`: randomly initialised CLIPModel / ClapModel of ~50k parameters, with an
  image processor / feature extractor and a character-level tokenizer, written with save_pretrained to a
  folder and loaded by `avgzsl extract` exactly as a downloaded checkpoint.
- `save_base_clip` / `save_base_clap`: random models of the real sizes (ViT-B/32 CLIP; LAION's CLAP HTSAT
  without fusion, RoBERTa text), with the default image processor / feature extractor, to measure the cost
  of real extraction: configs only, no weights are downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

COLOURS = [(230, 40, 40), (40, 200, 60), (50, 80, 230), (220, 200, 40), (200, 60, 200), (40, 200, 210)]
TONES = [220.0, 370.0, 520.0, 700.0, 900.0, 1150.0]
SAMPLE_RATE = 8000  # of the tiny CLAP extractor and of the test soundtracks


def frame_image(cls: int, i: int, size: int = 32) -> np.ndarray:
    """Frame i of a class-`cls` video: a moving bar of the class's colour; the frame index in the corner."""
    img = np.full((size, size, 3), 16, np.uint8)
    pos = (i * 3) % (size - 6)
    if cls % 2:
        img[pos : pos + 6, :, :] = COLOURS[cls % len(COLOURS)]
    else:
        img[:, pos : pos + 6, :] = COLOURS[cls % len(COLOURS)]
    img[:8, :8, :] = (i * 9) % 256
    return img


def make_video(
    path: Path,
    cls: int,
    seconds: float = 3.0,
    fps: int = 8,
    size: int | tuple[int, int] = 32,
    audio: bool = True,
    tone: float | None = None,
    sample_rate: int = SAMPLE_RATE,
    codec: str = "mpeg4",
    channels: int = 1,
) -> Path:
    """Write a test video (see the module docstring); size: the side of a square frame, or (width, height)."""
    import av

    width, height = (size, size) if isinstance(size, int) else size
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        v = c.add_stream(codec, rate=fps)
        v.width, v.height = width, height
        v.pix_fmt = "yuv420p"
        v.options = {"qscale": "2"} if codec == "mpeg4" else {}
        a = None
        if audio:
            a = c.add_stream("aac", rate=sample_rate)
            a.layout = "mono" if channels == 1 else "stereo"
        for i in range(int(round(seconds * fps))):
            img = frame_image(cls, i, min(width, height))
            img = np.tile(img, (-(-height // img.shape[0]), -(-width // img.shape[1]), 1))[:height, :width]
            for p in v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            t = np.arange(int(seconds * sample_rate)) / sample_rate
            f = TONES[cls % len(TONES)] if tone is None else tone
            wav = (0.4 * np.sin(2 * np.pi * f * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))).astype(
                np.float32
            )
            frame = av.AudioFrame.from_ndarray(
                np.repeat(wav[None], channels, 0), format="fltp", layout=a.layout.name
            )
            frame.sample_rate = sample_rate
            frame.pts = 0
            for p in a.encode(frame):
                c.mux(p)
            for p in a.encode(None):
                c.mux(p)
    return path


def _bpe_files(folder: Path, tokens: list[str]) -> tuple[Path, Path]:
    """A character-level BPE vocabulary (no merges) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder / "vocab.json", folder / "merges.txt"


def save_tiny_clip(folder: Path, projection_dim: int = 24, seed: int = 0) -> Path:
    """A random CLIP (ViT on 32x32 images, 2 layers; text transformer, 2 layers) saved as a checkpoint."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,'-")
    tokens = [t for c in chars for t in (c, c + "</w>")] + ["<|startoftext|>", "<|endoftext|>"]
    vocab, merges = _bpe_files(folder.parent / f"{folder.name}-vocab", tokens)
    tok = CLIPTokenizer(str(vocab), str(merges))
    eos, bos = tokens.index("<|endoftext|>"), tokens.index("<|startoftext|>")
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokens),
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            eos_token_id=eos,
            bos_token_id=bos,
            pad_token_id=eos,
        ),
        vision_config=dict(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    tok.save_pretrained(folder)
    return folder


def save_tiny_clap(folder: Path, projection_dim: int = 20, seed: int = 0) -> Path:
    """A random CLAP (HTSAT on 16 mel bins, 10 s at 8 kHz with hop 800; RoBERTa text, 2 layers), saved."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, RobertaTokenizer

    tokens = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + [chr(i) for i in range(33, 127)] + ["\u0120"]
    vocab, merges = _bpe_files(folder.parent / f"{folder.name}-vocab", tokens)
    tok = RobertaTokenizer(str(vocab), str(merges))
    config = ClapConfig(
        text_config=dict(
            vocab_size=len(tokens),
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=130,
            pad_token_id=1,
        ),
        audio_config=dict(
            spec_size=64,
            num_mel_bins=16,
            patch_embeds_hidden_size=16,
            depths=[1, 1],
            num_attention_heads=[2, 2],
            hidden_size=32,
            window_size=4,
            patch_stride=[4, 4],
            patch_size=4,
            enable_fusion=False,
        ),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    ClapModel(config).save_pretrained(folder)
    ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=SAMPLE_RATE,
        hop_length=800,
        fft_window_size=1024,
        max_length_s=10,
        frequency_max=SAMPLE_RATE // 2,
        truncation="rand_trunc",
    ).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_base_clip(folder: Path, seed: int = 0) -> Path:
    """A random CLIP of ViT-B/32's size (transformers' CLIPConfig defaults: 224 px, patch 32, 12 x 768
    vision, 12 x 512 text, 512-d projection) with the default (OpenAI) image processor. Not a trained
    model: for timing only."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    CLIPModel(CLIPConfig()).save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)
    return Path(folder)


def save_base_clap(folder: Path, seed: int = 0) -> Path:
    """A random CLAP of LAION's clap-htsat-unfused size (transformers' ClapConfig defaults: HTSAT, 64 mels,
    48 kHz, 10 s; RoBERTa-base text; 512-d projection) with the default feature extractor. For timing
    only."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    torch.manual_seed(seed)
    ClapModel(ClapConfig()).save_pretrained(folder)
    ClapFeatureExtractor(truncation="rand_trunc").save_pretrained(folder)
    return Path(folder)

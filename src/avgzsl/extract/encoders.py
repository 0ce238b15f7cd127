"""The encoders of feature extraction, from `transformers`: CLIP (images, text) and CLAP (audio, text).

One code path loads a model from a hub name or from a local folder written by `save_pretrained`:
`CLIPModel.from_pretrained(name_or_path, local_files_only=...)` with the checkpoint's own image processor
/ feature extractor / tokenizer. Weights are fetched only where the user allows it (the tests load
small random models saved to a temporary folder). Every embedding is L2-normalised, as ClipClap's
features and text embeddings are.

A checkpoint's identity (for the manifest and for resuming) is its name or path, the hub commit when
known, and the SHA-256 of each of its weight and configuration files.

Departures from ClipClap's own extraction, each for a reason:
- Audio: `transformers` has no WavCaps HTSAT-BERT (ClipClap's 1024-d audio encoder at 32 kHz); the default
  is LAION's CLAP HTSAT (512-d, 48 kHz). Any CLAP checkpoint can be named.
- Frames: decoded as RGB. ClipClap's script feeds OpenCV's BGR frames to CLIP as if RGB, through a float
  tensor that ToPILImage scales by 255 and wraps to uint8; that is not reproduced.
- CLAP's feature extractor, with fusion checkpoints, marks one random clip of every batch as "longer"
  when none is; here every clip is at most the extractor's maximum length and marked as not longer, so a
  video's features do not depend on the batch or a random draw.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = [
    "ClapEncoder",
    "ClipEncoder",
    "DEFAULT_CLAP",
    "DEFAULT_CLIP",
    "checkpoint_identity",
    "resolve_device",
]

DEFAULT_CLIP = "openai/clip-vit-base-patch32"  # ViT-B/32, as ClipClap
DEFAULT_CLAP = "laion/clap-htsat-unfused"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")


def require_transformers():
    """The `transformers` module, or an ImportError that says how to install it."""
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("feature extraction needs transformers: pip install 'avgzsl[extract]'") from exc
    transformers.utils.logging.disable_progress_bar()
    return transformers


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as torch reads it (errors name the option)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    return dev


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checkpoint_folder(name_or_path: str) -> Path | None:
    """The local folder holding a checkpoint: the path itself, or the hub cache's snapshot of a hub name."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    try:
        from transformers.utils import cached_file

        found = cached_file(name_or_path, "config.json", local_files_only=True)
        return Path(found).parent if found else None
    except Exception:  # not cached: identity without file hashes
        return None


def checkpoint_identity(name_or_path: str, model) -> dict:
    """{'name', 'class', 'commit', 'files': {file: sha256}, 'sha256'}: what weights produced the features.

    'sha256' hashes the weight files' hashes, so two folders with the same weights have the same identity.
    """
    folder = _checkpoint_folder(name_or_path)
    files: dict[str, str] = {}
    if folder is not None:
        for p in sorted(folder.iterdir()):
            if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.suffix in (".json", ".txt", ".model")):
                files[p.name] = _sha256(p)
    weights = [f"{k}:{v}" for k, v in files.items() if Path(k).suffix in _WEIGHT_SUFFIXES]
    return {
        "name": str(name_or_path),
        "class": type(model).__name__,
        "commit": getattr(model.config, "_commit_hash", None),
        "files": files,
        "sha256": hashlib.sha256("\n".join(weights).encode()).hexdigest() if weights else None,
    }


def _load(kind: str, model_cls, name_or_path: str, local_files_only: bool, parts: dict):
    """The model and the named preprocessing parts ({attr: Auto class}) of one checkpoint; a clear error
    when it cannot be loaded."""
    try:
        model = model_cls.from_pretrained(name_or_path, local_files_only=local_files_only)
        loaded = {
            attr: auto.from_pretrained(name_or_path, local_files_only=local_files_only)
            for attr, auto in parts.items()
        }
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (
            "a local folder written by save_pretrained, or a hub name this machine may download "
            "(drop --local-files-only)"
            if local_files_only
            else "a local folder written by save_pretrained, or a hub name of a " + kind + " checkpoint"
        )
        raise FileNotFoundError(f"cannot load {kind} model {name_or_path!r} ({first}); give {hint}") from None
    return model, loaded


def _jsonable(v):
    """Processor settings (SizeDict, tuples, numpy numbers) as plain JSON values."""
    if hasattr(v, "items"):
        return {str(k): _jsonable(x) for k, x in v.items() if x is not None}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return v.item() if hasattr(v, "item") else str(v)


def _features(out) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output whose pooler_output is it (5)."""
    return out if torch.is_tensor(out) else out.pooler_output


@dataclass
class _Encoder:
    name: str
    device: torch.device
    batch_size: int

    def _run(self, fn, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """fn(**batch) over `batch_size` rows at a time -> float32 [N, D], L2-normalised rows."""
        n = len(next(iter(inputs.values())))
        out = []
        with torch.inference_mode():
            for s in range(0, n, self.batch_size):
                batch = {
                    k: torch.as_tensor(v[s : s + self.batch_size]).to(self.device) for k, v in inputs.items()
                }
                out.append(torch.nn.functional.normalize(_features(fn(**batch)).float(), dim=-1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)


class ClipEncoder(_Encoder):
    """CLIP: frames -> image embeddings, texts -> text embeddings (both L2-normalised)."""

    def __init__(
        self,
        name_or_path: str = DEFAULT_CLIP,
        *,
        local_files_only: bool = False,
        device: str = "cpu",
        batch_size: int = 64,
        text: bool = False,
    ):
        tr = require_transformers()
        parts = {"tokenizer": tr.AutoTokenizer} if text else {"processor": tr.AutoImageProcessor}
        model, loaded = _load("CLIP", tr.CLIPModel, name_or_path, local_files_only, parts)
        super().__init__(str(name_or_path), resolve_device(device), batch_size)
        self.model = model.eval().to(self.device)
        self.processor = loaded.get("processor")
        self.tokenizer = loaded.get("tokenizer")
        self.dim = int(model.config.projection_dim)
        self.identity = checkpoint_identity(name_or_path, model)

    def preprocess(self, frames: np.ndarray) -> np.ndarray:
        """[N, H, W, 3] uint8 RGB -> [N, 3, h, w] float32 pixel values (the checkpoint's image processor)."""
        return np.asarray(
            self.processor(images=list(frames), return_tensors="np")["pixel_values"], np.float32
        )

    def encode_images(self, pixel_values: np.ndarray) -> np.ndarray:
        return self._run(self.model.get_image_features, {"pixel_values": pixel_values})

    def encode_text(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="np")
        return self._run(self.model.get_text_features, {k: enc[k] for k in ("input_ids", "attention_mask")})

    def describe(self) -> dict:
        p = self.processor
        out = {"backbone": "CLIP", **self.identity, "dim": self.dim}
        if p is not None:
            out["image_processor"] = {
                k: _jsonable(getattr(p, k, None))
                for k in ("size", "crop_size", "image_mean", "image_std", "resample")
            }
        return out


class ClapEncoder(_Encoder):
    """CLAP: mono waveforms at `sample_rate` -> audio embeddings, texts -> text embeddings (L2-normalised)."""

    def __init__(
        self,
        name_or_path: str = DEFAULT_CLAP,
        *,
        local_files_only: bool = False,
        device: str = "cpu",
        batch_size: int = 64,
        text: bool = False,
    ):
        tr = require_transformers()
        parts = {"tokenizer": tr.AutoTokenizer} if text else {"extractor": tr.AutoFeatureExtractor}
        model, loaded = _load("CLAP", tr.ClapModel, name_or_path, local_files_only, parts)
        super().__init__(str(name_or_path), resolve_device(device), batch_size)
        self.model = model.eval().to(self.device)
        self.extractor = loaded.get("extractor")
        self.tokenizer = loaded.get("tokenizer")
        self.dim = int(model.config.projection_dim)
        self.fusion = bool(getattr(model.config.audio_config, "enable_fusion", False))
        self.identity = checkpoint_identity(name_or_path, model)

    @property
    def sample_rate(self) -> int:
        return int(self.extractor.sampling_rate)

    @property
    def max_samples(self) -> int:
        """Longest waveform the extractor takes whole (longer ones it crops at random: never passed)."""
        return int(self.extractor.nb_max_samples)

    def preprocess(self, waves: list[np.ndarray]) -> np.ndarray:
        """Waveforms (each at most `max_samples`) -> input features [N, C, frames, mels], by the checkpoint's
        extractor (shorter waveforms are padded as it is configured to; LAION's: repeated, then zeros)."""
        if any(w.size > self.max_samples for w in waves):
            raise ValueError(f"CLAP input longer than the extractor's {self.max_samples} samples")
        feats = self.extractor(
            list(waves),
            sampling_rate=self.sample_rate,
            return_tensors="np",
            truncation="fusion" if self.fusion else "rand_trunc",
        )
        return np.asarray(feats["input_features"], np.float32)

    def encode_audio(self, input_features: np.ndarray) -> np.ndarray:
        inputs = {"input_features": input_features}
        if self.fusion:  # no clip exceeds the extractor's length: none is "longer" (see the module docstring)
            inputs["is_longer"] = np.zeros((len(input_features), 1), dtype=bool)
        return self._run(self.model.get_audio_features, inputs)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="np")
        return self._run(self.model.get_text_features, {k: enc[k] for k in ("input_ids", "attention_mask")})

    def describe(self) -> dict:
        out = {"backbone": "CLAP", **self.identity, "dim": self.dim, "fusion": self.fusion}
        if self.extractor is not None:
            e = self.extractor
            out["feature_extractor"] = _jsonable(
                {
                    "sampling_rate": e.sampling_rate,
                    "max_length_s": e.nb_max_samples / e.sampling_rate,
                    "padding": getattr(e, "padding", None),
                    "feature_size": e.feature_size,
                    "hop_length": getattr(e, "hop_length", None),
                }
            )
        return out

"""Feature extraction: build a benchmark from raw videos, and class text embeddings for any class names.

- `extract` (pipeline.py): videos + a class split -> averaged and per-second CLIP (visual) / CLAP (audio)
  features in the benchmark layout, a manifest and a report; resumable, batched, GPU when present.
- `embed_benchmark_classes` / `embed_names` (text.py): class names -> CLIP / CLAP / both text embeddings
  with ClipClap's prompt ensembles, written where the loader reads them.
- media.py decodes videos (PyAV), encoders.py loads the `transformers` checkpoints, videolist.py reads
  the class split.

Needs the optional extra: pip install 'avgzsl[extract]' (transformers, av). Importing this package does not
import them; they are loaded when an encoder or the decoder is first used.
"""

from avgzsl.extract.pipeline import ExtractOptions, average_features, extract, extract_videos
from avgzsl.extract.text import PROMPTS, embed_benchmark_classes, embed_names

__all__ = [
    "PROMPTS",
    "ExtractOptions",
    "average_features",
    "embed_benchmark_classes",
    "embed_names",
    "extract",
    "extract_videos",
]

"""Where things are in a benchmark folder (protocol.md section 2). Only paths, no I/O.

    <root>/                                   e.g. avgzsl_benchmark_datasets/UCF
      class-split/all_class.txt
      class-split/<prefix>_w2v_class_names.csv
      class-split/<main_split|cls_split>/<subsplit>.txt
      features/<set>_features[_non_averaged]/<audio|video>/<subsplit>/<ClassName>.h5
      features/<set>_features[_non_averaged]/text/word_embeddings_<prefix>_normed.npy

<set> is `main` or `cls` in a download, or any plain identifier for features a user extracted
(e.g. `clip` -> features/clip_features/). The temporal (TCaF) download has the same layout under
avgzsl_benchmark_non_averaged_datasets/, its feature folders suffixed `_non_averaged`; its per-class
files are pickles despite the .h5 name.
"""

from __future__ import annotations

import re
from pathlib import Path

# Dataset name -> prefix used in the name-map csv and the text-embedding file name.
NAME_MAP_PREFIX = {"UCF": "ucf", "ActivityNet": "activitynet", "VGGSound": "vggsound"}
TEXT_PREFIX = {"UCF": "ucf", "ActivityNet": "activity", "VGGSound": "vggsound"}
FEATURE_SETS = ("main", "cls")  # the sets of the downloads; others are user-extracted features
SPLITS = ("main_split", "cls_split")
MODALITIES = ("audio", "video")


def class_split_dir(root: Path) -> Path:
    root = Path(root)
    hyphen, underscore = root / "class-split", root / "class_split"
    # The reference code uses class-split, its README says class_split: accept both.
    return underscore if (underscore.is_dir() and not hyphen.is_dir()) else hyphen


def name_map_file(root: Path, dataset: str) -> Path:
    prefix = NAME_MAP_PREFIX.get(dataset, dataset.lower())
    return class_split_dir(root) / f"{prefix}_w2v_class_names.csv"


def all_class_file(root: Path) -> Path:
    return class_split_dir(root) / "all_class.txt"


def split_class_file(root: Path, split: str, subsplit: str) -> Path:
    return class_split_dir(root) / split / f"{subsplit}.txt"


_FEATURE_SET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_feature_set(feature_set: str) -> str:
    """`feature_set` if it is a plain (ASCII) identifier, else ValueError.

    The name becomes part of a path: a separator or `..` in it would read features from elsewhere.
    """
    if not isinstance(feature_set, str) or not _FEATURE_SET_NAME.fullmatch(feature_set):
        raise ValueError(f"invalid feature set name {feature_set!r}: expected a plain identifier such as "
                         f"{' or '.join(FEATURE_SETS)} or clip (folder features/<name>_features)")
    return feature_set


def feature_dir(root: Path, feature_set: str, temporal: bool) -> Path:
    name = f"{check_feature_set(feature_set)}_features" + ("_non_averaged" if temporal else "")
    return Path(root) / "features" / name


def class_feature_file(root: Path, feature_set: str, temporal: bool, modality: str, subsplit: str, cls: str) -> Path:
    return feature_dir(root, feature_set, temporal) / modality / subsplit / f"{cls}.h5"


def text_file_name(dataset: str) -> str:
    return f"word_embeddings_{TEXT_PREFIX.get(dataset, dataset.lower())}_normed.npy"


def text_file_candidates(root: Path, dataset: str, feature_set: str, temporal: bool) -> list[Path]:
    """Where the text embeddings may be, most specific first (every feature folder carries a copy)."""
    name = text_file_name(dataset)
    first = feature_dir(root, feature_set, temporal) / "text" / name
    others = sorted((Path(root) / "features").glob(f"*/text/{name}"))
    return [first] + [p for p in others if p != first] + [Path(root) / name]

"""Read one per-class feature file of a benchmark (protocol.md section 2).

Two formats, told apart by their first bytes (never by the extension: the temporal files are
pickles named .h5, and the TCaF splitting scripts name them .pkl):
  * HDF5 (averaged, AVCA): 'data' float [N, D], 'video_urls' strings -> one vector per video;
  * pickle (temporal, TCaF): {'features': [T_i, D] arrays, 'video_names': ids, 'fps': 25 or a
    list of 25s} -> one [T_i, D] sequence per video, loaded with the restricted unpickler.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from avgzsl.data.safe_pickle import safe_load_pickle

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class FeatureFileError(ValueError):
    """A feature file is unreadable, malformed or inconsistent with the benchmark."""


@dataclass
class ClassFeatures:
    """The videos of one class file.

    values: float32 [N, D] (averaged) or [sum_i T_i, D] (temporal).
    lengths: None (averaged) or int64 [N] time steps per video.
    """

    path: Path
    values: np.ndarray
    lengths: np.ndarray | None
    video_ids: list[str]

    @property
    def temporal(self) -> bool:
        return self.lengths is not None

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return len(self.video_ids)


def detect_format(path: str | os.PathLike) -> str:
    """'hdf5' or 'pickle', from the file's magic bytes."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head == HDF5_MAGIC:
        return "hdf5"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if not head:
        raise FeatureFileError(f"{path}: empty file (download it again)")
    # HDF5 files may carry a user block (signature at 512, 1024, ...); h5py knows where to look.
    if h5py.is_hdf5(str(path)):
        return "hdf5"
    if head[:1] in (b"(", b"}", b"]"):  # protocol 0/1 pickles of a dict/list
        return "pickle"
    raise FeatureFileError(f"{path}: neither HDF5 nor a pickle (first bytes {head!r}): the file is corrupt, "
                           f"download it again")


def _decode_ids(raw, path: Path) -> list[str]:
    ids = []
    for v in np.asarray(raw, dtype=object).reshape(-1).tolist():
        if isinstance(v, (bytes, np.bytes_)):
            v = bytes(v).decode("utf-8")
        elif not isinstance(v, str):
            raise FeatureFileError(f"{path}: video ids must be strings, found {type(v).__name__}")
        ids.append(v)
    return ids


def _read_hdf5(path: Path) -> ClassFeatures:
    try:
        with h5py.File(path, "r") as hf:
            missing = [k for k in ("data", "video_urls") if k not in hf]
            if missing:
                raise FeatureFileError(f"{path}: HDF5 file lacks dataset(s) {', '.join(missing)} (has: {', '.join(hf.keys())})")
            data = np.asarray(hf["data"][()], dtype=np.float32)
            ids = _decode_ids(hf["video_urls"][()], path)
    except OSError as exc:
        raise FeatureFileError(f"{path}: cannot read HDF5 file ({exc}): the file is truncated or corrupt, "
                               f"download it again") from exc
    if data.ndim == 1 and data.size == 0:
        data = data.reshape(0, 0)
    if data.ndim != 2:
        raise FeatureFileError(f"{path}: 'data' must be [N, D], found shape {data.shape}")
    if data.shape[0] != len(ids):
        raise FeatureFileError(f"{path}: {data.shape[0]} feature rows but {len(ids)} video ids")
    return ClassFeatures(path, data, None, ids)


def _read_pickle(path: Path) -> ClassFeatures:
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict):
        raise FeatureFileError(f"{path}: expected a dict with 'features' and 'video_names', found {type(obj).__name__}")
    missing = [k for k in ("features", "video_names") if k not in obj]
    if missing:
        raise FeatureFileError(f"{path}: pickle lacks key(s) {', '.join(missing)} (has: {', '.join(map(str, obj))})")
    seqs = []
    for i, s in enumerate(obj["features"]):
        a = np.asarray(s, dtype=np.float32)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2:
            raise FeatureFileError(f"{path}: sequence {i} must be [T, D], found shape {a.shape}")
        seqs.append(a)
    ids = _decode_ids(obj["video_names"], path)
    if len(seqs) != len(ids):
        raise FeatureFileError(f"{path}: {len(seqs)} sequences but {len(ids)} video names")
    if not seqs:
        return ClassFeatures(path, np.zeros((0, 0), np.float32), np.zeros(0, np.int64), ids)
    dims = {a.shape[1] for a in seqs}
    if len(dims) != 1:
        raise FeatureFileError(f"{path}: sequences have different feature dimensions {sorted(dims)}")
    lengths = np.fromiter((a.shape[0] for a in seqs), dtype=np.int64, count=len(seqs))
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise FeatureFileError(
            f"{path}: {empty.size} video(s) with 0 time steps: {', '.join(ids[i] for i in empty[:10].tolist())}"
        )
    return ClassFeatures(path, np.concatenate(seqs, axis=0), lengths, ids)


def read_class_file(path: str | os.PathLike) -> ClassFeatures:
    """Read one class file, averaged HDF5 or temporal pickle (detected from its content)."""
    path = Path(path)
    fmt = detect_format(path)
    return _read_hdf5(path) if fmt == "hdf5" else _read_pickle(path)


def index_class_files(folder: str | os.PathLike) -> dict[str, Path]:
    """{case-folded file stem: path} of the class files in a sub-split folder (hidden files skipped)."""
    folder = Path(folder)
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        key = p.stem.strip().casefold()
        if key in out:
            raise FeatureFileError(f"{folder}: two files for one class: {out[key].name} and {p.name}")
        out[key] = p
    return out

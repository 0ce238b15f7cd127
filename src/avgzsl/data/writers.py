"""Write benchmark files in the reference on-disk formats (protocol.md section 2).

Used by the synthetic-benchmark generator and by tests. Every writer creates parent folders and
writes to a temporary file in the same folder first, then renames it into place (os.replace), so
that a reader never sees a half-written file.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import tempfile
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np


@contextmanager
def _atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to `path`; on success move it onto `path`, else remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file renamed into place."""
    with _atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def _atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _check_ids(n: int, video_ids: list[str], what: str) -> list[str]:
    ids = [str(v) for v in video_ids]
    if len(ids) != n:
        raise ValueError(f"{what}: {n} samples but {len(ids)} video ids")
    return ids


def write_averaged_class_file(path, features: np.ndarray, video_ids: list[str]) -> None:
    """One class of averaged (AVCA) features: HDF5 with 'data' float32 [N, D] and 'video_urls' (utf-8 strings)."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"{path}: features must be [N, D], got shape {features.shape}")
    ids = _check_ids(features.shape[0], video_ids, str(path))
    with _atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as hf:
            hf.create_dataset("data", data=features)
            hf.create_dataset("video_urls", data=np.array(ids, dtype=object), dtype=h5py.string_dtype("utf-8"))


def write_temporal_class_file(path, sequences: list[np.ndarray], video_ids: list[str], fps: int = 25) -> None:
    """One class of temporal (TCaF) features: a pickle (despite the .h5 name) of
    {'features': [T_i, D] arrays, 'video_names': ids, 'fps': [fps] * N}.

    'fps' is stored as one value per video, as TCaF's splitting scripts write it and its reader
    indexes it (fps[i]); our reader accepts a plain int too."""
    seqs = [np.asarray(s, dtype=np.float32) for s in sequences]
    for i, s in enumerate(seqs):
        if s.ndim != 2:
            raise ValueError(f"{path}: sequence {i} must be [T, D], got shape {s.shape}")
    ids = _check_ids(len(seqs), video_ids, str(path))
    payload = {"features": seqs, "video_names": ids, "fps": [int(fps)] * len(seqs)}
    atomic_write_bytes(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))


def write_text_embeddings(path, embeddings: dict[str, np.ndarray]) -> None:
    """np.save of a dict {manual class name: float32[text_dim]} (as the real files; a pickled 0-d object array)."""
    table = {str(k): np.asarray(v, dtype=np.float32) for k, v in embeddings.items()}
    buf = io.BytesIO()
    np.save(buf, np.array(table, dtype=object), allow_pickle=True)
    atomic_write_bytes(path, buf.getvalue())


def write_class_list(path, names: list[str], final_newline: bool = True) -> None:
    """A class .txt file: one name per line (some real split files lack the last newline: final_newline=False)."""
    _atomic_write_text(path, "\n".join(names) + ("\n" if final_newline and names else ""))


def write_name_map(path, rows: list[tuple[str, ...]], columns: list[str] | None = None) -> None:
    """A name-map csv with `\n` line ends, quoting only where needed (as the real files are written).

    columns: the header; default original,manual plus category when a row has a third value.
    """
    rows = [tuple(r) for r in rows]
    if columns is None:
        width = max((len(r) for r in rows), default=2)
        columns = ["original", "manual", "category"][:max(width, 2)]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow(list(r) + [""] * (len(columns) - len(r)))
    _atomic_write_text(path, buf.getvalue())


def write_class_split(
    class_split_dir,
    all_classes: list[str],
    name_map: list[tuple[str, str]],
    splits: dict[str, dict[str, list[str]]],
    name_map_file_name: str,
) -> None:
    """Write a class-split folder: all_class.txt, the name-map csv (header original,manual; a third
    tuple element is written as a 'category' column), and splits[split][subsplit] -> <split>/<subsplit>.txt."""
    root = Path(class_split_dir)
    write_class_list(root / "all_class.txt", all_classes)
    write_name_map(root / name_map_file_name, name_map)
    for split, subsplits in splits.items():
        for subsplit, classes in subsplits.items():
            write_class_list(root / split / f"{subsplit}.txt", classes)

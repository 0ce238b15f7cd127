"""Class lists, class ids and the class text-embedding table (protocol.md sections 2 and 3).

Class ids follow the reference loaders: id = index of the class in `sorted(all_class.txt names)`
(Python's case-sensitive sort of the names as spelled in all_class.txt). Names from split files,
the name-map csv and feature-file stems are matched case-insensitively (UCF's split files say
`HandStandPushups`, its all_class.txt and name map say `HandstandPushups`).

Text embeddings are keyed by the *manual* names of the name-map csv. They are mapped to classes by
name (original -> manual -> embedding). `legacy_text_order=True` reproduces the reference loaders
instead: they sort the embedding dict by manual name and give class id i the i-th row, so a class
receives another class's vector wherever the sorted manual and sorted original orders disagree.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avgzsl.data import layout
from avgzsl.data.safe_pickle import safe_load_npy_dict

log = logging.getLogger(__name__)


class ClassSplitError(ValueError):
    """A class list, name map or text-embedding file is missing or inconsistent."""


def read_class_list(path: str | os.PathLike) -> list[str]:
    """Names in a class .txt file, one per line; surrounding whitespace and blank lines are dropped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ClassSplitError(f"class list not found: {path}") from None
    names = [line.strip() for line in text.splitlines()]
    return [n for n in names if n]


def read_name_map_table(path: str | os.PathLike) -> tuple[list[str], list[tuple[str, ...]]]:
    """Columns and rows of a `<prefix>_w2v_class_names.csv` (original,manual[,category]), every column kept.

    Values are stripped; blank rows are skipped; a row with an empty original or manual name is an error.
    """
    path = Path(path)
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise ClassSplitError(f"class name map not found: {path}") from None
    with fh:
        reader = csv.reader(fh)
        fields = [f.strip() for f in next(reader, [])]
        if "original" not in fields or "manual" not in fields:
            raise ClassSplitError(f"{path}: expected a header with columns original,manual; found {fields}")
        i_orig, i_manual = fields.index("original"), fields.index("manual")
        rows = []
        for line_no, raw in enumerate(reader, start=2):
            row = tuple(v.strip() for v in raw) + ("",) * (len(fields) - len(raw))
            original, manual = row[i_orig], row[i_manual]
            if not any(row):
                continue
            if not original or not manual:
                record = dict(zip(fields, row))
                raise ClassSplitError(f"{path}, line {line_no}: empty original or manual name in {record}")
            rows.append(row)
    return fields, rows


def read_name_map(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(original, manual) pairs of a `<prefix>_w2v_class_names.csv` (columns original,manual[,category])."""
    fields, rows = read_name_map_table(path)
    i_orig, i_manual = fields.index("original"), fields.index("manual")
    return [(row[i_orig], row[i_manual]) for row in rows]


def _fold(name: str) -> str:
    return name.strip().casefold()


@dataclass
class ClassTable:
    """All classes of a benchmark in the reference's id order, with case-insensitive lookup."""

    names: list[str]  # canonical spelling (as in all_class.txt), sorted: names[id]
    manual: list[str]  # manual (text-embedding) name of each class id
    source: str = ""  # the all_class.txt file
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.manual) != len(self.names):
            raise ValueError(f"{len(self.names)} classes but {len(self.manual)} manual names")
        self._index = {}
        for i, name in enumerate(self.names):
            key = _fold(name)
            if key in self._index:
                raise ClassSplitError(
                    f"{self.source or 'class list'}: classes {self.names[self._index[key]]!r} and {name!r} "
                    f"differ only in case; names are matched case-insensitively"
                )
            self._index[key] = i

    def __len__(self) -> int:
        return len(self.names)

    def find(self, name: str) -> int | None:
        return self._index.get(_fold(name))

    def index(self, name: str, where: str = "") -> int:
        i = self.find(name)
        if i is None:
            raise ClassSplitError(f"{where + ': ' if where else ''}unknown class {name!r} (not in {self.source or 'all_class.txt'})")
        return i

    def ids(self, names: list[str], where: str = "") -> Tensor:
        """Class ids of `names` (sorted ascending, duplicates refused); unknown names are an error listing them."""
        unknown = [n for n in names if self.find(n) is None]
        if unknown:
            raise ClassSplitError(
                f"{where + ': ' if where else ''}{len(unknown)} class(es) not in {self.source or 'all_class.txt'}: "
                f"{', '.join(map(repr, unknown))}"
            )
        ids = [self._index[_fold(n)] for n in names]
        if len(set(ids)) != len(ids):
            dup = sorted({self.names[i] for i in ids if ids.count(i) > 1})
            raise ClassSplitError(f"{where + ': ' if where else ''}class(es) listed twice: {', '.join(map(repr, dup))}")
        return torch.tensor(sorted(ids), dtype=torch.long)


def build_class_table(all_classes: list[str], name_map: list[tuple[str, str]], source: str = "",
                      name_map_source: str = "") -> ClassTable:
    """Sort the classes as the reference does and attach each class's manual name from the name map."""
    names = sorted(all_classes)
    manual_of: dict[str, str] = {}
    for original, manual in name_map:
        key = _fold(original)
        if key in manual_of and manual_of[key] != manual:
            raise ClassSplitError(f"{name_map_source}: class {original!r} mapped twice ({manual_of[key]!r}, {manual!r})")
        manual_of[key] = manual
    missing = [n for n in names if _fold(n) not in manual_of]
    if missing:
        raise ClassSplitError(
            f"{name_map_source or 'name map'}: no manual name for {len(missing)} class(es) of {source or 'all_class.txt'}: "
            f"{', '.join(map(repr, missing))}"
        )
    known = {_fold(n) for n in names}
    extra = [o for o, _ in name_map if _fold(o) not in known]
    if extra:
        log.warning("%s: %d name-map row(s) name classes that are not in %s (ignored): %s",
                    name_map_source, len(extra), source, ", ".join(extra))
    return ClassTable(names, [manual_of[_fold(n)] for n in names], source)


def find_name_map_file(root: str | os.PathLike, dataset: str) -> Path:
    """The dataset's name-map csv; for an unknown dataset name, the only `*_w2v_class_names.csv` there."""
    path = layout.name_map_file(Path(root), dataset)
    if path.is_file():
        return path
    found = sorted(layout.class_split_dir(Path(root)).glob("*_w2v_class_names.csv"))
    if len(found) == 1:
        return found[0]
    raise ClassSplitError(
        f"class name map not found: {path}"
        + (f" (candidates: {', '.join(p.name for p in found)})" if found else "")
    )


def load_class_table(root: str | os.PathLike, dataset: str) -> ClassTable:
    """ClassTable of a benchmark folder (class-split/all_class.txt + the name-map csv)."""
    all_file = layout.all_class_file(Path(root))
    map_file = find_name_map_file(root, dataset)
    return build_class_table(read_class_list(all_file), read_name_map(map_file), str(all_file), str(map_file))


def read_split(root: str | os.PathLike, split: str, table: ClassTable, subsplits: tuple[str, ...]) -> dict[str, list[str]]:
    """Canonical class names of each sub-split .txt of `split` (error listing any missing file)."""
    files = {s: layout.split_class_file(Path(root), split, s) for s in subsplits}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        split_dir = layout.class_split_dir(Path(root))
        available = sorted(p.name for p in split_dir.iterdir() if p.is_dir()) if split_dir.is_dir() else []
        present = f" (split folders present: {', '.join(available)})" if available else ""
        if not (split_dir / split).is_dir():  # the whole split, not six files one by one
            raise ClassSplitError(f"class split folder not found: {split_dir / split}{present}; choose the split "
                                  f"with --split / data.split")
        raise ClassSplitError(f"missing class split file(s) for split {split!r}: {', '.join(missing)}{present}")
    out = {}
    for s, path in files.items():
        ids = table.ids(read_class_list(path), where=str(path))
        out[s] = [table.names[i] for i in ids.tolist()]
    return out


def find_text_file(root: str | os.PathLike, dataset: str, feature_set: str, temporal: bool) -> Path:
    candidates = layout.text_file_candidates(Path(root), dataset, feature_set, temporal)
    for path in candidates:
        if path.is_file():
            return path
    found = sorted(Path(root).glob("features/*/text/*.npy")) + sorted(Path(root).glob("*.npy"))
    if len(found) == 1:
        return found[0]
    raise ClassSplitError(f"text embeddings not found; looked for {', '.join(str(p) for p in candidates)}")


def load_text_embeddings(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{manual name: float32 vector} from an np.save'd dict, via the restricted unpickler."""
    raw = safe_load_npy_dict(path)
    out: dict[str, np.ndarray] = {}
    dim = None
    for key, vec in raw.items():
        arr = np.asarray(vec, dtype=np.float32).reshape(-1)
        if dim is None:
            dim = arr.shape[0]
        elif arr.shape[0] != dim:
            raise ClassSplitError(f"{path}: embedding of {key!r} has {arr.shape[0]} values, others have {dim}")
        if not np.isfinite(arr).all():
            raise ClassSplitError(f"{path}: embedding of {key!r} has {int((~np.isfinite(arr)).sum())} NaN/inf values")
        out[str(key)] = arr
    if not out:
        raise ClassSplitError(f"{path}: no text embeddings in the file")
    return out


def text_table(table: ClassTable, embeddings: dict[str, np.ndarray], legacy_text_order: bool = False,
               source: str = "") -> Tensor:
    """[C_all, text_dim] text embedding of each class id.

    By name: class -> manual name (name map) -> embedding (exact key, else a case-insensitive match).
    legacy_text_order: row i of the embedding dict sorted by key goes to class id i (the reference bug).
    Every class must have an embedding in both modes (an error names the class and the file).
    """
    by_fold: dict[str, list[str]] = {}
    for key in embeddings:
        by_fold.setdefault(_fold(key), []).append(key)
    rows = []
    missing = []
    for name, manual in zip(table.names, table.manual):
        key = manual if manual in embeddings else None
        if key is None and len(by_fold.get(_fold(manual), [])) == 1:
            key = by_fold[_fold(manual)][0]
        if key is None:
            missing.append(f"{name!r} (manual name {manual!r})")
        else:
            rows.append(embeddings[key])
    if missing:
        raise ClassSplitError(f"{source or 'text embeddings'}: no text embedding for {len(missing)} class(es): {', '.join(missing)}")
    if not legacy_text_order:
        return torch.from_numpy(np.stack(rows)).float()
    ordered = [embeddings[k] for k in sorted(embeddings)]
    if len(ordered) < len(table):
        raise ClassSplitError(f"{source}: legacy_text_order needs at least {len(table)} embeddings, found {len(ordered)}")
    return torch.from_numpy(np.stack(ordered[: len(table)])).float()


def legacy_misaligned(table: ClassTable, embeddings: dict[str, np.ndarray]) -> list[str]:
    """Classes that receive another class's text vector under legacy_text_order."""
    keys = sorted(embeddings)
    return [name for i, (name, manual) in enumerate(zip(table.names, table.manual)) if i >= len(keys) or keys[i] != manual]

"""A benchmark's metadata: everything of it except the features.

That is the class list (all_class.txt), the name map (original, manual[, category]), the class lists
of each split's six sub-splits, the number of videos of each class in each sample sub-split, and the
class text embeddings. The synthetic generator needs exactly this of a real benchmark.

`metadata_from_folder` reads it from a benchmark folder (class-split/ with its per-video csvs, and
the text file) through classes.py; `avgzsl.data.packaged` keeps a derived copy of the three real
benchmarks' metadata inside the package; `write_class_split` writes a class-split/ folder back, byte
for byte as the real one where the real files are plainly formatted (LF line ends, no blank lines).

Per-class counts come from the sub-split's csv (one row per video, column `label`), main_split's
first, cls_split's if main_split has none (both list the same videos). Where neither exists (VGGSound's
stage_1_train.csv and stage_2_train.csv are not in the release: too large), the sub-split's total from
protocol.md is spread over its classes in proportion to a sub-split of the same classes with counts
(stage_1_train <-> stage_1_val_seen), else evenly.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avgzsl.data import layout
from avgzsl.data.classes import (
    ClassTable,
    build_class_table,
    find_name_map_file,
    find_text_file,
    load_text_embeddings,
    read_class_list,
    read_name_map_table,
    text_table,
)
from avgzsl.data.types import SUBSPLITS
from avgzsl.data.writers import write_class_list, write_name_map

# Sub-splits that hold samples (have feature folders); stage_2_train is the union of the first three.
SAMPLE_SUBSPLITS = ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen", "stage_2_test_seen", "stage_2_test_unseen")

# Sample totals per sub-split from protocol.md, used where a source csv is missing (VGGSound).
PROTOCOL_TOTALS = {
    "UCF": {"stage_1_train": 3174, "stage_1_val_seen": 353, "stage_1_val_unseen": 1467,
            "stage_2_test_seen": 555, "stage_2_test_unseen": 1267},
    "ActivityNet": {"stage_1_train": 9204, "stage_1_val_seen": 1023, "stage_1_val_unseen": 4307,
                    "stage_2_test_seen": 1615, "stage_2_test_unseen": 4199},
    "VGGSound": {"stage_1_train": 70351, "stage_1_val_seen": 7817, "stage_1_val_unseen": 3102,
                 "stage_2_test_seen": 9032, "stage_2_test_unseen": 3450},
}
# Where a missing csv's total is spread over classes in proportion to another sub-split of the same classes.
_PROPORTIONAL_TO = {"stage_1_train": "stage_1_val_seen", "stage_1_val_seen": "stage_1_train"}


@dataclass
class BenchmarkMeta:
    """Everything of a benchmark but its features (see the module docstring).

    Class names are spelled as in the file they come from: split lists and count keys as in the
    split .txt files (UCF: HandStandPushups), all_classes as in all_class.txt (HandstandPushups).
    """

    dataset: str
    all_classes: list[str]  # all_class.txt, in file order
    name_map_columns: list[str]  # original, manual[, category]
    name_map: list[tuple[str, ...]]  # rows of the name-map csv, in file order
    splits: dict[str, dict[str, list[str]]]  # split -> sub-split -> class names, in file order
    counts: dict[str, dict[str, int]]  # sample sub-split -> class -> videos (at scale 1)
    counts_from: dict[str, str]  # sample sub-split -> where its counts come from
    text: dict[str, np.ndarray]  # manual name -> float32 vector, in the text file's key order
    unterminated: list[str] = field(default_factory=list)  # class-split files (relative) without a last newline
    files: dict[str, Path] = field(default_factory=dict)  # all_class, name_map, text: where it was read from

    def name_pairs(self) -> list[tuple[str, str]]:
        """(original, manual) of each name-map row."""
        i_orig, i_manual = self.name_map_columns.index("original"), self.name_map_columns.index("manual")
        return [(row[i_orig], row[i_manual]) for row in self.name_map]

    def class_table(self) -> ClassTable:
        """Class ids as the loader assigns them (sorted all_class.txt names), with their manual names."""
        return build_class_table(self.all_classes, self.name_pairs(), self._where("all_class", "all_class.txt"),
                                 self._where("name_map", "name map"))

    def _where(self, file: str, what: str) -> str:
        """For error messages: the file it was read from, or which packaged benchmark."""
        return str(self.files[file]) if file in self.files else f"{self.dataset} {what} (packaged)"

    def subsplit_classes(self, subsplit: str) -> list[str]:
        """Classes of `subsplit` over all splits, first-seen order (cls_split's are a subset of main_split's)."""
        return subsplit_classes(self.splits, subsplit)

    def split_class_text(self) -> dict[str, np.ndarray]:
        """{class as spelled in the split files: its text vector, mapped by name}, every class of any split, sorted."""
        table = self.class_table()
        rows = text_table(table, self.text, source=self._where("text", "text embeddings")).numpy()
        every = sorted({c for split in self.splits.values() for names in split.values() for c in names})
        return {c: rows[table.index(c, where=f"{self.dataset} split files")] for c in every}


def subsplit_classes(splits: dict[str, dict[str, list[str]]], subsplit: str) -> list[str]:
    """Classes of `subsplit` in any split, in first-seen order."""
    seen: dict[str, None] = {}
    for split in splits.values():
        for c in split.get(subsplit, []):
            seen.setdefault(c, None)
    return list(seen)


def _canon(name: str) -> str:
    return name.strip().lower()


def spread(total: int, weights: list[float]) -> list[int]:
    """Split `total` into integers proportional to `weights` (largest remainder)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
    raw = total * w
    out = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - out), kind="stable")[: total - out.sum()]:
        out[i] += 1
    return out.tolist()


def _csv_counts(path: Path, classes: list[str]) -> dict[str, int]:
    """Videos per class of a per-video csv (column `label`, matched case-insensitively)."""
    with open(path, newline="", encoding="utf-8") as fh:
        labels = Counter(_canon(row.get("label") or "") for row in csv.DictReader(fh))
    return {c: labels.get(_canon(c), 0) for c in classes}


def sample_counts(root: str | os.PathLike, dataset: str,
                  splits: dict[str, dict[str, list[str]]]) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """Per-class video counts of each sample sub-split, and where each came from (module docstring)."""
    split_dir = layout.class_split_dir(Path(root))
    raw: dict[str, dict[str, int]] = {}
    origin: dict[str, str] = {}
    for sub in SAMPLE_SUBSPLITS:
        path = next((p for s in ("main_split", "cls_split") if (p := split_dir / s / f"{sub}.csv").is_file()), None)
        if path is not None:
            raw[sub] = _csv_counts(path, subsplit_classes(splits, sub))
            origin[sub] = path.relative_to(split_dir).as_posix()
    for sub in SAMPLE_SUBSPLITS:  # in order: a fallback's mean counts the fallbacks filled before it
        if sub in raw:
            continue
        classes = subsplit_classes(splits, sub)
        total = PROTOCOL_TOTALS.get(dataset, {}).get(sub)
        if total is not None:
            origin[sub] = f"no csv: protocol.md total {total}"
        else:  # unknown benchmark without csv: the mean count of the other sub-splits
            known = [n for per in raw.values() for n in per.values()]
            total = int(np.mean(known) * len(classes)) if known else 100 * len(classes)
            origin[sub] = f"no csv: mean count of the other sub-splits, total {total}"
        ref_name = _PROPORTIONAL_TO.get(sub, "")
        ref = raw.get(ref_name, {})
        if ref and all(ref.get(c, 0) for c in classes):
            weights = [ref[c] for c in classes]
            origin[sub] += f", spread in proportion to {ref_name}"
        else:
            weights = [1.0] * len(classes)
            origin[sub] += ", spread evenly"
        raw[sub] = dict(zip(classes, spread(total, weights)))
    return {sub: raw[sub] for sub in SAMPLE_SUBSPLITS}, {sub: origin[sub] for sub in SAMPLE_SUBSPLITS}


def metadata_from_folder(root: str | os.PathLike, dataset: str | None = None) -> BenchmarkMeta:
    """The metadata of a benchmark folder (class-split/ and a text-embedding file; features not needed).

    dataset: the benchmark's name (default: the folder's name); it picks the name-map and text file
        names and the protocol totals used where a csv is missing.
    """
    root = Path(root)
    dataset = dataset or root.name
    split_dir = layout.class_split_dir(root)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"not a benchmark folder: {root} has no class-split/")
    splits = {s: {sub: read_class_list(layout.split_class_file(root, s, sub)) for sub in SUBSPLITS}
              for s in layout.SPLITS if (split_dir / s).is_dir()}
    if not splits:
        raise FileNotFoundError(f"{root}: no main_split/ or cls_split/ under {split_dir}")
    all_file = layout.all_class_file(root)
    map_file = find_name_map_file(root, dataset)
    text_file = find_text_file(root, dataset, "main", False)
    columns, rows = read_name_map_table(map_file)
    counts, counts_from = sample_counts(root, dataset, splits)
    class_files = [all_file] + [layout.split_class_file(root, s, sub) for s in splits for sub in SUBSPLITS]
    unterminated = [p.relative_to(split_dir).as_posix() for p in class_files if not _ends_with_newline(p)]
    return BenchmarkMeta(
        dataset, read_class_list(all_file), columns, rows, splits, counts, counts_from,
        load_text_embeddings(text_file), unterminated, {"all_class": all_file, "name_map": map_file, "text": text_file},
    )


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        if fh.seek(0, os.SEEK_END) == 0:
            return True
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def write_class_split(meta: BenchmarkMeta, class_split_dir: str | os.PathLike, name_map_file_name: str) -> None:
    """Write meta's all_class.txt, name map and split .txt files into `class_split_dir`."""
    root = Path(class_split_dir)
    ends = set(meta.unterminated)
    write_class_list(root / "all_class.txt", meta.all_classes, "all_class.txt" not in ends)
    write_name_map(root / name_map_file_name, meta.name_map, meta.name_map_columns)
    for split, subsplits in meta.splits.items():
        for sub, names in subsplits.items():
            rel = f"{split}/{sub}.txt"
            write_class_list(root / rel, names, rel not in ends)

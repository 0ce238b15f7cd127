"""The metadata of the three real benchmarks, shipped inside the package (no download needed).

    available()            -> ["ActivityNet", "UCF", "VGGSound"]
    load("UCF")            -> BenchmarkMeta (class lists, name map, splits, per-class counts, text)

This is what `generate_benchmark(..., like="UCF")` builds a synthetic benchmark from: the same
benchmark, byte for byte, as from a checkout of the real class splits (`source=.../UCF`).

The files under avgzsl/data/benchmarks/ are derived by scripts/derive_packaged_benchmarks.py (calling
`derive`) from the public AVCA-GZSL release (MIT licence, LICENSE-AVCA-GZSL.md beside them). Per
dataset <DS>:

    <DS>.json   format, dataset, all_classes, name_map {columns, rows}, splits {split: {sub-split: names}},
                unterminated (class-split files without a last newline), counts {sample sub-split:
                {class: videos}}, counts_from, text_keys
    <DS>.npz    text: float32 [len(text_keys), text_dim], row i = the embedding of text_keys[i]
                (arrays only: np.load(..., allow_pickle=False))

Counts are those `metadata_from_folder` derives (from the csvs, with its fallback for VGGSound's
missing ones), so the packaged counts need no csv at generation time.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np

from avgzsl.data.metadata import BenchmarkMeta, metadata_from_folder, write_class_split
from avgzsl.data.writers import atomic_write_bytes

FORMAT_VERSION = 1
LICENSE_FILE = "LICENSE-AVCA-GZSL.md"
_ABOUT = (f"Derived by scripts/derive_packaged_benchmarks.py from the class-split/ folder and text embeddings "
          f"of the AVCA-GZSL release (MIT licence: {LICENSE_FILE} in this folder).")
# A fixed zip timestamp: np.savez stamps the current time, which would make every derivation differ.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _folder():
    """The packaged files (a Traversable: a folder, or a place inside a zipped install)."""
    return resources.files("avgzsl.data").joinpath("benchmarks")


def available() -> list[str]:
    """Names of the packaged benchmarks, sorted: ["ActivityNet", "UCF", "VGGSound"]."""
    folder = _folder()
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def resolve(name: str) -> str:
    """The packaged benchmark called `name` (case-insensitively), else ValueError listing them."""
    names = {n.casefold(): n for n in available()}
    try:
        return names[str(name).casefold()]
    except KeyError:
        raise ValueError(f"no packaged benchmark {name!r}; packaged: {', '.join(available()) or 'none'}") from None


def load(name: str) -> BenchmarkMeta:
    """The packaged metadata of benchmark `name` (UCF, ActivityNet or VGGSound; any case)."""
    return read(_folder(), resolve(name))


def read(folder, name: str) -> BenchmarkMeta:
    """The metadata in <name>.json and <name>.npz of `folder` (a Path, e.g. derive's output, or a Traversable)."""
    where = f"packaged benchmark {name}"
    doc = json.loads(folder.joinpath(f"{name}.json").read_text(encoding="utf-8"))
    if doc.get("format") != FORMAT_VERSION:
        raise ValueError(f"{where}: format {doc.get('format')!r}, this version of avgzsl reads {FORMAT_VERSION}")
    with folder.joinpath(f"{name}.npz").open("rb") as fh, np.load(fh, allow_pickle=False) as arrays:
        vectors = np.asarray(arrays["text"], dtype=np.float32)
    keys = doc["text_keys"]
    if vectors.ndim != 2 or len(vectors) != len(keys):
        raise ValueError(f"{where}: {len(keys)} text keys but text array of shape {vectors.shape}")
    return BenchmarkMeta(
        dataset=doc["dataset"],
        all_classes=list(doc["all_classes"]),
        name_map_columns=list(doc["name_map"]["columns"]),
        name_map=[tuple(r) for r in doc["name_map"]["rows"]],
        splits={s: {sub: list(names) for sub, names in subs.items()} for s, subs in doc["splits"].items()},
        counts={sub: {c: int(n) for c, n in per.items()} for sub, per in doc["counts"].items()},
        counts_from=dict(doc["counts_from"]),
        text=dict(zip(keys, vectors)),
        unterminated=list(doc["unterminated"]),
    )


def license_text() -> str:
    """The MIT licence notice of the AVCA-GZSL release that the packaged metadata comes from."""
    return _folder().joinpath(LICENSE_FILE).read_text(encoding="utf-8")


# ----------------------------------------------------------------------------------------- deriving


def _to_json(meta: BenchmarkMeta) -> str:
    doc = {
        "format": FORMAT_VERSION,
        "dataset": meta.dataset,
        "about": _ABOUT,
        "all_classes": meta.all_classes,
        "name_map": {"columns": meta.name_map_columns, "rows": [list(r) for r in meta.name_map]},
        "splits": meta.splits,
        "unterminated": meta.unterminated,
        "counts": meta.counts,
        "counts_from": meta.counts_from,
        "text_keys": list(meta.text),
    }
    return json.dumps(doc, indent=1, ensure_ascii=True) + "\n"


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A compressed .npz like np.savez_compressed writes, but with fixed zip timestamps (deterministic)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    return out.getvalue()


def save(meta: BenchmarkMeta, out_dir: str | os.PathLike) -> list[Path]:
    """Write <dataset>.json and <dataset>.npz of `meta` into out_dir; the same meta gives the same bytes."""
    out_dir = Path(out_dir)
    text = np.stack([np.asarray(v, dtype=np.float32) for v in meta.text.values()])
    files = {out_dir / f"{meta.dataset}.json": _to_json(meta).encode("utf-8"),
             out_dir / f"{meta.dataset}.npz": _npz_bytes({"text": text})}
    for path, data in files.items():
        atomic_write_bytes(path, data)
    return list(files)


def same_metadata(a: BenchmarkMeta, b: BenchmarkMeta) -> bool:
    """Whether two metadata hold the same content (text keys in the same order, vectors exactly equal)."""
    fields = ("dataset", "all_classes", "name_map_columns", "splits", "counts", "counts_from", "unterminated")
    return (all(getattr(a, f) == getattr(b, f) for f in fields)
            and [tuple(r) for r in a.name_map] == [tuple(r) for r in b.name_map]
            and list(a.text) == list(b.text)
            and all(np.array_equal(a.text[k], b.text[k]) and a.text[k].dtype == b.text[k].dtype for k in a.text))


def _round_trip_problems(meta: BenchmarkMeta, source: Path) -> list[str]:
    """Files of `source`'s class-split/ that write_class_split would not reproduce byte for byte."""
    name_map = meta.files["name_map"]
    with tempfile.TemporaryDirectory() as tmp:
        write_class_split(meta, tmp, name_map.name)
        problems = []
        for rel in ["all_class.txt", name_map.name] + [f"{s}/{sub}.txt" for s, subs in meta.splits.items() for sub in subs]:
            if (Path(tmp) / rel).read_bytes() != (name_map.parent / rel).read_bytes():
                problems.append(f"{source}: class-split/{rel} is not reproduced byte for byte from its derived form")
    return problems


def derive(source_root: str | os.PathLike, out_dir: str | os.PathLike,
           datasets: tuple[str, ...] = ("ActivityNet", "UCF", "VGGSound")) -> list[Path]:
    """Derive the packaged files of `datasets` from source_root/<dataset>/ (the real class-split/ and text).

    Checks that the derived form gives back the original class-split files byte for byte and the
    text embeddings exactly, then writes <dataset>.json/.npz for each and the licence notice
    (source_root/LICENSE-AVCA-GZSL.md) into out_dir. Returns the files written.
    """
    source_root, out_dir = Path(source_root), Path(out_dir)
    licence = source_root / LICENSE_FILE
    if not licence.is_file():
        raise FileNotFoundError(f"{licence} not found: the packaged files must carry the release's licence notice")
    metas = [metadata_from_folder(source_root / ds, ds) for ds in datasets]
    problems = [p for meta in metas for p in _round_trip_problems(meta, source_root / meta.dataset)]
    if problems:
        raise ValueError("cannot package the benchmarks exactly:\n  - " + "\n  - ".join(problems))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for meta in metas:
        written += save(meta, out_dir)
        back = read(out_dir, meta.dataset)
        if not same_metadata(back, meta):
            raise AssertionError(f"{out_dir / meta.dataset}.json/.npz do not read back as what was derived")
    shutil.copyfile(licence, out_dir / LICENSE_FILE)
    written.append(out_dir / LICENSE_FILE)
    return written

"""Load a benchmark folder into a `Benchmark` of tensors (protocol.md sections 2 and 3).

    bench = load_benchmark(cfg.data)

Reads the class lists and name map (class ids as in the reference loaders), the text embeddings
(mapped by name, or the reference's misaligned order with legacy_text_order), and the per-class
feature files of the five feature sub-splits (averaged HDF5 or temporal pickles, told apart by
content), then composes the four phases:

    stage1_train = stage_1_train                                   seen: stage_1_train.txt
    stage1_val   = stage_1_val_seen + stage_1_val_unseen           seen/unseen: stage_1_val_{seen,unseen}.txt
    stage2_train = stage_1_train + stage_1_val_seen + stage_1_val_unseen      seen: stage_2_train.txt
    test         = stage_2_test_seen + stage_2_test_unseen         seen/unseen: stage_2_test_{seen,unseen}.txt

stage1_train and stage1_val are views into stage2_train's tensors (no second copy of the data):
treat the loaded tensors as read-only.

Feature sets: `main` (audio 512 / video 512) and `cls` (128 / 4096) are checked against those
dimensions; any other plain-identifier name is a user-extracted set (e.g. `clip`, folder
features/clip_features/) whose class files need only agree on one dimension per modality. Text
embeddings may have any dimension.

Steps (each a function below): resolve and check the folder; read classes, splits and text; index
the class files into a read plan; look the result up in the cache; read and check the class files;
compose and check the phases; record where it all came from (Benchmark.info).

Every problem found in the files (missing folders or class files, audio/video video lists that
differ, wrong dimensions, NaN/inf, empty class files, classes without text) is collected and raised
together as one BenchmarkError naming the files and classes. With `cfg.cache_dir` set, the result
is stored with torch.save under that folder, keyed by a hash of the config and of every input
file's path, size and mtime.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avgzsl.config import DataConfig
from avgzsl.data import layout
from avgzsl.data.classes import (
    ClassSplitError,
    ClassTable,
    find_name_map_file,
    find_text_file,
    load_class_table,
    load_text_embeddings,
    read_split,
    text_table,
)
from avgzsl.data.readers import ClassFeatures, FeatureFileError, index_class_files, read_class_file
from avgzsl.data.types import PHASES, SUBSPLITS, Benchmark, Features, Phase, SampleSet
from avgzsl.progress import progress as progress_display

log = logging.getLogger(__name__)

# Feature dimensions of the downloads' feature sets; other (user-extracted) sets are only checked for consistency.
EXPECTED_DIMS = {"main": {"audio": 512, "video": 512}, "cls": {"audio": 128, "video": 4096}}
# Sub-splits that have feature folders; stage_2_train's samples are composed from the stage-1 ones.
FEATURE_SUBSPLITS = ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen", "stage_2_test_seen", "stage_2_test_unseen")
STAGE2_PARTS = ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen")
VGGISH_SCALE = 1.0 / 255.0
CACHE_FORMAT_VERSION = 1
_MAX_LISTED_PROBLEMS = 30


class BenchmarkError(ValueError):
    """The benchmark folder is incomplete or inconsistent; the message lists every problem found."""


def default_audio_scale(feature_set: str, temporal: bool) -> float:
    """Factor applied to audio features: 1/255 for the temporal 'cls' (VGGish, 0..255) set, as TCaF does; else 1."""
    return VGGISH_SCALE if (feature_set == "cls" and temporal) else 1.0


def _raise_problems(problems: list[str], what: str) -> None:
    """One BenchmarkError for every problem found. Its first line alone says what is wrong and where (the
    CLI's `error:` line); further problems follow, one per line."""
    if not problems:
        return
    rest = problems[1:_MAX_LISTED_PROBLEMS]
    more = len(problems) - 1 - len(rest)
    raise BenchmarkError(
        f"{what}: {len(problems)} problem(s): {problems[0]}" + "".join(f"\n  - {p}" for p in rest)
        + (f"\n  ... and {more} more" if more else "")
    )


def _file_stat(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def _cache_key(cfg: DataConfig, root: Path, audio_scale: float, dims: dict | None, files: list[Path]) -> str:
    payload = {
        "format_version": CACHE_FORMAT_VERSION,
        "dataset": cfg.dataset,
        "root": str(root),
        "feature_set": cfg.feature_set,
        "split": cfg.split,
        "temporal": bool(cfg.temporal),
        "legacy_text_order": bool(cfg.legacy_text_order),
        "audio_scale": float(audio_scale),
        "dims": dims,
        "files": [_file_stat(p) for p in files],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _features_to_state(f: Features) -> dict:
    return {"values": f.values, "offsets": f.offsets}


def _benchmark_to_state(b: Benchmark) -> dict:
    phases = {}
    for name, ph in b.phases.items():
        s = ph.samples
        phases[name] = {
            "audio": _features_to_state(s.audio), "video": _features_to_state(s.video),
            "labels": s.labels, "video_ids": list(s.video_ids), "seen": ph.seen, "unseen": ph.unseen,
        }
    return {"name": b.name, "class_names": list(b.class_names), "text": b.text, "phases": phases, "info": b.info}


def _benchmark_from_state(state: dict) -> Benchmark:
    phases = {}
    for name, p in state["phases"].items():
        samples = SampleSet(
            Features(p["audio"]["values"], p["audio"]["offsets"]),
            Features(p["video"]["values"], p["video"]["offsets"]),
            p["labels"], list(p["video_ids"]),
        )
        phases[name] = Phase(name, samples, p["seen"], p["unseen"])
    return Benchmark(state["name"], list(state["class_names"]), state["text"], phases, dict(state["info"]))


def _cache_path(cache_dir: Path, cfg: DataConfig, key: str) -> Path:
    kind = "temporal" if cfg.temporal else "averaged"
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in cfg.dataset)
    return cache_dir / f"{safe}-{cfg.feature_set}-{cfg.split}-{kind}-{key[:24]}.pt"


def _try_load_cache(path: Path, key: str) -> Benchmark | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("key") != key or state.get("format_version") != CACHE_FORMAT_VERSION:
            return None
        return _benchmark_from_state(state["benchmark"])
    except Exception as exc:  # corrupt or foreign file: rebuild it
        log.warning("ignoring unreadable benchmark cache %s (%s: %s)", path, type(exc).__name__, exc)
        return None


def _save_cache(path: Path, key: str, bench: Benchmark) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"key": key, "format_version": CACHE_FORMAT_VERSION, "benchmark": _benchmark_to_state(bench)}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _describe_id_mismatch(audio: list[str], video: list[str]) -> str:
    audio_set, video_set = set(audio), set(video)
    only_a = [v for v in audio if v not in video_set]
    only_v = [v for v in video if v not in audio_set]
    parts = [f"{len(audio)} audio vs {len(video)} video videos"]
    if only_a:
        parts.append(f"only in audio: {', '.join(only_a[:10])}" + (f" (+{len(only_a) - 10} more)" if len(only_a) > 10 else ""))
    if only_v:
        parts.append(f"only in video: {', '.join(only_v[:10])}" + (f" (+{len(only_v) - 10} more)" if len(only_v) > 10 else ""))
    if not only_a and not only_v:
        i = next((k for k, (a, v) in enumerate(zip(audio, video)) if a != v), min(len(audio), len(video)))
        if len(audio) == len(video):
            parts.append(f"same videos in a different order (first difference at position {i}: "
                         f"audio {audio[i]!r}, video {video[i]!r})")
        else:
            parts.append("same set of videos but some are listed more than once")
    return "; ".join(parts)


def _assemble(parts: list[ClassFeatures], temporal: bool, scale: float, dim: int) -> Features:
    if parts:
        values = np.concatenate([p.values for p in parts], axis=0)
    else:
        values = np.zeros((0, dim), dtype=np.float32)
    if values.dtype != np.float32:
        values = values.astype(np.float32)
    if scale != 1.0:
        values *= np.float32(scale)
    tensor = torch.from_numpy(values)
    if not temporal:
        return Features(tensor)
    lengths = np.concatenate([p.lengths for p in parts]) if parts else np.zeros(0, np.int64)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
    offsets[1:] = torch.from_numpy(np.cumsum(lengths, dtype=np.int64))
    return Features(tensor, offsets)


def _slice(f: Features, start: int, stop: int) -> Features:
    """Samples start:stop of f as views into f's values (no copy)."""
    if not f.temporal:
        return Features(f.values[start:stop])
    lo, hi = int(f.offsets[start]), int(f.offsets[stop])
    return Features(f.values[lo:hi], f.offsets[start:stop + 1] - lo)


# --------------------------------------------------------------------------------- the load steps


@dataclass
class _ClassData:
    """What class-split/ and the text file give: class ids, each sub-split's classes, the text table."""

    table: ClassTable
    split_classes: dict[str, list[str]]  # sub-split -> canonical class names
    text: torch.Tensor  # [C_all, text_dim]
    text_path: Path
    files: list[Path]  # every file read, for the cache key


@dataclass
class _ReadPlan:
    """The class files to read: one (sub-split, class id, audio file, video file) per listed class."""

    feature_dir: Path
    reads: list[tuple[str, int, Path, Path]]

    @property
    def files(self) -> list[Path]:
        return [p for _, _, a, v in self.reads for p in (a, v)]


@dataclass
class _FeatureParts:
    """The class files read, per feature sub-split, in plan order."""

    parts: dict[str, dict[str, list[ClassFeatures]]]  # sub-split -> modality -> class files
    labels: dict[str, list[np.ndarray]]  # sub-split -> one label array per class file
    ids: dict[str, list[str]]  # sub-split -> video ids
    dims: dict[str, int]  # modality -> feature dimension

    def size(self, subsplit: str) -> int:
        return int(sum(len(x) for x in self.labels[subsplit]))


def _resolve_root(cfg: DataConfig) -> Path:
    """cfg.root resolved; an error unless it is a folder holding class-split/."""
    if not cfg.root:
        raise BenchmarkError("data.root is not set: point it at the dataset folder holding class-split/ and features/")
    root = Path(cfg.root).expanduser().resolve()
    if not root.is_dir():
        raise BenchmarkError(f"benchmark folder not found: {root}")
    # Checked before any file in it: an empty or wrong folder is not reported as a missing name map.
    if not layout.class_split_dir(root).is_dir():
        raise BenchmarkError(f"not a benchmark folder: {root} has no class-split/ (expected class-split/ and features/)")
    return root


def _expected_dims(feature_set: str, expected_dims: dict[str, int] | None) -> dict[str, int] | None:
    """Fixed feature dimensions to check against, or None: only consistency across class files.

    `main` and `cls` have known dimensions (EXPECTED_DIMS); any other plain-identifier name is a
    user-extracted set (folder <name>_features) whose dimensions are whatever its files agree on.
    """
    try:
        layout.check_feature_set(feature_set)
    except ValueError as exc:
        raise BenchmarkError(str(exc)) from None
    if expected_dims is not None:
        return dict(expected_dims)
    return dict(EXPECTED_DIMS[feature_set]) if feature_set in EXPECTED_DIMS else None


def _read_classes(root: Path, cfg: DataConfig, where: str) -> _ClassData:
    """Class ids, the split's six class lists and the text table (by name or legacy order)."""
    try:
        table = load_class_table(root, cfg.dataset)
        split_classes = read_split(root, cfg.split, table, SUBSPLITS)
        text_path = find_text_file(root, cfg.dataset, cfg.feature_set, cfg.temporal)
        embeddings = load_text_embeddings(text_path)
        text = text_table(table, embeddings, cfg.legacy_text_order, str(text_path))
        files = [layout.all_class_file(root), find_name_map_file(root, cfg.dataset), text_path]
    except (ClassSplitError, ValueError, pickle.UnpicklingError, OSError) as exc:
        # ValueError / UnpicklingError: a text .npy that is not one, truncated, or refused by the restricted
        # unpickler (UnsafePickleError); their messages name the file.
        raise BenchmarkError(f"{where}: {exc}") from None
    files += [layout.split_class_file(root, cfg.split, s) for s in SUBSPLITS]
    return _ClassData(table, split_classes, text, text_path, files)


def _feature_folder(root: Path, cfg: DataConfig, where: str) -> Path:
    """features/<set>_features[_non_averaged]; an error naming what is there instead when it is absent."""
    fdir = layout.feature_dir(root, cfg.feature_set, cfg.temporal)
    if fdir.is_dir():
        return fdir
    other = layout.feature_dir(root, cfg.feature_set, not cfg.temporal)
    present = sorted(p.name for p in (root / "features").iterdir() if p.is_dir()) if (root / "features").is_dir() else []
    hint = f" ({other.name} exists: set data.temporal={str(not cfg.temporal).lower()}?)" if other.is_dir() else ""
    if not hint and cfg.feature_set.endswith("_features"):
        hint = f" (data.feature_set is the name before _features: {cfg.feature_set[: -len('_features')]!r}?)"
    raise BenchmarkError(f"{where}: feature folder not found: {fdir}{hint}"
                         + (f"; folders under features/: {', '.join(present)}" if present else ""))


def _plan_reads(root: Path, cfg: DataConfig, classes: _ClassData, where: str) -> _ReadPlan:
    """Index the sub-split folders and pair each listed class with its audio and video file.

    Missing folders and class files are errors; class files that the split does not list are
    reported (a warning) and not read.
    """
    fdir = _feature_folder(root, cfg, where)
    folders = {(m, s): fdir / m / s for m in layout.MODALITIES for s in FEATURE_SUBSPLITS}
    missing_dirs = [str(p) for p in folders.values() if not p.is_dir()]
    _raise_problems([f"missing folder {p}" for p in missing_dirs], where)

    problems: list[str] = []
    indexes = {}
    for key, folder in folders.items():
        try:
            indexes[key] = index_class_files(folder)
        except FeatureFileError as exc:
            problems.append(str(exc))
    _raise_problems(problems, where)

    reads: list[tuple[str, int, Path, Path]] = []
    for s in FEATURE_SUBSPLITS:
        listed = classes.split_classes[s]
        listed_keys = {n.casefold() for n in listed}
        for m in layout.MODALITIES:
            absent = [n for n in listed if n.casefold() not in indexes[(m, s)]]
            if absent:
                problems.append(f"{folders[(m, s)]}: no class file for {len(absent)} class(es) listed in "
                                f"{cfg.split}/{s}.txt: {', '.join(absent)}")
            extra = sorted(p.name for k, p in indexes[(m, s)].items() if k not in listed_keys)
            if extra:
                log.warning("%s: %d class file(s) not listed in %s/%s.txt are not loaded: %s",
                            folders[(m, s)], len(extra), cfg.split, s, ", ".join(extra))
        for n in listed:
            k = n.casefold()
            if k in indexes[("audio", s)] and k in indexes[("video", s)]:
                reads.append((s, classes.table.index(n), indexes[("audio", s)][k], indexes[("video", s)][k]))
    _raise_problems(problems, where)
    if (fdir / "audio" / "stage_2_train").is_dir():
        log.debug("%s: stage_2_train folders are not read; stage 2 training samples are stage_1_train + "
                  "stage_1_val_seen + stage_1_val_unseen", fdir)
    return _ReadPlan(fdir, reads)


def _cache_entry(cfg: DataConfig, root: Path, scale: float, dims: dict | None,
                 files: list[Path]) -> tuple[str | None, Path | None]:
    """(key, cache file) of this load, or (None, None) without cfg.cache_dir."""
    if not cfg.cache_dir:
        return None, None
    key = _cache_key(cfg, root, scale, dims, files)
    return key, _cache_path(Path(cfg.cache_dir).expanduser(), cfg, key)


def _read_features(plan: _ReadPlan, table: ClassTable, cfg: DataConfig, scale: float, dims: dict[str, int] | None,
                   where: str, progress: bool) -> _FeatureParts:
    """Read every planned class file and check it: format (averaged/temporal), not empty, dimension,
    NaN/inf, and the same videos in the same order in the audio and video file of a class.

    With fixed `dims` each file is checked against them; without (a user-extracted feature set),
    every file of a modality must have the dimension most of them have.
    """
    feats = _FeatureParts({s: {"audio": [], "video": []} for s in FEATURE_SUBSPLITS},
                          {s: [] for s in FEATURE_SUBSPLITS}, {s: [] for s in FEATURE_SUBSPLITS}, dict(dims or {}))
    problems: list[str] = []
    seen_dims: dict[str, list[tuple[int, Path, str]]] = {"audio": [], "video": []}  # (dim, file, class)
    scale_warned = False
    bar = progress_display(total=len(plan.files), desc=f"{cfg.dataset} {cfg.feature_set} features", unit="file",
                           enabled=progress, leave=False)
    try:
        for s, cid, apath, vpath in plan.reads:
            cname = table.names[cid]
            got = {}
            for m, path in (("audio", apath), ("video", vpath)):
                try:
                    cf = read_class_file(path)
                except (FeatureFileError, OSError, ValueError, pickle.UnpicklingError) as exc:
                    problems.append(f"class {cname!r} ({s}/{m}): {exc}")
                    bar.update(1)
                    continue
                bar.update(1)
                bad = []
                if cf.temporal != bool(cfg.temporal):
                    kind = "temporal (pickle)" if cf.temporal else "averaged (HDF5)"
                    bad.append(f"holds {kind} features but data.temporal={cfg.temporal}")
                if len(cf) == 0:
                    bad.append("has no videos")
                elif dims is not None and cf.dim != dims[m]:
                    bad.append(f"{m} features have dimension {cf.dim}, expected {dims[m]} for feature set {cfg.feature_set!r}")
                else:
                    if dims is None:
                        seen_dims[m].append((cf.dim, path, cname))
                    finite = np.isfinite(cf.values)
                    if not finite.all():
                        bad.append(f"{int(finite.size - np.count_nonzero(finite))} NaN/inf value(s)")
                if bad:
                    problems.append(f"{path} (class {cname!r}): " + "; ".join(bad))
                    continue
                got[m] = cf
            if len(got) != 2:
                continue
            a, v = got["audio"], got["video"]
            if a.video_ids != v.video_ids:
                problems.append(f"class {cname!r} ({s}): audio file {a.path} and video file {v.path} list different "
                                f"videos: {_describe_id_mismatch(a.video_ids, v.video_ids)}")
                continue
            if scale != 1.0 and not scale_warned and cfg.temporal and float(a.values.max()) <= 1.0:
                scale_warned = True
                log.warning("%s: audio values already lie within [0, 1] but are multiplied by %g; pass "
                            "audio_scale=1.0 if they are already scaled", a.path, scale)
            feats.parts[s]["audio"].append(a)
            feats.parts[s]["video"].append(v)
            feats.labels[s].append(np.full(len(a), cid, dtype=np.int64))
            feats.ids[s].extend(a.video_ids)
    finally:
        bar.close()
    if dims is None:
        for m in layout.MODALITIES:
            feats.dims[m], odd = _majority_dim(seen_dims[m])
            problems += [f"{path} (class {cname!r}): {m} features have dimension {d}, but {feats.dims[m]} in most "
                         f"{m} class files of feature set {cfg.feature_set!r}; all must have the same dimension"
                         for d, path, cname in odd]
    _raise_problems(problems, where)
    return feats


def _majority_dim(found: list[tuple[int, Path, str]]) -> tuple[int, list[tuple[int, Path, str]]]:
    """The dimension most files have (the first-read one on a tie; 0 without files) and the files that differ."""
    if not found:
        return 0, []
    major = Counter(d for d, _, _ in found).most_common(1)[0][0]
    return major, [f for f in found if f[0] != major]


def _compose_phases(feats: _FeatureParts, classes: _ClassData, cfg: DataConfig, scale: float,
                    where: str) -> dict[str, Phase]:
    """The four phases of protocol.md section 3 (stage-1 phases as views into stage 2 train), checked:
    no class both seen and unseen, no sample of a class outside its phase's class lists."""
    table, split_classes = classes.table, classes.split_classes

    def build(subsplits: tuple[str, ...]) -> SampleSet:
        audio = _assemble([p for s in subsplits for p in feats.parts[s]["audio"]], cfg.temporal, scale, feats.dims["audio"])
        video = _assemble([p for s in subsplits for p in feats.parts[s]["video"]], cfg.temporal, 1.0, feats.dims["video"])
        lab = [x for s in subsplits for x in feats.labels[s]]
        lab_t = torch.from_numpy(np.concatenate(lab)) if lab else torch.zeros(0, dtype=torch.long)
        return SampleSet(audio, video, lab_t, [v for s in subsplits for v in feats.ids[s]])

    def cids(s: str) -> torch.Tensor:
        return table.ids(split_classes[s], where=f"{cfg.split}/{s}.txt")

    stage2 = build(STAGE2_PARTS)
    n_train = feats.size("stage_1_train")
    n_all = len(stage2)

    def view(start: int, stop: int) -> SampleSet:
        return SampleSet(_slice(stage2.audio, start, stop), _slice(stage2.video, start, stop),
                         stage2.labels[start:stop], stage2.video_ids[start:stop])

    empty = torch.zeros(0, dtype=torch.long)
    phases = {
        "stage1_train": Phase("stage1_train", view(0, n_train), cids("stage_1_train"), empty),
        "stage1_val": Phase("stage1_val", view(n_train, n_all), cids("stage_1_val_seen"), cids("stage_1_val_unseen")),
        "stage2_train": Phase("stage2_train", stage2, cids("stage_2_train"), empty),
        "test": Phase("test", build(("stage_2_test_seen", "stage_2_test_unseen")),
                      cids("stage_2_test_seen"), cids("stage_2_test_unseen")),
    }
    problems = []
    for name in PHASES:
        ph = phases[name]
        overlap = set(ph.seen.tolist()) & set(ph.unseen.tolist())
        if overlap:
            problems.append(f"phase {name}: class(es) both seen and unseen: {', '.join(table.names[i] for i in sorted(overlap))}")
        outside = sorted(set(ph.samples.labels.unique().tolist()) - set(ph.classes.tolist()))
        if outside:
            problems.append(f"phase {name}: samples of class(es) outside its class lists: "
                            f"{', '.join(table.names[i] for i in outside)}")
    _raise_problems(problems, where)
    return phases


def _provenance(root: Path, cfg: DataConfig, scale: float, classes: _ClassData, plan: _ReadPlan, feats: _FeatureParts,
                key: str | None, cache_file: Path | None) -> dict:
    """Benchmark.info: where the data came from, the options that shaped it, and what was read."""
    return {
        "root": str(root),
        "dataset": cfg.dataset,
        "feature_set": cfg.feature_set,
        "split": cfg.split,
        "temporal": bool(cfg.temporal),
        "legacy_text_order": bool(cfg.legacy_text_order),
        "audio_scale": scale,
        "feature_dir": str(plan.feature_dir),
        "text_file": str(classes.text_path),
        "files_read": len(classes.files) + len(plan.files),
        "feature_files_read": len(plan.files),
        "subsplit_sizes": {s: feats.size(s) for s in FEATURE_SUBSPLITS},
        "cache": {"hit": False, "path": str(cache_file) if cache_file else None, "key": key},
    }


# ----------------------------------------------------------------------------------------- the loader


def load_benchmark(
    cfg: DataConfig,
    progress: bool = True,
    *,
    audio_scale: float | None = None,
    expected_dims: dict[str, int] | None = None,
) -> Benchmark:
    """Load the benchmark described by `cfg` (see the module docstring).

    audio_scale: factor applied to audio features; None = default_audio_scale(feature_set, temporal)
        (1/255 for temporal VGGish 'cls' audio, as TCaF does).
    expected_dims: {'audio': D_a, 'video': D_v}; None = EXPECTED_DIMS[feature_set] for main and cls,
        and for any other feature set only the same dimension in every class file of a modality.
    Last step: `cfg.class_embeddings` ("ceo": Benchmark.text becomes CEO's optimised class table, see avgzsl.ceo).
    """
    t0 = time.perf_counter()
    root = _resolve_root(cfg)
    dims = _expected_dims(cfg.feature_set, expected_dims)
    scale = float(default_audio_scale(cfg.feature_set, cfg.temporal) if audio_scale is None else audio_scale)
    where = f"{cfg.dataset} benchmark at {root}"

    _feature_folder(root, cfg, where)  # first: a missing feature folder is not reported as missing text in it
    classes = _read_classes(root, cfg, where)
    plan = _plan_reads(root, cfg, classes, where)
    key, cache_file = _cache_entry(cfg, root, scale, dims, classes.files + plan.files)
    if cache_file is not None and (cached := _try_load_cache(cache_file, key)) is not None:
        cached.info["cache"] = {"hit": True, "path": str(cache_file), "key": key}
        cached.info["load_seconds"] = round(time.perf_counter() - t0, 3)
        log.info("loaded %s from cache %s", cfg.dataset, cache_file)
        return _after_cache(cached, cfg)
    feats = _read_features(plan, classes.table, cfg, scale, dims, where, progress)
    phases = _compose_phases(feats, classes, cfg, scale, where)
    info = _provenance(root, cfg, scale, classes, plan, feats, key, cache_file)

    bench = Benchmark(cfg.dataset, list(classes.table.names), classes.text, phases, info)
    if cache_file is not None:
        _save_cache(cache_file, key, bench)
    info["load_seconds"] = round(time.perf_counter() - t0, 3)
    return _after_cache(bench, cfg)


def _after_cache(bench: Benchmark, cfg: DataConfig) -> Benchmark:
    """What cfg derives from the loaded (or cached) benchmark, which holds the files' contents as they are:
    cfg.class_embeddings (CEO's class table and figures with "ceo", see avgzsl.ceo, cached on its own; the
    text embeddings as they are with "text"), then cfg.standardise."""
    from avgzsl.ceo import apply_class_embeddings

    bench = apply_class_embeddings(bench, cfg)
    return standardise_features(bench) if cfg.standardise else bench


def standardise_features(bench: Benchmark) -> Benchmark:
    """A copy of `bench` whose audio and video features are z-scored per dimension with the mean and std of
    stage-1 train (every time step of per-second features counts once; padding is added later, by masks).

    Stage-1 train is the one split that every phase may look at: its statistics carry nothing of stage-1 val
    or of test, so the protocol stays inductive. The cache keeps the raw features (applied after it).
    """
    train = bench.phases["stage1_train"].samples
    stats = {}
    for mod in ("audio", "video"):
        values = getattr(train, mod).values.double()
        stats[mod] = (values.mean(0), values.std(0).clamp_min(1e-6))

    def z(f: Features, mod: str) -> Features:
        mean, std = stats[mod]
        return Features(((f.values.double() - mean) / std).to(f.values.dtype), f.offsets)

    phases = {
        name: Phase(ph.name, SampleSet(z(ph.samples.audio, "audio"), z(ph.samples.video, "video"),
                                       ph.samples.labels, ph.samples.video_ids), ph.seen, ph.unseen)
        for name, ph in bench.phases.items()
    }
    info = dict(bench.info, standardised={mod: {"mean_of_means": round(float(m.mean()), 5),
                                                "mean_of_stds": round(float(s.mean()), 5)}
                                          for mod, (m, s) in stats.items()})
    return Benchmark(bench.name, bench.class_names, bench.text, phases, info)


__all__ = [
    "BenchmarkError", "EXPECTED_DIMS", "FEATURE_SUBSPLITS", "VGGISH_SCALE", "ClassTable",
    "default_audio_scale", "load_benchmark", "standardise_features",
]

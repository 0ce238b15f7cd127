"""Which videos to extract, and into which class file: the class split given by the user.

Two forms are read into one list of `VideoJob`s (video id, file, class, feature sub-split):

1. A benchmark's class-split folder (`class-split/` of a download: all_class.txt, the name-map csv,
   <split>/<subsplit>.txt and one <split>/<subsplit>.csv per sub-split listing its videos) plus a folder
   of video files, found by file stem (the csv's `filename`, e.g. UCF `v_Archery_g01_c01` ->
   `v_Archery_g01_c01.avi`, anywhere below the folder). The folder is copied into the output benchmark.
2. A plain csv with columns `video` (a path, relative to the csv's folder or to --videos), `class` and
   `subsplit` (one of the five feature sub-splits; `split` is accepted as the column name), optionally
   `id` (default: the file stem). The class-split folder is written from it: all_class.txt, an identity
   name map (or the user's), each sub-split's .txt (the classes with videos in it; stage_2_train = the
   classes of the three stage-1 sub-splits) and .csv (filename,label).

Only the five sub-splits that have feature folders are extracted (stage_2_train's samples are the three
stage-1 sub-splits', protocol.md section 3). Class names are matched case-insensitively, and class files
are named by the all_class.txt spelling.
"""

from __future__ import annotations

import csv
import filecmp
import io
from dataclasses import dataclass
from pathlib import Path

from avgzsl.data import layout
from avgzsl.data.classes import ClassTable, build_class_table, read_class_list, read_name_map
from avgzsl.data.loading import FEATURE_SUBSPLITS, STAGE2_PARTS
from avgzsl.data.writers import atomic_write_bytes, write_class_split

__all__ = ["VIDEO_SUFFIXES", "VideoJob", "VideoList", "from_class_split", "from_csv"]

VIDEO_SUFFIXES = (
    ".mp4",
    ".avi",
    ".mkv",
    ".webm",
    ".mov",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".flv",
    ".wmv",
    ".3gp",
    ".ts",
)
_ID_COLUMNS = ("filename", "video_id", "video", "id")
_CLASS_COLUMNS = ("label", "class", "class_name")


@dataclass(frozen=True)
class VideoJob:
    """One listed video: `id` (the name written to the class files' video_urls) and its file (None: not
    found)."""

    id: str
    path: Path | None
    cls: str  # canonical class name (all_class.txt spelling)
    subsplit: str


@dataclass
class VideoList:
    jobs: list[VideoJob]
    table: ClassTable
    problems: list[dict]  # listed videos that cannot be extracted: {"id", "class", "subsplit", "reason"}

    def unique(self) -> list[VideoJob]:
        """One job per video id (a video listed in two sub-splits is extracted once), in listing order."""
        seen: dict[str, VideoJob] = {}
        for j in self.jobs:
            seen.setdefault(j.id, j)
        return list(seen.values())


def _index_videos(folder: Path) -> tuple[dict[str, Path], set[str]]:
    """{file stem: path} of the video files below `folder`, and the stems found more than once."""
    if not folder.is_dir():
        raise FileNotFoundError(f"videos folder not found: {folder}")
    found: dict[str, Path] = {}
    dup: set[str] = set()
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file() and not p.name.startswith("."):
            if p.stem in found:
                dup.add(p.stem)
            found.setdefault(p.stem, p)
    return found, dup


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    return fields, [r for r in rows if any(r.values())]


def _column(fields: list[str], choices: tuple[str, ...], path: Path, what: str) -> str:
    lower = {f.lower(): f for f in fields}
    for c in choices:
        if c in lower:
            return lower[c]
    raise ValueError(
        f"{path}: no {what} column (expected one of {', '.join(choices)}; found {', '.join(fields)})"
    )


def _copy_class_split(src: Path, dst: Path) -> None:
    """Copy the class-split folder `src` to `dst` (file by file, atomically); an existing different file is an
    error."""
    if dst.exists() and dst.resolve() == src.resolve():
        return
    for p in sorted(src.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        target = dst / p.relative_to(src)
        if target.exists():
            if not filecmp.cmp(p, target, shallow=False):
                raise FileExistsError(
                    f"{target} exists and differs from {p}: extract into a new --out, or remove {dst} first"
                )
            continue
        atomic_write_bytes(target, p.read_bytes())


def from_class_split(
    class_split: str | Path, videos: str | Path, out_root: str | Path, dataset: str, split: str = "main_split"
) -> VideoList:
    """Jobs from a benchmark's class-split folder (see the module docstring); copies it to out_root/class-
    split."""
    src = Path(class_split).expanduser()
    if (src / "class-split").is_dir() or (src / "class_split").is_dir():  # the dataset folder was given
        src = layout.class_split_dir(src)
    if not (src / "all_class.txt").is_file():
        raise FileNotFoundError(
            f"{src}: not a class-split folder (no all_class.txt); give the benchmark's "
            f"class-split/ folder, or a csv of video,class,subsplit with --videos-csv"
        )
    preferred = src / f"{layout.NAME_MAP_PREFIX.get(dataset, dataset.lower())}_w2v_class_names.csv"
    maps = [preferred] if preferred.is_file() else sorted(src.glob("*_w2v_class_names.csv"))
    if len(maps) != 1:
        raise FileNotFoundError(f"{src}: expected one *_w2v_class_names.csv name map, found {len(maps)}")
    table = build_class_table(
        read_class_list(src / "all_class.txt"),
        read_name_map(maps[0]),
        str(src / "all_class.txt"),
        str(maps[0]),
    )
    index, dup = _index_videos(Path(videos).expanduser())
    jobs, problems = [], []
    for s in FEATURE_SUBSPLITS:
        path = src / split / f"{s}.csv"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: video list of sub-split {s} not found (every feature sub-split of "
                f"{split} needs its .csv: {', '.join(FEATURE_SUBSPLITS)})"
            )
        fields, rows = _read_rows(path)
        id_col = _column(fields, _ID_COLUMNS, path, "video id")
        cls_col = _column(fields, _CLASS_COLUMNS, path, "class")
        for r in rows:
            vid, name = r[id_col], r[cls_col]
            cid = table.find(name)
            if cid is None:
                raise ValueError(
                    f"{path}: video {vid!r} has class {name!r}, which is not in {src / 'all_class.txt'}"
                )
            jobs.append(_job(vid, index, dup, table.names[cid], s, problems, str(videos)))
    _copy_class_split(src, layout.class_split_dir(Path(out_root)))
    return VideoList(jobs, table, problems)


def _job(
    vid: str, index: dict[str, Path], dup: set[str], cls: str, subsplit: str, problems: list[dict], where: str
) -> VideoJob:
    stem = Path(vid).stem if Path(vid).suffix.lower() in VIDEO_SUFFIXES else vid
    path = index.get(stem)
    if path is None:
        problems.append(
            {
                "id": vid,
                "class": cls,
                "subsplit": subsplit,
                "reason": f"no video file named {stem}.* below {where}",
            }
        )
    elif stem in dup:
        problems.append(
            {
                "id": vid,
                "class": cls,
                "subsplit": subsplit,
                "reason": f"several video files named {stem}.* below {where}",
            }
        )
        path = None
    return VideoJob(vid, path, cls, subsplit)


def from_csv(
    videos_csv: str | Path,
    out_root: str | Path,
    dataset: str,
    split: str = "main_split",
    videos: str | Path | None = None,
    name_map: str | Path | None = None,
) -> VideoList:
    """Jobs from a csv of video,class,subsplit[,id] (see the module docstring); writes
    out_root/class-split."""
    path = Path(videos_csv).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"video list not found: {path}")
    fields, rows = _read_rows(path)
    video_col = _column(fields, ("video", "path", "file"), path, "video path")
    cls_col = _column(fields, ("class", "label", "class_name"), path, "class")
    sub_col = _column(fields, ("subsplit", "split"), path, "sub-split")
    id_col = next((f for f in fields if f.lower() == "id"), None)
    base = Path(videos).expanduser() if videos else path.parent
    by_fold: dict[str, str] = {}
    for r in rows:
        by_fold.setdefault(r[cls_col].strip().casefold(), r[cls_col].strip())
    classes = sorted(by_fold.values())
    if name_map is not None:
        pairs = read_name_map(name_map)
    else:
        pairs = [(c, c) for c in classes]
    table = build_class_table(classes, pairs, str(path), str(name_map or path))
    jobs, problems = [], []
    per_sub: dict[str, set[str]] = {s: set() for s in FEATURE_SUBSPLITS}
    listed: dict[str, list[tuple[str, str]]] = {s: [] for s in FEATURE_SUBSPLITS}
    for line, r in enumerate(rows, start=2):
        sub = r[sub_col]
        if sub not in FEATURE_SUBSPLITS:
            extra = " (its videos are the three stage-1 sub-splits')" if sub == "stage_2_train" else ""
            raise ValueError(
                f"{path}, line {line}: sub-split {sub!r} is not one of {', '.join(FEATURE_SUBSPLITS)}{extra}"
            )
        cls = table.names[table.index(r[cls_col])]
        vpath = Path(r[video_col]).expanduser()
        vpath = vpath if vpath.is_absolute() else base / vpath
        vid = r[id_col] if id_col and r[id_col] else vpath.stem
        if not vpath.is_file():
            problems.append(
                {"id": vid, "class": cls, "subsplit": sub, "reason": f"video file not found: {vpath}"}
            )
            vpath = None
        jobs.append(VideoJob(vid, vpath, cls, sub))
        per_sub[sub].add(cls)
        listed[sub].append((vid, cls))
    empty = [s for s in FEATURE_SUBSPLITS if not per_sub[s]]
    if empty:
        raise ValueError(
            f"{path}: no video in sub-split(s) {', '.join(empty)}; the protocol needs all of "
            f"{', '.join(FEATURE_SUBSPLITS)}"
        )
    order = {n: i for i, n in enumerate(table.names)}
    lists = {s: sorted(per_sub[s], key=order.get) for s in FEATURE_SUBSPLITS}
    lists["stage_2_train"] = sorted(set().union(*(per_sub[s] for s in STAGE2_PARTS)), key=order.get)
    out = Path(out_root)
    prefix = layout.NAME_MAP_PREFIX.get(dataset, dataset.lower())
    manual = dict(zip(table.names, table.manual))
    write_class_split(
        layout.class_split_dir(out),
        table.names,
        [(n, manual[n]) for n in table.names],
        {split: lists},
        f"{prefix}_w2v_class_names.csv",
    )
    for s in FEATURE_SUBSPLITS:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["filename", "label"])
        writer.writerows(listed[s])
        atomic_write_bytes(layout.class_split_dir(out) / split / f"{s}.csv", buf.getvalue().encode("utf-8"))
    return VideoList(jobs, table, problems)

"""`avgzsl extract`: videos + a class split -> a benchmark in the toolkit's layout (protocol.md section 2).

    <out>/class-split/...                                        copied from, or written for, the class split
    <out>/features/<set>_features/{audio,video}/<subsplit>/<Class>.h5              averaged (HDF5)
    <out>/features/<set>_features_non_averaged/{audio,video}/<subsplit>/<Class>.h5 per second (pickles)
    <out>/features/<set>_features[_non_averaged]/extract_manifest.json   backbones, checkpoints, sampling,
    dims
    <out>/features/<set>_features/extract_report.json                     every video left out or zero-
    filled, why
    <out>/.avgzsl-extract/<set>/                                          per-video results (resuming)

How it runs, and how a killed run resumes:
1. The unique videos of the split, in listing order, are cut into fixed chunks of `batch_videos`.
2. Decoding (PyAV) and preprocessing (the checkpoints' own image processor and audio feature extractor) run in
   `workers` threads, a chunk or two ahead of inference; inference runs on the chunk's frames (and audio
   clips) in batches of `batch_size` on the chosen device.
3. Each video's embeddings (raw, before averaging) are written as one file per video, atomically
   (temporary file + rename), in `.avgzsl-extract/<set>/videos/`. A chunk is skipped on a rerun when all its
   videos have their file; otherwise the whole chunk is computed again, so that every video is always
   embedded in the same batch as in an uninterrupted run: resumed class files are byte-identical to those
   of an uninterrupted run (batch composition changes float results in the last bits).
4. The class files are assembled from the per-video files at the end (rewritten whole on every run):
   averaged = the middle frame's / the centred clip's embedding (or the mean over seconds, re-normalised),
   temporal = one row per second. The settings that change per-video results (checkpoints' hashes,
   sampling, clip length, temporal on/off) are stored beside the per-video files; resuming with other
   settings is refused (`restart` discards them).

A video that cannot be found or decoded, or that lacks an audio (or video) stream, is listed in the report
with the reason; with `missing_stream="zero"` a video with one usable stream keeps it and gets zeros for the
other, otherwise it is left out. A video with no usable stream is always left out.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from tqdm import tqdm

from avgzsl.data import layout
from avgzsl.data.classes import read_split
from avgzsl.data.loading import FEATURE_SUBSPLITS
from avgzsl.data.writers import atomic_write_bytes, write_averaged_class_file, write_temporal_class_file
from avgzsl.extract import videolist
from avgzsl.extract.encoders import DEFAULT_CLAP, DEFAULT_CLIP, ClapEncoder, ClipEncoder
from avgzsl.extract.media import audio_windows, centred_clip, decode_video

log = logging.getLogger(__name__)

__all__ = ["ExtractOptions", "average_features", "extract", "extract_videos"]

RECORD_FORMAT = 1
WORK_DIR = ".avgzsl-extract"
MANIFEST = "extract_manifest.json"
REPORT = "extract_report.json"


@dataclass
class ExtractOptions:
    """Options of `avgzsl extract` (defaults: ClipClap's features, plus per-second files)."""

    feature_set: str = "clip"  # folder features/<set>_features
    clip_model: str = DEFAULT_CLIP  # hub name or local folder (save_pretrained) of a CLIP checkpoint
    clap_model: str = DEFAULT_CLAP  # hub name or local folder of a CLAP checkpoint
    local_files_only: bool = False  # never download: the models must be local folders or already cached
    device: str = "auto"  # auto = cuda when available, else cpu
    batch_size: int = 64  # frames / audio clips per forward pass
    batch_videos: int = 8  # videos per inference chunk (fixed: resumed runs give identical files)
    workers: int = 2  # decoding threads (0 = decode in the main thread)
    temporal: bool = True  # also the per-second files (one frame and one 1 s audio window per second)
    video_average: Literal["middle", "mean"] = "middle"  # ClipClap: the middle frame
    audio_average: Literal["clip", "mean"] = "clip"  # ClipClap: the centred 10 s clip
    clip_seconds: float = 10.0  # ClipClap's audio clip length (capped at the audio extractor's maximum)
    missing_stream: Literal["skip", "zero"] = "skip"  # a video lacking one stream: leave it out, or zeros
    retry_failed: bool = False  # decode again the videos that failed in an earlier run
    restart: bool = False  # discard the per-video results of an earlier run
    progress: bool = True

    def check(self) -> None:
        layout.check_feature_set(self.feature_set)
        if self.video_average not in ("middle", "mean"):
            raise ValueError(f"video_average must be middle or mean, got {self.video_average!r}")
        if self.audio_average not in ("clip", "mean"):
            raise ValueError(f"audio_average must be clip or mean, got {self.audio_average!r}")
        if self.missing_stream not in ("skip", "zero"):
            raise ValueError(f"missing_stream must be skip or zero, got {self.missing_stream!r}")
        if not self.temporal and "mean" in (self.video_average, self.audio_average):
            raise ValueError(
                "--video-average/--audio-average mean averages the per-second features: drop --no-temporal"
            )
        for key in ("batch_size", "batch_videos"):
            if getattr(self, key) < 1:
                raise ValueError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(self, key)}")
        if self.workers < 0:
            raise ValueError(f"--workers must be 0 or more, got {self.workers}")
        if not self.clip_seconds > 0:
            raise ValueError(f"--clip-seconds must be > 0, got {self.clip_seconds}")


@dataclass
class _Prepared:
    """One video after decoding and preprocessing (in a worker thread)."""

    job: videolist.VideoJob
    pixels: np.ndarray | None  # [n_images, 3, h, w]
    mels: np.ndarray | None  # [n_clips, C, frames, mels]
    steps: int
    meta: dict = field(default_factory=dict)


def clip_samples(opts: ExtractOptions, clap: ClapEncoder) -> int:
    """Samples of the averaged audio clip: clip_seconds, at most what the extractor takes whole (it crops
    longer input at random)."""
    return min(int(round(opts.clip_seconds * clap.sample_rate)), clap.max_samples)


def _normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def average_features(rows: np.ndarray, steps: int, mode: str) -> np.ndarray:
    """The averaged feature of one video from its embedding rows (per-second rows first, then the middle
    frame / centred clip): that last row ("middle", "clip"), or the mean of the per-second rows,
    re-normalised ("mean")."""
    if mode in ("middle", "clip"):
        return rows[-1]
    return _normalize(rows[:steps].mean(0))


class _Extractor:
    """Decoding, preprocessing and inference of chunks of videos, writing one record per video."""

    def __init__(self, opts: ExtractOptions, clip: ClipEncoder, clap: ClapEncoder, records: Path):
        self.opts, self.clip, self.clap, self.records = opts, clip, clap, records
        self.sample_rate = clap.sample_rate
        self.clip_samples = clip_samples(opts, clap)

    # --- records ------------------------------------------------------------------------------------------
    def record_path(self, job: videolist.VideoJob) -> Path:
        return self.records / f"{hashlib.sha1(job.id.encode('utf-8')).hexdigest()[:24]}.npz"

    @staticmethod
    def source(job: videolist.VideoJob) -> dict:
        st = job.path.stat()
        return {"path": str(job.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def valid(self, job: videolist.VideoJob) -> bool:
        """Whether the video's record exists, is readable, comes from the same file and (with retry_failed)
        did not fail."""
        path = self.record_path(job)
        if not path.is_file():
            return False
        try:
            meta = read_record(path, arrays=False)[0]
            ok = meta.get("id") == job.id and meta.get("source") == self.source(job)
        except Exception:  # a torn or foreign file: compute it again
            return False
        return ok and not (self.opts.retry_failed and meta.get("errors"))

    # --- per video (worker threads) -------------------------------------------------------------------
    def prepare(self, job: videolist.VideoJob) -> _Prepared:
        """Decode and preprocess one video; every problem becomes a reason in meta['errors'] (never
        raises)."""
        meta: dict = {"id": job.id, "errors": {}, "warnings": []}
        try:
            meta["source"] = self.source(job)
            dec = decode_video(job.path, self.sample_rate, temporal=self.opts.temporal, middle=True)
        except Exception as exc:  # anything else that goes wrong with this file
            reason = f"{type(exc).__name__}: {exc}"
            meta["errors"] = {"video": reason, "audio": reason}
            return _Prepared(job, None, None, 0, meta)
        meta.update(
            errors=dict(dec.errors),
            warnings=list(dec.warnings),
            duration=round(dec.duration, 3),
            steps=dec.steps,
            fps=round(dec.fps, 3),
        )
        pixels = mels = None
        if dec.frames is not None:
            try:
                pixels = self.clip.preprocess(dec.frames)
            except Exception as exc:
                meta["errors"]["video"] = f"image preprocessing failed: {type(exc).__name__}: {exc}"
        if dec.audio is not None:
            try:
                waves = (
                    list(audio_windows(dec.audio, self.sample_rate, dec.steps)) if self.opts.temporal else []
                )
                waves.append(centred_clip(dec.audio, self.clip_samples))
                mels = self.clap.preprocess(waves)
            except Exception as exc:
                meta["errors"]["audio"] = f"audio preprocessing failed: {type(exc).__name__}: {exc}"
        return _Prepared(job, pixels, mels, dec.steps, meta)

    # --- per chunk (main thread) ----------------------------------------------------------------------
    def embed_chunk(self, prepared: list[_Prepared]) -> None:
        """Run the encoders on the chunk's frames and clips (batched across its videos); write each video's
        record."""
        outs = {}
        for name, enc, attr in (
            ("video", self.clip.encode_images, "pixels"),
            ("audio", self.clap.encode_audio, "mels"),
        ):
            parts = [getattr(p, attr) for p in prepared if getattr(p, attr) is not None]
            if not parts:
                outs[name] = iter(())
                continue
            emb = enc(np.concatenate(parts))
            bounds = np.cumsum([0] + [len(x) for x in parts])
            outs[name] = iter([emb[a:b] for a, b in zip(bounds[:-1], bounds[1:])])
        for p in prepared:
            arrays = {
                "video": next(outs["video"]) if p.pixels is not None else None,
                "audio": next(outs["audio"]) if p.mels is not None else None,
            }
            write_record(self.record_path(p.job), p.meta, arrays)


def write_record(path: Path, meta: dict, arrays: dict[str, np.ndarray | None]) -> None:
    """One video's result: an .npz of its embedding rows and a JSON 'meta', written atomically."""
    buf = io.BytesIO()
    payload = {k: np.asarray(v, np.float32) for k, v in arrays.items() if v is not None}
    np.savez(buf, meta=np.array(json.dumps(meta, sort_keys=True)), format=np.array(RECORD_FORMAT), **payload)
    atomic_write_bytes(path, buf.getvalue())


def read_record(path: Path, arrays: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, {'video': rows, 'audio': rows}) of a per-video result; arrays=False reads the meta only."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        out = {k: z[k] for k in ("video", "audio") if k in z.files} if arrays else {}
    return meta, out


def _chunks_in_order(chunks: list[list], prepare: Callable, workers: int, ahead: int = 2):
    """(chunk, [prepare(job) for job in chunk]) in order, with up to `ahead` chunks prepared in worker
    threads."""
    if workers == 0:
        for chunk in chunks:
            yield chunk, [prepare(j) for j in chunk]
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="avgzsl-decode") as pool:
        pending: deque = deque()
        it = iter(chunks)
        for chunk in it:
            pending.append((chunk, [pool.submit(prepare, j) for j in chunk]))
            if len(pending) > ahead:
                break
        while pending:
            chunk, futures = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, [pool.submit(prepare, j) for j in nxt]))
            try:
                yield chunk, [f.result() for f in futures]
            except GeneratorExit:  # the consumer stopped: drop the chunks not started
                for _, fs in pending:
                    for f in fs:
                        f.cancel()
                raise


def _settings(opts: ExtractOptions, clip: ClipEncoder, clap: ClapEncoder) -> dict:
    """What the per-video results depend on: resuming with anything else is refused."""
    vis, aud = clip.describe(), clap.describe()
    return {
        "format": RECORD_FORMAT,
        "visual": vis.get("sha256") or vis["name"],
        "visual_preprocessing": vis.get("image_processor"),
        "audio": aud.get("sha256") or aud["name"],
        "audio_preprocessing": aud.get("feature_extractor"),
        "sample_rate": clap.sample_rate,
        "clip_samples": clip_samples(opts, clap),
        "step_seconds": 1.0,
        "temporal": opts.temporal,
    }


def _prepare_work_dir(work: Path, settings: dict, restart: bool) -> Path:
    records = work / "videos"
    path = work / "settings.json"
    if restart and work.exists():
        shutil.rmtree(work)
    n = len(list(records.glob("*.npz"))) if records.is_dir() else 0
    if path.is_file() and n:
        old = json.loads(path.read_text())
        differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if differ:
            raise ValueError(
                f"{work} holds {n} per-video results of an extraction with other settings "
                f"({', '.join(differ)} differ): rerun with the same models and options, or add "
                f"--restart to discard them"
            )
    else:  # a new extraction (or one that wrote no result yet)
        atomic_write_bytes(path, json.dumps(settings, indent=2, sort_keys=True).encode())
    records.mkdir(parents=True, exist_ok=True)
    return records


def _assemble(out: Path, vl: videolist.VideoList, ex: _Extractor, opts: ExtractOptions, split: str) -> dict:
    """Write every class file from the per-video records; returns the report's per-video and per-class
    lists."""
    skipped, zero_filled, warnings, written = [], [], [], []
    missing_files = {(p["id"], p["subsplit"]): p for p in vl.problems}
    dims: dict[str, int] = {"video": ex.clip.dim, "audio": ex.clap.dim}
    groups: dict[tuple[str, str], list[videolist.VideoJob]] = {}
    for j in vl.jobs:
        groups.setdefault((j.subsplit, j.cls), []).append(j)
    order = {s: i for i, s in enumerate(FEATURE_SUBSPLITS)}
    for sub, cls in sorted(groups, key=lambda k: (order[k[0]], k[1])):
        ids, avg, seq = [], {"video": [], "audio": []}, {"video": [], "audio": []}
        for j in groups[(sub, cls)]:
            where = {"id": j.id, "class": cls, "subsplit": sub}
            if j.path is None:
                skipped.append(
                    {**where, "reason": missing_files.get((j.id, sub), {}).get("reason", "no video file")}
                )
                continue
            meta, arrays = read_record(ex.record_path(j))
            warnings += [{**where, "warning": w} for w in meta.get("warnings", [])]
            errors = meta.get("errors", {})
            usable = [m for m in ("video", "audio") if m in arrays and m not in errors]
            if not usable or (len(usable) < 2 and opts.missing_stream == "skip"):
                skipped.append({**where, "reason": "; ".join(f"{m}: {r}" for m, r in sorted(errors.items()))})
                continue
            steps = int(meta["steps"])
            for m in ("video", "audio"):
                if m in usable:
                    rows = arrays[m]
                    mode = opts.video_average if m == "video" else opts.audio_average
                    avg[m].append(average_features(rows, steps, mode))
                    seq[m].append(rows[:steps])
                else:
                    zero_filled.append({**where, "stream": m, "reason": errors.get(m, "missing")})
                    avg[m].append(np.zeros(dims[m], np.float32))
                    seq[m].append(np.zeros((steps, dims[m]), np.float32))
            ids.append(j.id)
        if not ids:
            continue
        for m in ("video", "audio"):
            write_averaged_class_file(
                layout.class_feature_file(out, opts.feature_set, False, m, sub, cls), np.stack(avg[m]), ids
            )
            if opts.temporal:
                write_temporal_class_file(
                    layout.class_feature_file(out, opts.feature_set, True, m, sub, cls), seq[m], ids
                )
        written.append((sub, cls, len(ids)))
    done = {(s, c) for s, c, _ in written}
    empty = []
    try:
        listed = read_split(out, split, vl.table, FEATURE_SUBSPLITS)
    except ValueError:
        listed = {s: sorted({c for (ss, c) in groups if ss == s}) for s in FEATURE_SUBSPLITS}
    for s in FEATURE_SUBSPLITS:
        for c in listed[s]:
            if (s, c) not in done:
                empty.append(
                    {
                        "subsplit": s,
                        "class": c,
                        "reason": "no video of this class could be extracted"
                        if (s, c) in groups
                        else "the split's csv lists no video of this class",
                    }
                )
    return {
        "skipped": skipped,
        "zero_filled": zero_filled,
        "warnings": warnings,
        "class_files": written,
        "empty_classes": empty,
    }


def extract_videos(
    vl: videolist.VideoList,
    out: str | Path,
    opts: ExtractOptions,
    *,
    dataset: str,
    split: str = "main_split",
    encoders: tuple[ClipEncoder, ClapEncoder] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Extract the videos of `vl` into the benchmark folder `out` (see the module docstring); returns the
    report.

    on_progress(done, total) is called after each chunk's per-video results are written.
    """
    opts.check()
    t0 = time.perf_counter()
    out = Path(out)
    clip, clap = encoders or (
        ClipEncoder(
            opts.clip_model,
            local_files_only=opts.local_files_only,
            device=opts.device,
            batch_size=opts.batch_size,
        ),
        ClapEncoder(
            opts.clap_model,
            local_files_only=opts.local_files_only,
            device=opts.device,
            batch_size=opts.batch_size,
        ),
    )
    records = _prepare_work_dir(out / WORK_DIR / opts.feature_set, _settings(opts, clip, clap), opts.restart)
    ex = _Extractor(opts, clip, clap, records)
    jobs = [j for j in vl.unique() if j.path is not None]
    chunks = [jobs[i : i + opts.batch_videos] for i in range(0, len(jobs), opts.batch_videos)]
    valid = {j.id for j in jobs if ex.valid(j)}
    todo = [c for c in chunks if any(j.id not in valid for j in c)]
    n_cached = sum(len(c) for c in chunks) - sum(len(c) for c in todo)
    computed = 0
    t_embed = time.perf_counter()
    bar = tqdm(
        total=len(jobs),
        initial=n_cached,
        unit="video",
        desc=f"extract {opts.feature_set}",
        disable=not opts.progress,
    )
    done = n_cached
    prepared_chunks = _chunks_in_order(todo, ex.prepare, opts.workers)
    try:
        for chunk, prepared in prepared_chunks:
            ex.embed_chunk(prepared)
            computed += len(chunk)
            done += len(chunk)
            bar.update(len(chunk))
            if on_progress is not None:
                on_progress(done, len(jobs))
    finally:
        # an interruption stops the decoding threads now, not when the generator is collected
        prepared_chunks.close()
        bar.close()
    seconds_embed = time.perf_counter() - t_embed
    report = _assemble(out, vl, ex, opts, split)
    report_body = {
        "videos_listed": len(vl.unique()),
        "videos_in_benchmark": len({j.id for j in vl.jobs} - {s["id"] for s in report["skipped"]}),
        "skipped": report["skipped"],
        "zero_filled": report["zero_filled"],
        "warnings": report["warnings"],
        "empty_classes": report["empty_classes"],
        "missing_stream": opts.missing_stream,
    }
    fdir = layout.feature_dir(out, opts.feature_set, False)
    atomic_write_bytes(fdir / REPORT, json.dumps(report_body, indent=2).encode())
    manifest = _manifest(
        opts,
        clip,
        clap,
        ex,
        dataset,
        split,
        report,
        computed,
        n_cached,
        seconds_embed,
        time.perf_counter() - t0,
    )
    for temporal in (False, True) if opts.temporal else (False,):
        atomic_write_bytes(
            layout.feature_dir(out, opts.feature_set, temporal) / MANIFEST,
            json.dumps(manifest, indent=2).encode(),
        )
    report_body["report_file"] = str(fdir / REPORT)
    report_body["manifest"] = manifest
    return report_body


def _manifest(
    opts, clip, clap, ex, dataset, split, report, computed, cached, seconds_embed, seconds_total
) -> dict:
    import platform

    import torch

    from avgzsl import __version__

    versions = {
        "avgzsl": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    for mod in ("transformers", "av"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            pass
    counts: dict[str, dict[str, int]] = {}
    for sub, _cls, n in report["class_files"]:
        c = counts.setdefault(sub, {"classes": 0, "videos": 0})
        c["classes"] += 1
        c["videos"] += n
    return {
        "toolkit": "avgzsl extract",
        "versions": versions,
        "dataset": dataset,
        "split": split,
        "feature_set": opts.feature_set,
        "visual": {
            **clip.describe(),
            "frames": "one per second: the frame shown at k + 0.5 s, k = 0..T-1 "
            "(T = duration rounded to whole seconds, at least 1)",
            "averaged": {
                "middle": "the frame shown at half the duration (ClipClap: frame n_frames // 2)",
                "mean": "mean of the per-second embeddings, L2-normalised",
            }[opts.video_average],
            "normalised": True,
        },
        "audio": {
            **clap.describe(),
            "sample_rate": clap.sample_rate,
            "windows": "one per second: [k, k + 1) s, zero-padded past the end of the soundtrack, "
            "then padded by the extractor as configured",
            "clip_seconds": ex.clip_samples / clap.sample_rate,
            "averaged": {
                "clip": "the centred clip (ClipClap: centre crop or zero padding to 10 s)",
                "mean": "mean of the per-second embeddings, L2-normalised",
            }[opts.audio_average],
            "normalised": True,
        },
        "dims": {"video": clip.dim, "audio": clap.dim},
        "temporal": opts.temporal,
        "missing_stream": opts.missing_stream,
        "counts": counts,
        "skipped": len(report["skipped"]),
        "zero_filled": len(report["zero_filled"]),
        "device": str(clip.device),
        "options": {
            k: v for k, v in asdict(opts).items() if k not in ("progress", "restart", "retry_failed")
        },
        "run": {
            "videos_computed": computed,
            "videos_reused": cached,
            "seconds_inference": round(seconds_embed, 2),
            "seconds_total": round(seconds_total, 2),
            "videos_per_second": round(computed / seconds_embed, 3)
            if computed and seconds_embed > 0
            else None,
        },
    }


def extract(
    out: str | Path,
    *,
    class_split: str | Path | None = None,
    videos: str | Path | None = None,
    videos_csv: str | Path | None = None,
    name_map: str | Path | None = None,
    dataset: str | None = None,
    split: str = "main_split",
    options: ExtractOptions | None = None,
    encoders: tuple[ClipEncoder, ClapEncoder] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Videos + a class split -> a benchmark folder at `out` (see the module docstring). Returns the report.

    Give either `class_split` (a benchmark's class-split/ folder) with `videos` (the folder of video
    files), or
    `videos_csv` (video,class,subsplit[,id]; paths relative to its folder or to `videos`).
    """
    opts = options or ExtractOptions()
    opts.check()
    out = Path(out).expanduser()
    dataset = dataset or out.resolve().name
    if split not in layout.SPLITS:
        raise ValueError(f"--split must be one of {', '.join(layout.SPLITS)}, got {split!r}")
    if (class_split is None) == (videos_csv is None):
        raise ValueError("give either --class-split with --videos, or --videos-csv")
    if class_split is not None:
        if videos is None:
            raise ValueError("--class-split needs --videos: the folder holding the video files")
        vl = videolist.from_class_split(class_split, videos, out, dataset, split)
    else:
        vl = videolist.from_csv(videos_csv, out, dataset, split, videos=videos, name_map=name_map)
    return extract_videos(
        vl, out, opts, dataset=dataset, split=split, encoders=encoders, on_progress=on_progress
    )

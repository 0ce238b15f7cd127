"""Throughput of `avgzsl extract`: videos per second, seconds per video, peak memory; nothing is downloaded.

    python benchmarks/bench_extract.py --models tiny --videos 64 --json docs/bench_extract_tiny.json
    python benchmarks/bench_extract.py --models base --videos 8 --json docs/bench_extract_base.json
    python benchmarks/bench_extract.py --models base --videos 8 --no-temporal     (ClipClap's features only)

- videos: UCF-like files written here (H.264 320x240 at 25 fps, `--seconds` long, AAC 44.1 kHz stereo),
  `--videos` of them in one class split (every class in every sub-split).
- models: `tiny` = the test suite's random CLIP / CLAP (~50k parameters each); `base` = random models of the
  real sizes (ViT-B/32 CLIP, LAION CLAP HTSAT without fusion) with the default image processor and audio
  feature extractor: the real cost of the real architectures, not trained weights.
- timing: the extraction of every video through `avgzsl.extract.extract` (decoding in `--workers` threads,
  inference in batches), after the models are loaded; videos/s = videos / inference-loop seconds (the
  manifest's run.videos_per_second), plus the stages measured alone on one video (decode, preprocessing,
  image encoder, audio encoder).
- cpu seconds per video: the process's CPU time (all threads) during extraction / videos; on shared, busy
  cores it is steadier than wall time (the JSON records the load average).
- peak memory: the process's maximum resident set size (models included).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from avgzsl.data.loading import FEATURE_SUBSPLITS
from avgzsl.extract import ExtractOptions, extract
from avgzsl.extract.encoders import ClapEncoder, ClipEncoder
from avgzsl.extract.media import audio_windows, centred_clip, decode_video
from avgzsl.extract.testing import make_video, save_base_clap, save_base_clip, save_tiny_clap, save_tiny_clip


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its threads: robust to other processes on the cores."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", choices=["tiny", "base"], default="tiny")
    p.add_argument("--videos", type=int, default=64)
    p.add_argument("--seconds", type=float, default=7.0, help="video length (UCF's mean is about 7 s)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batch-videos", type=int, default=8)
    p.add_argument("--no-temporal", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3, help="repeats of the one-video stage timings")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    t = time.perf_counter()
    save_clip, save_clap = (
        (save_tiny_clip, save_tiny_clap) if args.models == "tiny" else (save_base_clip, save_base_clap)
    )
    save_clip(work / "clip")
    save_clap(work / "clap")
    rows = []
    for i in range(args.videos):
        sub = FEATURE_SUBSPLITS[i % len(FEATURE_SUBSPLITS)]
        path = make_video(
            work / "videos" / f"v{i:04d}.mp4",
            i % 4,
            seconds=args.seconds,
            fps=25,
            size=(320, 240),
            sample_rate=44100,
            codec="libx264",
            channels=2,
        )
        rows.append(f"{path},C{i % 4},{sub}")
    (work / "list.csv").write_text("video,class,subsplit\n" + "\n".join(rows) + "\n")
    setup = time.perf_counter() - t
    clip = ClipEncoder(
        str(work / "clip"), local_files_only=True, device=args.device, batch_size=args.batch_size
    )
    clap = ClapEncoder(
        str(work / "clap"), local_files_only=True, device=args.device, batch_size=args.batch_size
    )
    opts = ExtractOptions(
        workers=args.workers,
        batch_size=args.batch_size,
        batch_videos=args.batch_videos,
        temporal=not args.no_temporal,
        progress=False,
        device=args.device,
    )
    t, cpu0 = time.perf_counter(), _cpu_seconds()
    report = extract(
        work / "out" / "Bench", videos_csv=work / "list.csv", options=opts, encoders=(clip, clap)
    )
    wall, cpu = time.perf_counter() - t, _cpu_seconds() - cpu0
    run = report["manifest"]["run"]

    # the stages alone, on one video
    one = work / "videos" / "v0000.mp4"
    dec = decode_video(one, clap.sample_rate, temporal=opts.temporal)
    waves = (list(audio_windows(dec.audio, clap.sample_rate, dec.steps)) if opts.temporal else []) + [
        centred_clip(dec.audio, min(10 * clap.sample_rate, clap.max_samples))
    ]
    px, mel = clip.preprocess(dec.frames), clap.preprocess(waves)
    stages = {
        "decode": _median_time(
            lambda: decode_video(one, clap.sample_rate, temporal=opts.temporal), args.repeats
        ),
        "image_preprocess": _median_time(lambda: clip.preprocess(dec.frames), args.repeats),
        "audio_preprocess": _median_time(lambda: clap.preprocess(waves), args.repeats),
        "image_encoder": _median_time(lambda: clip.encode_images(px), args.repeats),
        "audio_encoder": _median_time(lambda: clap.encode_audio(mel), args.repeats),
    }
    result = {
        "command": "python benchmarks/bench_extract.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "models": args.models,
        "params": {
            "clip": sum(x.numel() for x in clip.model.parameters()),
            "clap": sum(x.numel() for x in clap.model.parameters()),
        },
        "videos": args.videos,
        "video_seconds": args.seconds,
        "temporal": opts.temporal,
        "images_per_video": int(len(px)),
        "audio_clips_per_video": int(len(mel)),
        "threads": args.threads,
        "workers": args.workers,
        "device": args.device,
        "cpu": platform.processor() or platform.machine(),
        "setup_seconds": round(setup, 1),
        "extract_wall_seconds": round(wall, 2),
        "videos_per_second": run["videos_per_second"],
        "seconds_per_video": round(run["seconds_inference"] / max(run["videos_computed"], 1), 3),
        "cpu_seconds_per_video": round(cpu / max(run["videos_computed"], 1), 3),
        "one_video_stage_seconds": {k: round(v, 4) for k, v in stages.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average": [round(x, 2) for x in __import__("os").getloadavg()],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Decode one video file into what the encoders need: RGB frames at chosen times and a mono soundtrack.

This module owns the decoding (PyAV, one pass over the container's packets) and the time grid of the
per-second features:

- T, the number of time steps of a video, is its duration rounded to whole seconds (at least 1): a last
  second that is at least half there counts.
- Visual step k is the frame shown at time k + 0.5 s (the last frame whose timestamp is <= that time),
  i.e. the middle of second k; ClipClap's averaged feature is the frame shown at half the duration,
  which for a constant frame rate is frame index n_frames // 2, as ClipClap picks it.
- The soundtrack is decoded to mono float32 at the audio encoder's rate (libswresample). Audio step k is
  the window [k, k + 1) s, zero-padded where the soundtrack is shorter; the averaged clip is the
  centred `clip_seconds` of the soundtrack, zero-padded at the end when shorter (ClipClap's
  read_prepare_audio).

Decoding never raises for a bad file: every problem becomes a reason string in `Decoded.errors`
(a stream that is absent or could not be decoded) or `Decoded.warnings` (a stream that broke off after
part of it decoded), so that one bad video never stops hours of extraction.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Decoded", "audio_windows", "centred_clip", "decode_video", "num_steps", "require_av"]


def require_av():
    """The `av` module, or an ImportError that says how to install it."""
    try:
        import av
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("video decoding needs PyAV: pip install 'avgzsl[extract]'") from exc
    return av


def num_steps(duration: float) -> int:
    """Time steps of a video of `duration` seconds: whole seconds, rounded half up, at least 1."""
    return max(1, int(math.floor(duration + 0.5)))


@dataclass
class Decoded:
    """What one video file gave.

    frames: [T (+1), H, W, 3] uint8: the frame of each step, then (with `middle`) the middle frame;
        None when the video stream is missing or undecodable.
    audio: float32 [N] mono samples at `sample_rate`; None when the audio stream is missing or undecodable.
    duration: seconds (of the video stream; of the soundtrack when there is no video stream).
    steps: T.
    errors: {'video' | 'audio': reason} for each stream that could not be used.
    warnings: non-fatal problems (a stream that broke off midway).
    """

    frames: np.ndarray | None
    audio: np.ndarray | None
    sample_rate: int
    duration: float
    steps: int
    fps: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _FramePicker:
    """Picks, while frames stream by in presentation order, the frame shown at each target time.

    The frame shown at time t is the last one whose timestamp is <= t (the first frame for t before it).
    Only the previous frame is held; a frame is converted to RGB at most once.
    """

    def __init__(self, targets: list[float]):
        self.order = sorted(range(len(targets)), key=lambda i: targets[i])
        self.targets = targets
        self.out: list[np.ndarray | None] = [None] * len(targets)
        self.next = 0  # position in self.order of the first unassigned target
        self.prev = None  # (frame, time) of the latest frame seen
        self._converted: tuple[object, np.ndarray] | None = None  # (frame, its RGB array); holds the frame

    @property
    def done(self) -> bool:
        return self.next >= len(self.order)

    def _rgb(self, frame) -> np.ndarray:
        if self._converted is None or self._converted[0] is not frame:
            self._converted = (frame, frame.to_ndarray(format="rgb24"))
        return self._converted[1]

    def push(self, frame, t: float) -> None:
        while not self.done and t > self.targets[self.order[self.next]]:
            shown = self.prev[0] if self.prev is not None else frame
            self.out[self.order[self.next]] = self._rgb(shown)
            self.next += 1
        self.prev = (frame, t)

    def finish(self) -> list[np.ndarray] | None:
        """Targets after the last frame get the last frame; None if no frame was seen."""
        if self.prev is None:
            return None
        while not self.done:
            self.out[self.order[self.next]] = self._rgb(self.prev[0])
            self.next += 1
        return self.out  # type: ignore[return-value]


def _stream_duration(stream, container) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000.0  # AV_TIME_BASE
    if stream.frames and stream.average_rate:
        return float(stream.frames / stream.average_rate)
    return None


def decode_video(
    path: str | os.PathLike,
    sample_rate: int,
    *,
    temporal: bool = True,
    middle: bool = True,
    step_seconds: float = 1.0,
    audio: bool = True,
) -> Decoded:
    """Decode `path`: the frame of each per-second step (when `temporal`), the middle frame (when `middle`)
    and the soundtrack resampled to mono `sample_rate` (when `audio`). Never raises for a bad file."""
    av = require_av()
    errors: dict[str, str] = {}
    warnings: list[str] = []
    try:
        container = av.open(str(path))
    except Exception as exc:  # unreadable, not a media file, missing: the whole video is unusable
        reason = f"cannot open: {_reason(exc)}"
        return Decoded(None, None, sample_rate, 0.0, 0, errors={"video": reason, "audio": reason})
    with container:
        vs = container.streams.video[0] if container.streams.video else None
        as_ = container.streams.audio[0] if (container.streams.audio and audio) else None
        if vs is None:
            errors["video"] = "no video stream"
        if audio and not container.streams.audio:
            errors["audio"] = "no audio stream"
        duration = _stream_duration(vs, container) if vs is not None else None
        fps = float(vs.average_rate) if (vs is not None and vs.average_rate) else 0.0
        picker = None
        if vs is not None and duration is not None:
            vs.thread_type = "AUTO"
            steps = num_steps(duration)
            targets = [(k + 0.5) * step_seconds for k in range(steps)] if temporal else []
            if middle:
                targets.append(duration / 2.0)
            picker = _FramePicker(targets)
        elif vs is not None:
            errors["video"] = "video stream has no duration"
        resampler = (
            av.AudioResampler(format="flt", layout="mono", rate=sample_rate) if as_ is not None else None
        )
        chunks: list[np.ndarray] = []
        t0 = None
        n_frames = 0
        video_on = picker is not None  # still decoding video packets
        audio_on = resampler is not None
        wanted = [s for s, on in ((vs, video_on), (as_, audio_on)) if on]
        try:
            for packet in container.demux(*wanted) if wanted else ():
                if packet.stream is vs and video_on:
                    try:
                        for frame in packet.decode():
                            t = frame.time if frame.time is not None else n_frames / (fps or 25.0)
                            t0 = t if t0 is None else t0
                            picker.push(frame, t - t0)
                            n_frames += 1
                    except Exception as exc:
                        video_on = False
                        if n_frames:
                            warnings.append(f"video decoding stopped after {n_frames} frames: {_reason(exc)}")
                        else:
                            errors["video"] = f"video stream could not be decoded: {_reason(exc)}"
                    if picker.done:
                        video_on = False  # every target has its frame: the rest of the video is not needed
                elif packet.stream is as_ and audio_on:
                    try:
                        for frame in packet.decode():
                            for out in resampler.resample(frame):
                                chunks.append(out.to_ndarray().reshape(-1))
                    except Exception as exc:
                        audio_on = False
                        if chunks:
                            warnings.append(
                                f"audio decoding stopped after {sum(map(len, chunks)) / sample_rate:.1f} s: "
                                f"{_reason(exc)}"
                            )
                        else:
                            errors["audio"] = f"audio stream could not be decoded: {_reason(exc)}"
                if not video_on and not audio_on:
                    break
        except Exception as exc:  # the demuxer itself failed (truncated or corrupt container)
            msg = _reason(exc)
            if picker is not None and not n_frames and "video" not in errors:
                errors["video"] = f"cannot read the container: {msg}"
            if resampler is not None and not chunks and "audio" not in errors:
                errors["audio"] = f"cannot read the container: {msg}"
            if n_frames or chunks:
                warnings.append(f"reading stopped early: {msg}")
        if resampler is not None and "audio" not in errors:
            try:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().reshape(-1))
            except Exception as exc:  # flushing is best effort
                warnings.append(f"audio resampler flush failed: {_reason(exc)}")
    frames = None
    if picker is not None and "video" not in errors:
        picked = picker.finish()
        if picked is None:
            errors["video"] = "video stream has no decodable frame"
        else:
            frames = np.stack(picked)
    wav = None
    if audio and "audio" not in errors:
        wav = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
        if wav.size == 0:
            errors["audio"] = "audio stream has no samples"
            wav = None
    if duration is None or frames is None:
        duration = (wav.size / sample_rate) if wav is not None else 0.0
        if frames is None and wav is None:
            return Decoded(None, None, sample_rate, duration, 0, fps, errors, warnings)
    return Decoded(frames, wav, sample_rate, float(duration), num_steps(duration), fps, errors, warnings)


def audio_windows(wav: np.ndarray, sample_rate: int, steps: int, step_seconds: float = 1.0) -> np.ndarray:
    """[steps, W]: the windows [k, k + 1) * step_seconds of `wav`, zero-padded past its end (W: the samples
    of one step)."""
    width = int(round(step_seconds * sample_rate))
    total = steps * width
    padded = np.zeros(total, np.float32)
    n = min(total, wav.size)
    padded[:n] = wav[:n]
    return padded.reshape(steps, width)


def centred_clip(wav: np.ndarray, length: int) -> np.ndarray:
    """ClipClap's audio clip: the centred `length` samples of `wav`, or `wav` zero-padded at its end to
    `length` samples."""
    if wav.size >= length:
        start = wav.size // 2 - length // 2
        return wav[start : start + length].astype(np.float32, copy=True)
    out = np.zeros(length, np.float32)
    out[: wav.size] = wav
    return out

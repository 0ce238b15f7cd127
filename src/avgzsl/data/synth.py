"""Synthetic AV-GZSL benchmarks in the real on-disk layout (protocol.md section 2).

`generate_benchmark` writes a dataset folder that the loader reads exactly like a real download:
class-split/ (copied from a real benchmark's folder, written from the packaged copy of a real
benchmark's metadata (`like="UCF"`, see avgzsl.data.packaged), or generated UCF-shaped), averaged HDF5 features
under features/<set>_features/, per-second pickles under features/<set>_features_non_averaged/, and
the text embeddings in every feature folder.

Generative model (every random draw comes from a numpy Generator keyed by (seed, what, class name,
sub-split), so the output is byte-identical for a seed):

1. Class semantics. s_c is the class's 300-d text embedding (real word2vec, or for generated
   benchmarks random unit vectors with word2vec-like structure: a shared mean direction plus a
   ~40-dimensional decaying spectrum). Text is centred on the benchmark's class mean, re-normalised.
2. Class latent per modality m: u_cm = sqrt(1-d) s_c + sqrt(d) r_cm, where d = `difficulty` and r_cm
   is a unit-variance class-specific random vector independent of the text (half shared by audio and
   video, half per modality). d is the fraction of a class's appearance that its text does not
   explain; the private part is what zero-shot transfer cannot recover.
3. Fixed per-modality "feature extractor" f_m(u) = W2 tanh(g W1 u + b1), a random 2-layer MLP shared by
   all classes (seen and unseen), standardised to unit RMS signal per dimension. So a map learned on
   seen classes transfers to unseen classes. The MLPs depend on the seed and feature set only. The gain
   g (`gain`, default 1.5) sets how far f_m is from linear: at the default a ridge map from features
   back to text already does well; a larger gain saturates the tanh, so the text-to-feature relation
   is strongly nonlinear (a sharper test of the closed-form linear reference against deep methods).
4. A video i of class c: latent jitter u_i = u_cm + tau_m e_i (nonlinear within-class variation), signal
   f_m(u_i); plus sample noise: isotropic (sigma_m) and low-rank "nuisance" directions (recording
   conditions, shared by all classes), and a fixed per-modality offset. Video is the more informative
   modality (smaller tau, sigma, nuisance: see VIDEO and AUDIO). Content discrepancy: with probability p_m (audio 12%,
   video 8%, independently) a stream's signal is replaced by another class's signal or removed
   (noise only).
5. Per-step sequences (1 s steps for `main`; 0.96 s audio / 0.64 s video for `cls`, so lengths
   differ): x_t = offset + a_t signal_i + noise_i + drift_t + step noise. a_t = 1 inside an event
   window covering 40-100% of the video and 0.3 outside it; drift_t is a smooth low-frequency
   per-video trajectory. The averaged feature of a video is the mean of its steps (float32 mean of
   the float32 steps), as in the real data. `cls` audio is quantised to 0..255 like VGGish output
   (the loader divides temporal cls audio by 255, as TCaF does).

With the default difficulty (0.75) a ridge regression from averaged [audio, video] to text, fit on
stage-2 train classes (`ridge_probe`), reaches about 33% unseen-class ZSL on UCF at scale 1 (seeds
0-2: 34/28/38%; chance 11%; video alone 31%, audio alone 21%), 40% on the generated UCF-shaped
benchmark; difficulty 0.25 / 0.5 / 0.9 give 67 / 53 / 20% on UCF. Published AVCA on real UCF: ZSL 20%.

The generator owns out_dir/<dataset>/features/<set>_features[_non_averaged]/: it replaces them when a
previous run wrote them (synth_info_<set>.json present) and refuses to touch them otherwise.

A real benchmark's class lists, name map, text and per-class counts are read through the data layer
(avgzsl.data.metadata, classes.py: text through the restricted unpickler); `like=` and `source=` give
byte-identical output for one benchmark.
"""

from __future__ import annotations

import json
import shutil
import string
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from avgzsl.data import layout, packaged
from avgzsl.data.classes import find_text_file, load_class_table, load_text_embeddings, read_class_list, text_table
from avgzsl.data.metadata import (  # SAMPLE_SUBSPLITS: the five sub-splits with samples
    PROTOCOL_TOTALS,
    SAMPLE_SUBSPLITS,
    BenchmarkMeta,
    metadata_from_folder,
    spread,
    subsplit_classes,
)
from avgzsl.data.metadata import write_class_split as write_meta_class_split
from avgzsl.data.readers import read_class_file
from avgzsl.data.types import SUBSPLITS as ALL_SUBSPLITS  # the six class lists of a split
from avgzsl.data.writers import (
    write_averaged_class_file,
    write_class_split,
    write_temporal_class_file,
    write_text_embeddings,
)

DEFAULT_DIFFICULTY = 0.75

FEATURE_DIMS = {"main": {"audio": 512, "video": 512}, "cls": {"audio": 128, "video": 4096}}
# Seconds per time step of the temporal features (protocol.md section 2).
STEP_SECONDS = {"main": {"audio": 1.0, "video": 1.0}, "cls": {"audio": 0.96, "video": 0.64}}
# Video durations in seconds (uniform), per benchmark shape.
DURATIONS = {"UCF": (3.0, 15.0), "ActivityNet": (5.0, 30.0), "VGGSound": (8.0, 10.0)}
DEFAULT_DURATION = (3.0, 15.0)

TEXT_DIM = 300
HIDDEN = 256
NUISANCE_RANK = 16


@dataclass(frozen=True)
class ModalityParams:
    """Noise model of one modality (units: the class signal has RMS 1 per dimension)."""

    latent_jitter: float  # within-class variation in latent space (through the MLP)
    noise: float  # isotropic per-video noise
    nuisance: float  # per-video noise along NUISANCE_RANK shared directions (per-dimension std)
    step_noise: float  # per-step white noise (averages out over time)
    drift: float  # amplitude of the smooth per-video temporal drift
    corrupt: float  # probability that the stream carries another class's signal or none


VIDEO = ModalityParams(latent_jitter=1.2, noise=0.8, nuisance=0.6, step_noise=0.8, drift=0.4, corrupt=0.08)
AUDIO = ModalityParams(latent_jitter=2.0, noise=1.4, nuisance=0.9, step_noise=1.0, drift=0.5, corrupt=0.12)
PARAMS = {"audio": AUDIO, "video": VIDEO}
BACKGROUND = 0.3  # signal weight of steps outside the event window
MLP_GAIN = 1.5
VGGISH_STEP = 24.0  # cls audio: value = clip(round(128 + VGGISH_STEP * x), 0, 255), like VGGish's uint8 output


# --------------------------------------------------------------------------------------------- rng


def _key(k) -> int:
    return zlib.crc32(k.encode("utf-8")) if isinstance(k, str) else int(k)


def _rng(seed: int, *keys) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed)] + [_key(k) for k in keys]))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------- benchmark spec


@dataclass
class _Spec:
    dataset: str
    splits: dict[str, dict[str, list[str]]]  # split -> subsplit -> class names (as in the .txt files)
    semantic: dict[str, np.ndarray]  # class name (as in .txt) -> 300-d text vector
    counts: dict[str, dict[str, int]]  # sample subsplit -> class -> number of videos
    duration: tuple[float, float]

    def classes(self, subsplit: str) -> list[str]:
        """Classes with samples in `subsplit`: the union over splits (cls_split is a subset of main_split)."""
        return subsplit_classes(self.splits, subsplit)


def _scaled(n: int, scale: float) -> int:
    return max(2, int(round(n * scale)))


def _spec_from_metadata(meta: BenchmarkMeta, dataset: str, scale: float) -> _Spec:
    """The spec of a real benchmark: its splits, each split class's text (by name), its counts times `scale`."""
    semantic = {c: np.asarray(v, dtype=np.float64) for c, v in meta.split_class_text().items()}
    counts = {sub: {c: _scaled(n, scale) for c, n in meta.counts[sub].items()} for sub in SAMPLE_SUBSPLITS}
    return _Spec(dataset, meta.splits, semantic, counts, DURATIONS.get(meta.dataset, DEFAULT_DURATION))


def _synthetic_semantics(seed: int, n: int) -> np.ndarray:
    """Random unit vectors shaped like word2vec class embeddings (mean cosine ~0.25, ~40 effective dims)."""
    rng = _rng(seed, "semantic-space")
    mean_dir = _unit(rng.standard_normal(TEXT_DIM))
    rank = 64
    basis = rng.standard_normal((rank, TEXT_DIM)) / np.sqrt(TEXT_DIM)  # nearly orthonormal rows
    spectrum = 1.0 / np.sqrt(1.0 + np.arange(rank) / 6.0)
    z = rng.standard_normal((n, rank)) * spectrum
    x = 0.55 * mean_dir + _unit(z @ basis) * 0.8 + 0.45 * _unit(rng.standard_normal((n, TEXT_DIM)))
    return _unit(x)


def _spec_synthetic(dataset: str, seed: int, scale: float) -> _Spec:
    """UCF-shaped: 101 classes, 30 stage-1 train, 12 val unseen, 9 test unseen (3 dropped in cls_split)."""
    names = [f"Class{i:03d}" for i in range(101)]
    rng = _rng(seed, "synthetic-split")
    order = rng.permutation(len(names))
    train = sorted(names[i] for i in order[:30])
    val_unseen = sorted(names[i] for i in order[30:42])
    test_unseen = sorted(names[i] for i in order[42:51])
    seen2 = sorted(train + val_unseen)
    main = {"stage_1_train": train, "stage_1_val_seen": train, "stage_1_val_unseen": val_unseen,
            "stage_2_train": seen2, "stage_2_test_seen": seen2, "stage_2_test_unseen": test_unseen}
    dropped = set(sorted(rng.choice(test_unseen, size=3, replace=False).tolist()))
    cls = dict(main, stage_2_test_unseen=[c for c in test_unseen if c not in dropped])
    vecs = _synthetic_semantics(seed, len(names))
    spec = _Spec(dataset, {"main_split": main, "cls_split": cls}, dict(zip(names, vecs)), {}, DURATIONS["UCF"])
    totals = PROTOCOL_TOTALS["UCF"]
    for sub in SAMPLE_SUBSPLITS:
        classes = spec.classes(sub)
        spec.counts[sub] = {c: _scaled(n, scale) for c, n in zip(classes, spread(totals[sub], [1.0] * len(classes)))}
    return spec


def _synthetic_name_map(names: list[str]) -> list[tuple[str, str]]:
    return [(n, f"Class {n[5:]}") for n in names]


# ------------------------------------------------------------------------------------ feature model


class SynthModel:
    """The fixed generative model of one benchmark and feature set (see the module docstring)."""

    def __init__(self, semantic: dict[str, np.ndarray], difficulty: float, seed: int, feature_set: str = "main",
                 gain: float = MLP_GAIN):
        if not 0.0 <= difficulty <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
        if feature_set not in FEATURE_DIMS:
            raise ValueError(f"unknown feature set {feature_set!r}; expected one of {tuple(FEATURE_DIMS)}")
        if not gain > 0:
            raise ValueError(f"gain must be positive, got {gain}")
        self.seed, self.difficulty, self.feature_set, self.gain = seed, float(difficulty), feature_set, float(gain)
        self.classes = sorted(semantic)
        text = np.stack([np.asarray(semantic[c], dtype=np.float64) for c in self.classes])
        text = _unit(text - text.mean(0))
        self.latent: dict[str, dict[str, np.ndarray]] = {"audio": {}, "video": {}}
        for c, s in zip(self.classes, text):
            r = _rng(seed, "class-private", c)
            shared, own_a, own_v = r.standard_normal((3, TEXT_DIM)) / np.sqrt(TEXT_DIM)
            for m, own in (("audio", own_a), ("video", own_v)):
                private = np.sqrt(0.5) * shared + np.sqrt(0.5) * own
                self.latent[m][c] = np.sqrt(1.0 - difficulty) * s + np.sqrt(difficulty) * private
        self.mlp = {m: self._make_mlp(m) for m in ("audio", "video")}

    def _make_mlp(self, modality: str) -> dict[str, np.ndarray]:
        dim = FEATURE_DIMS[self.feature_set][modality]
        r = _rng(self.seed, "mlp", self.feature_set, modality)
        f32 = np.float32
        mlp = {
            "w1": (r.standard_normal((TEXT_DIM, HIDDEN)) * self.gain).astype(f32),
            "b1": (r.standard_normal(HIDDEN) * 0.5).astype(f32),
            "w2": (r.standard_normal((HIDDEN, dim)) / np.sqrt(HIDDEN)).astype(f32),
            "nuisance": (r.standard_normal((NUISANCE_RANK, dim)) / np.sqrt(NUISANCE_RANK)).astype(f32),
            "offset": (r.standard_normal(dim) * 0.5 + 1.0).astype(f32),
        }
        # Standardise with reference latents drawn like class latents (fixed, independent of the dataset).
        out = self._raw(mlp, _unit(r.standard_normal((512, TEXT_DIM))).astype(f32)).astype(np.float64)
        mlp["mean"] = out.mean(0).astype(f32)
        mlp["scale"] = f32(1.0 / np.sqrt(((out - out.mean(0)) ** 2).mean()))
        return mlp

    @staticmethod
    def _raw(mlp: dict[str, np.ndarray], u: np.ndarray) -> np.ndarray:
        return np.tanh(u @ mlp["w1"] + mlp["b1"]) @ mlp["w2"]

    def signal(self, modality: str, u: np.ndarray) -> np.ndarray:
        mlp = self.mlp[modality]
        return (self._raw(mlp, u.astype(np.float32)) - mlp["mean"]) * mlp["scale"]

    def sample(self, cls: str, subsplit: str, n: int, duration: tuple[float, float] = DEFAULT_DURATION) -> dict:
        """n videos of `cls` in `subsplit`.

        Returns {"audio"/"video": list of float32 [T_i, D] sequences, "audio_avg"/"video_avg": float32
        [n, D] (= mean over steps), "audio_corrupt"/"video_corrupt": bool [n]}. Video-level draws
        (durations, event windows, latent jitter, corruption) do not depend on the feature set, so the
        `main` and `cls` features of one video describe the same content.
        """
        return next(self.sample_many([(cls, subsplit, n)], duration))[2]

    def sample_many(self, jobs, duration: tuple[float, float] = DEFAULT_DURATION, batch_rows: int = 4096):
        """Yield (cls, subsplit, sample(...)) for each (cls, subsplit, n) of `jobs`, in order.

        The MLP runs on groups of at least `batch_rows` videos: a few large matrix products instead of
        many small ones (small BLAS calls are slow on a busy multi-threaded machine).
        """
        group: list[dict] = []
        rows = 0
        for cls, subsplit, n in jobs:
            group.append(self._draw(cls, subsplit, n, duration))
            rows += n
            if rows >= batch_rows:
                yield from self._finish_group(group)
                group, rows = [], 0
        if group:
            yield from self._finish_group(group)

    def _draw(self, cls: str, subsplit: str, n: int, duration: tuple[float, float]) -> dict:
        rv = _rng(self.seed, "video", cls, subsplit)
        d = {"cls": cls, "subsplit": subsplit, "n": n}
        d["dur"] = rv.uniform(duration[0], duration[1], n)
        d["win_frac"] = rv.uniform(0.4, 1.0, n)
        d["win_start"] = rv.uniform(0.0, 1.0, n) * (1.0 - d["win_frac"])
        d["len_delta"] = rv.choice([-1, 0, 0, 1], n)
        others = [c for c in self.classes if c != cls] or [cls]
        for m in ("audio", "video"):
            p = PARAMS[m]
            jitter = rv.standard_normal((n, TEXT_DIM), dtype=np.float32) / np.float32(np.sqrt(TEXT_DIM))
            corrupt = rv.random(n) < p.corrupt
            swap = rv.random(n) < 0.5  # a corrupted stream carries another class's signal (True) or none
            other = rv.integers(0, len(others), n)
            centre = np.repeat(self.latent[m][cls][None].astype(np.float32), n, axis=0)
            for i in np.flatnonzero(corrupt & swap):
                centre[i] = self.latent[m][others[other[i]]]
            d[f"{m}_u"] = centre + np.float32(p.latent_jitter) * jitter
            d[f"{m}_corrupt"], d[f"{m}_drop"] = corrupt, corrupt & ~swap
        return d

    def _finish_group(self, group: list[dict]):
        sig = {m: self.signal(m, np.concatenate([d[f"{m}_u"] for d in group])) for m in ("audio", "video")}
        start = 0
        for d in group:
            n, out = d["n"], {}
            for m in ("audio", "video"):
                s = sig[m][start:start + n]
                s[d[f"{m}_drop"]] = 0.0
                if self.feature_set == "main":
                    lengths = np.maximum(1, np.round(d["dur"]).astype(int) + (d["len_delta"] if m == "audio" else 0))
                else:
                    lengths = np.maximum(1, np.floor(d["dur"] / STEP_SECONDS[self.feature_set][m]).astype(int))
                out[f"{m}_corrupt"] = d[f"{m}_corrupt"]
                out[m], out[f"{m}_avg"] = self._sequences(m, d["cls"], d["subsplit"], s, lengths, d["win_start"], d["win_frac"])
            start += n
            yield d["cls"], d["subsplit"], out

    def _sequences(self, m, cls, subsplit, sig, lengths, win_start, win_frac):
        p, mlp = PARAMS[m], self.mlp[m]
        n, dim = sig.shape
        rn = _rng(self.seed, "noise", self.feature_set, m, cls, subsplit)
        f32 = np.float32
        video_noise = (f32(p.noise) * rn.standard_normal((n, dim), dtype=f32)
                       + f32(p.nuisance) * np.einsum("nk,kd->nd", rn.standard_normal((n, NUISANCE_RANK), dtype=f32), mlp["nuisance"]))
        drift_dirs = rn.standard_normal((n, 2, dim), dtype=f32) * f32(p.drift)
        phase = rn.uniform(0.0, 2.0 * np.pi, (n, 2))
        total = int(lengths.sum())
        owner = np.repeat(np.arange(n), lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        t = np.arange(total) - starts[owner]
        rel = (t + 0.5) / lengths[owner]  # position in the video, in (0, 1)
        inside = (rel >= win_start[owner]) & (rel <= (win_start + win_frac)[owner])
        weight = np.where(inside, 1.0, BACKGROUND).astype(f32)
        wave = np.cos(np.pi * np.arange(1, 3)[None, :] * rel[:, None] + phase[owner]).astype(f32)  # [total, 2]
        steps = rn.standard_normal((total, dim), dtype=f32)
        steps *= f32(p.step_noise)
        steps += mlp["offset"]
        steps += weight[:, None] * sig[owner]
        steps += video_noise[owner]
        steps += wave[:, :1] * drift_dirs[owner, 0]
        steps += wave[:, 1:] * drift_dirs[owner, 1]
        if self.feature_set == "cls" and m == "audio":
            # VGGish post-processing quantises to uint8: values 0..255 (stored as float, as the real files).
            steps -= mlp["offset"]
            steps *= f32(VGGISH_STEP)
            steps += f32(128.0)
            np.clip(np.rint(steps, out=steps), 0.0, 255.0, out=steps)
        seqs = np.split(steps, np.cumsum(lengths)[:-1])
        avg = (np.add.reduceat(steps.astype(np.float64), starts, axis=0) / lengths[:, None]).astype(np.float32)
        return seqs, avg


# ----------------------------------------------------------------------------------------- video ids

_YT_CHARS = np.array(list(string.ascii_letters + string.digits + "-_"))


def _video_ids(dataset: str, cls: str, seed: int, n: int) -> list[str]:
    """n distinct ids for the videos of class `cls` over all its sub-splits, in the dataset's style."""
    if dataset in ("ActivityNet", "VGGSound"):
        r = _rng(seed, "video-ids", cls)
        yt = ["".join(row) for row in _YT_CHARS[r.integers(0, len(_YT_CHARS), (n, 11))]]
        if dataset == "ActivityNet":
            return [f"{y}_{i}" for y, i in zip(yt, r.integers(0, 7, n))]
        return [f"{y}_{s:06d}" for y, s in zip(yt, r.integers(0, 300, n))]
    name = "".join(ch for ch in cls.title() if ch.isalnum()) if not cls.isalnum() else cls
    return [f"v_{name}_g{i // 7 + 1:02d}_c{i % 7 + 1:02d}" for i in range(n)]


# ------------------------------------------------------------------------------------------ generate


def generate_benchmark(
    out_dir: str | Path,
    source: str | Path | None = None,
    dataset: str | None = None,
    scale: float = 1.0,
    difficulty: float = DEFAULT_DIFFICULTY,
    seed: int = 0,
    feature_set: str = "main",
    temporal: bool = True,
    progress: bool = True,
    like: str | None = None,
    gain: float = MLP_GAIN,
) -> Path:
    """Write a synthetic benchmark in the real layout and return its folder, out_dir/<dataset>.

    Args:
        out_dir: parent folder; the benchmark goes to out_dir/<dataset>.
        source: a real benchmark folder (class-split/ and a word_embeddings_*_normed.npy) whose class
            splits and text embeddings are used, with per-class sample counts from its csvs. None
            (and no `like`): generate a UCF-shaped benchmark with random class names and text vectors.
        dataset: output folder name and file-name prefix (default: the source folder's name, the
            packaged benchmark's name, or "Synthetic").
        scale: multiplies every per-class sample count (at least 2 per class and sub-split).
        difficulty: in [0, 1], the fraction of each class's appearance its text does not explain.
        seed: everything is a deterministic function of the seed.
        feature_set: "main" (audio 512 / video 512) or "cls" (audio 128 / video 4096).
        temporal: also write the per-second (non-averaged) features.
        progress: show progress over classes (a bar on a terminal, plain lines elsewhere: avgzsl.progress).
        like: instead of `source`, the name of a packaged real benchmark ("UCF", "ActivityNet" or
            "VGGSound", see avgzsl.data.packaged.available()): the same output as `source=` that
            benchmark's real folder, with nothing outside the package.
        gain: the tanh gain of the text-to-feature MLPs (module docstring, 3); larger is less linear.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if feature_set not in FEATURE_DIMS:
        raise ValueError(f"unknown feature set {feature_set!r}; expected one of {tuple(FEATURE_DIMS)}")
    if source is not None and like is not None:
        raise ValueError("give source (a real benchmark folder) or like (a packaged benchmark's name), not both")
    meta = None
    if source is not None:
        source = Path(source)
        meta = metadata_from_folder(source)  # FileNotFoundError without class-split/
    elif like is not None:
        meta = packaged.load(like)
    if meta is not None:
        dataset = dataset or meta.dataset
        spec = _spec_from_metadata(meta, dataset, scale)
    else:
        dataset = dataset or "Synthetic"
        spec = _spec_synthetic(dataset, seed, scale)
    # Built before anything is written: it refuses a bad difficulty or gain. Its draws are keyed, not ordered.
    model = SynthModel(spec.semantic, difficulty, seed, feature_set, gain=gain)
    root = Path(out_dir) / dataset
    split_dir = layout.class_split_dir(root)
    name_map_name = layout.name_map_file(root, dataset).name
    id_style = meta.dataset if meta is not None else dataset
    marker = root / f"synth_info_{feature_set}.json"
    for d in (layout.feature_dir(root, feature_set, False), layout.feature_dir(root, feature_set, True)):
        if d.exists():
            if not marker.is_file():
                raise FileExistsError(f"{d} exists and was not written by the synthetic generator; choose another out_dir")
            shutil.rmtree(d)
    info = {"generator": "avgzsl.data.synth", "complete": False, "dataset": dataset,
            "source": str(source) if source is not None else None}
    if like is not None:  # only then, so that the other modes' info files stay as they were
        info["like"] = meta.dataset
    if gain != MLP_GAIN:  # likewise: default benchmarks keep their info files
        info["gain"] = gain
    info.update(scale=scale, difficulty=difficulty, seed=seed, feature_set=feature_set, temporal=temporal,
                audio=asdict(AUDIO), video=asdict(VIDEO))
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    # Class split and text embeddings.
    if source is not None:  # copied, so that any source's files arrive byte for byte
        _copy(meta.files["all_class"], layout.all_class_file(root))
        _copy(meta.files["name_map"], split_dir / name_map_name)
        for split in spec.splits:
            for sub in ALL_SUBSPLITS:
                _copy(layout.split_class_file(source, split, sub), layout.split_class_file(root, split, sub))
        embeddings = meta.text
    elif meta is not None:  # like: the packaged form gives the real files back byte for byte
        write_meta_class_split(meta, split_dir, name_map_name)
        embeddings = meta.text
    else:
        names = sorted(spec.semantic)
        name_map = _synthetic_name_map(names)
        write_class_split(split_dir, names, name_map, spec.splits, name_map_name)
        embeddings = {manual: spec.semantic[orig].astype(np.float32) for orig, manual in name_map}
    feature_dirs = [layout.feature_dir(root, feature_set, False)]
    if temporal:
        feature_dirs.append(layout.feature_dir(root, feature_set, True))
    for d in feature_dirs:
        write_text_embeddings(d / "text" / layout.text_file_name(dataset), embeddings)

    # Features, class by class (jobs class-major, so the progress bar counts classes).
    classes = sorted({c for sub in SAMPLE_SUBSPLITS for c in spec.counts[sub]})
    jobs = [(c, sub, spec.counts[sub][c]) for c in classes for sub in SAMPLE_SUBSPLITS if c in spec.counts[sub]]
    ids, seen_ids = {}, set()
    for c in classes:
        all_ids = _video_ids(id_style, c, seed, sum(n for c2, _, n in jobs if c2 == c))
        if seen_ids.intersection(all_ids) or len(set(all_ids)) != len(all_ids):
            raise RuntimeError(f"duplicate synthetic video ids in class {c!r}")  # 11 random chars: never
        seen_ids.update(all_ids)
        start = 0
        for c2, sub, n in jobs:
            if c2 == c:
                ids[c, sub], start = all_ids[start:start + n], start + n
    remaining = {c: sum(1 for c2, _, _ in jobs if c2 == c) for c in classes}
    from avgzsl.progress import progress as progress_display

    bar = progress_display(total=len(classes), desc=f"synth {dataset}/{feature_set}", unit="class", enabled=progress)
    for c, sub, s in model.sample_many(jobs, spec.duration):
        for m in ("audio", "video"):
            write_averaged_class_file(layout.class_feature_file(root, feature_set, False, m, sub, c), s[f"{m}_avg"], ids[c, sub])
            if temporal:
                write_temporal_class_file(layout.class_feature_file(root, feature_set, True, m, sub, c), s[m], ids[c, sub], fps=25)
        remaining[c] -= 1
        if remaining[c] == 0:
            bar.update(1)
    bar.close()
    info["complete"] = True
    marker.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return root


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


# ----------------------------------------------------------------------------------------- the probe


def ridge_zsl(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
              text: np.ndarray, unseen: np.ndarray, lam: float = 1.0) -> float:
    """Mean per-class ZSL accuracy of a ridge map features -> text (nearest text among `unseen` classes).

    train_y / test_y index rows of `text`; features are standardised on the training set; lam is
    relative to the number of training samples.
    """
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    y = text[train_y]
    w = np.linalg.solve(a.T @ a + lam * len(a) * np.eye(a.shape[1]), a.T @ y)
    pred = b @ w
    cand = text[unseen]
    d = ((pred[:, None, :] - cand[None, :, :]) ** 2).sum(-1)
    guess = unseen[d.argmin(1)]
    return float(np.mean([np.mean(guess[test_y == c] == c) for c in np.unique(test_y)]))


def ridge_probe(root: str | Path, dataset: str | None = None, feature_set: str = "main", split: str = "main_split",
                lam: float = 1.0) -> dict[str, float]:
    """Ridge ZSL probe on a written benchmark (averaged features): fit on stage-2 train samples
    (stage_1_train + val seen + val unseen), test on stage_2_test_unseen. Returns ZSL accuracy for
    audio+video, video only, audio only, and chance."""
    root = Path(root)
    dataset = dataset or root.name
    table = load_class_table(root, dataset)
    text_path = find_text_file(root, dataset, feature_set, False)
    class_text = text_table(table, load_text_embeddings(text_path), source=str(text_path)).numpy()
    seen_names = read_class_list(layout.split_class_file(root, split, "stage_2_train"))
    unseen_names = read_class_list(layout.split_class_file(root, split, "stage_2_test_unseen"))
    names = list(dict.fromkeys(seen_names + unseen_names))  # probe class k = names[k]
    text = class_text[[table.index(c) for c in names]].astype(np.float64)

    def load(subs, classes):
        xs, ys = {"audio": [], "video": []}, []
        for sub in subs:
            for c in read_class_list(layout.split_class_file(root, split, sub)):
                if c not in classes:
                    continue
                for m in ("audio", "video"):
                    xs[m].append(read_class_file(layout.class_feature_file(root, feature_set, False, m, sub, c)).values)
                ys.append(np.full(len(xs["audio"][-1]), names.index(c)))
        return {m: np.concatenate(v).astype(np.float64) for m, v in xs.items()}, np.concatenate(ys)

    tr_x, tr_y = load(("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen"), set(seen_names))
    te_x, te_y = load(("stage_2_test_unseen",), set(unseen_names))
    unseen = np.array([names.index(c) for c in unseen_names])
    both = lambda x: np.concatenate([x["audio"], x["video"]], 1)  # noqa: E731
    return {
        "zsl": ridge_zsl(both(tr_x), tr_y, both(te_x), te_y, text, unseen, lam),
        "video": ridge_zsl(tr_x["video"], tr_y, te_x["video"], te_y, text, unseen, lam),
        "audio": ridge_zsl(tr_x["audio"], tr_y, te_x["audio"], te_y, text, unseen, lam),
        "chance": 1.0 / len(unseen),
    }

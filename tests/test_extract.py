"""`avgzsl extract` and `avgzsl embed-classes` end to end, on real media made here and small random
CLIP / CLAP checkpoints saved with save_pretrained and loaded through the code path of a downloaded one.

One uninterrupted extraction (the module fixture, through the CLI) of a benchmark-style class split: four
classes, videos of 3 s (one of 4.6 s), a corrupt file, a video without a soundtrack and a listed video with no
file. The tests read what it wrote, and rerun it in copies with other options (the per-video results are
reused, so reruns cost only the assembly).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="needs the extract extra: pip install -e '.[extract]'")
pytest.importorskip("av", reason="needs the extract extra: pip install -e '.[extract]'")

import torch  # noqa: E402

from avgzsl.cli import main  # noqa: E402
from avgzsl.config import DataConfig, build_config  # noqa: E402
from avgzsl.data import layout  # noqa: E402
from avgzsl.data.classes import load_text_embeddings  # noqa: E402
from avgzsl.data.loading import load_benchmark  # noqa: E402
from avgzsl.data.readers import read_class_file  # noqa: E402
from avgzsl.data.writers import write_class_split  # noqa: E402
from avgzsl.extract import ExtractOptions, extract  # noqa: E402
from avgzsl.extract.encoders import ClapEncoder, ClipEncoder  # noqa: E402
from avgzsl.extract.media import centred_clip, decode_video  # noqa: E402
from avgzsl.extract.pipeline import WORK_DIR  # noqa: E402
from avgzsl.extract.testing import SAMPLE_RATE, make_video, save_tiny_clap, save_tiny_clip  # noqa: E402
from avgzsl.protocol import run_protocol  # noqa: E402

CLASSES = ["Alpha", "Beta", "Gamma", "Delta"]
MANUAL = {"Alpha": "alpha thing", "Beta": "beta thing", "Gamma": "gamma thing", "Delta": "delta thing"}
# sub-split -> {class index: number of videos}; Gamma is unseen in stage 1, Delta at test
PLAN = {
    "stage_1_train": {0: 2, 1: 2},
    "stage_1_val_seen": {0: 1, 1: 1},
    "stage_1_val_unseen": {2: 2},
    "stage_2_test_seen": {0: 1, 1: 1, 2: 1},
    "stage_2_test_unseen": {3: 2},
}
LONG = "v_Gamma_6"  # 4.6 s: 5 steps, and its middle frame is none of the per-second frames
BAD = {
    "v_Alpha_corrupt": "cannot open",
    "v_Beta_silent": "no audio stream",
    "v_Beta_missing": "no video file",
}
OPTS = {"batch_videos": 4, "workers": 1}  # the uninterrupted run's chunking: resumed runs must use the same


def _cli_models(models: Path) -> list[str]:
    return [
        "--clip-model",
        str(models / "clip"),
        "--clap-model",
        str(models / "clap"),
        "--local-files-only",
        "--device",
        "cpu",
    ]


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """Models, videos and a benchmark-style class split (with per-split csvs, filename,label as UCF's)."""
    base = tmp_path_factory.mktemp("extract-src")
    save_tiny_clip(base / "models" / "clip")
    save_tiny_clap(base / "models" / "clap")
    videos, csvs, n = base / "videos" / "nested", {}, 0
    for sub, per in PLAN.items():
        rows = []
        for c, k in per.items():
            for _ in range(k):
                vid, n = f"v_{CLASSES[c]}_{n}", n + 1
                seconds = 4.6 if vid == LONG else 3.0
                make_video(videos / f"{vid}.mp4", c, seconds=seconds)
                # the csv spells one class in lower case: names are matched case-insensitively
                rows.append((vid, CLASSES[c].lower() if c == 1 else CLASSES[c]))
        csvs[sub] = rows
    (videos / "v_Alpha_corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not a video" * 40)
    make_video(videos / "v_Beta_silent.avi", 1, audio=False)
    csvs["stage_1_train"] += [
        ("v_Alpha_corrupt", "Alpha"),
        ("v_Beta_silent", "Beta"),
        ("v_Beta_missing", "Beta"),
    ]
    split = base / "class-split"
    lists = {s: sorted({CLASSES[c] for c in PLAN[s]}) for s in PLAN}
    lists["stage_2_train"] = ["Alpha", "Beta", "Gamma"]
    write_class_split(
        split, CLASSES, [(c, MANUAL[c]) for c in CLASSES], {"main_split": lists}, "toy_w2v_class_names.csv"
    )
    for s, rows in csvs.items():
        (split / "main_split" / f"{s}.csv").write_text(
            "filename,label\n" + "".join(f"{v},{c}\n" for v, c in rows)
        )
    return base


@pytest.fixture(scope="module")
def extracted(src, tmp_path_factory):
    """The uninterrupted extraction and the class embeddings, through the CLI (one torch thread, as every
    rerun)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("extract-out") / "Toy"
        assert (
            main(
                [
                    "extract",
                    "--out",
                    str(out),
                    "--class-split",
                    str(src / "class-split"),
                    "--videos",
                    str(src / "videos"),
                    "--quiet",
                    "--batch-videos",
                    str(OPTS["batch_videos"]),
                    "--workers",
                    str(OPTS["workers"]),
                ]
                + _cli_models(src / "models")
            )
            == 0
        )
        assert main(["embed-classes", "--root", str(out)] + _cli_models(src / "models")) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def encoders(src):
    return (
        ClipEncoder(str(src / "models" / "clip"), local_files_only=True, device="cpu"),
        ClapEncoder(str(src / "models" / "clap"), local_files_only=True, device="cpu"),
    )


def _listed(src: Path, sub: str) -> list[tuple[str, str]]:
    lines = (src / "class-split" / "main_split" / f"{sub}.csv").read_text().splitlines()[1:]
    return [tuple(line.split(",")) for line in lines]


def _feature_files(root: Path) -> dict[str, bytes]:
    """Every class file of the benchmark (averaged and per second), by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "features").rglob("*.h5"))}


def test_extract_then_load_train_and_score(extracted, src, tmp_path):
    """extract -> the loader (with its checks) reads both kinds of features -> ClipClap trains -> the protocol
    scores."""
    manifest = json.loads((extracted / "features/clip_features/extract_manifest.json").read_text())
    assert manifest["dims"] == {"video": 24, "audio": 20}
    weights = src / "models" / "clip" / "model.safetensors"
    import hashlib

    assert (
        manifest["visual"]["files"]["model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    )
    assert manifest["versions"]["avgzsl"] and manifest["audio"]["sample_rate"] == SAMPLE_RATE
    assert manifest["counts"]["stage_1_train"] == {"classes": 2, "videos": 4}  # 3 bad videos left out

    for temporal in (False, True):
        bench = load_benchmark(
            DataConfig(dataset="Toy", root=str(extracted), feature_set="clip", temporal=temporal),
            progress=False,
        )
        assert (bench.audio_dim, bench.video_dim, bench.text_dim) == (20, 24, 44)
        sizes = bench.info["subsplit_sizes"]
        assert sizes == {s: sum(PLAN[s].values()) for s in PLAN}
        assert bench.class_names == sorted(CLASSES)
    # the per-class text rows are the manual names' embeddings (mapped by name)
    text = load_text_embeddings(extracted / "features/clip_features/text/word_embeddings_toy_normed.npy")
    assert sorted(text) == sorted(MANUAL.values())
    assert torch.allclose(bench.text[1], torch.from_numpy(text["beta thing"]))

    bench = load_benchmark(DataConfig(dataset="Toy", root=str(extracted), feature_set="clip"), progress=False)
    # the features carry the classes: leave-one-out nearest class mean on [video; audio] of every sample
    s = bench.phases["stage2_train"].samples
    x = torch.cat([s.video.values, s.audio.values], 1)
    y = s.labels
    hits = 0
    for i in range(len(y)):
        keep = torch.arange(len(y)) != i
        means = torch.stack([x[keep & (y == c)].mean(0) for c in y.unique()])
        hits += int(y.unique()[torch.cdist(x[i : i + 1], means).argmin()] == y[i])
    assert hits / len(y) >= 0.75, hits
    cfg = build_config(
        "clipclap",
        "UCF",
        {
            "data": {"feature_set": "clip"},
            "train": {
                "epochs": 2,
                "n_batches": 4,
                "batch_size": 8,
                "progress": False,
                "save_checkpoints": "none",
            },
        },
    )
    res = run_protocol(cfg, bench, tmp_path)
    for key in ("S", "U", "HM", "ZSL"):
        assert 0.0 <= res["test"][key] <= 100.0
    assert res["best_epoch"] in (1, 2) and 0.0 <= res["beta"] <= 5.0


def test_averaged_feature_is_what_the_option_says(extracted, src, encoders, tmp_path):
    """middle / clip: the averaged rows are the middle frame's (frame n // 2, decoded here independently) and
    the zero-padded soundtrack's embeddings; mean: the normalised mean of the per-second rows; and the
    per-second files have one row per second."""
    clip, clap = encoders
    sub, cls = "stage_1_val_unseen", "Gamma"
    avg_v = read_class_file(layout.class_feature_file(extracted, "clip", False, "video", sub, cls))
    avg_a = read_class_file(layout.class_feature_file(extracted, "clip", False, "audio", sub, cls))
    seq_v = read_class_file(layout.class_feature_file(extracted, "clip", True, "video", sub, cls))
    seq_a = read_class_file(layout.class_feature_file(extracted, "clip", True, "audio", sub, cls))
    assert avg_v.video_ids == seq_v.video_ids == avg_a.video_ids == [LONG, "v_Gamma_7"]
    assert seq_v.lengths.tolist() == seq_a.lengths.tolist() == [5, 3]  # 4.6 s -> 5 steps, 3 s -> 3

    import av

    for i, vid in enumerate(avg_v.video_ids):
        path = src / "videos" / "nested" / f"{vid}.mp4"
        with av.open(str(path)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        middle = clip.encode_images(clip.preprocess(np.stack([frames[len(frames) // 2]])))[0]
        np.testing.assert_allclose(avg_v.values[i], middle, atol=1e-5)
        wav = decode_video(path, SAMPLE_RATE).audio
        clip_emb = clap.encode_audio(clap.preprocess([centred_clip(wav, 10 * SAMPLE_RATE)]))[0]
        np.testing.assert_allclose(avg_a.values[i], clip_emb, atol=1e-5)
    # a 3 s video's middle frame (1.5 s, frame 12 of 24) is also its second step's frame (the middle of second
    # 1)
    np.testing.assert_allclose(avg_v.values[1], seq_v.values[5 + 1], atol=1e-5)
    assert not any(
        np.allclose(avg_v.values[0], r, atol=1e-4) for r in seq_v.values[:5]
    )  # 4.6 s: no step's frame

    out = tmp_path / "Toy"
    shutil.copytree(extracted, out)
    report = extract(
        out,
        class_split=src / "class-split",
        videos=src / "videos",
        encoders=encoders,
        options=ExtractOptions(video_average="mean", audio_average="mean", progress=False, **OPTS),
    )
    assert report["manifest"]["run"]["videos_computed"] == 0  # averaging is applied to the stored results
    for m, seq in (("video", seq_v), ("audio", seq_a)):
        mean = read_class_file(layout.class_feature_file(out, "clip", False, m, sub, cls))
        starts = np.concatenate([[0], np.cumsum(seq.lengths)])
        for i in range(2):
            rows = seq.values[starts[i] : starts[i + 1]].mean(0)
            np.testing.assert_allclose(mean.values[i], rows / np.linalg.norm(rows), atol=1e-6)
        assert np.allclose(np.linalg.norm(mean.values, axis=1), 1.0, atol=1e-5)


def test_bad_videos_are_reported_and_the_rest_is_complete(extracted, src, encoders, tmp_path):
    report = json.loads((extracted / "features/clip_features/extract_report.json").read_text())
    reasons = {r["id"]: r["reason"] for r in report["skipped"]}
    assert set(reasons) == set(BAD)
    for vid, why in BAD.items():
        assert why in reasons[vid], reasons[vid]
    assert report["empty_classes"] == [] and report["zero_filled"] == []
    # every other listed video is in its class files, in the csv's order
    for sub in PLAN:
        for cls in CLASSES:
            listed = [v for v, c in _listed(src, sub) if c.lower() == cls.lower() and v not in BAD]
            path = layout.class_feature_file(extracted, "clip", False, "video", sub, cls)
            assert (read_class_file(path).video_ids if path.exists() else []) == listed
    # with --missing-stream zero the silent video stays, with zeros for its audio
    out = tmp_path / "Toy"
    shutil.copytree(extracted, out)
    report = extract(
        out,
        class_split=src / "class-split",
        videos=src / "videos",
        encoders=encoders,
        options=ExtractOptions(missing_stream="zero", progress=False, **OPTS),
    )
    assert [(z["id"], z["stream"]) for z in report["zero_filled"]] == [("v_Beta_silent", "audio")]
    audio = read_class_file(layout.class_feature_file(out, "clip", False, "audio", "stage_1_train", "Beta"))
    video = read_class_file(layout.class_feature_file(out, "clip", False, "video", "stage_1_train", "Beta"))
    k = audio.video_ids.index("v_Beta_silent")
    assert not audio.values[k].any() and np.isclose(np.linalg.norm(video.values[k]), 1.0)
    assert {r["id"] for r in report["skipped"]} == {"v_Alpha_corrupt", "v_Beta_missing"}


def test_killed_extraction_resumes_to_identical_files(extracted, src, encoders, tmp_path):
    out = tmp_path / "Toy"
    seen = []

    def killed_after_two_chunks(done, total):
        seen.append(done)
        if len(seen) == 2:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        extract(
            out,
            class_split=src / "class-split",
            videos=src / "videos",
            encoders=encoders,
            on_progress=killed_after_two_chunks,
            options=ExtractOptions(progress=False, **OPTS),
        )
    records = out / WORK_DIR / "clip" / "videos"
    assert seen == [4, 8] and len(list(records.glob("*.npz"))) == 8
    assert not (out / "features" / "clip_features" / "video").exists()  # class files are written at the end
    # what a kill during a write could leave: a temporary file; and a record of the second chunk torn in half
    (records / ".abc.npz.tmp").write_bytes(b"partial")
    second = {p.name: p for p in records.glob("*.npz")}
    first_run = json.loads((extracted / "features/clip_features/extract_manifest.json").read_text())
    assert first_run["run"]["videos_computed"] == 15
    from avgzsl.extract.pipeline import read_record

    torn = next(p for p in second.values() if read_record(p)[0]["id"] == "v_Beta_silent")
    torn.write_bytes(torn.read_bytes()[:100])

    report = extract(
        out,
        class_split=src / "class-split",
        videos=src / "videos",
        encoders=encoders,
        options=ExtractOptions(progress=False, **OPTS),
    )
    # chunk 1 is reused; chunk 2 (torn record) and chunks 3, 4 are computed, each whole
    assert (report["manifest"]["run"]["videos_reused"], report["manifest"]["run"]["videos_computed"]) == (
        4,
        11,
    )
    fresh, resumed = _feature_files(extracted), _feature_files(out)
    assert sorted(fresh) == sorted(resumed) and len(fresh) == 2 * 2 * 9
    assert [k for k in fresh if fresh[k] != resumed[k]] == []
    assert (out / "features/clip_features/extract_report.json").read_bytes() == (
        extracted / "features/clip_features/extract_report.json"
    ).read_bytes()
    # a finished extraction reruns without computing anything
    again = extract(
        out,
        class_split=src / "class-split",
        videos=src / "videos",
        encoders=encoders,
        options=ExtractOptions(progress=False, **OPTS),
    )
    assert again["manifest"]["run"] == {**again["manifest"]["run"], "videos_computed": 0, "videos_reused": 15}


def test_embed_classes_is_clipclap_prompt_ensemble(extracted, src, encoders, tmp_path, capsys):
    text = load_text_embeddings(extracted / "features/clip_features/text/word_embeddings_toy_normed.npy")
    vec = text["gamma thing"]
    assert vec.shape == (44,)
    np.testing.assert_allclose([np.linalg.norm(vec[:24]), np.linalg.norm(vec[24:])], [1.0, 1.0], atol=1e-5)
    from avgzsl.extract.text import PROMPTS, class_embeddings

    assert len(PROMPTS["person"]["clip"]) == 48 and len(PROMPTS["person"]["clap"]) == 30
    clip_text = ClipEncoder(str(src / "models" / "clip"), local_files_only=True, device="cpu", text=True)
    prompts = [t.format("gamma thing") for t in PROMPTS["generic"]["clip"]]  # dataset Toy: generic prompts
    each = clip_text.encode_text(prompts)
    mean = each.mean(0)
    np.testing.assert_allclose(vec[:24], mean / np.linalg.norm(mean), atol=1e-5)
    np.testing.assert_allclose(
        class_embeddings(clip_text, ["gamma thing"], PROMPTS["generic"]["clip"])[0], vec[:24], atol=1e-6
    )
    # any names, CLAP only, written where asked
    names = tmp_path / "names.txt"
    names.write_text("dog barking\nrain on a roof\n")
    npy = tmp_path / "text.npy"
    assert (
        main(
            [
                "embed-classes",
                "--names",
                str(names),
                "--out",
                str(npy),
                "--encoder",
                "clap",
                "--prompts",
                "generic",
                "--clap-model",
                str(src / "models" / "clap"),
                "--local-files-only",
            ]
        )
        == 0
    )
    emb = load_text_embeddings(npy)
    assert sorted(emb) == ["dog barking", "rain on a roof"] and emb["dog barking"].shape == (20,)
    assert not np.allclose(emb["dog barking"], emb["rain on a roof"])


def test_extract_errors_are_one_line(extracted, src, tmp_path, capsys):
    # a class the class split does not know
    bad = tmp_path / "list.csv"
    bad.write_text("video,class,subsplit\nx.mp4,Alpha,stage_2_train\n")
    code = main(
        ["extract", "--out", str(tmp_path / "B"), "--videos-csv", str(bad)] + _cli_models(src / "models")
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "stage_2_train" in err[0] and err[0].startswith("error:")
    # resuming with another checkpoint is refused, naming what differs and the way out
    out = tmp_path / "Toy"
    shutil.copytree(extracted, out)
    other = tmp_path / "clap2"
    save_tiny_clap(other, seed=1)
    code = main(
        [
            "extract",
            "--out",
            str(out),
            "--class-split",
            str(src / "class-split"),
            "--videos",
            str(src / "videos"),
            "--quiet",
            "--clip-model",
            str(src / "models" / "clip"),
            "--clap-model",
            str(other),
            "--local-files-only",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "audio" in err[-1] and "--restart" in err[-1]

"""load_benchmark on tiny benchmarks written to tmp_path with avgzsl.data.writers."""

import logging
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from avgzsl.config import DataConfig
from avgzsl.data import layout
from avgzsl.data.loading import BenchmarkError, load_benchmark
from avgzsl.data.readers import detect_format
from avgzsl.data.writers import (
    write_averaged_class_file,
    write_class_split,
    write_temporal_class_file,
    write_text_embeddings,
)

DATASET = "Tiny"
# all_class.txt spellings; sorted (case-sensitive) they are Banana, Cherry, Eel, HandstandPushups, Zebra, apple, date.
ALL_CLASSES = ["Zebra", "apple", "Banana", "Cherry", "date", "HandstandPushups", "Eel"]
MANUAL = {"Zebra": "zebra", "apple": "apple", "Banana": "banana", "Cherry": "cherry", "date": "date",
          "HandstandPushups": "handstand pushups", "Eel": "eel"}
# Split files spell one class differently in case, as UCF's do.
SPLITS = {
    "stage_1_train": ["Banana", "Cherry", "HandStandPushups"],
    "stage_1_val_seen": ["Banana", "Cherry", "HandStandPushups"],
    "stage_1_val_unseen": ["Eel"],
    "stage_2_train": ["Banana", "Cherry", "HandStandPushups", "Eel"],
    "stage_2_test_seen": ["Banana", "Cherry", "HandStandPushups", "Eel"],
    "stage_2_test_unseen": ["Zebra", "apple"],
}
FEATURE_SUBSPLITS = ["stage_1_train", "stage_1_val_seen", "stage_1_val_unseen", "stage_2_test_seen", "stage_2_test_unseen"]
TEXT_DIM = 6


def build_tiny(root, *, temporal=False, feature_set="main", dims=(512, 512), audio_range=None, seed=0, text_dim=TEXT_DIM):
    """Write a tiny benchmark; return {video_id: (class name, audio array, video array)} and the text dict."""
    rng = np.random.default_rng(seed)
    write_class_split(layout.class_split_dir(root), ALL_CLASSES, list(MANUAL.items()), {"main_split": SPLITS},
                      "tiny_w2v_class_names.csv")
    text = {m: rng.standard_normal(text_dim).astype(np.float32) for m in MANUAL.values()}
    fdir = layout.feature_dir(root, feature_set, temporal)
    write_text_embeddings(fdir / "text" / layout.text_file_name(DATASET), text)
    videos = {}
    for s in FEATURE_SUBSPLITS:
        for k, cls in enumerate(SPLITS[s]):
            n = 2 + (k % 2)
            ids = [f"{s}-{cls}-{i}" for i in range(n)]
            if temporal:
                a_len, v_len = rng.integers(1, 5, n), rng.integers(1, 7, n)
                audio = [rng.standard_normal((t, dims[0])).astype(np.float32) for t in a_len]
                if audio_range is not None:
                    audio = [rng.integers(0, audio_range, (t, dims[0])).astype(np.float32) for t in a_len]
                video = [rng.standard_normal((t, dims[1])).astype(np.float32) for t in v_len]
                write_temporal_class_file(fdir / "audio" / s / f"{cls}.h5", audio, ids)
                write_temporal_class_file(fdir / "video" / s / f"{cls}.h5", video, ids)
            else:
                audio = rng.standard_normal((n, dims[0])).astype(np.float32)
                video = rng.standard_normal((n, dims[1])).astype(np.float32)
                write_averaged_class_file(fdir / "audio" / s / f"{cls}.h5", audio, ids)
                write_averaged_class_file(fdir / "video" / s / f"{cls}.h5", video, ids)
            for i, vid in enumerate(ids):
                videos[vid] = (cls, audio[i], video[i])
    return videos, text


def cfg_for(root, **kw):
    return DataConfig(dataset=DATASET, root=str(root), **kw)


def fdir_of(root, **kw):
    return layout.feature_dir(root, kw.get("feature_set", "main"), kw.get("temporal", False))


@pytest.fixture
def tiny(tmp_path):
    root = tmp_path / "Tiny"
    videos, text = build_tiny(root)
    return root, videos, text


def names_of(bench, ids):
    return {bench.class_names[i] for i in ids.tolist()}


def test_phases_composition_and_class_sets(tiny):
    root, videos, _ = tiny
    bench = load_benchmark(cfg_for(root), progress=False)
    assert bench.class_names == sorted(ALL_CLASSES)
    assert not bench.temporal and (bench.audio_dim, bench.video_dim) == (512, 512)
    canon = {c.lower(): c for c in ALL_CLASSES}

    def canonical(subsplit):
        return {canon[c.lower()] for c in SPLITS[subsplit]}

    expect = {
        "stage1_train": (["stage_1_train"], canonical("stage_1_train"), set()),
        "stage1_val": (["stage_1_val_seen", "stage_1_val_unseen"], canonical("stage_1_val_seen"), canonical("stage_1_val_unseen")),
        "stage2_train": (["stage_1_train", "stage_1_val_seen", "stage_1_val_unseen"], canonical("stage_2_train"), set()),
        "test": (["stage_2_test_seen", "stage_2_test_unseen"], canonical("stage_2_test_seen"), canonical("stage_2_test_unseen")),
    }
    for name, (subsplits, seen, unseen) in expect.items():
        phase = bench.phases[name]
        assert names_of(bench, phase.seen) == seen and names_of(bench, phase.unseen) == unseen, name
        s = phase.samples
        assert sorted(s.video_ids) == sorted(v for v in videos if v.split("-")[0] in subsplits), name
        # Every sample carries its own class label and its own features.
        assert [bench.class_names[i] for i in s.labels.tolist()] == [canon[videos[v][0].lower()] for v in s.video_ids]
        assert torch.equal(s.audio.values, torch.from_numpy(np.stack([videos[v][1] for v in s.video_ids])))
        assert torch.equal(s.video.values, torch.from_numpy(np.stack([videos[v][2] for v in s.video_ids])))
    # stage 2 train = stage 1 train + stage 1 val samples
    p = bench.phases
    assert p["stage2_train"].samples.video_ids == p["stage1_train"].samples.video_ids + p["stage1_val"].samples.video_ids
    info = bench.info
    assert info["root"] == str(root.resolve()) and info["feature_set"] == "main" and info["split"] == "main_split"
    assert info["temporal"] is False and info["legacy_text_order"] is False
    n_class_files = 2 * sum(len(SPLITS[s]) for s in FEATURE_SUBSPLITS)
    assert info["feature_files_read"] == n_class_files and info["files_read"] > n_class_files


def test_text_by_name_and_legacy_order(tiny):
    root, _, text = tiny
    by_name = load_benchmark(cfg_for(root), progress=False)
    for cid, cls in enumerate(by_name.class_names):
        assert torch.equal(by_name.text[cid], torch.from_numpy(text[MANUAL[cls]])), cls
    legacy = load_benchmark(cfg_for(root, legacy_text_order=True), progress=False)
    # Worked by hand: ids follow sorted originals (Banana, Cherry, Eel, HandstandPushups, Zebra, apple, date),
    # rows follow sorted manual names (apple, banana, cherry, date, eel, handstand pushups, zebra).
    legacy_gets = {"Banana": "apple", "Cherry": "banana", "Eel": "cherry", "HandstandPushups": "date",
                   "Zebra": "eel", "apple": "handstand pushups", "date": "zebra"}
    for cid, cls in enumerate(legacy.class_names):
        assert torch.equal(legacy.text[cid], torch.from_numpy(text[legacy_gets[cls]])), cls
    assert legacy.info["legacy_text_order"] is True


def test_case_insensitive_file_and_split_names(tiny):
    root, videos, _ = tiny
    fdir = fdir_of(root)
    # Split files say HandStandPushups (files were written under that name); rename one to the all_class spelling
    # and another to lower case.
    for m in ("audio", "video"):
        os.replace(fdir / m / "stage_1_train" / "HandStandPushups.h5", fdir / m / "stage_1_train" / "HandstandPushups.h5")
        os.replace(fdir / m / "stage_2_test_seen" / "Cherry.h5", fdir / m / "stage_2_test_seen" / "cherry.h5")
    bench = load_benchmark(cfg_for(root), progress=False)
    cid = bench.class_names.index("HandstandPushups")
    s = bench.phases["stage1_train"].samples
    got = sorted(v for v, lab in zip(s.video_ids, s.labels.tolist()) if lab == cid)
    assert got == sorted(v for v in videos if v.startswith("stage_1_train-HandStandPushups"))
    t = bench.phases["test"].samples
    assert any(v.startswith("stage_2_test_seen-Cherry") for v in t.video_ids)


def _load_error(root, **kw):
    with pytest.raises(BenchmarkError) as err:
        load_benchmark(cfg_for(root, **kw), progress=False)
    return str(err.value)


def test_error_missing_class_file(tiny):
    root = tiny[0]
    path = fdir_of(root) / "video" / "stage_1_val_unseen" / "Eel.h5"
    path.unlink()
    msg = _load_error(root)
    assert "Eel" in msg and str(path.parent) in msg


def test_error_missing_folder(tiny):
    root = tiny[0]
    folder = fdir_of(root) / "audio" / "stage_2_test_unseen"
    shutil.rmtree(folder)
    assert str(folder) in _load_error(root)


def test_error_missing_split_file(tiny):
    root = tiny[0]
    path = layout.split_class_file(root, "main_split", "stage_2_test_seen")
    path.unlink()
    assert str(path) in _load_error(root)
    assert "cls_split" in _load_error(root, split="cls_split")


def test_error_audio_video_list_different_videos(tiny):
    root, videos, _ = tiny
    fdir = fdir_of(root)
    ids = [v for v in videos if v.startswith("stage_2_test_unseen-Zebra")]
    feats = np.stack([videos[v][2] for v in ids])
    write_averaged_class_file(fdir / "video" / "stage_2_test_unseen" / "Zebra.h5", feats, ids[:-1] + ["intruder"])
    msg = _load_error(root)
    assert "Zebra" in msg and "intruder" in msg and ids[-1] in msg


def test_error_audio_video_same_videos_other_order(tiny):
    root, videos, _ = tiny
    ids = [v for v in videos if v.startswith("stage_1_train-Cherry")]
    feats = np.stack([videos[v][2] for v in ids])
    write_averaged_class_file(fdir_of(root) / "video" / "stage_1_train" / "Cherry.h5", feats[::-1], ids[::-1])
    msg = _load_error(root)
    assert "Cherry" in msg and "order" in msg


def test_error_wrong_dimension(tiny):
    root = tiny[0]
    path = fdir_of(root) / "audio" / "stage_1_train" / "Banana.h5"
    write_averaged_class_file(path, np.zeros((2, 256), np.float32), ["stage_1_train-Banana-0", "stage_1_train-Banana-1"])
    msg = _load_error(root)
    assert str(path) in msg and "256" in msg and "512" in msg


def test_error_nan_and_inf_counted(tiny):
    root, videos, _ = tiny
    ids = [v for v in videos if v.startswith("stage_1_val_seen-Banana")]
    feats = np.stack([videos[v][2] for v in ids])
    feats[0, :2] = np.nan
    feats[-1, 7] = np.inf
    path = fdir_of(root) / "video" / "stage_1_val_seen" / "Banana.h5"
    write_averaged_class_file(path, feats, ids)
    msg = _load_error(root)
    assert str(path) in msg and "3 NaN/inf" in msg


def test_error_empty_class_file(tiny):
    root = tiny[0]
    fdir = fdir_of(root)
    for m in ("audio", "video"):
        write_averaged_class_file(fdir / m / "stage_2_test_unseen" / "apple.h5", np.zeros((0, 512), np.float32), [])
    msg = _load_error(root)
    assert "apple.h5" in msg and "no videos" in msg


def test_error_class_without_text_embedding(tiny):
    root, _, text = tiny
    path = fdir_of(root) / "text" / layout.text_file_name(DATASET)
    write_text_embeddings(path, {k: v for k, v in text.items() if k != "zebra"})
    msg = _load_error(root)
    assert "Zebra" in msg and str(path) in msg


def test_error_temporal_flag_mismatch(tmp_path):
    root = tmp_path / "T"
    build_tiny(root, temporal=True, dims=(512, 512))
    # The averaged folder is absent: say so and hint at data.temporal.
    assert "temporal" in _load_error(root, temporal=False)
    # Temporal pickles put in the averaged folder are refused as such.
    shutil.copytree(fdir_of(root, temporal=True), fdir_of(root))
    msg = _load_error(root, temporal=False)
    assert "temporal (pickle)" in msg and "Banana" in msg


def test_unlisted_class_files_are_warned_about(tiny, caplog):
    root = tiny[0]
    fdir = fdir_of(root)
    for m in ("audio", "video"):
        write_averaged_class_file(fdir / m / "stage_1_train" / "date.h5", np.zeros((1, 512), np.float32), ["extra"])
    with caplog.at_level(logging.WARNING, logger="avgzsl.data.loading"):
        bench = load_benchmark(cfg_for(root), progress=False)
    assert "extra" not in bench.phases["stage2_train"].samples.video_ids
    assert any("date.h5" in r.getMessage() and "stage_1_train" in r.getMessage() for r in caplog.records)


def test_temporal_round_trip_and_take(tmp_path):
    root = tmp_path / "T"
    videos, _ = build_tiny(root, temporal=True, dims=(512, 512))
    bench = load_benchmark(cfg_for(root, temporal=True), progress=False)
    assert bench.temporal and bench.info["audio_scale"] == 1.0
    s = bench.phases["test"].samples
    for mod, k in (("audio", 1), ("video", 2)):
        feats = getattr(s, mod)
        assert feats.lengths().tolist() == [videos[v][k].shape[0] for v in s.video_ids]
        index = torch.tensor([len(s) - 1, 0, 2])
        padded, mask = feats.take(index)
        seqs = [videos[s.video_ids[i]][k] for i in index.tolist()]
        t_max = max(x.shape[0] for x in seqs)
        assert padded.shape == (3, t_max, 512) and mask.shape == (3, t_max)
        for row, seq in enumerate(seqs):
            t = seq.shape[0]
            assert mask[row].tolist() == [True] * t + [False] * (t_max - t)
            assert torch.equal(padded[row, :t], torch.from_numpy(seq))
            assert not padded[row, t:].any()
    # The stage-1 phases are slices of stage 2 train: their sequences must still line up.
    s1 = bench.phases["stage1_val"].samples
    padded, mask = s1.video.take(torch.arange(len(s1)))
    for row, vid in enumerate(s1.video_ids):
        t = videos[vid][2].shape[0]
        assert int(mask[row].sum()) == t and torch.equal(padded[row, :t], torch.from_numpy(videos[vid][2]))


def test_format_detected_by_content_not_extension(tmp_path):
    write_temporal_class_file(tmp_path / "a.h5", [np.zeros((2, 3), np.float32)], ["v"])
    write_averaged_class_file(tmp_path / "b.pkl", np.zeros((1, 3), np.float32), ["v"])
    assert detect_format(tmp_path / "a.h5") == "pickle"
    assert detect_format(tmp_path / "b.pkl") == "hdf5"


def test_cls_temporal_audio_divided_by_255(tmp_path):
    root = tmp_path / "C"
    videos, _ = build_tiny(root, temporal=True, feature_set="cls", dims=(128, 4096), audio_range=256)
    bench = load_benchmark(cfg_for(root, temporal=True, feature_set="cls"), progress=False)
    s = bench.phases["stage1_val"].samples
    raw = torch.from_numpy(np.concatenate([videos[v][1] for v in s.video_ids]))
    assert torch.allclose(s.audio.values, raw / 255.0)
    assert torch.equal(s.video.values, torch.from_numpy(np.concatenate([videos[v][2] for v in s.video_ids])))
    unscaled = load_benchmark(cfg_for(root, temporal=True, feature_set="cls"), progress=False, audio_scale=1.0)
    assert torch.equal(unscaled.phases["stage1_val"].samples.audio.values, raw)
    # Averaged-dims check for the cls set: 512-d audio would be refused (expects 128).
    assert bench.audio_dim == 128 and bench.video_dim == 4096


def test_malicious_class_file_refused(tiny):
    root = tiny[0]
    marker = root / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = fdir_of(root) / "audio" / "stage_1_train" / "Cherry.h5"
    path.write_bytes(pickle.dumps({"features": [Exploit()], "video_names": ["x"], "fps": [25]}))
    msg = _load_error(root)
    assert str(path) in msg and "system" in msg
    assert not marker.exists()


def _phase_tensors(bench):
    out = [bench.text]
    for ph in bench.phases.values():
        s = ph.samples
        out += [s.audio.values, s.video.values, s.labels, ph.seen, ph.unseen]
    return out


def test_cache_hit_and_invalidation(tiny, tmp_path):
    root, videos, _ = tiny
    cache = tmp_path / "cache"
    first = load_benchmark(cfg_for(root, cache_dir=str(cache)), progress=False)
    assert first.info["cache"]["hit"] is False and list(cache.glob("*.pt"))
    second = load_benchmark(cfg_for(root, cache_dir=str(cache)), progress=False)
    assert second.info["cache"]["hit"] is True
    assert all(torch.equal(a, b) for a, b in zip(_phase_tensors(first), _phase_tensors(second)))
    assert second.class_names == first.class_names
    assert all(second.phases[k].samples.video_ids == first.phases[k].samples.video_ids for k in first.phases)
    # Another option that changes the result is another key.
    legacy = load_benchmark(cfg_for(root, cache_dir=str(cache), legacy_text_order=True), progress=False)
    assert legacy.info["cache"]["hit"] is False
    # A changed feature file invalidates the cache and its new content is loaded.
    ids = [v for v in videos if v.startswith("stage_1_train-Banana")]
    path = fdir_of(root) / "audio" / "stage_1_train" / "Banana.h5"
    write_averaged_class_file(path, np.full((len(ids), 512), 7.0, np.float32), ids)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # even on coarse-mtime file systems
    third = load_benchmark(cfg_for(root, cache_dir=str(cache)), progress=False)
    assert third.info["cache"]["hit"] is False
    s = third.phases["stage1_train"].samples
    rows = [i for i, v in enumerate(s.video_ids) if v in ids]
    assert bool((s.audio.values[rows] == 7.0).all())


def test_temporal_cache_round_trip(tmp_path):
    root = tmp_path / "T"
    build_tiny(root, temporal=True, dims=(512, 512))
    cfg = cfg_for(root, temporal=True, cache_dir=str(tmp_path / "cache"))
    first = load_benchmark(cfg, progress=False)
    second = load_benchmark(cfg, progress=False)
    assert second.info["cache"]["hit"] is True
    for k in first.phases:
        a, b = first.phases[k].samples, second.phases[k].samples
        assert torch.equal(a.audio.offsets, b.audio.offsets) and torch.equal(a.video.offsets, b.video.offsets)
        idx = torch.arange(len(a))
        assert torch.equal(a.video.take(idx)[0], b.video.take(idx)[0])


def test_root_not_set_or_missing(tmp_path):
    with pytest.raises(BenchmarkError, match="root"):
        load_benchmark(DataConfig(dataset=DATASET, root=""), progress=False)
    with pytest.raises(BenchmarkError, match="nowhere"):
        load_benchmark(cfg_for(tmp_path / "nowhere"), progress=False)


def test_not_a_benchmark_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    expected = f"not a benchmark folder: {empty.resolve()} has no class-split/ (expected class-split/ and features/)"
    with pytest.raises(BenchmarkError) as err:
        load_benchmark(cfg_for(empty), progress=False)
    assert str(err.value) == expected
    # Features but no class-split/: e.g. --root one level too high, above the dataset folder.
    (empty / "features" / "main_features").mkdir(parents=True)
    (empty / "UCF" / "class-split").mkdir(parents=True)
    with pytest.raises(BenchmarkError) as err:
        load_benchmark(cfg_for(empty), progress=False)
    assert str(err.value) == expected


@pytest.mark.parametrize("temporal", [False, True])
def test_user_feature_set_of_any_dimension(tmp_path, temporal):
    root = tmp_path / "Tiny"
    videos, text = build_tiny(root, temporal=temporal, feature_set="clip", dims=(768, 1024), text_dim=512)
    assert (root / "features" / ("clip_features_non_averaged" if temporal else "clip_features")).is_dir()
    bench = load_benchmark(cfg_for(root, feature_set="clip", temporal=temporal), progress=False)
    assert (bench.audio_dim, bench.video_dim, bench.text_dim) == (768, 1024, 512)
    assert bench.info["audio_scale"] == 1.0 and bench.info["feature_set"] == "clip"
    s = bench.phases["test"].samples
    expect = [np.atleast_2d(videos[v][2]) for v in s.video_ids]
    assert torch.equal(s.video.values, torch.from_numpy(np.concatenate(expect)))
    for cid, cls in enumerate(bench.class_names):
        assert torch.equal(bench.text[cid], torch.from_numpy(text[MANUAL[cls]])), cls


@pytest.mark.parametrize("text_dim", [1, 300, 1024])
def test_text_embeddings_of_any_dimension(tmp_path, text_dim):
    root = tmp_path / "Tiny"
    _, text = build_tiny(root, text_dim=text_dim)
    bench = load_benchmark(cfg_for(root), progress=False)
    assert tuple(bench.text.shape) == (len(ALL_CLASSES), text_dim) and bench.text_dim == text_dim
    assert torch.equal(bench.text[bench.class_names.index("Zebra")], torch.from_numpy(text["zebra"]))


def test_user_feature_set_dimensions_must_agree(tmp_path):
    root = tmp_path / "Tiny"
    videos, _ = build_tiny(root, feature_set="clip", dims=(768, 1024))
    ids = [v for v in videos if v.startswith("stage_1_val_unseen-Eel")]
    odd = fdir_of(root, feature_set="clip") / "audio" / "stage_1_val_unseen" / "Eel.h5"
    write_averaged_class_file(odd, np.zeros((len(ids), 640), np.float32), ids)
    msg = _load_error(root, feature_set="clip")
    assert "1 problem(s)" in msg and str(odd) in msg and "dimension 640" in msg and "768 in most audio class files" in msg
    # Fixed dimensions can still be asked for: then each file is checked against them.
    with pytest.raises(BenchmarkError) as err:
        load_benchmark(cfg_for(root, feature_set="clip"), progress=False, expected_dims={"audio": 768, "video": 1024})
    assert "1 problem(s)" in str(err.value) and str(odd) in str(err.value) and "expected 768" in str(err.value)


def test_cls_dimensions_still_checked(tmp_path):
    root = tmp_path / "C"
    build_tiny(root, feature_set="cls", dims=(512, 4096))  # VGGish audio is 128-d
    msg = _load_error(root, feature_set="cls")
    assert "audio features have dimension 512, expected 128 for feature set 'cls'" in msg


def test_feature_set_name_is_a_plain_identifier(tmp_path, tiny):
    root = tiny[0]
    for bad in ("../main", "main/x", "", "clip-vit"):
        with pytest.raises(BenchmarkError, match="invalid feature set name"):
            load_benchmark(cfg_for(root, feature_set=bad), progress=False)
        with pytest.raises(ValueError, match="plain identifier"):
            layout.feature_dir(root, bad, False)
    assert layout.feature_dir(root, "clip_vit_b32", True) == root / "features" / "clip_vit_b32_features_non_averaged"
    # The folder's name instead of the set's: say what to write instead.
    assert "'main'?" in _load_error(root, feature_set="main_features")

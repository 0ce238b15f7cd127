"""Tests of the synthetic benchmark generator (avgzsl.data.synth). Small scales only: < 30 s in all.

Benchmarks shaped like a real one come from the packaged metadata (`like=`); only the test that
`like=` and `source=` (the original files) give the same benchmark needs ../shared/benchmarks.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from avgzsl.data import layout, packaged
from avgzsl.data import synth
from avgzsl.data.classes import load_text_embeddings, read_class_list, read_name_map_table
from avgzsl.data.metadata import sample_counts
from avgzsl.data.safe_pickle import UnsafePickleError
from avgzsl.data.synth import DEFAULT_DIFFICULTY, SAMPLE_SUBSPLITS, SynthModel, generate_benchmark, ridge_probe

from shared_data import BENCHMARKS, MISSING_REASON, packaged_folder


def _lines(p: Path) -> list[str]:
    return [x.strip() for x in p.read_text().splitlines() if x.strip()]


def _subsplit_classes(root: Path, sub: str) -> list[str]:
    out: dict[str, None] = {}
    for split in layout.SPLITS:
        p = layout.split_class_file(root, split, sub)
        if p.is_file():
            out.update(dict.fromkeys(_lines(p)))
    return list(out)


def _read_avg(path: Path) -> tuple[np.ndarray, list[str]]:
    with h5py.File(path, "r") as hf:
        return hf["data"][()], [v.decode() if isinstance(v, bytes) else str(v) for v in hf["video_urls"][()]]


def _read_seq(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh)


@pytest.fixture(scope="module")
def nosrc(tmp_path_factory) -> Path:
    return generate_benchmark(tmp_path_factory.mktemp("nosrc"), scale=0.1, seed=0, progress=False)


@pytest.fixture(scope="module")
def ucf(tmp_path_factory) -> Path:
    return generate_benchmark(tmp_path_factory.mktemp("ucf"), like="UCF", scale=0.1, seed=0, progress=False)


def _check_layout(root: Path, dataset: str, dims=(512, 512), feature_set="main") -> None:
    assert root.name == dataset
    for d in (layout.feature_dir(root, feature_set, False), layout.feature_dir(root, feature_set, True)):
        table = load_text_embeddings(d / "text" / layout.text_file_name(dataset))
        assert all(v.shape == (300,) and v.dtype == np.float32 for v in table.values())
        np.testing.assert_allclose([np.linalg.norm(v) for v in table.values()], 1.0, atol=1e-5)
    with open(layout.name_map_file(root, dataset), newline="") as fh:
        manual = {r["manual"] for r in csv.DictReader(fh)}
    assert manual <= set(table)
    all_ids: list[str] = []
    for sub in SAMPLE_SUBSPLITS:
        classes = _subsplit_classes(root, sub)
        assert classes
        for m, dim in zip(("audio", "video"), dims):
            folder = layout.feature_dir(root, feature_set, False) / m / sub
            assert sorted(p.name for p in folder.iterdir()) == sorted(f"{c}.h5" for c in classes)
        for c in classes:
            xa, ida = _read_avg(layout.class_feature_file(root, feature_set, False, "audio", sub, c))
            xv, idv = _read_avg(layout.class_feature_file(root, feature_set, False, "video", sub, c))
            assert xa.shape == (len(ida), dims[0]) and xv.shape == (len(idv), dims[1])
            assert xa.dtype == np.float32 and len(ida) >= 2
            assert ida == idv, f"{sub}/{c}: audio and video list different videos"
            ta = _read_seq(layout.class_feature_file(root, feature_set, True, "audio", sub, c))
            tv = _read_seq(layout.class_feature_file(root, feature_set, True, "video", sub, c))
            assert ta["video_names"] == ida and tv["video_names"] == ida
            all_ids += ida
    assert len(all_ids) == len(set(all_ids)), "video ids must be unique over the benchmark"
    for m in ("audio", "video"):  # stage_2_train's samples are the union of the stage-1 folders
        assert not (layout.feature_dir(root, feature_set, False) / m / "stage_2_train").exists()


def test_layout_no_source(nosrc):
    _check_layout(nosrc, "Synthetic")
    assert layout.name_map_file(nosrc, "Synthetic").name == "synthetic_w2v_class_names.csv"
    for split in layout.SPLITS:
        for sub in synth.ALL_SUBSPLITS:
            assert layout.split_class_file(nosrc, split, sub).is_file()
    main = _lines(layout.split_class_file(nosrc, "main_split", "stage_2_test_unseen"))
    cls = _lines(layout.split_class_file(nosrc, "cls_split", "stage_2_test_unseen"))
    train = _lines(layout.split_class_file(nosrc, "main_split", "stage_1_train"))
    val_unseen = _lines(layout.split_class_file(nosrc, "main_split", "stage_1_val_unseen"))
    assert (len(train), len(val_unseen), len(main), len(cls)) == (30, 12, 9, 6)
    assert set(cls) < set(main) and not set(main) & (set(train) | set(val_unseen)) and not set(train) & set(val_unseen)
    ids = _read_avg(layout.class_feature_file(nosrc, "main", False, "video", "stage_1_train", train[0]))[1]
    assert ids[0] == f"v_{train[0]}_g01_c01"


def test_layout_like_ucf(ucf):
    _check_layout(ucf, "UCF")
    meta = packaged.load("UCF")
    split_dir = layout.class_split_dir(ucf)
    assert sorted(p.relative_to(split_dir).as_posix() for p in split_dir.rglob("*") if p.is_file()) == sorted(
        ["all_class.txt", "ucf_w2v_class_names.csv"] + [f"{s}/{sub}.txt" for s in layout.SPLITS for sub in synth.ALL_SUBSPLITS])
    assert read_class_list(split_dir / "all_class.txt") == meta.all_classes
    assert read_name_map_table(split_dir / "ucf_w2v_class_names.csv") == (meta.name_map_columns, meta.name_map)
    for s in layout.SPLITS:
        for sub in synth.ALL_SUBSPLITS:
            assert read_class_list(layout.split_class_file(ucf, s, sub)) == meta.splits[s][sub]
    text = load_text_embeddings(layout.feature_dir(ucf, "main", False) / "text" / "word_embeddings_ucf_normed.npy")
    assert list(text) == list(meta.text) and all(np.array_equal(text[k], meta.text[k]) for k in text)
    # The split files spell it HandStandPushups; the feature files follow the split files.
    assert layout.class_feature_file(ucf, "main", False, "audio", "stage_1_train", "HandStandPushups").is_file()
    assert "like" in (ucf / "synth_info_main.json").read_text()


def _tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root but the generator's own info file (which names the source)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith("synth_info_")}


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason=MISSING_REASON)
@pytest.mark.parametrize("feature_set", ["main", "cls"])
def test_like_equals_source(tmp_path, feature_set):
    # The other two benchmarks: test_packaged.py checks that their packaged metadata equals what
    # source= reads, which is all that the generator takes from a source.
    dataset = "UCF"
    kw = dict(scale=0.05, seed=3, feature_set=feature_set, temporal=True, progress=False)
    from_source = generate_benchmark(tmp_path / "source", source=BENCHMARKS / dataset, **kw)
    from_package = generate_benchmark(tmp_path / "like", like=dataset, **kw)
    a, b = _tree_hashes(from_source), _tree_hashes(from_package)
    assert len(a) > 100 and a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    for rel in a:  # the class-split files are the original files, byte for byte
        if rel.startswith("class-split/"):
            assert (from_package / rel).read_bytes() == (BENCHMARKS / dataset / rel).read_bytes(), rel


def test_source_and_like_are_exclusive(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        generate_benchmark(tmp_path, source=tmp_path, like="UCF", progress=False)
    with pytest.raises(ValueError, match="ActivityNet, UCF, VGGSound"):
        generate_benchmark(tmp_path, like="Kinetics", progress=False)


def _exploit_npy(path: Path, marker: Path) -> None:
    """A .npy whose pickled payload runs `touch marker` when loaded with np.load(allow_pickle=True)."""

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (), }".ljust(127) + b"\n"
                     + pickle.dumps(Exploit()))


def test_source_text_goes_through_restricted_unpickler(tmp_path):
    source = packaged_folder("UCF", tmp_path / "src")
    marker = tmp_path / "pwned"
    _exploit_npy(source / layout.text_file_name("UCF"), marker)
    with pytest.raises(UnsafePickleError, match="system"):
        generate_benchmark(tmp_path / "out", source=source, scale=0.01, progress=False)
    assert not marker.exists()


def test_ridge_probe_text_goes_through_restricted_unpickler(tmp_path):
    root = generate_benchmark(tmp_path, scale=0.02, seed=0, temporal=False, progress=False)
    marker = tmp_path / "pwned"
    _exploit_npy(layout.feature_dir(root, "main", False) / "text" / layout.text_file_name("Synthetic"), marker)
    with pytest.raises(UnsafePickleError, match="system"):
        ridge_probe(root)
    assert not marker.exists()


def test_averaged_is_mean_of_temporal(nosrc):
    for sub in ("stage_1_train", "stage_2_test_unseen"):
        for c in _subsplit_classes(nosrc, sub)[:4]:
            lengths = {}
            for m in ("audio", "video"):
                avg, _ = _read_avg(layout.class_feature_file(nosrc, "main", False, m, sub, c))
                seq = _read_seq(layout.class_feature_file(nosrc, "main", True, m, sub, c))
                assert len(seq["features"]) == len(avg)
                np.testing.assert_allclose(np.stack([s.mean(0) for s in seq["features"]]), avg, rtol=1e-5, atol=1e-5)
                lengths[m] = np.array([len(s) for s in seq["features"]])
            assert lengths["video"].min() >= 3 and lengths["video"].max() <= 15
            assert np.abs(lengths["audio"] - lengths["video"]).max() <= 1
    all_lengths = [len(s) for c in _subsplit_classes(nosrc, "stage_1_train")
                   for s in _read_seq(layout.class_feature_file(nosrc, "main", True, "video", "stage_1_train", c))["features"]]
    assert len(set(all_lengths)) >= 5, "sequence lengths should vary per video"


def _all_arrays(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted((root / "features").rglob("*.h5")):
        if p.parts[-4].endswith("_non_averaged"):
            out[str(p.relative_to(root))] = b"".join(s.tobytes() for s in _read_seq(p)["features"])
        else:
            out[str(p.relative_to(root))] = _read_avg(p)[0].tobytes()
    return out


def test_deterministic(tmp_path, nosrc):
    again = generate_benchmark(tmp_path / "a", scale=0.1, seed=0, progress=False)
    other = generate_benchmark(tmp_path / "b", scale=0.1, seed=1, temporal=False, progress=False)
    first, second = _all_arrays(nosrc), _all_arrays(again)
    assert first.keys() == second.keys() and all(first[k] == second[k] for k in first)
    for rel in ("class-split/all_class.txt", "class-split/main_split/stage_2_test_unseen.txt"):
        assert (nosrc / rel).read_bytes() == (again / rel).read_bytes()
    third = _all_arrays(other)
    common = first.keys() & third.keys()
    assert all(first[k] != third[k] for k in common)
    # A different seed also draws other unseen classes.
    assert _lines(nosrc / "class-split/main_split/stage_2_test_unseen.txt") != \
        _lines(other / "class-split/main_split/stage_2_test_unseen.txt")


def test_counts_follow_packaged_counts(ucf):
    meta = packaged.load("UCF")
    spec = synth._spec_from_metadata(meta, "UCF", 1.0)
    for sub, c in (("stage_1_train", "Archery"), ("stage_1_train", "HandStandPushups"),
                   ("stage_2_test_unseen", "BandMarching"), ("stage_2_test_unseen", "Typing")):
        assert spec.counts[sub][c] == meta.counts[sub][c] > 50
        n = len(_read_avg(layout.class_feature_file(ucf, "main", False, "video", sub, c))[0])
        assert n == max(2, round(0.1 * meta.counts[sub][c])) < meta.counts[sub][c]  # scale 0.1 shrinks them
    assert sum(spec.counts["stage_1_val_seen"].values()) == 353
    assert min(synth._spec_from_metadata(meta, "UCF", 0.001).counts["stage_1_val_seen"].values()) == 2


def test_counts_without_csv_use_protocol_totals():
    meta = packaged.load("VGGSound")  # the release has no stage_1_train.csv
    spec = synth._spec_from_metadata(meta, "VGGSound", 1.0)
    assert sum(spec.counts["stage_1_train"].values()) == 70351 and len(spec.counts["stage_1_train"]) == 138
    assert sum(spec.counts["stage_2_test_unseen"].values()) == 3450
    assert meta.counts_from["stage_1_train"].startswith("no csv")


def test_sample_counts_fallbacks(tmp_path):
    splits = {"main_split": {"stage_1_train": ["A", "B"], "stage_1_val_seen": ["A", "B"], "stage_1_val_unseen": ["C"],
                             "stage_2_test_seen": ["A", "B", "C"], "stage_2_test_unseen": ["D", "E"]}}
    csv_path = tmp_path / "class-split" / "main_split" / "stage_1_val_seen.csv"
    csv_path.parent.mkdir(parents=True)
    csv_path.write_text("filename,label\n" + "".join(f"v{i},{'a' if i < 3 else 'B'}\n" for i in range(4)))
    counts, origin = sample_counts(tmp_path, "UCF", splits)
    assert counts["stage_1_val_seen"] == {"A": 3, "B": 1} and origin["stage_1_val_seen"] == "main_split/stage_1_val_seen.csv"
    # No csv: UCF's protocol total, spread like stage_1_val_seen (3:1) or evenly.
    assert counts["stage_1_train"] == {"A": 2381, "B": 793} and "proportion" in origin["stage_1_train"]
    assert counts["stage_2_test_unseen"] == {"D": 634, "E": 633} and "evenly" in origin["stage_2_test_unseen"]
    # An unknown benchmark without csvs: the mean count of the sub-splits known so far.
    counts, _ = sample_counts(tmp_path, "Mine", splits)
    assert counts["stage_1_train"] == {"A": 3, "B": 1} and counts["stage_1_val_unseen"] == {"C": 2}


def test_learnable_but_not_trivial(tmp_path):
    probes = {d: ridge_probe(generate_benchmark(tmp_path / str(d), scale=0.25, difficulty=d, seed=0, temporal=False,
                                                progress=False))
              for d in (0.2, DEFAULT_DIFFICULTY, 0.97)}
    default, easy, hard = probes[DEFAULT_DIFFICULTY], probes[0.2], probes[0.97]
    chance = default["chance"]
    assert 2 * chance < default["zsl"] < 0.9, default
    assert easy["zsl"] > default["zsl"] + 0.1 > hard["zsl"] + 0.1, probes
    assert hard["zsl"] < 2.5 * chance, hard
    # Visual is the more informative modality.
    assert easy["video"] > easy["audio"] + 0.1, easy
    assert default["video"] > default["audio"], default


def test_corrupted_streams():
    rng = np.random.default_rng(0)
    semantic = {f"c{i}": v for i, v in enumerate(synth._unit(rng.standard_normal((6, 300))))}
    model = SynthModel(semantic, DEFAULT_DIFFICULTY, seed=0)
    samples = {c: model.sample(c, "stage_1_train", 300) for c in semantic}
    for m, p in (("audio", synth.AUDIO.corrupt), ("video", synth.VIDEO.corrupt)):
        flags = np.concatenate([s[f"{m}_corrupt"] for s in samples.values()])
        assert abs(flags.mean() - p) < 0.04
        x = np.concatenate([s[f"{m}_avg"] for s in samples.values()]).astype(np.float64)
        x -= x.mean(0)
        labels = np.repeat(np.arange(len(samples)), 300)
        means = np.stack([x[(labels == k) & ~flags].mean(0) for k in range(len(samples))])
        cos = (x * means[labels]).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(means[labels], axis=1)
        assert cos[flags].mean() < 0.5 * cos[~flags].mean(), m  # corrupted streams carry little class signal
    a = np.concatenate([s["audio_corrupt"] for s in samples.values()])
    v = np.concatenate([s["video_corrupt"] for s in samples.values()])
    assert (a != v).sum() > 0.5 * (a | v).sum(), "audio and video are corrupted independently"


def test_gain_sets_how_nonlinear_the_text_to_feature_map_is(tmp_path):
    rng = np.random.default_rng(0)
    semantic = {f"c{i}": v for i, v in enumerate(synth._unit(rng.standard_normal((6, 300))))}
    u = np.stack([SynthModel(semantic, DEFAULT_DIFFICULTY, seed=0).latent["video"][c] for c in semantic])

    def saturated(gain):  # share of the MLP's hidden units past tanh's knee for the class latents
        mlp = SynthModel(semantic, DEFAULT_DIFFICULTY, seed=0, gain=gain).mlp["video"]
        return (np.abs(np.tanh(u.astype(np.float32) @ mlp["w1"] + mlp["b1"])) > 0.95).mean()

    assert saturated(8.0) > 0.7 > 0.35 > saturated(synth.MLP_GAIN), (saturated(8.0), saturated(synth.MLP_GAIN))
    default = generate_benchmark(tmp_path / "a", scale=0.01, dataset="Tiny", temporal=False, progress=False)
    assert "gain" not in json.loads((default / "synth_info_main.json").read_text())  # default files unchanged
    root = generate_benchmark(tmp_path / "b", scale=0.01, dataset="Tiny", temporal=False, progress=False, gain=8.0)
    assert json.loads((root / "synth_info_main.json").read_text())["gain"] == 8.0
    c = _lines(layout.split_class_file(root, "main_split", "stage_1_train"))[0]
    x8 = _read_avg(layout.class_feature_file(root, "main", False, "video", "stage_1_train", c))[0]
    x = _read_avg(layout.class_feature_file(default, "main", False, "video", "stage_1_train", c))[0]
    assert x8.shape == x.shape and not np.allclose(x8, x)
    with pytest.raises(ValueError, match="gain"):
        generate_benchmark(tmp_path / "c", scale=0.01, dataset="Tiny", progress=False, gain=0.0)
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_cls_feature_set(tmp_path):
    root = generate_benchmark(tmp_path, scale=0.01, feature_set="cls", dataset="Tiny", progress=False)
    c = _lines(layout.split_class_file(root, "main_split", "stage_1_train"))[0]
    xa, ids = _read_avg(layout.class_feature_file(root, "cls", False, "audio", "stage_1_train", c))
    xv, _ = _read_avg(layout.class_feature_file(root, "cls", False, "video", "stage_1_train", c))
    assert xa.shape == (2, 128) and xv.shape == (2, 4096)
    sa = _read_seq(layout.class_feature_file(root, "cls", True, "audio", "stage_1_train", c))["features"]
    sv = _read_seq(layout.class_feature_file(root, "cls", True, "video", "stage_1_train", c))["features"]
    for a, v in zip(sa, sv):
        assert len(v) > len(a)  # C3D steps are 0.64 s, VGGish steps 0.96 s
        assert a.min() >= 0 and a.max() <= 255 and np.array_equal(a, np.round(a))  # VGGish uint8 range
    assert (root / "features/cls_features/text/word_embeddings_tiny_normed.npy").is_file()


def test_loader_round_trip(nosrc):
    from avgzsl.config import DataConfig
    from avgzsl.data.loading import load_benchmark

    avg = load_benchmark(DataConfig(dataset="Synthetic", root=str(nosrc), feature_set="main", temporal=False), progress=False)
    tmp = load_benchmark(DataConfig(dataset="Synthetic", root=str(nosrc), feature_set="main", temporal=True), progress=False)
    cls = load_benchmark(DataConfig(dataset="Synthetic", root=str(nosrc), split="cls_split"), progress=False)
    assert (avg.audio_dim, avg.video_dim, avg.text_dim) == (512, 512, 300)
    test = avg.phases["test"]
    assert (len(test.seen), len(test.unseen)) == (42, 9) and len(cls.phases["test"].unseen) == 6
    n = sum(len(_read_avg(layout.class_feature_file(nosrc, "main", False, "video", "stage_2_test_unseen", c))[0])
            for c in _subsplit_classes(nosrc, "stage_2_test_unseen"))
    assert int(np.isin(test.samples.labels.numpy(), test.unseen.numpy()).sum()) == n
    # The loaded text of each class is its name-mapped vector, and temporal means equal the averaged features.
    table = np.load(layout.feature_dir(nosrc, "main", False) / "text/word_embeddings_synthetic_normed.npy",
                    allow_pickle=True).item()
    for i in test.unseen.tolist():
        name = avg.class_names[i]
        np.testing.assert_allclose(avg.text[i].numpy(), table[f"Class {name[5:]}"], atol=1e-6)
    ts = tmp.phases["test"].samples
    assert ts.video_ids == test.samples.video_ids
    lengths = ts.video.lengths()
    sums = np.add.reduceat(ts.video.values.numpy().astype(np.float64), ts.video.offsets[:-1].numpy(), axis=0)
    np.testing.assert_allclose(sums / lengths.numpy()[:, None], test.samples.video.values.numpy(), atol=1e-4)


def test_loader_reads_like_mode(ucf):
    from avgzsl.config import DataConfig
    from avgzsl.data.loading import load_benchmark

    bench = load_benchmark(DataConfig(dataset="UCF", root=str(ucf)), progress=False)
    assert len(bench.phases["test"].unseen) == 9 and len(bench.phases["stage1_train"].seen) == 30


def test_regenerating_replaces_own_output_only(tmp_path):
    first = generate_benchmark(tmp_path, scale=0.02, seed=0, temporal=False, progress=False)
    again = generate_benchmark(tmp_path, scale=0.02, seed=1, temporal=False, progress=False)  # other classes
    folder = layout.feature_dir(again, "main", False) / "video" / "stage_2_test_unseen"
    assert first == again
    assert sorted(p.stem for p in folder.iterdir()) == _lines(layout.split_class_file(again, "main_split", "stage_2_test_unseen"))
    foreign = tmp_path / "mine" / "Synthetic" / "features" / "main_features"
    foreign.mkdir(parents=True)
    with pytest.raises(FileExistsError):
        generate_benchmark(tmp_path / "mine", scale=0.02, temporal=False, progress=False)
    assert foreign.is_dir()

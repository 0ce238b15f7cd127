"""The packaged metadata of the real benchmarks (avgzsl.data.packaged) and its derivation.

Everything but the comparison with the original files runs without ../shared/benchmarks.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from avgzsl.data import layout, packaged
from avgzsl.data.classes import read_class_list, read_name_map_table, text_table
from avgzsl.data.metadata import SAMPLE_SUBSPLITS, metadata_from_folder, write_class_split

from shared_data import BENCHMARKS, MISSING_REASON, packaged_folder

REPO = Path(__file__).resolve().parents[1]
PACKAGED_DIR = REPO / "src" / "avgzsl" / "data" / "benchmarks"
DATASETS = ["ActivityNet", "UCF", "VGGSound"]

# protocol.md section 1: classes in all_class.txt, stage_1_train / val unseen / test seen / test unseen
# classes of main_split, sample totals per sub-split, and the unseen test classes cls_split drops.
PROTOCOL = {
    "UCF": dict(all=101, classes=(30, 12, 42, 9),
                totals=(3174, 353, 1467, 555, 1267), dropped={"BandMarching", "BrushingTeeth", "Typing"}),
    "ActivityNet": dict(all=200, classes=(99, 51, 150, 50),
                        totals=(9204, 1023, 4307, 1615, 4199), dropped={"Brushingteeth", "Knitting"}),
    "VGGSound": dict(all=309, classes=(138, 69, 207, 69), totals=(70351, 7817, 3102, 9032, 3450),
                     dropped={"airplane", "helicopter", "sharpen knife", "thunder", "wind chime"}),
}


def test_available():
    assert packaged.available() == DATASETS


def test_load_any_case_and_unknown_name():
    assert packaged.load("ucf").dataset == "UCF" and packaged.resolve("activitynet") == "ActivityNet"
    with pytest.raises(ValueError, match="'Kinetics'.*ActivityNet, UCF, VGGSound"):
        packaged.load("Kinetics")


@pytest.mark.parametrize("dataset", DATASETS)
def test_packaged_content_matches_protocol(dataset):
    meta, facts = packaged.load(dataset), PROTOCOL[dataset]
    assert len(meta.all_classes) == facts["all"]
    main, cls = meta.splits["main_split"], meta.splits["cls_split"]
    subs = ("stage_1_train", "stage_1_val_unseen", "stage_2_test_seen", "stage_2_test_unseen")
    assert tuple(len(main[s]) for s in subs) == facts["classes"]
    assert tuple(sum(meta.counts[s].values()) for s in SAMPLE_SUBSPLITS) == facts["totals"]
    assert all(list(meta.counts[s]) == meta.subsplit_classes(s) for s in SAMPLE_SUBSPLITS)
    # cls_split differs from main_split only in the unseen test classes that overlap the feature
    # extractors' pre-training data.
    assert {s: v for s, v in cls.items() if s != "stage_2_test_unseen"} == \
        {s: v for s, v in main.items() if s != "stage_2_test_unseen"}
    assert set(main["stage_2_test_unseen"]) - set(cls["stage_2_test_unseen"]) == facts["dropped"]
    # One L2-normalised 300-d float32 vector per manual name; every class has one (by name).
    assert set(meta.text) == {manual for _, manual in meta.name_pairs()}
    vectors = np.stack(list(meta.text.values()))
    assert vectors.dtype == np.float32 and vectors.shape == (len(meta.all_classes), 300)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert text_table(meta.class_table(), meta.text).shape == (facts["all"], 300)


def test_files_are_small_arrays_only_and_licensed():
    files = sorted(p.name for p in PACKAGED_DIR.iterdir())
    assert files == sorted([f"{d}.{ext}" for d in DATASETS for ext in ("json", "npz")] + [packaged.LICENSE_FILE])
    assert sum(p.stat().st_size for p in PACKAGED_DIR.iterdir()) < 2_000_000
    for d in DATASETS:
        with np.load(PACKAGED_DIR / f"{d}.npz", allow_pickle=False) as arrays:
            assert arrays.files == ["text"] and arrays["text"].dtype == np.float32
        # Fixed zip timestamps: a derivation at another time gives the same bytes.
        assert {i.date_time for i in zipfile.ZipFile(PACKAGED_DIR / f"{d}.npz").infolist()} == {(1980, 1, 1, 0, 0, 0)}
    licence = packaged.license_text()
    assert "MIT License" in licence and "Otniel-Bogdan Mercea" in licence


def test_save_gives_back_the_packaged_bytes(tmp_path):
    for d in DATASETS:
        written = packaged.save(packaged.load(d), tmp_path)
        assert [p.name for p in written] == [f"{d}.json", f"{d}.npz"]
        for p in written:
            assert p.read_bytes() == (PACKAGED_DIR / p.name).read_bytes(), p.name


def test_write_class_split_keeps_the_files_format(tmp_path):
    meta = packaged.load("VGGSound")
    write_class_split(meta, tmp_path, "vggsound_w2v_class_names.csv")
    # The release's cls_split/stage_2_test_unseen.txt has no last newline; main_split's has one.
    assert meta.unterminated == ["cls_split/stage_2_test_unseen.txt"]
    assert not (tmp_path / "cls_split/stage_2_test_unseen.txt").read_bytes().endswith(b"\n")
    assert (tmp_path / "main_split/stage_2_test_unseen.txt").read_bytes().endswith(b"\n")
    assert read_class_list(tmp_path / "cls_split/stage_2_test_unseen.txt") == meta.splits["cls_split"]["stage_2_test_unseen"]
    csv_text = (tmp_path / "vggsound_w2v_class_names.csv").read_text()
    assert csv_text.startswith("original,manual,category\n") and '"bird chirping, tweeting",bird chirping,animals\n' in csv_text
    assert read_name_map_table(tmp_path / "vggsound_w2v_class_names.csv") == (meta.name_map_columns, meta.name_map)


def test_derive_refuses_what_it_cannot_give_back(tmp_path):
    source = packaged_folder("UCF", tmp_path / "src")
    shutil.copyfile(PACKAGED_DIR / packaged.LICENSE_FILE, tmp_path / "src" / packaged.LICENSE_FILE)
    written = packaged.derive(tmp_path / "src", tmp_path / "out", datasets=("UCF",))
    assert sorted(p.name for p in written) == sorted(["UCF.json", "UCF.npz", packaged.LICENSE_FILE])
    # No csvs in this folder: counts fall back to the protocol totals, so only the names must match.
    got = packaged.read(tmp_path / "out", "UCF")
    assert got.splits == packaged.load("UCF").splits and got.counts_from["stage_1_train"].startswith("no csv")
    crlf = layout.split_class_file(source, "main_split", "stage_1_train")
    crlf.write_bytes(crlf.read_bytes().replace(b"\n", b"\r\n"))
    with pytest.raises(ValueError, match="main_split/stage_1_train.txt is not reproduced"):
        packaged.derive(tmp_path / "src", tmp_path / "out2", datasets=("UCF",))


def test_package_data_ships_the_packaged_files():
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["avgzsl"]
    for p in PACKAGED_DIR.iterdir():
        rel = p.relative_to(REPO / "src" / "avgzsl").as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not in pyproject's package-data"


def test_no_copies_of_the_original_files_are_tracked():
    try:
        tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                 capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    bad = [f for f in tracked if re.search(r"word_embeddings_.*_normed\.npy", f) or "class-split/" in f]
    assert bad == []


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason=MISSING_REASON)
def test_packaged_matches_original(tmp_path):
    for d in DATASETS:
        assert packaged.same_metadata(packaged.load(d), metadata_from_folder(BENCHMARKS / d)), d
    # Deriving again gives the shipped files byte for byte: they are up to date, and derivation is deterministic.
    for p in packaged.derive(BENCHMARKS, tmp_path):
        assert p.read_bytes() == (PACKAGED_DIR / p.name).read_bytes(), p.name

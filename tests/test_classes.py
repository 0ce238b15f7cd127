"""Class lists, name maps, class ids and the text table (by name and the legacy reference order).

The tests on real benchmarks read the packaged copy of their metadata, written out as files."""

import numpy as np
import pytest
import torch

from avgzsl.data.classes import (
    ClassSplitError,
    build_class_table,
    find_text_file,
    legacy_misaligned,
    load_class_table,
    load_text_embeddings,
    read_class_list,
    read_name_map,
    read_name_map_table,
    read_split,
    text_table,
)
from avgzsl.data.types import SUBSPLITS

from shared_data import packaged_folder


@pytest.fixture(scope="module")
def real_roots(tmp_path_factory):
    """UCF, ActivityNet, VGGSound: class-split/ and text file, written from the packaged copy."""
    parent = tmp_path_factory.mktemp("real")
    return {ds: packaged_folder(ds, parent) for ds in ("UCF", "ActivityNet", "VGGSound")}


def test_read_class_list_strips_blanks_and_missing_last_newline(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("  Alpha \n\nbeta gamma\r\n\n  \nDelta")  # no trailing newline, CRLF, blank lines
    assert read_class_list(p) == ["Alpha", "beta gamma", "Delta"]
    with pytest.raises(ClassSplitError, match="missing.txt"):
        read_class_list(tmp_path / "missing.txt")


def test_read_name_map_with_category_and_quoted_commas(tmp_path):
    p = tmp_path / "x_w2v_class_names.csv"
    p.write_text('original,manual,category\n"bird chirping, tweeting",bird chirping,animals\nCleanAndJerk,Weight Lifting,\n')
    assert read_name_map(p) == [("bird chirping, tweeting", "bird chirping"), ("CleanAndJerk", "Weight Lifting")]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,label\na,b\n")
    with pytest.raises(ClassSplitError, match="bad.csv"):
        read_name_map(bad)


def test_read_name_map_table_keeps_every_column(tmp_path):
    p = tmp_path / "x_w2v_class_names.csv"
    p.write_text('manual,original,category\n\nbird chirping,"bird chirping, tweeting",animals\nWeight Lifting,CleanAndJerk\n')
    columns, rows = read_name_map_table(p)
    assert columns == ["manual", "original", "category"]
    assert rows == [("bird chirping", "bird chirping, tweeting", "animals"), ("Weight Lifting", "CleanAndJerk", "")]
    # Pairs are (original, manual) whatever the column order.
    assert read_name_map(p) == [("bird chirping, tweeting", "bird chirping"), ("CleanAndJerk", "Weight Lifting")]
    half = tmp_path / "half.csv"
    half.write_text("original,manual\nA,a\nB,\n")
    with pytest.raises(ClassSplitError, match="line 3"):
        read_name_map_table(half)


def test_ids_follow_sorted_names_and_match_case_insensitively():
    table = build_class_table(["beta", "Alpha", "Gamma"], [("alpha", "a"), ("BETA", "b"), ("gamma", "g")])
    # Python's case-sensitive sort, as the reference: upper case first.
    assert table.names == ["Alpha", "Gamma", "beta"]
    assert table.manual == ["a", "g", "b"]
    assert table.ids(["BETA", "alpha"]).tolist() == [0, 2]
    with pytest.raises(ClassSplitError, match="'Delta'"):
        table.ids(["Delta"], where="split.txt")


def test_missing_text_embedding_names_class_and_file():
    table = build_class_table(["A", "B"], [("A", "apple"), ("B", "banana")])
    with pytest.raises(ClassSplitError) as err:
        text_table(table, {"apple": np.ones(3, np.float32)}, source="emb.npy")
    assert "'B'" in str(err.value) and "banana" in str(err.value) and "emb.npy" in str(err.value)


def test_legacy_order_hand_worked_example():
    # Sorted originals: Bee, Cat, ant -> ids 0, 1, 2. Sorted manual keys: "ant", "bee", "cat".
    table = build_class_table(["ant", "Bee", "Cat"], [("ant", "ant"), ("Bee", "bee"), ("Cat", "cat")])
    emb = {k: np.full(2, v, np.float32) for k, v in (("ant", 1.0), ("bee", 2.0), ("cat", 3.0))}
    by_name = text_table(table, emb)
    legacy = text_table(table, emb, legacy_text_order=True)
    assert by_name[:, 0].tolist() == [2.0, 3.0, 1.0]  # Bee, Cat, ant get their own vectors
    assert legacy[:, 0].tolist() == [1.0, 2.0, 3.0]  # Bee gets ant's, Cat gets bee's, ant gets cat's


def _real(real_roots, dataset):
    root = real_roots[dataset]
    table = load_class_table(root, dataset)
    emb = load_text_embeddings(find_text_file(root, dataset, "main", False))
    return root, table, emb


@pytest.mark.parametrize(
    "dataset, n_classes, misaligned, n_unseen, unseen_misaligned",
    # Numbers from protocol.md ("The text-embedding misalignment in the reference loaders").
    [("UCF", 101, 79, 9, 5), ("VGGSound", 309, 205, 69, 42), ("ActivityNet", 200, 8, None, None)],
)
def test_real_legacy_misalignment_counts(real_roots, dataset, n_classes, misaligned, n_unseen, unseen_misaligned):
    root, table, emb = _real(real_roots, dataset)
    assert len(table) == n_classes
    by_name = text_table(table, emb)
    legacy = text_table(table, emb, legacy_text_order=True)
    wrong = ~(by_name == legacy).all(dim=1)
    assert int(wrong.sum()) == misaligned
    assert len(legacy_misaligned(table, emb)) == misaligned
    if n_unseen is not None:
        split = read_split(root, "main_split", table, SUBSPLITS)
        unseen = table.ids(split["stage_2_test_unseen"])
        assert len(unseen) == n_unseen
        assert int(wrong[unseen].sum()) == unseen_misaligned


def test_real_by_name_mapping_and_case_insensitive_split_names(real_roots):
    root, table, emb = _real(real_roots, "UCF")
    text = text_table(table, emb)
    # The manual name is not a re-spacing of the original here.
    assert torch.equal(text[table.index("CleanAndJerk")], torch.from_numpy(emb["Weight Lifting"]))
    split = read_split(root, "main_split", table, SUBSPLITS)
    # The split files say HandStandPushups; all_class.txt says HandstandPushups.
    assert "HandStandPushups" in read_class_list(root / "class-split" / "main_split" / "stage_1_train.txt")
    assert "HandstandPushups" in split["stage_1_train"]
    assert table.names == sorted(read_class_list(root / "class-split" / "all_class.txt"))


def test_real_activitynet_names_resolve(real_roots):
    root, table, emb = _real(real_roots, "ActivityNet")
    split = read_split(root, "cls_split", table, SUBSPLITS)
    assert sum(len(v) for v in split.values()) > 0
    text = text_table(table, emb)
    assert torch.equal(text[table.index("Applyingsunscreen")], torch.from_numpy(emb["Applying sunscreen"]))

"""The restricted unpickler: legitimate benchmark pickles load, code-executing pickles are refused."""

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from avgzsl.data.safe_pickle import UnsafePickleError, safe_load_npy_dict, safe_load_pickle
from avgzsl.data.writers import write_temporal_class_file, write_text_embeddings

from shared_data import BENCHMARKS, MISSING_REASON


class _Exploit:
    """Unpickling this runs `touch <marker>` through os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _tcaf_like(rng):
    return {
        "features": [rng.standard_normal((t, 4)).astype(np.float32) for t in (3, 1, 5)],
        "video_names": [b"vid_a", b"vid_b", "vid_c"],  # the TCaF scripts store bytes from HDF5
        "fps": [25, 25, 25],
    }


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_legit_temporal_pickle_loads(tmp_path, protocol):
    obj = _tcaf_like(np.random.default_rng(protocol))
    obj["scalar"] = np.float32(0.5)
    obj["u8"] = np.arange(6, dtype=np.uint8).reshape(2, 3)
    path = tmp_path / "Class.h5"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    got = safe_load_pickle(path)
    assert got["video_names"] == obj["video_names"] and got["fps"] == obj["fps"]
    for a, b in zip(got["features"], obj["features"]):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert got["scalar"] == obj["scalar"] and np.array_equal(got["u8"], obj["u8"])


def test_writer_outputs_load(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((t, 3)).astype(np.float32) for t in (2, 4)]
    write_temporal_class_file(tmp_path / "a" / "X.h5", seqs, ["v1", "v2"])
    got = safe_load_pickle(tmp_path / "a" / "X.h5")
    assert got["video_names"] == ["v1", "v2"] and all(np.array_equal(a, b) for a, b in zip(got["features"], seqs))
    emb = {"dog barking": rng.standard_normal(5).astype(np.float32), "cat": rng.standard_normal(5).astype(np.float32)}
    write_text_embeddings(tmp_path / "t.npy", emb)
    loaded = safe_load_npy_dict(tmp_path / "t.npy")
    assert loaded.keys() == emb.keys() and all(np.array_equal(loaded[k], emb[k]) for k in emb)


def test_malicious_pickle_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "Evil.h5"
    path.write_bytes(pickle.dumps({"features": [_Exploit(marker)], "video_names": ["x"], "fps": 25}))
    with pytest.raises(UnsafePickleError) as err:
        safe_load_pickle(path)
    assert str(path) in str(err.value) and "system" in str(err.value)
    assert not marker.exists()


def test_malicious_npy_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned_npy"
    buf = io.BytesIO()
    np.save(buf, np.array({"a": np.zeros(3, np.float32)}, dtype=object), allow_pickle=True)
    legit = buf.getvalue()
    # Same .npy header, payload replaced by a code-executing pickle.
    header_len = legit.index(b"\n") + 1
    path = tmp_path / "word_embeddings_x_normed.npy"
    path.write_bytes(legit[:header_len] + pickle.dumps(_Exploit(marker)))
    with pytest.raises(UnsafePickleError) as err:
        safe_load_npy_dict(path)
    assert str(path) in str(err.value) and "system" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("target", [("builtins", "eval"), ("subprocess", "Popen"), ("numpy", "load")])
def test_other_globals_refused(tmp_path, target):
    module, name = target
    # A protocol-0 pickle that just references the global.
    path = tmp_path / "g.pkl"
    path.write_bytes(f"c{module}\n{name}\n.".encode())
    with pytest.raises(UnsafePickleError, match=name):
        safe_load_pickle(path)


def test_plain_numeric_npy_is_not_a_dict(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="x.npy"):
        safe_load_npy_dict(tmp_path / "x.npy")


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason=MISSING_REASON)
def test_real_text_embeddings_load_like_numpy():
    for path in sorted(BENCHMARKS.glob("*/word_embeddings_*_normed.npy")):
        ours = safe_load_npy_dict(path)
        ref = np.load(path, allow_pickle=True).item()
        assert ours.keys() == ref.keys()
        assert all(np.array_equal(ours[k], ref[k]) for k in ref)

"""Load the benchmark's pickles without executing arbitrary code.

Two kinds of pickles come with a benchmark download: the temporal (TCaF) per-class feature files
(plain `pickle.dump` of a dict of lists of numpy arrays) and the text embeddings (`np.save` of a
dict, i.e. a .npy file holding a pickled 0-d object array). `pickle.load` / `np.load(allow_pickle=True)`
on a file from the internet can run any code; here every global a pickle asks for is checked
against an allow-list of plain containers and numpy array/dtype/scalar reconstructors, and
anything else raises UnsafePickleError naming the file and the global.
"""

from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.lib.format as npformat


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global that is not on the allow-list."""

    def __init__(self, path: str, module: str, name: str):
        self.path, self.module, self.name = path, module, name
        super().__init__(
            f"{path}: refusing to unpickle global {module}.{name} (only plain containers, strings, numbers "
            f"and numpy arrays/dtypes/scalars are allowed; the file may be corrupt or malicious: replace it with a "
            f"copy from a trusted source)"
        )

    def __reduce__(self):  # picklable (e.g. raised in a --jobs worker process): rebuilt from its three fields
        return (type(self), (self.path, self.module, self.name))


def _numpy_core_attr(submodule: str, name: str):
    """numpy.core.* was renamed numpy._core.* in numpy 2; resolve either spelling without the deprecation shim."""
    import importlib

    for mod in (f"numpy._core.{submodule}", f"numpy.core.{submodule}"):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(f"numpy has no {submodule}.{name}")


def _allowed() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {}
    for prefix in ("numpy.core", "numpy._core"):
        table[(f"{prefix}.multiarray", "_reconstruct")] = lambda: _numpy_core_attr("multiarray", "_reconstruct")
        table[(f"{prefix}.multiarray", "scalar")] = lambda: _numpy_core_attr("multiarray", "scalar")
        table[(f"{prefix}.numeric", "_frombuffer")] = lambda: _numpy_core_attr("numeric", "_frombuffer")
    table[("numpy", "ndarray")] = lambda: np.ndarray
    table[("numpy", "dtype")] = lambda: np.dtype
    # Protocol-2 pickles written by Python 3 encode bytes as _codecs.encode(str, 'latin1').
    table[("_codecs", "encode")] = lambda: codecs.encode
    for name, obj in (("set", set), ("frozenset", frozenset), ("bytearray", bytearray), ("complex", complex)):
        table[("builtins", name)] = (lambda o=obj: o)
        table[("__builtin__", name)] = (lambda o=obj: o)
    table[("collections", "OrderedDict")] = lambda: collections.OrderedDict
    return table


_ALLOWED = _allowed()


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only allow-listed globals and no persistent ids."""

    def __init__(self, file: BinaryIO, source: str = "<pickle>"):
        super().__init__(file, encoding="latin1")  # latin1: numpy arrays pickled by Python 2
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        resolver = _ALLOWED.get((module, name))
        if resolver is None:
            raise UnsafePickleError(self.source, module, name)
        return resolver()

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(self.source, "<persistent id>", repr(pid)[:80])


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    return RestrictedUnpickler(io.BytesIO(data), source).load()


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Unpickle `path` with the restricted unpickler (raises UnsafePickleError on a refused global)."""
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            return RestrictedUnpickler(fh, str(path)).load()
        except UnsafePickleError:
            raise
        except Exception as exc:  # truncated / not a pickle
            raise pickle.UnpicklingError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc}); the file is "
                                         f"truncated or not a pickle: download it again") from exc


def safe_load_npy_dict(path: str | os.PathLike) -> dict:
    """Read a .npy written by `np.save(path, some_dict)` without np.load(allow_pickle=True).

    The .npy header is parsed with numpy.lib.format; the payload, a pickled 0-d object array, goes
    through the restricted unpickler; the dict inside is returned.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            version = npformat.read_magic(fh)
        except ValueError as exc:
            raise ValueError(f"{path}: not a .npy file ({exc})") from None
        if version == (1, 0):
            shape, _, dtype = npformat.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = npformat.read_array_header_2_0(fh)
        else:
            raise ValueError(f"{path}: unsupported .npy format version {version}")
        if not dtype.hasobject:
            raise ValueError(f"{path}: expected a pickled dict (object array), found a {dtype} array of shape {shape}")
        try:
            obj = RestrictedUnpickler(fh, str(path)).load()
        except UnsafePickleError:
            raise
        except Exception as exc:
            raise pickle.UnpicklingError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc}); the file is "
                                         f"truncated or not a pickle: download it again") from exc
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.size == 1:
        obj = obj.reshape(()).item()
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict inside the .npy file, found {type(obj).__name__}")
    return obj

"""Reading pickles a dataset ships, without letting them run code.

`pickle.load` calls whatever global a file names (`os.system`, `builtins.eval`, …), so a crafted file
in a data root runs its payload the moment it is read. Datasets still ship pickles (the revisited
Oxford/Paris ground truth, Animal-MNIST's arrays), so bob reads them with `RestrictedUnpickler`: it
rebuilds plain containers (dicts, lists, tuples, strings, numbers, bytes, which need no global) and
numpy arrays and scalars, and refuses every other global before it is called, naming it.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np


def _empty_bytes(*args: Any) -> bytes:
    """`bytes()` as protocol 2 writes an empty buffer; `bytes(n)` (n zero bytes) is refused, so a
    file cannot make the reader allocate memory it names."""
    if args:
        raise pickle.UnpicklingError("refusing bytes(...) with arguments: only bytes() is allowed")
    return b""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals numpy arrays and scalars need, under their numpy 1.x and 2.x module names."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Protocol 2 stores bytes as `_codecs.encode(str, "latin1")`; it only converts text to bytes.
        ("_codecs", "encode"): codecs.encode,
        # ... and empty bytes (an empty array's buffer) as `bytes()`.
        ("__builtin__", "bytes"): _empty_bytes,
        ("builtins", "bytes"): _empty_bytes,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the numpy globals needed to rebuild arrays and scalars.

    Anything else (`os.system`, `builtins.eval`, …) is refused before it can be called."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global '{module}.{name}': only plain data and numpy arrays are allowed"
            ) from None


def safe_loads(data: bytes, encoding: str = "ASCII") -> Any:
    """Unpickle plain data and numpy arrays from bytes; any other global raises UnpicklingError.
    `encoding="latin1"` reads Python 2 pickles of numpy arrays, as `pickle.load` would."""
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


def safe_load_file(path: Path, encoding: str = "ASCII") -> Any:
    """`safe_loads` of a file's bytes."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, encoding=encoding).load()

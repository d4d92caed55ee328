"""The geometry cache: decode once, extract many.

Every backbone whose eval transform has the same geometry (resize, crop, interpolation and the
pipeline that implements them; `DataConfig.geometry()`) sees the same uint8 pixels of a split; only
the mean and std differ, and normalising is a cheap step on the device. So the first extraction at a
geometry stores the pixels it decoded, and every later one, of any backbone, reads them instead of
decoding the split's JPEGs again.

Key = sha256 of the canonical JSON of (split fingerprint, split size, geometry, cache format). An
entry is a directory `<root>/<key[:2]>/<key>/` holding `pixels.npy` (uint8 [N, 3, S, S], read
memory-mapped), `meta.json` and, written last, `COMPLETE` with the sha256 of the pixel bytes. It is
built in a temp directory and renamed into place, under the key's lock (`claim`), so concurrent
sweeps decode a geometry once. The pixels are stored as they are (uint8, lossless): features read
through the cache equal the features computed without it, exactly. A reader hashes the bytes as it
streams them and raises `CacheCorruptError` at the end of a pass whose bytes do not match, before any
feature computed from them is stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bob.backbones.meta import DataConfig
from bob.cache import canonical_json, claim_entry
from bob.data.base import ImageSplit
from bob.errors import CacheCorruptError
from bob.preflight import storage_error
from bob.weights import bob_cache_dir

PIXEL_FORMAT = 1
_FILES = ("pixels.npy", "meta.json")


def default_pixel_root() -> Path:
    return bob_cache_dir() / "pixels"


def pixel_key(split: ImageSplit, cfg: DataConfig, device: str = "cpu") -> str:
    """The geometry cache key of a split under a transform: content and geometry, nothing else; and,
    for the `tensor` pipeline on CUDA, that nvjpeg and the GPU resize made the pixels (they may round
    differently from the CPU's libjpeg-turbo and resize, and sharing is exact or not at all)."""
    spec: dict[str, object] = {
        "format": PIXEL_FORMAT,
        "dataset": split.dataset,
        "split": split.split,
        "num_samples": len(split),
        "fingerprint": split.fingerprint,
        "geometry": cfg.geometry(),
    }
    if cfg.pipeline == "tensor" and torch.device(device).type == "cuda":
        spec["decoder"] = "cuda"
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def pixel_bytes(num_samples: int, crop: int) -> int:
    """What one entry holds: uint8 [N, 3, S, S]."""
    return num_samples * 3 * crop * crop


class PixelEntry:
    """A stored geometry: `batches()` streams its pixels in order and checks them as it goes."""

    def __init__(self, entry: Path, pixels: np.ndarray, digest: str, meta: dict[str, Any]) -> None:
        self.entry, self.pixels, self.digest, self.meta = entry, pixels, digest, meta

    def __len__(self) -> int:
        return len(self.pixels)

    def batches(self, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
        """uint8 [B, 3, S, S] batches on `device`. The next batch is read (and hashed) by a thread
        while the model runs on this one; after the last batch the running sha256 must equal the
        recorded one, else CacheCorruptError (the caller's features are then never stored)."""
        h = hashlib.sha256()
        pin = device.type == "cuda"

        def read(start: int) -> torch.Tensor:
            block = np.array(self.pixels[start : start + batch_size])  # a writable copy of the mapped rows
            h.update(memoryview(block).cast("B"))
            tensor = torch.from_numpy(block)
            return tensor.pin_memory() if pin else tensor

        starts = list(range(0, len(self.pixels), batch_size))
        with _Prefetch(read, starts) as blocks:
            for block in blocks:
                yield block.to(device, non_blocking=True)
        if h.hexdigest() != self.digest:
            raise CacheCorruptError(
                f"Geometry cache entry {self.entry} is corrupt: its pixels do not match the checksum "
                f"recorded when they were written. bob stored no features computed from it and left it in "
                f"place for inspection. Delete that directory (rm -r '{self.entry}') and run again."
            )


class _Prefetch:
    """Calls `read(arg)` for each arg in order, one call ahead of the consumer, on a thread."""

    def __init__(self, read: Any, args: list[int]) -> None:
        self.read, self.args = read, args
        self._result: dict[str, Any] = {}
        self._thread: threading.Thread | None = None

    def _start(self, arg: int) -> None:
        def run() -> None:
            try:
                self._result["value"] = self.read(arg)
            except BaseException as err:  # handed to the consumer
                self._result["error"] = err

        self._result = {}
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def _take(self) -> Any:
        assert self._thread is not None
        self._thread.join()
        if "error" in self._result:
            raise self._result["error"]
        return self._result["value"]

    def __enter__(self) -> Iterator[Any]:
        return self._iterate()

    def _iterate(self) -> Iterator[Any]:
        for i, _ in enumerate(self.args):
            if i == 0:
                self._start(self.args[0])
            value = self._take()
            if i + 1 < len(self.args):
                self._start(self.args[i + 1])
            yield value

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._thread.join()


class PixelWriter:
    """Builds one entry while the first extraction at its geometry runs: `add` each batch of pixels
    as it is decoded, `commit` when the pass is complete (`abort` removes the temp dir)."""

    def __init__(self, cache: PixelCache, key: str, num_samples: int, crop: int) -> None:
        self.final = cache.entry_dir(key)
        self.key, self.pos, self._hash = key, 0, hashlib.sha256()
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(dir=self.final.parent, prefix=f".tmp-{key[:12]}-"))
            shape = (num_samples, 3, crop, crop)
            self.pixels = np.lib.format.open_memmap(self.tmp / "pixels.npy", "w+", np.uint8, shape)
        except OSError as err:
            self.abort()
            raise storage_error("geometry cache entry", self.final, err) from err

    def add(self, batch: torch.Tensor) -> None:
        block = batch.cpu().numpy()
        try:
            self.pixels[self.pos : self.pos + len(block)] = block
        except (OSError, ValueError) as err:
            self.abort()
            if isinstance(err, OSError):
                raise storage_error("geometry cache entry", self.final, err) from err
            raise
        self._hash.update(memoryview(np.ascontiguousarray(block)).cast("B"))
        self.pos += len(block)

    def commit(self, meta: dict[str, Any]) -> None:
        if self.pos != len(self.pixels):
            self.abort()
            raise RuntimeError(f"geometry cache entry got {self.pos} of {len(self.pixels)} images")
        try:
            self.pixels.flush()
            del self.pixels
            full = {**meta, "key": self.key, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (self.tmp / "meta.json").write_text(json.dumps(full, indent=1, default=str))
            (self.tmp / "COMPLETE").write_text(json.dumps({"pixels_sha256": self._hash.hexdigest()}))
            for name in (*_FILES, "COMPLETE"):
                with open(self.tmp / name, "rb") as f:
                    os.fsync(f.fileno())
            try:
                os.rename(self.tmp, self.final)
            except OSError:
                if not self.final.exists():
                    raise
                shutil.rmtree(self.tmp, ignore_errors=True)  # lost a race to an identical entry
        except OSError as err:
            self.abort()
            raise storage_error("geometry cache entry", self.final, err) from err

    def abort(self) -> None:
        if hasattr(self, "tmp"):
            shutil.rmtree(self.tmp, ignore_errors=True)


class PixelCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_pixel_root()

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> PixelEntry | None:
        """The stored entry (memory-mapped), or None on a miss; CacheCorruptError when it is damaged
        in a way visible without reading it all (a missing file, a wrong shape or size)."""
        entry = self.entry_dir(key)
        if not entry.exists():
            return None
        try:
            digest = json.loads((entry / "COMPLETE").read_text())["pixels_sha256"]
            meta = json.loads((entry / "meta.json").read_text())
            pixels = np.load(entry / "pixels.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise self._corrupt(entry, f"it cannot be read ({err})") from err
        expected = (meta.get("num_samples"), 3, meta.get("crop"), meta.get("crop"))
        if pixels.dtype != np.uint8 or pixels.shape != expected:
            raise self._corrupt(
                entry, f"pixels.npy holds {pixels.dtype} {pixels.shape}, expected uint8 {expected}"
            )
        return PixelEntry(entry, pixels, digest, meta)

    @contextlib.contextmanager
    def claim(self, key: str) -> Iterator[PixelEntry | None]:
        """The entry of `key`, or (None) the right to build it, as `FeatureCache.claim`."""
        lock = self.root / key[:2] / f".{key}.lock"
        with claim_entry(lambda: self.get(key), lock, "geometry cache lock", f"pixels {key[:12]}") as hit:
            yield hit

    def writer(self, key: str, num_samples: int, crop: int) -> PixelWriter:
        return PixelWriter(self, key, num_samples, crop)

    @staticmethod
    def _corrupt(entry: Path, why: str) -> CacheCorruptError:
        return CacheCorruptError(
            f"Geometry cache entry {entry} is corrupt: {why}. bob did not use it and left it in place for "
            f"inspection. Delete that directory (rm -r '{entry}') and run again to decode the images anew."
        )

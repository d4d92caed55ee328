"""RunContext: what a task sees during a run — data splits, cached features, the backbone, artifacts.

The backbone is built lazily, on the first cache miss: a run whose features are all cached never
instantiates the model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bob import distributed
from bob.backbones.base import Backbone, BackboneRef
from bob.backbones.meta import DataConfig, Extraction
from bob.cache import FeatureCache, FeatureSet, cache_key
from bob.data import dataset_info, load_split
from bob.data.base import DatasetInfo, ImageSplit, limit_split
from bob.features import default_num_workers, extract_pooled, pixel_batches
from bob.pixels import PixelCache, pixel_key
from bob.preflight import storage_error
from bob.progress import progress_bar
from bob.results import ResultStore
from bob.spec import RunSpec
from bob.task import Task
from bob.transforms import Normalizer
from bob.weights import default_file_mode

_OUTPUTS = ("pooled", "image_embedding")


class _ImageEmbedding:
    """A backbone seen through `encode_image`, for `extract_pooled` (which calls `forward_pooled`)."""

    def __init__(self, backbone: Backbone) -> None:
        self.backbone, self.meta = backbone, backbone.meta

    def eval(self) -> _ImageEmbedding:
        self.backbone.eval()
        return self

    def forward_pooled(self, x: Any) -> Any:
        return self.backbone.encode_image(x)


class RunContext:
    """One run's view of the world. `task` is the parsed task (its dataset and typed args), given by
    the runner; the spec is kept for what identifies the run (seed, weights, data location)."""

    def __init__(
        self,
        spec: RunSpec,
        task: Task,
        ref: BackboneRef,
        store: ResultStore,
        cache: FeatureCache,
        device: Any,
        batch_size: int = 64,
        num_workers: int | None = None,
        save_samples: bool = True,
        geometry_cache: Path | None = None,
    ) -> None:
        self.spec = spec
        self.task = task
        self.ref = ref
        self.store = store
        self.cache = cache
        self.device = device
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        # Whether the suite stores its per-sample outputs beside the result (`--no-samples` turns it off).
        self.save_samples = save_samples
        self.seed = spec.seed
        # Pipeline, precision and memory format of the extraction: backbone args of the run.
        self.extraction, _ = Extraction.split_args(spec.backbone_args)
        # The geometry cache (decode once, extract many), when the run was given one.
        self.pixel_cache = PixelCache(geometry_cache) if geometry_cache is not None else None
        self.decodes = 0
        self.pixel_hits = 0
        self.dataset = task.dataset
        self.extractions = 0
        self.cache_hits = 0
        self.cache_keys: dict[str, str] = {}
        self.extract_s = 0.0
        self._splits: dict[str, ImageSplit] = {}
        self._backbone: Backbone | None = None
        self._backbone_meta: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------------------ data
    @cached_property
    def info(self) -> DatasetInfo:
        return dataset_info(self.dataset)

    def has_split(self, name: str) -> bool:
        return name in self.info.splits

    def split(self, name: str) -> ImageSplit:
        """A split of the run's dataset, loaded once; under the `limit` task arg, at most that many of
        its samples (a seeded, stratified draw: `bob.data.base.limit_split`)."""
        if name not in self._splits:
            split = load_split(self.dataset, name, root=self.spec.data_root, download=self.spec.download)
            self._splits[name] = self._limited(split)
        return self._splits[name]

    def add_split(self, name: str, split: ImageSplit) -> None:
        """Make a split loaded elsewhere (e.g. a shift's evaluation set) available as `split(name)`
        and `pooled(name)`; its features are cached like any other split's, and `limit` applies."""
        self._splits[name] = self._limited(split)

    @property
    def limit(self) -> int | None:
        """The run's `limit` task arg: at most this many samples per split (None: all of them)."""
        return self.task.args.limit

    def _limited(self, split: ImageSplit) -> ImageSplit:
        return split if self.limit is None else limit_split(split, self.limit, self.seed)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.split("train").classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def data_config(self) -> DataConfig:
        """The backbone's eval transform at the task's resolution (task arg, else the dataset's default)."""
        size = self.task.args.image_size or self.info.image_size
        return self.ref.data_config.with_overrides(
            image_size=size, crop_pct=self.info.crop_pct, pipeline=self.extraction.pipeline
        )

    def _model_settings(self) -> dict[str, Any]:
        """Precision and memory format where they differ from the defaults (the pipeline is part of
        the transform): what a feature-cache key adds for them, nothing at the defaults."""
        settings = {k: v for k, v in self.extraction.identity().items() if k != "pipeline"}
        return {"extraction": settings} if settings else {}

    # -------------------------------------------------------------------------------------- backbone
    def backbone(self) -> Backbone:
        if self._backbone is None:
            size = self.data_config.input_size
            self._backbone = self.ref.build(size if size != self.ref.data_config.input_size else None)
            self._backbone.to(self.device)
            self._backbone_meta = self._backbone.meta.to_dict()
        return self._backbone

    def build_backbone(
        self, extra_args: dict[str, Any] | None = None, input_size: int | None = None
    ) -> Backbone:
        """A fresh, private backbone for tasks that train it (fine-tuning, detection).

        `extra_args` go on top of the run's backbone args (e.g. timm's `drop_path_rate`); `input_size`
        defaults to the task's resolution. Unlike `backbone()` it is never shared with feature
        extraction, so training cannot leak into cached features; its meta is what the run records.
        """
        ref = dataclasses.replace(self.ref, args={**self.ref.args, **(extra_args or {})})
        size = input_size if input_size is not None else self.data_config.input_size
        backbone = ref.build(size if size != self.ref.data_config.input_size else None)
        backbone.to(self.device)
        self._backbone_meta = backbone.meta.to_dict()
        return backbone

    @property
    def backbone_meta(self) -> dict[str, Any]:
        """The backbone's meta: from the built model, else from the cache entry that made building unnecessary."""
        return self._backbone_meta or {}

    # -------------------------------------------------------------------------------------- features
    def pooled(self, split_name: str, output: str = "pooled") -> FeatureSet:
        """Pooled features of a split, from the cache or extracted once and cached.

        `output="image_embedding"`: the joint image-text embedding (`encode_image`) of backbones with
        a text tower, cached under its own key.
        """
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {sorted(_OUTPUTS)}, got {output!r}")
        split = self.split(split_name)
        key_spec = {
            "backbone": self.ref.identity(),
            "transform": self.data_config.to_dict(),
            "output": output,
            "dataset": {k: v for k, v in split.describe().items() if k != "num_classes"},
            "dtype": "float32",
            **self._model_settings(),
        }

        def extract(backbone: Backbone) -> tuple[Any, Any, dict[str, Any]]:
            if self.extraction.channels_last:
                backbone.to(memory_format=torch.channels_last)
            model = backbone if output == "pooled" else _ImageEmbedding(backbone)
            normalize = Normalizer(self.data_config, channels_last=self.extraction.channels_last)
            title = f"extracting {split.dataset}/{split_name}"
            if self.limit is not None:
                title += f" (limit {self.limit})"
            rows = distributed.shard(len(split)) if distributed.active() else None
            part = split if rows is None else split.subset(np.asarray(rows, dtype=np.int64), split_name)
            if rows is not None:
                title += f" (rank {distributed.world().rank}: {len(part)} of {len(split)})"
            with progress_bar(title, len(part), "images") as bar, self._pixels(part, rows is None) as batches:
                features = extract_pooled(
                    model,  # type: ignore[arg-type]
                    batches,
                    len(part),
                    self.device,
                    bar,
                    prepare=normalize,
                    extraction=self.extraction,
                )
            if rows is not None:  # every rank's rows, in order: the one-process features
                features = distributed.gather_rows(features, rows, len(split))
            return features, split.labels, {}

        return self._cached_or_extracted(split_name, key_spec, extract)

    @contextlib.contextmanager
    def _pixels(self, split: ImageSplit, geometry_cache: bool = True) -> Iterator[Iterator[Any]]:
        """uint8 pixel batches of a split under the run's geometry, on the device: decoded here, or
        read from the geometry cache when the run has one and an earlier extraction (of any backbone
        with this geometry) stored them; a miss stores them as they are decoded. A rank's shard of a
        split (`geometry_cache=False`) is always decoded: the geometry cache holds whole splits."""
        cfg = self.data_config

        def decoded() -> Iterator[Any]:
            return pixel_batches(split, cfg, self.batch_size, self.num_workers, self.device)

        if self.pixel_cache is None or not geometry_cache:
            self.decodes += 1
            yield decoded()
            return
        key = pixel_key(split, cfg, str(self.device))
        with self.pixel_cache.claim(key) as entry:
            if entry is not None:
                self.pixel_hits += 1
                yield entry.batches(self.batch_size, self.device)
                return
            self.decodes += 1
            writer = self.pixel_cache.writer(key, len(split), cfg.input_size)

            def stored() -> Iterator[Any]:
                for batch in decoded():
                    writer.add(batch)
                    yield batch

            try:
                yield stored()
            except BaseException:
                writer.abort()
                raise
            meta = {**split.describe(), "num_samples": len(split), "crop": cfg.input_size}
            writer.commit({**meta, "geometry": cfg.geometry()})

    def cached(
        self, split_name: str, key_spec: dict[str, Any], extract: Any, description: str = "features"
    ) -> FeatureSet:
        """Task-defined features of a split (e.g. per-frame features of video clips), cached like `pooled`.

        `key_spec` must identify everything the features depend on; `extract(backbone)` returns
        (features, labels, extra meta) on a miss and is timed and counted like an extraction.
        """
        full_spec = {
            "backbone": self.ref.identity(),
            "output": description,
            **key_spec,
            **self._model_settings(),
        }
        return self._cached_or_extracted(split_name, full_spec, extract)

    def _cached_or_extracted(self, split_name: str, key_spec: dict[str, Any], extract: Any) -> FeatureSet:
        """The cache entry of `key_spec`, or `extract(backbone)` timed, counted and stored under it.

        The miss is handled under the key's extraction lock (`FeatureCache.claim`): a process that
        misses a key another one is extracting waits for that entry and reads it instead."""
        key = cache_key(key_spec)
        self.cache_keys[split_name] = key
        if distributed.active():
            return self._ranked_cached_or_extracted(key, key_spec, extract)
        with self.cache.claim(key) as hit:
            if hit is not None:
                self.cache_hits += 1
                self._backbone_meta = self._backbone_meta or hit.meta.get("backbone")
                return hit
            return self.cache.put(key, *self._extract(key_spec, extract))

    def _extract(self, key_spec: dict[str, Any], extract: Any) -> tuple[Any, Any, dict[str, Any]]:
        """`extract(backbone)` timed and counted: (features, labels, the cache entry's meta)."""
        backbone = self.backbone()
        start = time.perf_counter()
        features, labels, extra = extract(backbone)
        elapsed = time.perf_counter() - start
        self.extract_s += elapsed
        self.extractions += 1
        return (
            features,
            labels,
            {"spec": key_spec, "backbone": backbone.meta.to_dict(), "extract_s": elapsed, **extra},
        )

    def _ranked_cached_or_extracted(self, key: str, key_spec: dict[str, Any], extract: Any) -> FeatureSet:
        """`_cached_or_extracted` in a data-parallel run: rank 0 alone claims the key and tells the
        others whether it is a hit; on a miss every rank runs `extract` (`pooled` extracts this rank's
        shard and gathers all of them), rank 0 writes the one cache entry, and the others read it once
        rank 0 says it is there. Every rank ends with the same features."""
        main = distributed.is_main()
        with self.cache.claim(key) if main else contextlib.nullcontext(None) as hit:
            if distributed.broadcast(hit is not None):
                self.cache_hits += 1
                entry = hit if main else self.cache.get(key)
                if entry is None:
                    raise RuntimeError(
                        f"rank 0 found feature cache entry {key[:12]}, which this rank cannot read"
                    )
                self._backbone_meta = self._backbone_meta or entry.meta.get("backbone")
                return entry
            features, labels, meta = self._extract(key_spec, extract)
            stored: FeatureSet | None = None
            failure: BaseException | None = None
            if main:
                try:
                    stored = self.cache.put(
                        key, features, labels, {**meta, "ranks": distributed.world().size}
                    )
                except Exception as err:  # the others must not wait for an entry that never comes
                    failure = err
            if not distributed.broadcast(failure is None):
                if failure is not None:
                    raise failure
                raise RuntimeError(
                    f"rank 0 could not store feature cache entry {key[:12]}; see rank 0's error"
                )
        if stored is not None:
            return stored
        entry = self.cache.get(key)
        if entry is None:
            raise RuntimeError(f"feature cache entry {key[:12]}, written by rank 0, is not readable here")
        return entry

    # ------------------------------------------------------------------------------------- artifacts
    def save_artifact(self, name: str, obj: Any) -> str:
        """torch.save `obj` atomically next to the run's result file; returns the path."""
        import torch

        path = self.store.artifact_path(self.spec, name)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            torch.save(obj, tmp)
            os.chmod(tmp, default_file_mode())
            os.replace(tmp, path)
        except OSError as err:  # a full disk, a read-only folder: one line naming the file and the cause
            raise storage_error(f"the {name} artifact", path, err) from None
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        return str(path)

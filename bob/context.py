"""RunContext: what a task sees during a run — data splits, cached features, the backbone, artifacts.

The backbone is built lazily, on the first cache miss: a run whose features are all cached never
instantiates the model.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from functools import cached_property
from pathlib import Path
from typing import Any

from bob.backbones.base import Backbone, BackboneRef
from bob.backbones.meta import DataConfig
from bob.cache import FeatureCache, FeatureSet, cache_key
from bob.data import dataset_info, load_split
from bob.data.base import DatasetInfo, ImageSplit
from bob.features import default_num_workers, extract_pooled, split_batches
from bob.preflight import storage_error
from bob.progress import progress_bar
from bob.results import ResultStore
from bob.spec import RunSpec
from bob.task import Task
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
        if name not in self._splits:
            self._splits[name] = load_split(
                self.dataset, name, root=self.spec.data_root, download=self.spec.download
            )
        return self._splits[name]

    def add_split(self, name: str, split: ImageSplit) -> None:
        """Make a split loaded elsewhere (e.g. a shift's evaluation set) available as `split(name)`
        and `pooled(name)`; its features are cached like any other split's."""
        self._splits[name] = split

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
        return self.ref.data_config.with_overrides(image_size=size, crop_pct=self.info.crop_pct)

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
        }

        def extract(backbone: Backbone) -> tuple[Any, Any, dict[str, Any]]:
            with progress_bar(f"extracting {split.dataset}/{split_name}", len(split), "images") as bar:
                batches = split_batches(
                    split, self.data_config, self.batch_size, self.num_workers, self.device
                )
                model = backbone if output == "pooled" else _ImageEmbedding(backbone)
                return extract_pooled(model, batches, len(split), self.device, bar), split.labels, {}  # type: ignore[arg-type]

        return self._cached_or_extracted(split_name, key_spec, extract)

    def cached(
        self, split_name: str, key_spec: dict[str, Any], extract: Any, description: str = "features"
    ) -> FeatureSet:
        """Task-defined features of a split (e.g. per-frame features of video clips), cached like `pooled`.

        `key_spec` must identify everything the features depend on; `extract(backbone)` returns
        (features, labels, extra meta) on a miss and is timed and counted like an extraction.
        """
        full_spec = {"backbone": self.ref.identity(), "output": description, **key_spec}
        return self._cached_or_extracted(split_name, full_spec, extract)

    def _cached_or_extracted(self, split_name: str, key_spec: dict[str, Any], extract: Any) -> FeatureSet:
        """The cache entry of `key_spec`, or `extract(backbone)` timed, counted and stored under it.

        The miss is handled under the key's extraction lock (`FeatureCache.claim`): a process that
        misses a key another one is extracting waits for that entry and reads it instead."""
        key = cache_key(key_spec)
        self.cache_keys[split_name] = key
        with self.cache.claim(key) as hit:
            if hit is not None:
                self.cache_hits += 1
                self._backbone_meta = self._backbone_meta or hit.meta.get("backbone")
                return hit
            backbone = self.backbone()
            start = time.perf_counter()
            features, labels, extra = extract(backbone)
            elapsed = time.perf_counter() - start
            self.extract_s += elapsed
            self.extractions += 1
            meta = {"spec": key_spec, "backbone": backbone.meta.to_dict(), "extract_s": elapsed, **extra}
            return self.cache.put(key, features, labels, meta)

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

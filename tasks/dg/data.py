"""Multi-domain datasets: one split per visual domain, the same classes in every domain.

Domain generalisation trains on one domain and tests on the others, so a multi-domain dataset's
splits are its domains (`pacs` has splits `art_painting`, `cartoon`, `photo`, `sketch`). The dg
suite's datasets (tasks/dg/datasets.yaml) read through two loaders:
  - `load_domain_folder`: a real dataset as a folder of domains, `<root>/<dir>/<domain>/<class>/<image>`
    (PACS, Office-Home, DomainNet). Every load validates the whole tree first: every domain present,
    the same class folders in every domain, no class folder without images — so a broken tree fails
    before any feature is extracted or any model trained, and the error names the path.
  - `load_shapes_domain`: the generated `shapes` classes drawn in one of their five domains, each
    domain from its own fixed seed.
A run divides every domain into a train and a held-out part (`Domains`, `load_domains`): seeded and
stratified by class, checked before any training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bob.data.base import ArraySplit, DatasetInfo, FileSplit, ImageSplit, stratified_partition
from bob.data.real import IMG_EXTENSIONS, scan_image_folder
from bob.data.shapes import SHAPE_CLASSES, generate_shapes, split_seed
from bob.errors import DatasetNotFoundError, UnknownNameError, UsageError
from bob.registry import suggest

if TYPE_CHECKING:
    from bob.cache import FeatureSet
    from bob.context import RunContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DomainTree:
    """A validated folder of domains: the shared class list and every domain's files and labels."""

    base: Path
    classes: tuple[str, ...]
    files: dict[str, tuple[list[Path], np.ndarray]]


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _layout_hint(base: Path, domains: tuple[str, ...]) -> str:
    return (
        f"bob expects one folder per domain ({', '.join(domains)}) under {base}, each holding one folder "
        "of images per class, with the same class folders in every domain: "
        f"{base}/<domain>/<class>/<image>."
    )


def _domain_folder(base: Path, domain: str) -> Path | None:
    """The folder of `domain`; archives that spell it with spaces (Office-Home's "Real World") also match."""
    for candidate in dict.fromkeys((domain, domain.replace("_", " "))):
        if (base / candidate).is_dir():
            return base / candidate
    return None


def scan_domain_tree(name: str, base: Path, domains: tuple[str, ...]) -> DomainTree:
    """Validate `base/<domain>/<class>/<image>` for every domain in `domains` and list its files.

    Raises DatasetNotFoundError when the dataset or a domain folder is missing, UsageError when the
    class folders differ between domains or a class folder holds no image.
    """
    hint = _layout_hint(base, domains)
    if not base.is_dir():
        raise DatasetNotFoundError(
            f"Dataset '{name}' was not found: {base} does not exist. {hint} Point bob at the folder that "
            f"holds '{base.name}/' with `--task-arg root=DIR`, or set the BOB_DATA_ROOT environment variable."
        )
    folders = {d: _domain_folder(base, d) for d in domains}
    missing = [d for d in domains if folders[d] is None]
    if missing:
        present = _subdirs(base)
        raise DatasetNotFoundError(
            f"Dataset '{name}': domain folder(s) {', '.join(str(base / d) for d in missing)} missing "
            f"(found: {', '.join(present) or 'nothing'}). {hint}"
        )
    class_sets = {d: _subdirs(folders[d]) for d in domains}
    reference = domains[0]
    classes = class_sets[reference]
    if not classes:
        raise UsageError(
            f"Dataset '{name}': domain folder {folders[reference]} holds no class folder. {hint}"
        )
    for domain in domains[1:]:
        if class_sets[domain] != classes:
            only_here = sorted(set(class_sets[domain]) - set(classes))
            only_ref = sorted(set(classes) - set(class_sets[domain]))
            raise UsageError(
                f"Dataset '{name}': the class folders of domain '{domain}' differ from those of "
                f"'{reference}' (only in {folders[domain]}: {', '.join(only_here) or 'none'}; only in "
                f"{folders[reference]}: {', '.join(only_ref) or 'none'}). Every domain must hold the same classes."
            )
    files = {}
    for domain in domains:
        paths, labels = scan_image_folder(folders[domain], classes)
        present = set(np.unique(labels).tolist())
        empty = [c for i, c in enumerate(classes) if i not in present]
        if empty:  # scan_image_folder rejects empty folders; this catches folders it could not see
            raise UsageError(
                f"Dataset '{name}': class folder(s) {', '.join(str(folders[domain] / c) for c in empty)} hold no "
                f"image (looked for {', '.join(IMG_EXTENSIONS)}, any case)."
            )
        files[domain] = (paths, labels)
    return DomainTree(base, tuple(classes), files)


def load_domain_folder(
    info: DatasetInfo,
    split: str,
    *,
    root: Path,
    download: bool = False,
    subdir: str,
    domains: tuple[str, ...],
) -> FileSplit:
    """Registry loader: the whole of one domain (`split`) of `<root>/<subdir>/<domain>/<class>/*`."""
    if download:
        log.warning("%s cannot be downloaded by bob; ignoring download=true", info.name)
    if split not in domains:
        raise UsageError(
            f"Dataset '{info.name}' has no domain '{split}'; its domains are: {', '.join(domains)}."
        )
    tree = scan_domain_tree(info.name, Path(root) / subdir, tuple(domains))
    if info.num_classes is not None and len(tree.classes) != info.num_classes:
        log.warning(
            "%s: found %d class folders under %s, expected %d",
            info.name,
            len(tree.classes),
            tree.base,
            info.num_classes,
        )
    paths, labels = tree.files[split]
    return FileSplit(info.name, split, tree.classes, tree.base, paths, labels)


@lru_cache(maxsize=16)
def _shapes_domain_arrays(domain: str, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = generate_shapes(n, size=size, domain=domain, seed=split_seed(domain, "multidomain"))
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_shapes_domain(
    info: DatasetInfo,
    split: str,
    *,
    root: Path | None = None,
    download: bool = False,
    n: int = 500,
    size: int = 64,
) -> ArraySplit:
    """Registry loader: `n` balanced images of the shapes domain `split`; `root` is unused."""
    if split not in info.splits:
        raise UsageError(
            f"Dataset '{info.name}' has no domain '{split}'; its domains are: {', '.join(info.splits)}."
        )
    images, labels = _shapes_domain_arrays(split, n, size)
    return ArraySplit(info.name, split, SHAPE_CLASSES, images.copy(), labels.copy())


# ------------------------------------------------------------------------------ a run's partition


@dataclass
class Domains:
    """Every domain's whole split and its seeded train / held-out index partition."""

    splits: dict[str, ImageSplit]
    parts: dict[str, tuple[np.ndarray, np.ndarray]]
    pooled: dict[str, FeatureSet] = field(default_factory=dict)  # linear mode: cached features, read once

    def train(self, domain: str) -> ImageSplit:
        return self.splits[domain].subset(self.parts[domain][0], f"{domain}-train")

    def held_out(self, domain: str) -> ImageSplit:
        return self.splits[domain].subset(self.parts[domain][1], f"{domain}-heldout")

    def eval_set(self, source: str, target: str) -> ImageSplit:
        return self.held_out(source) if target == source else self.splits[target]


def load_domains(
    ctx: RunContext, sources: tuple[str, ...] | None, holdout: float
) -> tuple[Domains, list[str]]:
    """Load and check every domain before any training; returns the domains and the sources."""
    domains = list(ctx.info.splits)
    if len(domains) < 2:
        raise UsageError(f"Dataset '{ctx.dataset}' has {len(domains)} domain(s); dg needs at least two.")
    chosen = list(sources) if sources is not None else domains
    for name in chosen:
        if name not in domains:
            hint = f"The domains of {ctx.dataset} are: {', '.join(domains)}."
            raise UnknownNameError(f"source domain of {ctx.dataset}", name, suggest(name, domains, 3), hint)
    splits = {d: ctx.split(d) for d in domains}
    classes = splits[domains[0]].classes
    parts = {}
    for domain, split in splits.items():
        if split.classes != classes:
            raise UsageError(
                f"Dataset '{ctx.dataset}': domain '{domain}' has classes {list(split.classes)}, domain "
                f"'{domains[0]}' has {list(classes)}; every domain must share one class list."
            )
        counts = np.bincount(split.labels, minlength=len(classes))
        if (counts < 2).any():
            few = [classes[i] for i in np.flatnonzero(counts < 2)]
            raise UsageError(
                f"Dataset '{ctx.dataset}': domain '{domain}' has fewer than 2 images of class(es) "
                f"{', '.join(few)}; each class needs one image to train on and one to hold out."
            )
        parts[domain] = stratified_partition(split.labels, holdout, seed=ctx.seed)
    return Domains(splits, parts), list(dict.fromkeys(chosen))

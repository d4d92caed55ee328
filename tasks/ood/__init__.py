"""`ood/<shift>`: a classifier trained in distribution, scored on shifted sets (top-1, drop, ECE).

Protocol:
  1. every shifted set is located and checked (files, class list, class subset) before anything
     is trained or extracted;
  2. the classifier comes from `fit_classifier(mode, …)`. `mode=linear` (default) is the
     `linear-probe` protocol, run on the in-distribution train split's cached frozen features: the
     same cache entries `linear-probe/<in-dist>` uses, so after that run only the shifted sets are
     extracted, and a second OOD run on the same backbone extracts nothing. `mode=finetune` is
     BoB's setting: the finetune suite's recipe (tasks/finetune.py) trains backbone + head end to
     end on the in-distribution train split (`ft_epochs`, `ft_lr`, `ft_batch_size` override it);
  3. the in-distribution test split and every shifted set are scored with the same classifier. Sets that
     cover a subset of the classes (ImageNet-A/R) have the logits masked to that subset first.
Metrics: `top1_id`, `ece_id`; per set `top1/<set>` and `ece/<set>` (corruption shifts: per
corruption, the mean over the severities run; every (corruption, severity) set's own top-1 and ECE
are saved in the `sets` artifact); the means over all sets `top1_ood` (the main metric) and
`ece_ood`; and `drop` = top1_id − top1_ood (a set's own drop is top1_id − top1/<set>).
ECE: 15 uniform bins, L1 (torchmetrics' convention, see calibration.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bob.data.base import stratified_partition
from bob.data.shifts import Shift, get_shift, load_shifted_set
from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest
from bob.task import Task, TaskOutput, run_arg
from bob.tasks.common.args import ProbeArgs
from bob.tasks.common.calibration import expected_calibration_error, softmax

if TYPE_CHECKING:
    from bob.context import RunContext

MODES = ("linear", "finetune")
FT_DEFAULTS = {"ft_epochs": None, "ft_lr": 1e-3, "ft_batch_size": None}
ALL_SEVERITIES = (1, 2, 3, 4, 5)


@dataclass
class OODArgs(ProbeArgs):
    mode: str = run_arg(
        "linear", "classifier: linear (linear-probe protocol, frozen features) | finetune (end to end)"
    )
    corruptions: tuple[str, ...] | None = run_arg(
        None, "corruption shifts: corruptions to score, comma-separated, or 'all' (default: the shift's)"
    )
    severities: tuple[int, ...] = run_arg(ALL_SEVERITIES, "corruption shifts: severities to score (1..5)")
    ece_bins: int = run_arg(15, "number of uniform confidence bins of the expected calibration error")
    ft_epochs: int | None = run_arg(
        None, "mode=finetune: training epochs (default: the finetune suite's, by dataset kind)"
    )
    ft_lr: float = run_arg(FT_DEFAULTS["ft_lr"], "mode=finetune: peak AdamW learning rate")
    ft_batch_size: int | None = run_arg(
        None, "mode=finetune: training batch size (default: the finetune suite's, by dataset kind)"
    )

    def validate(self) -> None:
        super().validate()
        if self.mode not in MODES:
            raise UnknownNameError(
                "classifier mode", self.mode, suggest(self.mode, MODES, 2), f"Modes: {MODES}."
            )
        if not self.severities or any(s not in ALL_SEVERITIES for s in self.severities):
            raise UsageError(f"severities must be a non-empty subset of 1..5, got {self.severities}.")
        if self.ece_bins < 1:
            raise UsageError(f"ece_bins must be a positive integer, got {self.ece_bins}.")
        if self.mode == "finetune":
            finetune_args(self)  # the recipe's own checks, before any data is touched
        else:
            changed = [f for f, default in FT_DEFAULTS.items() if getattr(self, f) != default]
            if changed:
                raise UsageError(
                    f"Task args {', '.join(changed)} only apply with mode=finetune (this run is mode=linear)."
                )


# ------------------------------------------------------------------------------------- classifier


@dataclass
class Classifier:
    """What a mode hands back: logits for any loaded split, the protocol it used, and its weights."""

    logits: Callable[[str], np.ndarray]  # split name → logits [N, C]
    protocol: dict[str, Any]
    state: dict[str, Any]


def fit_classifier(mode: str, ctx: RunContext, args: OODArgs) -> Classifier:
    """Train the in-distribution classifier the way `mode` says."""
    return _MODES[mode](ctx, args)


def _linear_classifier(ctx: RunContext, args: OODArgs) -> Classifier:
    from bob.tasks.common.probe import run_linear_probe

    train, test = ctx.pooled("train"), ctx.pooled("test")
    if "val" in _in_dist_splits(get_shift(ctx.dataset)):  # loaded by _load_sets
        val = ctx.pooled("val")
        train_xy, val_xy = (train.features, train.labels), (val.features, val.labels)
        val_source = "official val split"
    else:
        rest, held = stratified_partition(train.labels, args.val_fraction, seed=ctx.seed)
        train_xy = (train.features[rest], train.labels[rest])
        val_xy = (train.features[held], train.labels[held])
        val_source = f"stratified {args.val_fraction:.0%} of train (seed {ctx.seed})"
    out = run_linear_probe(
        train_xy, val_xy, (test.features, test.labels), ctx.num_classes, args, ctx.seed, ctx.device
    )
    head = out["head"]
    mean, std = head["mean"].numpy(), head["std"].numpy()
    weight, bias = head["weight"].numpy(), head["bias"].numpy()

    loaded = {"test": test}  # read from the cache once per run

    def logits(split: str) -> np.ndarray:
        features = loaded.pop(split, None) or ctx.pooled(split)
        x = (features.features - mean) / std
        return x.astype(np.float32) @ weight + bias

    protocol = {"classifier": "linear-probe protocol on frozen pooled features", **out["protocol"]}
    protocol["val_source"] = val_source
    return Classifier(logits, protocol, head)


def finetune_args(args: OODArgs) -> Any:
    """The finetune suite's recipe (BoB's), with the OOD run's `ft_*` overrides; validated."""
    from bob.tasks.finetune import FinetuneArgs

    ft = FinetuneArgs(
        epochs=args.ft_epochs, lr=args.ft_lr, batch_size=args.ft_batch_size, val_fraction=args.val_fraction
    )
    ft.validate()
    return ft


def _finetune_classifier(ctx: RunContext, args: OODArgs) -> Classifier:
    """The finetune suite's protocol on the in-distribution train split (BoB's OOD setting)."""
    from bob.tasks.common.finetune import evaluate, finetune_classifier
    from bob.tasks.finetune import holdout_val, trainable_backbone

    ft = finetune_args(args)
    cfg = ft.config(ctx.info.kind)
    if "val" in _in_dist_splits(get_shift(ctx.dataset)):  # loaded by _load_sets
        train, val = ctx.split("train"), ctx.split("val")
        val_source = "official val split"
    else:
        train, val = holdout_val(ctx.split("train"), args.val_fraction, ctx.seed)
        val_source = f"stratified {args.val_fraction:.0%} of train (seed {ctx.seed})"
    backbone, drop = trainable_backbone(ctx, ft.drop_path)
    data_config = ctx.data_config
    out = finetune_classifier(
        backbone, train, val, ctx.num_classes, cfg, data_config, ctx.device, ctx.seed, ctx.num_workers
    )

    def logits(split: str) -> np.ndarray:
        return evaluate(
            out.model, ctx.split(split), data_config, ctx.device, cfg.batch_size, ctx.num_workers, cfg.amp
        )

    protocol = {
        "classifier": "end-to-end fine-tuning (the finetune suite's recipe)",
        **out.protocol,
        **drop,
        "history": out.history,
        "val_source": val_source,
    }
    state = {
        "state_dict": out.state_dict,
        "best_epoch": out.best_epoch,
        "data_config": data_config.to_dict(),
        **drop,
    }
    return Classifier(logits, protocol, state)


_MODES = {"linear": _linear_classifier, "finetune": _finetune_classifier}


# ------------------------------------------------------------------------------------------ sets


def select_sets(shift: Shift, args: OODArgs) -> list[str]:
    """The shifted sets a run scores: all of the shift's, or its default, narrowed by the task args."""
    if not shift.corruption_sets:
        if args.corruptions is not None or tuple(args.severities) != ALL_SEVERITIES:
            raise UsageError(
                f"Shift '{shift.name}' has no corruptions; the task args corruptions and severities only "
                "apply to corruption shifts (digits-c, animal-mnist-c, imagenet-c, imagenet-c-render)."
            )
        return list(shift.default_sets or shift.set_names)
    known = list(dict.fromkeys(name.rpartition("-")[0] for name in shift.set_names))
    if args.corruptions is None:
        pool = shift.default_sets or shift.set_names
        chosen = list(dict.fromkeys(name.rpartition("-")[0] for name in pool))
    elif tuple(args.corruptions) == ("all",):
        chosen = known
    else:
        chosen = list(args.corruptions)
        for name in chosen:
            if name not in known:
                raise UnknownNameError(
                    f"corruption of shift '{shift.name}'",
                    name,
                    suggest(name, known, 3),
                    f"Known: {', '.join(known)}.",
                )
    return [f"{c}-{s}" for c in chosen for s in sorted(args.severities)]


def _valid_classes(shift: Shift, name: str) -> np.ndarray | None:
    subset = shift.sets[name].get("valid_classes")
    if subset is None:
        return None
    from bob.data.real_shifts import valid_class_indices

    return valid_class_indices(subset)


def _load_sets(ctx: RunContext, shift: Shift, names: list[str]) -> dict[str, np.ndarray | None]:
    """Load every set's file list (raising on missing data) and check its labels; returns class masks."""
    from bob.data import default_data_root, load_split
    from bob.data.corruptions import RenderSpec

    root = Path(ctx.spec.data_root).expanduser() if ctx.spec.data_root else default_data_root()
    # Corruptions of embedded sets apply at the backbone's eval geometry (see RenderSpec).
    eval_render = RenderSpec.from_data_config(ctx.data_config)
    if "val" in _in_dist_splits(shift):
        ctx.add_split("val", load_split(shift.in_dist, "val", root=root, download=ctx.spec.download))
    classes = ctx.classes
    ctx.split("test")
    masks = {}
    for name in names:
        split = load_shifted_set(shift, name, root, ctx.spec.download, eval_render)
        if tuple(split.classes) != tuple(classes):
            raise UsageError(
                f"Shift '{shift.name}': set '{name}' has {len(split.classes)} classes that differ from the "
                f"{len(classes)} classes of the in-distribution dataset '{shift.in_dist}' "
                f"(first difference: {_first_difference(split.classes, classes)}). Both must use the same "
                "class list in the same order."
            )
        masks[name] = _valid_classes(shift, name)
        if masks[name] is not None and not np.isin(split.labels, masks[name]).all():
            raise UsageError(f"Shift '{shift.name}': set '{name}' has labels outside its class subset.")
        ctx.add_split(name, split)
    return masks


def _in_dist_splits(shift: Shift) -> tuple[str, ...]:
    from bob.data import dataset_info

    return dataset_info(shift.in_dist).splits


def _first_difference(a: tuple[str, ...], b: tuple[str, ...]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"class {i} is '{x}' in the set, '{y}' in distribution"
    return "the lists differ in length"


# ----------------------------------------------------------------------------------------- scores


def score(logits: np.ndarray, labels: np.ndarray, valid: np.ndarray | None, n_bins: int) -> dict[str, float]:
    """top-1 and ECE; with `valid`, logits are restricted to those classes (labels are their indices)."""
    if valid is not None:
        position = np.full(logits.shape[1], -1, dtype=np.int64)
        position[valid] = np.arange(len(valid))
        logits, labels = logits[:, valid], position[labels]
    probs = softmax(logits)
    return {
        "top1": float((probs.argmax(axis=1) == labels).mean()),
        "ece": expected_calibration_error(probs, labels, n_bins),
    }


def group_of(set_name: str) -> str:
    """The set's reporting group: its corruption for `<corruption>-<severity>` sets, else itself."""
    corruption, _, severity = set_name.rpartition("-")
    return corruption if corruption and severity.isdigit() else set_name


def summarise(id_scores: dict[str, float], set_scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """The flat metrics dict: in distribution, per group (set or corruption), and means over the sets.

    Corruption sets are reported per corruption (mean over severities), which keeps a result to a
    readable number of metrics; every set's own scores go to the `sets` artifact.
    """
    metrics = {"top1_id": id_scores["top1"], "ece_id": id_scores["ece"]}
    groups: dict[str, list[dict[str, float]]] = {}
    for name, s in set_scores.items():
        groups.setdefault(group_of(name), []).append(s)
    for group, scores in groups.items():
        metrics[f"top1/{group}"] = float(np.mean([s["top1"] for s in scores]))
        metrics[f"ece/{group}"] = float(np.mean([s["ece"] for s in scores]))
    metrics["top1_ood"] = float(np.mean([s["top1"] for s in set_scores.values()]))
    metrics["ece_ood"] = float(np.mean([s["ece"] for s in set_scores.values()]))
    metrics["drop"] = metrics["top1_id"] - metrics["top1_ood"]
    return metrics


class Ood(Task):
    suite = "ood"
    version = "1"
    main_metric = "top1_ood"
    reads_feature_cache = ("mode", "linear")
    task_types = ("shift",)
    description = (
        "classifier trained in distribution (linear probe, or fine-tuned); top-1, in→out drop and "
        "15-bin ECE on each shifted set"
    )
    Args = OODArgs
    check_args: ClassVar[dict[str, str]] = {"epochs": "2", "min_steps": "20"}
    check_dataset: ClassVar[str] = "shapes-mini-domains"

    def run(self, ctx: RunContext) -> TaskOutput:
        from bob.progress import progress_bar

        shift = get_shift(self.dataset)
        names = select_sets(shift, self.args)
        masks = _load_sets(ctx, shift, names)
        classifier = fit_classifier(self.args.mode, ctx, self.args)
        bins = self.args.ece_bins
        id_scores = score(classifier.logits("test"), ctx.split("test").labels, None, bins)
        set_scores = {}
        with progress_bar(f"scoring {shift.name}", len(names), "sets") as bar:
            for name in names:
                set_scores[name] = score(classifier.logits(name), ctx.split(name).labels, masks[name], bins)
                bar.advance(1)
        protocol = {
            "shift": shift.name,
            "in_distribution": shift.in_dist,
            "sets": names,
            "num_per_set": {name: len(ctx.split(name)) for name in names},
            "class_subsets": {
                n: f"{len(m)} classes (logits masked)" for n, m in masks.items() if m is not None
            },
            "mode": self.args.mode,
            "ece": {"n_bins": bins, "norm": "l1", "bins": "uniform, left-closed; confidence = max softmax"},
            **classifier.protocol,
        }
        protocol.update(_corruption_protocol(ctx, names) if shift.corruption_sets else {})
        artifacts = {
            "head": ctx.save_artifact("head", {**classifier.state, "classes": list(ctx.classes)}),
            "sets": ctx.save_artifact("sets", {"id": id_scores, **set_scores}),
        }
        return TaskOutput(summarise(id_scores, set_scores), protocol, artifacts)


def _corruption_protocol(ctx: RunContext, names: list[str]) -> dict[str, Any]:
    split = ctx.split(names[0])
    render = getattr(split, "render", None)
    out: dict[str, Any] = {"severities": sorted({int(n.rpartition("-")[2]) for n in names})}
    if render is not None:  # rendered on the fly (not the released JPEGs)
        out["corruption_render"] = render.describe()
        out["corruption_library"] = f"imagecorruptions-imaug {split.library_version}"
        out["corruption_seed"] = split.seed
    return out

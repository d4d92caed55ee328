"""Task-arg groups that several suites share, torch-free like every suite's `__init__.py`.

A suite's `Args` subclasses the group whose protocol it runs (`ProbeArgs` for a linear head on frozen
features, ...), so the shared knobs have one definition, one default and one help text.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from bob.backbones.catalog import BACKBONES, is_factory_name
from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest
from bob.task import TaskArgs, run_arg
from bob.tasks.common.bob_recipes import bob_recipe
from bob.tasks.common.recipe import FinetuneConfig
from bob.weights import WeightsRequest

# ------------------------------------------------------------------------------------------- protocol
# `protocol=bob` reproduces Battle of the Backbones' code knob by knob where the suite's building blocks
# allow (docs/protocols.md, docs/bob-fidelity.md); `default` is bob's own protocol. One declaration for
# every suite BoB ran: `protocol: str = protocol_arg()` in the suite's Args plus `check_protocol` in its
# `validate`, or subclass `ProtocolArgs`. Left out of a run's identity while it is `default`, so runs
# from before the arg existed keep their ids.

PROTOCOLS = ("default", "bob")


def protocol_arg(
    help: str = "default (bob's protocol) or bob (Battle of the Backbones' code, knob by knob)",
) -> Any:
    """The `protocol` task arg: `default` or `bob`; out of the run identity while `default`."""
    return run_arg("default", help, omit_default=True)


def check_protocol(protocol: str) -> None:
    """A clear error (with did-you-mean) for a protocol that is neither `default` nor `bob`."""
    if protocol not in PROTOCOLS:
        hint = f"Valid values: {', '.join(PROTOCOLS)}."
        raise UnknownNameError("protocol", protocol, suggest(protocol, PROTOCOLS, 2), hint)


@dataclass
class ProtocolArgs(TaskArgs):
    """The `protocol` arg as a group, for Args that take it by inheritance (`class A(ProtocolArgs, ...)`)."""

    protocol: str = protocol_arg()

    @property
    def is_bob(self) -> bool:
        """True under `protocol=bob`."""
        return self.protocol == "bob"

    def validate(self) -> None:
        super().validate()
        check_protocol(self.protocol)


@dataclass
class ProbeArgs(TaskArgs):
    """The linear probe's knobs: the λ sweep on a validation split and the head's training."""

    val_fraction: float = run_arg(
        0.2, "share of train held out for the λ sweep when the dataset has no val split"
    )
    epochs: int = run_arg(10, "minimum training epochs per head")
    min_steps: int = run_arg(250, "minimum optimizer steps per head (small datasets get more epochs)")
    lr: float = run_arg(1e-2, "Adam learning rate (cosine-decayed to zero)")
    batch_size: int = run_arg(256, "head-training minibatch size")
    weight_decay: float | None = run_arg(None, "fix λ instead of sweeping it")
    max_epochs: int | None = run_arg(
        None,
        "cap on the epochs min_steps adds on small data (default: 100 for a --limit run, no cap otherwise)",
        omit_default=True,
    )

    def validate(self) -> None:
        super().validate()
        if self.max_epochs is not None and self.max_epochs < 1:
            raise UsageError(f"max_epochs must be a positive integer, got {self.max_epochs}.")
        if not 0.0 < self.val_fraction < 1.0:
            raise UsageError(f"val_fraction must be in (0, 1), got {self.val_fraction}.")
        for name in ("epochs", "min_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.lr <= 0 or (self.weight_decay is not None and self.weight_decay < 0):
            raise UsageError("lr must be positive and weight_decay non-negative.")


TEXT_ENCODERS = ("auto", "backbone", "bow", "open_clip:<model>[/<pretrained>]")


def check_text_encoder(encoder: str) -> None:
    """A text_encoder task arg (open-vocab, rvos): auto, backbone, bow or open_clip:<model>[/<pretrained>]."""
    if encoder not in ("auto", "backbone", "bow") and not (
        encoder.startswith("open_clip:") and len(encoder) > 10
    ):
        raise UsageError(f"text_encoder must be one of {', '.join(TEXT_ENCODERS)}, got '{encoder}'.")


# ------------------------------------------------------------------------------ detection, open-vocab
# The detector's knobs: the detection suite's Args, and the base of open-vocab's (which trains the same
# detector with a text classifier).


DETECTION_MODES = ("finetune", "frozen")
DETECTION_AUGMENTS = ("lsj", "flip")
DETECTION_LR_GRID = (8e-5, 1e-4, 2e-4, 3e-4)  # BoB's detection sweep; one run per value
DETECTION_SEARCHES = ("none", "lr")
DETECTION_HEADS = ("rcnn", "query")


@dataclass
class DetectorArgs(TaskArgs):
    """A detector on the backbone's pyramid: its schedule, augmentation, neck and head, and the lr search."""

    # The declared search space (tasks/common/tune.py syntax): search=lr tries BoB's grid, one trial each.
    search_space: ClassVar[dict[str, Any]] = {"lr": list(DETECTION_LR_GRID)}

    mode: str = run_arg("finetune", "finetune (train the backbone) or frozen (backbone fixed, eval mode)")
    lr: float = run_arg(1e-4, "AdamW learning rate; BoB sweeps 8e-5, 1e-4, 2e-4, 3e-4 (one run each)")
    weight_decay: float = run_arg(0.05, "AdamW weight decay")
    epochs: int = run_arg(36, "training epochs over the train split (36 = mmdetection's 3× schedule)")
    iters: int | None = run_arg(
        None, "train for exactly this many iterations instead of `epochs` (smoke runs)"
    )
    batch_size: int = run_arg(16, "images per training step (BoB: 8 GPUs × 2)")
    warmup_iters: int = run_arg(1000, "linear warmup iterations (capped at a quarter of training)")
    augment: str = run_arg("lsj", "lsj (large-scale jitter + flip) or flip (horizontal flip only)")
    lsj_scale: tuple[float, ...] = run_arg((0.1, 2.0), "LSJ scale range, as min,max")
    fpn_channels: int = run_arg(256, "channels of every pyramid level")
    rois_per_image: int = run_arg(
        512, "RoIs sampled per image for the box and mask heads (torchvision/mmdet: 512)"
    )
    anchor_size: int = run_arg(32, "anchor side at stride 4 (doubles per level)")
    norm_eval: bool = run_arg(True, "keep the backbone's BatchNorm statistics fixed when fine-tuning")
    amp: bool = run_arg(
        True, "float16 mixed precision with loss scaling on CUDA, in training and prediction (not on CPU)"
    )
    save_model: bool = run_arg(False, "save the trained detector's state_dict next to the result")
    search: str = run_arg(
        "none",
        "in-protocol search first: none, or lr (Ray Tune over BoB's lr grid, box AP on held-out train)",
    )
    search_val_fraction: float = run_arg(0.2, "share of train held out (seeded) to score search=lr's trials")
    head: str = run_arg(
        "rcnn",
        "rcnn (Mask/Faster R-CNN: RPN + RoI heads) or query (Sparse R-CNN/StageInteractor-style "
        "learnable queries, one-to-one Hungarian matching; boxes only)",
    )
    num_queries: int = run_arg(100, "head=query: learnable queries per image")
    query_stages: int = run_arg(6, "head=query: refinement stages")

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        if self.search == "none":  # runs without a search keep the keys they had before search existed
            del ident["search"], ident["search_val_fraction"]
        if self.head == "rcnn":  # likewise for runs from before the query head
            del ident["head"], ident["num_queries"], ident["query_stages"]
        else:  # the R-CNN-only knobs do not change a query-head run
            del ident["rois_per_image"], ident["anchor_size"]
        return ident

    def validate(self) -> None:
        super().validate()
        if self.mode not in DETECTION_MODES:
            raise UsageError(f"mode must be one of {', '.join(DETECTION_MODES)}, got '{self.mode}'.")
        if self.augment not in DETECTION_AUGMENTS:
            raise UsageError(f"augment must be one of {', '.join(DETECTION_AUGMENTS)}, got '{self.augment}'.")
        if self.image_size is not None and self.image_size % 32:
            raise UsageError(
                f"image_size must be a multiple of 32 for the detector's pyramid, got {self.image_size}."
            )
        for name in ("epochs", "batch_size", "fpn_channels", "anchor_size", "rois_per_image"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.iters is not None and self.iters < 1:
            raise UsageError(f"iters must be a positive integer, got {self.iters}.")
        if self.warmup_iters < 0 or self.lr <= 0 or self.weight_decay < 0:
            raise UsageError("lr must be positive; warmup_iters and weight_decay non-negative.")
        if self.head not in DETECTION_HEADS:
            hint = f"Valid values: {', '.join(DETECTION_HEADS)}."
            raise UnknownNameError("detection head", self.head, suggest(self.head, DETECTION_HEADS, 3), hint)
        if self.num_queries < 1 or self.query_stages < 1:
            raise UsageError(
                f"num_queries and query_stages must be positive, got {self.num_queries} and "
                f"{self.query_stages}."
            )
        if self.search not in DETECTION_SEARCHES:
            hint = f"Valid values: {', '.join(DETECTION_SEARCHES)}."
            raise UnknownNameError(
                "search for detection", self.search, suggest(self.search, DETECTION_SEARCHES, 3), hint
            )
        if not 0.0 < self.search_val_fraction < 1.0:
            raise UsageError(f"search_val_fraction must be in (0, 1), got {self.search_val_fraction}.")
        if len(self.lsj_scale) != 2 or not 0 < self.lsj_scale[0] <= self.lsj_scale[1]:
            raise UsageError(f"lsj_scale takes min,max with 0 < min <= max, got {self.lsj_scale}.")


# ------------------------------------------------------------------------------------------ fine-tuning
# BoB's fine-tuning recipe (tasks/common/finetune.py) with optional distillation from a teacher
# (tasks/common/distill.py): the finetune suite's Args (which adds its lr search), the base of
# few-label's, and what ood's mode=finetune builds from its ft_* args.

# Defaults for (epochs, warmup_epochs, batch_size) by dataset kind: BoB's on real data, CPU-sized otherwise.
REAL_SCHEDULE = (100, 5, 128)
SMALL_SCHEDULE = (3, 1, 64)
KD_LOSSES = ("kl", "js")  # KL(teacher || student), or SSLD's Jensen-Shannon divergence
# The distillation args: part of a run's identity only when a teacher is set, so runs without one keep
# the ids they had before distillation existed.
DISTILL_ARGS = (
    "teacher",
    "teacher_weights",
    "kd_temperature",
    "kd_alpha",
    "kd_loss",
    "kd_baseline",
    "kd_unlabeled",
)


# The knobs `protocol=bob` takes from tasks/common/bob_recipes.yaml when they are left at bob's default:
# (task arg, recipe key). epochs, warmup_epochs and batch_size default to None, so any value set is
# the user's; the others count as the user's when they differ from bob's default.
BOB_RECIPE_ARGS = (
    ("lr", "lr"),
    ("weight_decay", "weight_decay"),
    ("layer_decay", "layer_decay"),
    ("drop_path", "drop_path"),
    ("auto_augment", "auto_augment"),
)


@dataclass
class FinetuneRecipeArgs(ProtocolArgs):
    """BoB's recipe: schedule, optimizer, augmentation and the distillation knobs; `config` resolves it.

    `protocol=bob` takes BoB's values for the suite (`bob_suite`) and the backbone from
    tasks/common/bob_recipes.yaml (`resolve`): schedule, optimizer, per-GPU batch and BoB's effective
    batch by gradient accumulation, with BoB's lr scaled linearly when the effective batch differs."""

    real_schedule: ClassVar[tuple[int, int, int]] = REAL_SCHEDULE
    small_schedule: ClassVar[tuple[int, int, int]] = SMALL_SCHEDULE
    val_fraction_may_be_zero: ClassVar[bool] = False
    bob_suite: ClassVar[str] = "finetune"  # whose recipe protocol=bob applies

    epochs: int | None = run_arg(None, "training epochs (default: 100 on real datasets, 3 on embedded ones)")
    warmup_epochs: int | None = run_arg(None, "linear warm-up epochs (default: 5 real, 1 embedded)")
    batch_size: int | None = run_arg(None, "training batch size (default: 128 real, 64 embedded)")
    lr: float = run_arg(1e-3, "peak AdamW learning rate (head and top layer)")
    weight_decay: float = run_arg(0.05, "AdamW weight decay (not on biases and norms)")
    layer_decay: float = run_arg(0.75, "layer-wise lr decay factor (1 = off)")
    drop_path: float = run_arg(0.1, "drop-path rate, where the architecture has drop-path")
    mixup: float = run_arg(0.8, "mixup alpha (0 = off)")
    cutmix: float = run_arg(1.0, "cutmix alpha (0 = off)")
    label_smoothing: float = run_arg(0.1, "label smoothing")
    auto_augment: str = run_arg("rand-m9-mstd0.5-inc1", "timm auto-augment policy ('none' = off)")
    random_erasing: float = run_arg(0.25, "random-erasing probability")
    amp: bool = run_arg(True, "mixed precision on CUDA (ignored on CPU)")
    val_fraction: float = run_arg(
        0.1, "share of train held out for epoch selection when the dataset has no val split"
    )
    teacher: str | None = run_arg(
        None, "distil from this backbone (a linear probe on its features of the labelled images); none = off"
    )
    teacher_weights: str = run_arg("pretrained", "the teacher's weights: pretrained, random or a file")
    kd_temperature: float = run_arg(1.0, "distillation temperature T (SimCLRv2 and SSLD: 1)")
    kd_alpha: float = run_arg(
        1.0, "weight of the distillation loss; 1 - kd_alpha goes to the labels' cross-entropy"
    )
    kd_loss: str = run_arg("kl", "kl (KL(teacher || student)) or js (SSLD's Jensen-Shannon divergence)")
    kd_baseline: bool = run_arg(
        False, "with a teacher: also fine-tune without it in the same run and report gain_top1"
    )
    accum_steps: int | None = run_arg(
        None,
        "batches per optimizer step (gradient accumulation; default 1, protocol=bob: BoB's "
        "accum_iter × its 8 GPUs)",
        omit_default=True,
    )
    effective_batch: int | None = run_arg(
        None,
        "images per optimizer step, batch_size × accum_steps (sets accum_steps; protocol=bob scales "
        "BoB's lr linearly from BoB's effective batch)",
        omit_default=True,
    )

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        if self.teacher is None:
            for name in DISTILL_ARGS:
                ident.pop(name, None)
        return ident

    def validate(self) -> None:
        super().validate()
        self._check_distillation()
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value}.")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise UsageError(f"warmup_epochs must be 0 or more, got {self.warmup_epochs}.")
        if self.epochs is not None and self.warmup_epochs is not None and self.warmup_epochs >= self.epochs:
            raise UsageError(
                f"warmup_epochs ({self.warmup_epochs}) must be smaller than epochs ({self.epochs})."
            )
        if self.lr <= 0 or self.weight_decay < 0:
            raise UsageError("lr must be positive and weight_decay non-negative.")
        for name in ("accum_steps", "effective_batch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value}.")
        if not 0.0 < self.layer_decay <= 1.0:
            raise UsageError(f"layer_decay must be in (0, 1], got {self.layer_decay}.")
        for name in ("drop_path", "label_smoothing", "random_erasing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UsageError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.mixup < 0 or self.cutmix < 0:
            raise UsageError("mixup and cutmix alphas must be 0 (off) or positive.")
        low = 0.0 if self.val_fraction_may_be_zero else 1e-12
        if not low <= self.val_fraction < 1.0:
            interval = "[0, 1)" if self.val_fraction_may_be_zero else "(0, 1)"
            raise UsageError(f"val_fraction must be in {interval}, got {self.val_fraction}.")

    def _check_distillation(self) -> None:
        """The distillation args, checked before anything runs (an unknown teacher: did-you-mean)."""
        if self.kd_loss not in KD_LOSSES:
            hint = f"Valid values: {', '.join(KD_LOSSES)}."
            raise UnknownNameError("kd_loss", self.kd_loss, suggest(self.kd_loss, KD_LOSSES, 2), hint)
        if self.kd_temperature <= 0:
            raise UsageError(f"kd_temperature must be positive, got {self.kd_temperature}.")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise UsageError(f"kd_alpha must be in [0, 1], got {self.kd_alpha}.")
        if self.teacher is not None:
            if not self.teacher.strip():
                raise UsageError("teacher is empty: name a backbone, e.g. teacher=torchvision/mobilenet_v2.")
            if not is_factory_name(self.teacher):
                BACKBONES.get(self.teacher, live=True)  # an unknown name: did-you-mean, before any run
            WeightsRequest.parse(self.teacher_weights)

    def config(self, dataset_kind: str, backbone: str = "") -> FinetuneConfig:
        """The loop's config, with the schedule defaults of the dataset's kind filled in (see `resolve`)."""
        return self.resolve(dataset_kind, backbone)[0]

    def resolve(self, dataset_kind: str, backbone: str = "") -> tuple[FinetuneConfig, dict[str, Any]]:
        """The loop's config and what the protocol records about it: the effective batch, and under
        `protocol=bob` BoB's recipe for this suite and the catalog `backbone` with every value applied."""
        epochs, warmup, batch = self.real_schedule if dataset_kind == "real" else self.small_schedule
        knobs = {name: getattr(self, name) for name, _ in BOB_RECIPE_ARGS}
        record: dict[str, Any] = {}
        reference_batch, bob_lr = None, None
        if self.is_bob:
            recipe = bob_recipe(self.bob_suite, backbone)
            values, defaults = recipe.values, _field_defaults(self)
            epochs, warmup, batch = values["epochs"], values["warmup_epochs"], values["batch"]
            kept = [name for name, _ in BOB_RECIPE_ARGS if knobs[name] != defaults[name]]
            knobs.update({name: values[key] for name, key in BOB_RECIPE_ARGS if name not in kept})
            reference_batch = recipe.effective_batch
            bob_lr = knobs["lr"] if "lr" not in kept else None
            record["recipe"] = recipe.describe()
            record["args_kept_over_recipe"] = kept + [
                n for n in ("epochs", "warmup_epochs", "batch_size") if getattr(self, n) is not None
            ]
        epochs = self.epochs if self.epochs is not None else epochs
        warmup = self.warmup_epochs if self.warmup_epochs is not None else min(warmup, epochs - 1)
        if warmup >= epochs:
            raise UsageError(f"warmup_epochs ({warmup}) must be smaller than epochs ({epochs}).")
        batch = self.batch_size if self.batch_size is not None else batch
        accum = self._accum_steps(batch, reference_batch)
        lr = knobs["lr"]
        if bob_lr is not None and reference_batch is not None and batch * accum != reference_batch:
            lr = bob_lr * batch * accum / reference_batch
            record["lr_scaling"] = (
                f"linear: BoB's lr {bob_lr:g} at its effective batch {reference_batch} × "
                f"{batch * accum}/{reference_batch} = {lr:g}"
            )
        auto_augment = knobs["auto_augment"]
        cfg = FinetuneConfig(
            epochs=epochs,
            warmup_epochs=warmup,
            batch_size=batch,
            accum_steps=accum,
            lr=lr,
            weight_decay=knobs["weight_decay"],
            layer_decay=knobs["layer_decay"],
            mixup=self.mixup,
            cutmix=self.cutmix,
            label_smoothing=self.label_smoothing,
            auto_augment=None if auto_augment.lower() in ("", "none") else auto_augment,
            random_erasing=self.random_erasing,
            amp=self.amp,
        )
        return cfg, record

    def drop_path_rate(self) -> float:
        """The drop-path rate to train with: the task arg, or BoB's under protocol=bob when left at default."""
        if self.is_bob and self.drop_path == _field_defaults(self)["drop_path"]:
            return bob_recipe(self.bob_suite, "").values["drop_path"]
        return self.drop_path

    def _accum_steps(self, batch: int, reference_batch: int | None) -> int:
        """Batches per optimizer step: from effective_batch, accum_steps, BoB's effective batch, else 1."""
        if self.effective_batch is not None:
            if self.effective_batch % batch:
                raise UsageError(
                    f"effective_batch ({self.effective_batch}) must be a multiple of batch_size ({batch})."
                )
            accum = self.effective_batch // batch
            if self.accum_steps is not None and self.accum_steps != accum:
                raise UsageError(
                    f"accum_steps={self.accum_steps} disagrees with effective_batch={self.effective_batch} / "
                    f"batch_size={batch} = {accum}: set one of them."
                )
            return accum
        if self.accum_steps is not None:
            return self.accum_steps
        if reference_batch is not None:
            if reference_batch % batch:
                raise UsageError(
                    f"protocol=bob accumulates to BoB's effective batch {reference_batch}, which batch_size "
                    f"({batch}) does not divide: pick a divisor, or set effective_batch."
                )
            return reference_batch // batch
        return 1


def _field_defaults(args: TaskArgs) -> dict[str, Any]:
    """Each task arg's declared default (the class's own, where a subclass redeclares it)."""
    return {f.name: f.default for f in dataclasses.fields(args)}

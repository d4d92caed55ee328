"""`detection/<dataset>`: Mask R-CNN (Faster R-CNN on box-only data) with an FPN on the backbone.

Protocol (BoB §COCO detection, on torchvision's detector; deviations in docs/suites/detection.md):
  1. both splits are loaded and validated (broken references stop the run before any training);
  2. the backbone is built at `image_size` and wrapped in a pyramid (FPN, or ViTDet's simple pyramid
     for plain ViTs); `mode=frozen` keeps it fixed, `mode=finetune` trains it;
  3. AdamW (lr from BoB's grid {8e-5, 1e-4, 2e-4, 3e-4}, default 1e-4; wd 0.05), warmup and ×0.1
     steps at 27/36 and 33/36 of `epochs` (36 = mmdetection's 3×), LSJ augmentation by default;
  4. test-split predictions (100 per image) scored by pycocotools COCOeval: box AP (main metric)
     and, on datasets with masks, mask AP, each with AP50 / AP75 / AP_S / AP_M / AP_L.
`head=query` replaces the RPN and RoI heads by a query-based head (query_head.py) on the same pyramid,
loop and evaluation. With `search=lr`, Ray Tune first scores every grid lr on a seeded held-out part of train (box AP) and
step 3 uses the winner; the search lands in `protocol["search"]`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest
from bob.task import Task, TaskArgs, TaskOutput, run_arg

if TYPE_CHECKING:
    from bob.backbones.base import BackboneRef
    from bob.context import RunContext
    from bob.data.coco import DetectionSplit

MODES = ("finetune", "frozen")
AUGMENTS = ("lsj", "flip")
LR_GRID = (8e-5, 1e-4, 2e-4, 3e-4)  # BoB's detection sweep; one run per value
SEARCHES = ("none", "lr")
HEADS = ("rcnn", "query")
REAL_IMAGE_SIZE = 1024  # BoB's LSJ resolution, used when neither the task arg nor the dataset sets one


@dataclass
class DetectionArgs(TaskArgs):
    # The declared search space (bob/sweep/tune.py syntax): search=lr tries BoB's grid, one trial each.
    search_space: ClassVar[dict[str, Any]] = {"lr": list(LR_GRID)}

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
    amp: bool = run_arg(True, "float16 autocast with loss scaling on CUDA (ignored on CPU)")
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
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, got '{self.mode}'.")
        if self.augment not in AUGMENTS:
            raise UsageError(f"augment must be one of {', '.join(AUGMENTS)}, got '{self.augment}'.")
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
        if self.head not in HEADS:
            hint = f"Valid values: {', '.join(HEADS)}."
            raise UnknownNameError("detection head", self.head, suggest(self.head, HEADS, 3), hint)
        if self.num_queries < 1 or self.query_stages < 1:
            raise UsageError(
                f"num_queries and query_stages must be positive, got {self.num_queries} and {self.query_stages}."
            )
        if self.search not in SEARCHES:
            hint = f"Valid values: {', '.join(SEARCHES)}."
            raise UnknownNameError(
                "search for detection", self.search, suggest(self.search, SEARCHES, 3), hint
            )
        if not 0.0 < self.search_val_fraction < 1.0:
            raise UsageError(f"search_val_fraction must be in (0, 1), got {self.search_val_fraction}.")
        if len(self.lsj_scale) != 2 or not 0 < self.lsj_scale[0] <= self.lsj_scale[1]:
            raise UsageError(f"lsj_scale takes min,max with 0 < min <= max, got {self.lsj_scale}.")


class Detection(Task):
    suite = "detection"
    version = "1"
    main_metric = "box_ap"
    needs = ("features", "trainable")
    task_types = ("detection", "open-vocab")  # on open-vocab sets: the closed-vocabulary oracle
    description = (
        "Mask R-CNN (Faster R-CNN on box-only data) with an FPN on the backbone; COCOeval box/mask AP"
    )
    Args = DetectionArgs
    check_dataset: ClassVar[str] = "scenes-mini"
    check_args: ClassVar[dict[str, str]] = {
        "iters": "3",
        "batch_size": "2",
        "augment": "flip",
        "fpn_channels": "32",
    }

    def run(self, ctx: RunContext) -> TaskOutput:
        import torch

        from bob.data.coco import DetectionSplit
        from bob.tasks.common.coco_eval import coco_metrics
        from bob.tasks.detection.train import predict, train_detector, train_indices

        args: DetectionArgs = self.args  # type: ignore[assignment]
        if importlib.util.find_spec("pycocotools") is None:
            raise UsageError(
                "detection needs pycocotools for COCOeval (a bob dependency): pip install pycocotools."
            )
        train, test = ctx.split("train"), ctx.split("test")
        for split in (train, test):
            if not isinstance(split, DetectionSplit):
                raise UsageError(
                    f"{self.name}: split '{split.split}' has no boxes; pick a detection dataset."
                )
        if train.category_ids != test.category_ids:
            raise UsageError(f"{self.name}: train and test declare different categories; they must match.")
        n_train = len(train_indices(train))
        if n_train == 0:
            raise UsageError(f"{self.name}: no train image has a non-crowd instance; nothing to train on.")
        size = args.image_size or ctx.info.image_size or REAL_IMAGE_SIZE
        masks = (
            train.has_masks and test.has_masks and args.head == "rcnn"
        )  # the query head has no mask branch
        search = None
        if args.search == "lr":  # before the final fit: a missing Ray fails here, not after training
            search = search_lr(ctx, args, train, size, masks)
            args = dataclasses.replace(args, **search["best_config"])
        cfg = train_config(args, n_train, size)
        backbone = ctx.build_backbone(input_size=size)
        torch.manual_seed(ctx.seed)
        model, pad_to = detector(backbone, args, len(train.classes), masks, size)
        start = time.perf_counter()
        history = train_detector(model, train, cfg, ctx.device, ctx.seed, ctx.num_workers)
        train_s = time.perf_counter() - start
        records = predict(model, test, args.batch_size, ctx.device, ctx.num_workers, args.amp)
        metrics, summaries = coco_metrics(test.coco, records, ("bbox", "segm") if masks else ("bbox",))
        protocol = self._protocol(args, cfg, model, backbone, pad_to, masks, n_train, len(test))
        protocol.update(
            history, train_s=round(train_s, 2), num_detections=len(records), cocoeval_summary=summaries
        )
        protocol["data"] = {"train": train.describe(), "test": test.describe()}
        if search is not None:
            protocol["search"] = search
        artifacts = {}
        if args.save_model:
            state = {"state_dict": model.state_dict(), "classes": list(train.classes), "protocol": protocol}
            artifacts["detector"] = ctx.save_artifact("detector", state)
        return TaskOutput(metrics, protocol, artifacts)

    @staticmethod
    def _protocol(
        args: DetectionArgs,
        cfg: Any,
        model: Any,
        backbone: Any,
        pad_to: int | None,
        masks: bool,
        n_train: int,
        n_test: int,
    ) -> dict[str, Any]:
        from bob.tasks.detection.train import lr_steps

        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if args.head == "query":
            head: dict[str, Any] = {
                "detector": "query-based (Sparse R-CNN / StageInteractor-style)",
                "heads": (
                    f"{args.num_queries} learnable queries, {args.query_stages} stages of RoIAlign 7x7 + "
                    "self-attention + dynamic interaction (own and previous stage's filters) + FFN"
                ),
                "assignment": "one-to-one Hungarian per stage, cost 2 focal + 5 L1 + 2 GIoU",
                "losses": "sigmoid focal (alpha 0.25, gamma 2) x2, L1 on normalised boxes x5, GIoU x2",
            }
        else:
            head = {
                "detector": "Mask R-CNN" if masks else "Faster R-CNN",
                "heads": "torchvision: RPNHead, TwoMLPHead box head" + (", MaskRCNNHeads" if masks else ""),
                "anchor_sizes": [int(s[0]) for s in model.rpn.anchor_generator.sizes],
                "rois_per_image": args.rois_per_image,
            }
        return {
            "head": args.head,
            **head,
            "pyramid": model.backbone.plan.describe(),
            "mode": args.mode,
            "norm_eval": args.norm_eval,
            "optimizer": "AdamW, betas (0.9, 0.999)",
            "lr": args.lr,
            "lr_grid": list(LR_GRID),
            "weight_decay": args.weight_decay,
            "schedule": f"linear warmup from lr*0.001 for {cfg.warmup_iters} iters, x0.1 at 27/36 and 33/36",
            "iterations": cfg.iterations,
            "epochs": None if args.iters else args.epochs,
            "batch_size": cfg.batch_size,
            "augment": args.augment,
            "lsj_scale": list(args.lsj_scale) if args.augment == "lsj" else None,
            "image_size": cfg.image_size,
            "transform": {
                "resize": f"longer side to {cfg.image_size}",
                "mean": list(backbone.data_config.mean),
                "std": list(backbone.data_config.std),
                "pad": f"square {pad_to}" if pad_to else "batch to a multiple of 32",
            },
            "fpn_channels": args.fpn_channels,
            "amp": cfg.amp,
            "trainable_params": trainable,
            "num_train_images": n_train,
            "num_test_images": n_test,
            "evaluation": "pycocotools COCOeval, maxDets 100, score threshold 0.05, mask threshold 0.5",
            "lr_steps": lr_steps(cfg.iterations),
        }


def train_config(args: DetectionArgs, n_train: int, size: int) -> Any:
    """The training loop's config: `iters`, else `epochs` over `n_train` images."""
    from bob.tasks.detection.train import TrainConfig

    iterations = args.iters or args.epochs * max(1, n_train // args.batch_size)
    return TrainConfig(
        iterations=iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_iters=min(args.warmup_iters, iterations // 4),
        augment=args.augment,
        image_size=size,
        lsj_scale=tuple(args.lsj_scale),  # type: ignore[arg-type]
        amp=args.amp,
    )


def detector(
    backbone: Any, args: DetectionArgs, num_classes: int, masks: bool, size: int
) -> tuple[Any, int | None]:
    """The detector on `backbone` as the task args ask, and the square pad size it needs (if any)."""
    from bob.tasks.common.pyramid import BackboneWithPyramid, accepts_any_size
    from bob.tasks.detection.model import build_detector
    from bob.tasks.detection.query_head import QueryDetector

    pad_to = None if accepts_any_size(backbone, size) else size
    if args.head == "query":
        body = BackboneWithPyramid(
            backbone, args.fpn_channels, frozen=args.mode == "frozen", norm_eval=args.norm_eval, pad_to=pad_to
        )
        return QueryDetector(body, num_classes, size, args.num_queries, args.query_stages), pad_to
    model = build_detector(
        backbone,
        num_classes,
        masks=masks,
        image_size=size,
        fpn_channels=args.fpn_channels,
        anchor_size=args.anchor_size,
        rois_per_image=args.rois_per_image,
        frozen=args.mode == "frozen",
        norm_eval=args.norm_eval,
        pad_to=pad_to,
    )
    return model, pad_to


def holdout(train: DetectionSplit, fraction: float, seed: int) -> tuple[DetectionSplit, DetectionSplit]:
    """(train part, val part): a seeded `fraction` of the trainable images becomes the val part."""
    import numpy as np

    from bob.tasks.detection.train import train_indices

    usable = np.asarray(train_indices(train))
    n_val = round(fraction * len(usable))
    if n_val < 1 or n_val >= len(usable):
        raise UsageError(
            f"search=lr holds out search_val_fraction={fraction} of {len(usable)} trainable images: "
            f"{n_val} for validation leaves no train or no val part; change search_val_fraction."
        )
    order = np.random.default_rng(seed).permutation(usable)
    return train.take(np.sort(order[n_val:]), "train"), train.take(np.sort(order[:n_val]), "val")


def search_lr(
    ctx: RunContext, args: DetectionArgs, train: DetectionSplit, size: int, masks: bool
) -> dict[str, Any]:
    """Ray Tune over `args.search_space` (BoB's lr grid, one FIFO trial per lr): each trial trains a
    fresh detector on the train part and reports box AP on the held-out val part; returns
    `SearchResult.to_protocol()` with the val split's size and seed added."""
    import torch

    from bob.tasks.common.tune import search_in_protocol
    from bob.tasks.detection.train import train_indices

    part, val = holdout(train, args.search_val_fraction, ctx.seed)
    on_cuda = torch.device(ctx.device).type == "cuda"
    found = search_in_protocol(
        _lr_trial,
        args.search_space,
        metric="val_box_ap",
        mode="max",
        scheduler="fifo",
        cpus_per_trial=1,
        gpus_per_trial=1 if on_cuda else 0,
        seed=ctx.seed,
        data={
            "ref": ctx.ref,
            "args": args,
            "train": part,
            "val": val,
            "n_train": len(train_indices(part)),
            "size": size,
            "masks": masks,
            "device": "cuda" if on_cuda else "cpu",
            "seed": ctx.seed,
        },
    ).to_protocol()
    found["val_split"] = f"seeded {args.search_val_fraction:.0%} of train (seed {ctx.seed})"
    found["num_search_train"], found["num_search_val"] = len(part), len(val)
    return found


def _lr_trial(
    config: dict[str, Any],
    report: Any,
    ref: BackboneRef,
    args: DetectionArgs,
    train: DetectionSplit,
    val: DetectionSplit,
    n_train: int,
    size: int,
    masks: bool,
    device: str,
    seed: int,
) -> None:
    """One search trial in a Ray worker: train with `config`'s lr, report box AP on the val part."""
    import torch

    from bob.tasks.common.coco_eval import coco_metrics
    from bob.tasks.detection.train import predict, train_detector

    torch.set_num_threads(1)
    args = dataclasses.replace(args, **config)
    backbone = ref.build(size if size != ref.data_config.input_size else None)
    torch.manual_seed(seed)
    model, _ = detector(backbone, args, len(train.classes), masks, size)
    train_detector(model, train, train_config(args, n_train, size), device, seed, num_workers=0)
    records = predict(model, val, args.batch_size, device, num_workers=0, amp=args.amp)
    metrics, _ = coco_metrics(val.coco, records, ("bbox",))
    report({"val_box_ap": metrics["box_ap"]})

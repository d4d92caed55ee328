"""The rvos protocol: check the videos, embed the expressions, train the referring head, score J&F."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from bob.backbones.base import Backbone
from bob.context import RunContext
from bob.errors import UsageError
from bob.samples import SampleSet
from bob.task import TaskOutput
from bob.tasks.common.samples import mean_samples, save_samples
from bob.tasks.common.text import text_embeddings
from bob.tasks.rvos import REAL_IMAGE_SIZE, Rvos, RvosArgs
from bob.tasks.rvos.data import RvosSplit, validate_split
from bob.tasks.rvos.model import LOSS_WEIGHTS, ReferringHead
from bob.tasks.rvos.train import TrainConfig, VideoFrames, evaluate, train_head


def run(task: Rvos, ctx: RunContext) -> TaskOutput:
    args: RvosArgs = task.args  # type: ignore[assignment]
    train, test = _splits(task, ctx)
    counts = {"train": validate_split(train, task.name), "test": validate_split(test, task.name)}
    knobs = args.resolved(ctx.info.kind)
    if knobs["dim"] % args.heads or knobs["dim"] % 8:
        raise UsageError(f"dim ({knobs['dim']}) must be a multiple of 8 and of heads ({args.heads}).")
    size = args.image_size or ctx.info.image_size or REAL_IMAGE_SIZE
    backbone = ctx.build_backbone(input_size=size)
    texts = sorted({e.text for e in train.expressions} | {e.text for e in test.expressions})
    emb, encoder = text_embeddings(args.text_encoder, args.prompt, backbone, texts)
    text = {t: emb[i].to(ctx.device) for i, t in enumerate(texts)}
    torch.manual_seed(ctx.seed)
    model = _build_head(backbone, emb.shape[1], args, knobs).to(ctx.device)
    cfg = TrainConfig(
        knobs["iters"],
        args.batch_size,
        args.num_frames,
        knobs["lr"],
        args.backbone_lr_mult,
        args.weight_decay,
        size,
    )
    config = backbone.data_config
    start = time.perf_counter()
    frames = VideoFrames(train, model, size, config.mean, config.std, ctx.device)
    history = train_head(model, frames, text, cfg, ctx.seed)
    train_s = time.perf_counter() - start
    test_frames = VideoFrames(test, model, size, config.mean, config.std, ctx.device)
    metrics, rows = evaluate(model, test_frames, text, args.num_frames, args.mask_threshold, args.bound_th)
    protocol = {
        **_recipe(args, knobs, model, backbone, encoder, size),
        "counts": counts,
        "train_s": round(train_s, 2),
        "eval_s": round(time.perf_counter() - start - train_s, 2),
        **history,
        "per_expression": rows,
        "data": {"train": train.describe(), "test": test.describe()},
    }
    return save_samples(ctx, TaskOutput(metrics, protocol, {}), expression_samples(test, rows))


def expression_samples(test: RvosSplit, rows: list[dict[str, Any]]) -> SampleSet:
    """Per expression its J and F (two cells, each half of J&F); the units are the videos, so a
    resample draws a video with all its expressions (they share frames, so they are not independent)."""
    unit = np.array([e.video for e in test.expressions], dtype=np.int32)  # `rows` are in this order
    values = np.array([[r["j"], r["f"]] for r in rows], dtype=np.float64)
    return mean_samples(
        values.T.ravel(),
        "j_and_f",
        "video",
        (unit, np.array([e.obj_id for e in test.expressions])),
        unit=np.concatenate([unit, unit]),
        cell=np.repeat(np.array([0, 1], dtype=np.int8), len(rows)),
        coef=[0.5, 0.5],
        cells=["j", "f"],
        n_units=len(test.names),
    )


def _splits(task: Rvos, ctx: RunContext) -> tuple[RvosSplit, RvosSplit]:
    """The train and test splits, both with referring expressions."""
    train, test = ctx.split("train"), ctx.split("test")
    for split in (train, test):
        if not isinstance(split, RvosSplit):
            raise UsageError(
                f"{task.name}: split '{split.split}' has no referring expressions; pick an rvos dataset."
            )
    return train, test  # type: ignore[return-value]


def _build_head(backbone: Backbone, text_dim: int, args: RvosArgs, knobs: dict[str, Any]) -> ReferringHead:
    return ReferringHead(
        backbone,
        text_dim,
        dim=knobs["dim"],
        num_queries=args.num_queries,
        layers=knobs["layers"],
        heads=args.heads,
        frozen=args.mode == "frozen",
        norm_eval=args.norm_eval,
    )


def _recipe(
    args: RvosArgs, knobs: dict[str, Any], model: ReferringHead, backbone: Backbone, encoder: str, size: int
) -> dict[str, Any]:
    """Every recipe value the run used."""
    config = backbone.data_config
    return {
        "mode": args.mode,
        "text_encoder": encoder,
        "prompt": args.prompt if "bag-of-words" not in encoder else None,
        "image_size": size,
        "normalisation": {"mean": list(config.mean), "std": list(config.std)},
        "pyramid": model.body.plan.describe(),
        "head": {
            "dim": knobs["dim"],
            "decoder_layers": knobs["layers"],
            "num_queries": args.num_queries,
            "heads": args.heads,
            "query_linking": "same query index in every frame",
        },
        "optimizer": "AdamW, constant lr",
        "lr": knobs["lr"],
        "backbone_lr": knobs["lr"] * args.backbone_lr_mult if args.mode == "finetune" else None,
        "weight_decay": args.weight_decay,
        "iters": knobs["iters"],
        "batch_size": args.batch_size,
        "num_frames": args.num_frames,
        "loss_weights": LOSS_WEIGHTS,
        "matching": "one query index per video, lowest summed (BCE + dice - score) over frames",
        "inference": "query with the highest mean score over all frames; mask prob > mask_threshold",
        "mask_threshold": args.mask_threshold,
        "metric": {
            "definition": "DAVIS J (IoU, empty/empty = 1) and boundary F, per expression over all "
            "frames, averaged over expressions; J&F = (J-mean + F-mean) / 2",
            "bound_th": args.bound_th,
            "frames": "all annotated frames",
        },
    }

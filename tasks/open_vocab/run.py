"""The open-vocab protocol (see the package docstring): train the shared R-CNN with a text classifier
on the base categories, score all categories, the novel and the base ones."""

from __future__ import annotations

import time
from typing import Any

import torch

from bob.context import RunContext
from bob.data.coco import DetectionSplit
from bob.data.lvis import is_lvis
from bob.errors import UsageError
from bob.samples import SampleSet
from bob.task import TaskOutput
from bob.tasks.common.coco_eval import coco_metrics
from bob.tasks.common.detector_data import train_indices
from bob.tasks.common.detector_train import (
    REAL_IMAGE_SIZE,
    describe_training,
    predict,
    train_config,
    train_detector,
)
from bob.tasks.common.rcnn import describe_rcnn, rcnn_detector
from bob.tasks.common.samples import save_samples
from bob.tasks.common.text import text_embeddings
from bob.tasks.open_vocab import OpenVocab, OpenVocabArgs
from bob.tasks.open_vocab.metrics import LVIS_MAX_DETS, lvis_metrics, subset_metrics
from bob.tasks.open_vocab.model import with_text_classifier
from bob.tasks.open_vocab.vocab import novel_ids, without_categories


def run(task: OpenVocab, ctx: RunContext) -> TaskOutput:
    args: OpenVocabArgs = task.args  # type: ignore[assignment]
    train, test = ctx.split("train"), ctx.split("test")
    if train.category_ids != test.category_ids:
        raise UsageError(f"{task.name}: train and test declare different categories; they must match.")
    novel = novel_ids(test, tuple(args.novel), task.name)
    base_train = without_categories(train, novel, "train")
    n_train = len(train_indices(base_train))
    if n_train == 0:
        raise UsageError(f"{task.name}: no train image has a base-category instance; nothing to train on.")
    size = args.image_size or ctx.info.image_size or REAL_IMAGE_SIZE
    masks = train.has_masks and test.has_masks
    backbone = ctx.build_backbone(input_size=size)
    names = list(test.classes)
    text, encoder = text_embeddings(args.text_encoder, args.prompt, backbone, names)
    base = torch.tensor([cid not in novel for cid in test.category_ids])
    torch.manual_seed(ctx.seed)
    model, pad_to = rcnn_detector(backbone, args, len(names), masks, size)
    with_text_classifier(model, text, base, args.temperature, masks)
    max_dets = detections_per_image(model, test)
    cfg = train_config(args, n_train, size)
    start = time.perf_counter()
    history = train_detector(model, base_train, cfg, ctx.device, ctx.seed, ctx.num_workers)
    train_s = time.perf_counter() - start
    records = predict(model, test, args.batch_size, ctx.device, ctx.num_workers, args.amp)
    iou_types = ("bbox", "segm") if masks else ("bbox",)
    samples: dict[str, SampleSet] = {}
    metrics, summaries = open_vocab_metrics(test, records, novel, iou_types, samples)
    protocol: dict[str, Any] = {
        "head": args.head,
        **describe_rcnn(model, args, masks),
        **describe_training(args, cfg, model, backbone, pad_to, n_train, len(test)),
    }
    protocol.update(
        history,
        train_s=round(train_s, 2),
        num_detections=len(records),
        detections_per_image=max_dets,
        cocoeval_summary=summaries,
        **describe_vocabulary(args, encoder, masks, test, novel),
        train_annotations_dropped=len(train.coco["annotations"]) - len(base_train.coco["annotations"]),
        data={"train": base_train.describe(), "test": test.describe()},
    )
    return save_samples(ctx, TaskOutput(metrics, protocol, {}), samples["bbox"])


def detections_per_image(model: torch.nn.Module, test: DetectionSplit) -> int:
    """Keep LVIS's 300 detections per image on LVIS (torchvision's default is 100, which would cut
    what LVISEval scores and lower APr); elsewhere the detector's own cap. Returns the cap."""
    heads = model.roi_heads
    if is_lvis(test.coco):
        heads.detections_per_img = LVIS_MAX_DETS
    return int(heads.detections_per_img)


def open_vocab_metrics(
    test: DetectionSplit,
    records: list[dict[str, Any]],
    novel: set[int],
    iou_types: tuple[str, ...],
    samples: dict[str, SampleSet] | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """COCOeval on all categories, then on the novel and the base ones; LVIS's federated AP on LVIS
    (APr = the rare, i.e. novel, categories). Returns (metrics, COCOeval's summaries); `samples`
    receives the novel categories' per-image evaluation (what the main metric, box_ap_novel, is)."""
    metrics, summaries = coco_metrics(test.coco, records, iou_types)
    all_ids = set(test.category_ids)
    metrics.update(subset_metrics(test.coco, records, novel, iou_types, "novel", samples))
    metrics.update(subset_metrics(test.coco, records, all_ids - novel, iou_types, "base"))
    if is_lvis(test.coco):
        metrics.update(lvis_metrics(test.coco, records, iou_types))
    return metrics, summaries


def describe_vocabulary(
    args: OpenVocabArgs, encoder: str, masks: bool, test: DetectionSplit, novel: set[int]
) -> dict[str, Any]:
    """The classifier, text encoder and base / novel categories, for the protocol record."""
    names = list(test.classes)
    return {
        "classifier": f"cosine to text embeddings / temperature {args.temperature}, learned background "
        "embedding; class-agnostic box regression" + (" and masks" if masks else ""),
        "text_encoder": encoder,
        "prompt": args.prompt if "bag-of-words" not in encoder else None,
        "novel_categories": [n for n, c in zip(names, test.category_ids, strict=True) if c in novel],
        "base_categories": [n for n, c in zip(names, test.category_ids, strict=True) if c not in novel],
    }

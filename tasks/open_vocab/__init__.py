"""`open-vocab/<dataset>`: open-vocabulary detection, ViLD-text style (Gu et al., ICLR 2022).

The detection suite's Mask/Faster R-CNN on the backbone's pyramid, with its classifier replaced by
cosine similarity to text embeddings of the category names:

    p(c | region) = softmax_c( cos(W·r, t_c) / τ ),   c ∈ {background} ∪ categories

`r` is the box head's 1024-d region feature, `W` a learned projection, `t_c` the L2-normalised
text embedding of category `c` (fixed), the background a learned embedding, τ = 0.01 (ViLD). Box
regression and masks are class-agnostic, so they transfer to categories never trained on.

Protocol: the categories split into **base** and **novel** (the dataset's own split — `"split":
"novel"` on a category, or LVIS-style `"frequency": "r"` — or the `novel=` task arg). Training sees
base annotations only: novel objects are background, and the novel text embeddings are masked out
of the softmax. Evaluation scores all categories at once (the open vocabulary) with COCOeval, and
reports AP on the novel categories (the main metric), on the base ones and on all.

Text embeddings (`text_encoder`):
  - `backbone`: the backbone's own text tower (`has_text_tower`, `encode_text`: open_clip backbones), with `prompt`;
  - `open_clip:<model>[/<pretrained>]`: an open_clip text tower, with `prompt`;
  - `bow`: bob's fixed bag-of-words encoder — each word a seeded Gaussian vector (seed from the
    word's sha256), a name the normalised mean of its words. It knows no semantics, but it is
    compositional: a novel `red star` shares its words with base `red circle` and `blue star`.
  - `auto` (default): `backbone` when the backbone has a text tower, else `bow`.
The encoder used is recorded in the result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bob.errors import UsageError
from bob.task import TaskOutput, run_arg
from bob.tasks.common.args import check_text_encoder
from bob.tasks.detection import Detection, DetectionArgs

if TYPE_CHECKING:
    import torch

    from bob.context import RunContext
    from bob.data.coco import DetectionSplit


@dataclass
class OpenVocabArgs(DetectionArgs):
    search_space: ClassVar[dict[str, Any]] = {}

    text_encoder: str = run_arg(
        "auto",
        "auto, backbone (its CLIP text tower), bow (bob's fixed bag of words) or open_clip:<model>[/<pretrained>]",
    )
    prompt: str = run_arg(
        "a photo of a {}.", "prompt template for CLIP-style text towers ({} = category name)"
    )
    temperature: float = run_arg(0.01, "softmax temperature on cosine similarities (ViLD: 0.01)")
    novel: tuple[str, ...] = run_arg(
        (),
        "novel category names (default: the dataset's own split, e.g. LVIS rare, the scenes' held-out pairs)",
    )

    def validate(self) -> None:
        super().validate()
        if self.head != "rcnn":
            raise UsageError(
                "open-vocab runs on the R-CNN head (ViLD's); head=query is a detection-suite option."
            )
        if self.search != "none":
            raise UsageError("open-vocab has no in-protocol search; sweep lr with a sweep file instead.")
        if self.temperature <= 0:
            raise UsageError(f"temperature must be positive, got {self.temperature}.")
        if "{}" not in self.prompt:
            raise UsageError(f"prompt must contain {{}} where the category name goes, got '{self.prompt}'.")
        check_text_encoder(self.text_encoder)


# ------------------------------------------------------------------------------------------ heads


def text_predictor(in_channels: int, text: torch.Tensor, base: torch.Tensor, temperature: float) -> Any:
    """The ViLD-text box predictor: (class logits over background + K, class-agnostic box deltas)."""
    import torch
    from torch import nn

    class TextPredictor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.project = nn.Linear(in_channels, text.shape[1])
            self.background = nn.Parameter(torch.randn(text.shape[1]) * 0.02)
            self.bbox_pred = nn.Linear(in_channels, 4)
            self.register_buffer("text", torch.nn.functional.normalize(text, dim=1))
            self.register_buffer("base", base.bool())
            self.temperature = temperature

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = x.flatten(1)
            region = torch.nn.functional.normalize(self.project(x), dim=1)
            classes = torch.cat([torch.nn.functional.normalize(self.background, dim=0)[None], self.text])
            logits = region @ classes.T / self.temperature
            if self.training:  # novel categories are not in the training vocabulary
                novel = torch.cat([self.base.new_zeros(1), ~self.base])
                logits = logits.masked_fill(novel[None], -1e4)
            deltas = self.bbox_pred(x).repeat(1, classes.shape[0])
            return logits, deltas

    return TextPredictor()


def class_agnostic_masks(predictor: Any, num_outputs: int) -> Any:
    """Mask R-CNN's predictor with one mask channel shared by every category."""
    from torch import nn
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    class AgnosticMask(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = MaskRCNNPredictor(
                predictor.conv5_mask.in_channels, predictor.conv5_mask.out_channels, 1
            )

        def forward(self, x):
            out = self.inner(x)
            return out.expand(-1, num_outputs, -1, -1)

    return AgnosticMask()


# ------------------------------------------------------------------------------------ base / novel


def novel_ids(split: DetectionSplit, names: tuple[str, ...], where: str) -> set[int]:
    """Category ids of the novel set: `names` if given, else the dataset's own marks."""
    cats = split.coco["categories"]
    if names:
        by_name = {c["name"]: int(c["id"]) for c in cats}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise UsageError(
                f"{where}: novel categories {unknown} are not among the dataset's: {', '.join(by_name)}."
            )
        ids = {by_name[n] for n in names}
    else:
        ids = {int(c["id"]) for c in cats if c.get("split") == "novel" or c.get("frequency") == "r"}
        if not ids:
            raise UsageError(
                f"{where}: the dataset marks no novel categories; name them with -a novel=<name>,<name>."
            )
    if len(ids) == len(cats):
        raise UsageError(f"{where}: every category is novel, so nothing is left to train on.")
    return ids


def without_categories(split: DetectionSplit, ids: set[int], name: str) -> DetectionSplit:
    """The same images with the annotations of categories `ids` removed (they become background)."""
    from bob.data.coco import DetectionSplit

    coco = {
        **split.coco,
        "annotations": [a for a in split.coco["annotations"] if int(a["category_id"]) not in ids],
    }
    return DetectionSplit(
        split.dataset, name, coco, arrays=split.arrays, image_dir=split.image_dir, has_masks=split.has_masks
    )


def subset_metrics(gt: dict[str, Any], records: list[dict[str, Any]], ids: set[int], iou_types, suffix: str):
    """COCOeval restricted to categories `ids` (ground truth and detections), keys suffixed."""
    from bob.tasks.common.coco_eval import coco_metrics

    sub_gt = {
        **gt,
        "categories": [c for c in gt["categories"] if int(c["id"]) in ids],
        "annotations": [a for a in gt["annotations"] if int(a["category_id"]) in ids],
    }
    sub = [r for r in records if int(r["category_id"]) in ids]
    metrics, _ = coco_metrics(sub_gt, sub, iou_types)
    return {f"{k}_{suffix}": v for k, v in metrics.items()}


# ------------------------------------------------------------------------------------------- task


class OpenVocab(Detection):
    suite = "open-vocab"
    version = "1"
    main_metric = "box_ap_novel"
    needs = ("features", "trainable")
    task_types = ("open-vocab", "detection")
    description = (
        "ViLD-text: the detection suite's R-CNN classifying by cosine to category-name text "
        "embeddings; trained on base categories, AP on novel ones"
    )
    Args = OpenVocabArgs
    check_dataset: ClassVar[str] = "scenes-ov-mini"

    def run(self, ctx: RunContext) -> TaskOutput:
        import torch

        from bob.tasks.common.coco_eval import coco_metrics
        from bob.tasks.common.text import text_embeddings
        from bob.tasks.detection import detector, train_config
        from bob.tasks.detection.train import predict, train_detector, train_indices
        from bob.tasks.open_vocab.lvis import is_lvis, lvis_metrics

        args: OpenVocabArgs = self.args  # type: ignore[assignment]
        train, test = ctx.split("train"), ctx.split("test")
        if train.category_ids != test.category_ids:
            raise UsageError(f"{self.name}: train and test declare different categories; they must match.")
        novel = novel_ids(test, tuple(args.novel), self.name)
        base_train = without_categories(train, novel, "train")
        n_train = len(train_indices(base_train))
        if n_train == 0:
            raise UsageError(
                f"{self.name}: no train image has a base-category instance; nothing to train on."
            )
        size = args.image_size or ctx.info.image_size or 1024
        masks = train.has_masks and test.has_masks
        backbone = ctx.build_backbone(input_size=size)
        names = list(test.classes)
        text, encoder = text_embeddings(args.text_encoder, args.prompt, backbone, names)
        base = torch.tensor([cid not in novel for cid in test.category_ids])
        torch.manual_seed(ctx.seed)
        model, pad_to = detector(backbone, args, len(names), masks, size)
        heads = model.roi_heads
        heads.box_predictor = text_predictor(heads.box_head.fc7.out_features, text, base, args.temperature)
        if masks:
            heads.mask_predictor = class_agnostic_masks(heads.mask_predictor, len(names) + 1)
        cfg = train_config(args, n_train, size)
        start = time.perf_counter()
        history = train_detector(model, base_train, cfg, ctx.device, ctx.seed, ctx.num_workers)
        train_s = time.perf_counter() - start
        records = predict(model, test, args.batch_size, ctx.device, ctx.num_workers, args.amp)
        iou_types = ("bbox", "segm") if masks else ("bbox",)
        metrics, summaries = coco_metrics(test.coco, records, iou_types)
        all_ids = set(test.category_ids)
        metrics.update(subset_metrics(test.coco, records, novel, iou_types, "novel"))
        metrics.update(subset_metrics(test.coco, records, all_ids - novel, iou_types, "base"))
        if is_lvis(test.coco):  # LVIS's federated AP (APr = the rare, i.e. novel, categories)
            metrics.update(lvis_metrics(test.coco, records, iou_types))
        protocol = self._protocol(args, cfg, model, backbone, pad_to, masks, n_train, len(test))
        protocol.update(
            history,
            train_s=round(train_s, 2),
            num_detections=len(records),
            cocoeval_summary=summaries,
            classifier=f"cosine to text embeddings / temperature {args.temperature}, learned background "
            "embedding; class-agnostic box regression" + (" and masks" if masks else ""),
            text_encoder=encoder,
            prompt=args.prompt if "bag-of-words" not in encoder else None,
            novel_categories=[n for n, c in zip(names, test.category_ids, strict=True) if c in novel],
            base_categories=[n for n, c in zip(names, test.category_ids, strict=True) if c not in novel],
            train_annotations_dropped=len(train.coco["annotations"]) - len(base_train.coco["annotations"]),
            data={"train": base_train.describe(), "test": test.describe()},
        )
        return TaskOutput(metrics, protocol, {})

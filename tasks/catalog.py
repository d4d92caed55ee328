"""Task suites and task names.

A task name reads `<suite>/<dataset>`: every registered suite crossed with every registered dataset
of a type the suite accepts. Suite entries carry their metadata, so listing tasks imports neither the
suite modules nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from bob.data import DATASETS
from bob.errors import UnknownNameError
from bob.registry import Entry, Registry, match, suggest

SUITES: Registry = Registry("task suite")

SUITES.register(
    "linear-probe",
    "bob.tasks.linear_probe:LinearProbe",
    main_metric="top1",
    task_types=("classification",),
    description="frozen pooled features; L2-regularised softmax head, weight decay chosen on a validation split",
)
SUITES.register(
    "knn",
    "bob.tasks.knn:KNN",
    main_metric="top1",
    task_types=("classification",),
    description="frozen pooled features; cosine k-NN with DINO's temperature-weighted vote (k=20, T=0.07)",
)
SUITES.register(
    "retrieval",
    "bob.tasks.retrieval:Retrieval",
    main_metric="map",
    task_types=("retrieval", "classification"),
    description="frozen L2-normalised features, cosine ranking; mAP, MRR, P@k, R@k (classes as relevance "
    "on classification sets)",
)

SUITES.register(
    "finetune",
    "bob.tasks.finetune:Finetune",
    main_metric="top1",
    task_types=("classification",),
    description="end-to-end fine-tuning, BoB recipe: AdamW, layer-wise lr decay, RandAugment, mixup/cutmix",
)
SUITES.register(
    "few-label",
    "bob.tasks.few_label:FewLabel",
    main_metric="top1",
    task_types=("classification",),
    description="a fraction of the train labels (SimCLR's ImageNet 1%/10% files); fine-tune or linear probe",
)
SUITES.register(
    "ood",
    "bob.tasks.ood:OOD",
    main_metric="top1_ood",
    task_types=("shift",),
    description="classifier trained in distribution (linear probe, or fine-tuned); top-1, in→out drop "
    "and 15-bin ECE on each shifted set",
)
SUITES.register(
    "detection",
    "bob.tasks.detection.task:Detection",
    main_metric="box_ap",
    task_types=("detection", "open-vocab"),
    description="Mask R-CNN (Faster R-CNN on box-only data) with an FPN on the backbone; COCOeval box/mask AP",
)
SUITES.register(
    "multilabel",
    "bob.tasks.multilabel:MultiLabel",
    main_metric="map",
    task_types=("multilabel",),
    description="label sets per image: linear sigmoid head on frozen pooled features (or the backbone's own "
    "ImageNet head); mAP, CF1/OF1, ReaL accuracy (main metric on imagenet-real) and plain top-1",
)

SUITES.register(
    "open-vocab",
    "bob.tasks.detection.open_vocab:OpenVocab",
    main_metric="box_ap_novel",
    task_types=("open-vocab", "detection"),
    description="ViLD-text: the detection suite's R-CNN classifying by cosine to category-name text "
    "embeddings; trained on base categories, AP on novel ones",
)

SUITES.register(
    "efficiency",
    "bob.tasks.efficiency:Efficiency",
    main_metric="latency_ms",
    task_types=("input",),
    description="cost at an input size on random tensors: params, MACs, batch-1 latency (main, ms), "
    "max-batch throughput, train-step time, peak memory, energy",
)

SUITES.register(
    "iqa",
    "bob.tasks.iqa.task:IQA",
    main_metric="srcc",
    task_types=("iqa",),
    description="image quality: frozen multi-scale features → MLP (mode=nr), or LPIPS-style feature "
    "distances to the reference → ridge (mode=fr); SRCC, KRCC, PLCC (raw and 4-parameter logistic)",
)

SUITES.register(
    "segmentation",
    "bob.tasks.segmentation.task:Segmentation",
    main_metric="miou",
    task_types=("segmentation",),
    description="Semantic FPN (or FCN / linear head) on the backbone, PVT's AdamW + poly recipe; "
    "dataset-accumulated mIoU, aAcc, mAcc",
)

SUITES.register(
    "zero-shot",
    "bob.tasks.zero_shot:ZeroShot",
    main_metric="top1",
    task_types=("classification",),
    description="CLIP zero-shot: class-name prompts through the backbone's text tower (skipped without one)",
)

SUITES.register(
    "video-cls",
    "bob.tasks.video_cls:VideoCls",
    main_metric="top1",
    task_types=("video",),
    description="per-frame features, order-aware temporal pooling (mean+diff); linear (frozen) or fine-tuned; "
    "top-1 of the softmax averaged over clips × crops (CVRL: 10×3)",
)

SUITES.register(
    "reid",
    "bob.tasks.reid:Reid",
    main_metric="map",
    task_types=("reid",),
    description="person re-ID: query vs gallery (same person + camera removed), cosine distance; mAP, CMC "
    "rank-1/5/10 (torchreid eval_market1501); frozen features or a fine-tuned BNNeck embedding",
)

SUITES.register(
    "dg",
    "bob.tasks.dg:DG",
    main_metric="top1_target",
    task_types=("domains",),
    description="single-source domain generalisation: train on one domain (fine-tune, or linear on frozen "
    "features; optional MixStyle/AdvStyle), top-1 on the others, averaged over sources",
)

SUITES.register(
    "tradeoff",
    "bob.tasks.tradeoff:Tradeoff",
    main_metric="hypervolume",
    task_types=("classification",),
    description="accuracy-vs-MACs curve: SN-Net stitches of ViT anchors (least-squares init), or a list of "
    "backbones; Pareto front and its normalised hypervolume",
)

SUITES.register(
    "rvos",
    "bob.tasks.rvos.task:Rvos",
    main_metric="j_and_f",
    task_types=("rvos",),
    description="referring video object segmentation, ReferFormer-style: expression embedding as queries "
    "over per-frame pyramid features, dynamic mask kernels, queries linked across frames; DAVIS J&F",
)

SUITES.register(
    "vis",
    "bob.tasks.vis.task:Vis",
    main_metric="ap",
    task_types=("vis",),
    description="video instance segmentation: per-frame pyramid features, a clip query head trained with "
    "Hungarian matching over whole tracks; YouTube-VIS AP/AR (track mask IoU, COCOeval)",
)


@dataclass(frozen=True)
class TaskName:
    suite: str
    dataset: str

    @property
    def name(self) -> str:
        return f"{self.suite}/{self.dataset}"


def _compatible(suite: Entry) -> list[str]:
    types = suite.meta.get("task_types", ("classification",))
    return [e.name for e in DATASETS.entries() if e.meta["info"].task_type in types]


def task_names(pattern: str | None = None) -> list[str]:
    names = [f"{suite.name}/{ds}" for suite in SUITES.entries() for ds in _compatible(suite)]
    return match(pattern, names) if pattern else names


def parse_task_name(name: str) -> TaskName:
    """Validate `<suite>/<dataset>`; unknown names raise with the closest valid task names."""
    suite, sep, dataset = name.partition("/")
    if sep and suite in SUITES and dataset in _compatible(SUITES.get(suite)):
        return TaskName(suite, dataset)
    hint = "Task names read <suite>/<dataset>, e.g. linear-probe/animal-mnist. List them with `bob ls tasks`."
    raise UnknownNameError("task", name, suggest(name, task_names()), hint)


def task_class(suite: str) -> type:
    return SUITES.get(suite).load()

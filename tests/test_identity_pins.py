"""Run ids and feature-cache keys are a promise to users: results and caches they already have stay valid.

These values were computed before bob's layout redesign (suites as folders, datasets as YAML, one
training loop) and must never change without a version bump that the docs explain. A failure here
means existing results would be re-run and cached features re-extracted.
"""

from __future__ import annotations

import pytest
from task_runs import TINY, run_task

from bob.spec import make_spec

# (backbone, task, weights, seed, backbone args, task args, run id): every suite, several knobs.
PINNED_IDS = [
    ("torchvision/mobilenet_v2", "linear-probe/animal-mnist", "pretrained", 0, {}, {}, "b0d98b7ee4a760b4"),
    ("torchvision/mobilenet_v2", "linear-probe/animal-mnist", "random", 0, {}, {}, "b575e8ab927815ac"),
    ("torchvision/mobilenet_v2", "knn/animal-mnist", "pretrained", 0, {}, {}, "06b8743ade4c9d75"),
    ("torchvision/mobilenet_v2", "retrieval/skimage-views", "random", 0, {}, {}, "af0c9f582c845add"),
    (
        "timm/resnet50.a1_in1k",
        "linear-probe/cifar100",
        "pretrained",
        1,
        {},
        {"epochs": "20", "weight_decay": "0.001"},
        "e5030bba903b9a05",
    ),
    (
        "timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
        "knn/flowers102",
        "pretrained",
        0,
        {},
        {"k": "10"},
        "4d49e9d25bd17e4f",
    ),
    (
        "timm/convnext_tiny.fb_in1k",
        "finetune/cifar100",
        "pretrained",
        0,
        {"drop_path_rate": 0.1},
        {"epochs": "30", "lr": "5e-4"},
        "3f5941ce0506f54f",
    ),
    (
        "timm/resnet50.a1_in1k",
        "few-label/imagenet",
        "pretrained",
        0,
        {},
        {"fraction": "0.01"},
        "82601fc39825ab11",
    ),
    ("timm/resnet50.a1_in1k", "ood/imagenet-r", "pretrained", 0, {}, {}, "a2dbc616d674041a"),
    (
        "timm/test_resnet",
        "ood/shapes-mini-domains",
        "random",
        2,
        {},
        {"mode": "finetune"},
        "cac046937341f501",
    ),
    (
        "timm/resnet50.a1_in1k",
        "detection/coco2017",
        "pretrained",
        0,
        {},
        {"lr": "0.0002"},
        "4f383aeb05191423",
    ),
    ("timm/test_resnet", "detection/scenes-mini", "random", 0, {}, {"head": "query"}, "c638de20290b201e"),
    ("timm/resnet50.a1_in1k", "multilabel/voc2007-cls", "pretrained", 0, {}, {}, "d7b9ecbabca0d75e"),
    ("timm/test_resnet", "open-vocab/scenes-ov-mini", "random", 0, {}, {}, "6e33385ffabda6d9"),
    (
        "timm/resnet50.a1_in1k",
        "efficiency/224",
        "pretrained",
        0,
        {},
        {"precision": "fp16"},
        "6bfcef78d93db249",
    ),
    ("timm/test_resnet", "iqa/skimage-distortions-mini", "random", 0, {}, {"mode": "fr"}, "3be4d70f442bce29"),
    ("timm/convnext_tiny.fb_in1k", "segmentation/ade20k", "pretrained", 0, {}, {}, "85465f99a7c0c078"),
    (
        "timm/test_resnet",
        "segmentation/scenes-seg-mini",
        "random",
        0,
        {},
        {"head": "linear", "mode": "frozen"},
        "015c6121441b8786",
    ),
    ("open_clip/ViT-B-32:openai", "zero-shot/cifar10", "pretrained", 0, {}, {}, "a0621ae0beea3e00"),
    (
        "timm/resnet50.a1_in1k",
        "video-cls/ucf101",
        "pretrained",
        0,
        {},
        {"mode": "finetune"},
        "42c51ea50b56b087",
    ),
    ("timm/test_resnet", "video-cls/moving-sprites-mini", "random", 0, {}, {}, "c6238af9d9a0b2ab"),
    ("timm/resnet50.a1_in1k", "reid/market1501", "pretrained", 0, {}, {}, "0e4aee48fadf5690"),
    (
        "timm/test_resnet",
        "reid/shapes-reid-mini",
        "random",
        0,
        {},
        {"mode": "finetune", "train_on": "shapes-reid-b"},
        "c50b6e21c2b255f4",
    ),
    ("timm/resnet50.a1_in1k", "dg/pacs", "pretrained", 0, {}, {"style_aug": "mixstyle"}, "7431e13232abaffd"),
    (
        "timm/deit_tiny_patch16_224.fb_in1k",
        "tradeoff/imagenet",
        "pretrained",
        0,
        {},
        {"anchors": "timm/deit_small_patch16_224.fb_in1k"},
        "b8f0ad99285cd1a1",
    ),
    ("timm/resnet50.a1_in1k", "rvos/ref-davis17", "pretrained", 0, {}, {}, "10bcdaa0f9037968"),
    ("timm/test_resnet", "vis/vis-sprites-mini", "random", 3, {}, {"epochs": "2"}, "38cc9bd1460e638f"),
    ("composite(timm/resnet18.a1_in1k)", "detection/coco2017", "pretrained", 0, {}, {}, "dc7aaf780512bd98"),
    (
        "examples/my_backbone.py:tiny_convnet",
        "linear-probe/shapes-mini",
        "random",
        0,
        {},
        {},
        "751595889bf8fc52",
    ),
]

# Task -> (task args, {split: cache key}) of a tiny random-init run (timm/test_resnet, seed 0).
PINNED_CACHE_KEYS = {
    "linear-probe/shapes-mini": (
        {"epochs": "2", "min_steps": "20"},
        {
            "train": "30db3a047295fcfbdfe1dc295c1311853d1a467e1146cd95375bafbf668e79d3",
            "test": "8918d9bb68912786512d91c610a0effa97b9f0d55feef0461903e79c2982a042",
        },
    ),
    "retrieval/skimage-views": (
        {},
        {"test": "e051b5058efbe766d59f7a77b1a827b756e607c94a924c3cc510140e2f6be05d"},
    ),
    "video-cls/moving-sprites-mini": (
        {"views": "2x1", "train_clips": "1", "epochs": "2", "min_steps": "20", "weight_decay": "0.001"},
        {
            "train": "4f7764eab19c9834fd4590211ba936ff7dd1e0e03e6d8b08974cac1d4e10c1d9",
            "test": "477ca744f85e80e8cd6f49468bc497ea10276a06eeb3a0b61454293ea5b38d03",
        },
    ),
    "iqa/skimage-distortions-mini": (
        {"epochs": "2"},
        {
            "train:nr": "15e1893617d8271d70c457c78ebf77e6db1ab04a73ad8fa1cbe4bcde150cfed3",
            "test:nr": "801abeb1bd0601c0216fb0eb615a519ad42d5e80dad847c9976a63f291b1143c",
        },
    ),
    "reid/shapes-reid-mini": (
        {},
        {"test": "08c3de43204d789803c44d466f9c4f9d5cc27ee391826e1b0bf40b44f6d882c6"},
    ),
    "ood/shapes-mini-domains": (
        {"epochs": "2", "min_steps": "20"},
        {
            "train": "30db3a047295fcfbdfe1dc295c1311853d1a467e1146cd95375bafbf668e79d3",
            "test": "8918d9bb68912786512d91c610a0effa97b9f0d55feef0461903e79c2982a042",
            "shapes-mini-sketch": "d4bf9e69e6ca5031cd197e4d7b66f08506f77ac47b868f1a633db1300a641305",
            "shapes-mini-texture": "f89061750fdd265d9c57f96da9ded2902ff555adad4da519e5ab1d05d3a403fb",
        },
    ),
    "multilabel/scenes-multilabel-mini": (
        {"epochs": "2", "min_steps": "20"},
        {
            "train": "7e4ee0fea55660603a0c224fbeb921726b42eddd7373cdb349b5b26dde3e712c",
            "test": "df73e7e55342d86fd20a74ad076555b189f54ba3bdead552fe64cbc922747ec7",
        },
    ),
}


@pytest.mark.parametrize(
    ("backbone", "task", "weights", "seed", "backbone_args", "task_args", "run_id"), PINNED_IDS
)
def test_run_ids_are_pinned(backbone, task, weights, seed, backbone_args, task_args, run_id):
    assert make_spec(backbone, task, weights, seed, backbone_args, task_args).id == run_id


def test_pinned_ids_cover_every_suite_that_had_results():
    """The 19 suites that existed when the ids were pinned (a suite added later needs no pin here)."""
    from test_suites import BOB_SUITES

    from bob.suites import SUITES

    pinned = {t.partition("/")[0] for _, t, *_ in PINNED_IDS}
    assert pinned == BOB_SUITES and pinned <= set(SUITES.names())


@pytest.mark.parametrize("task", list(PINNED_CACHE_KEYS))
def test_feature_cache_keys_are_pinned(options, task):
    args, keys = PINNED_CACHE_KEYS[task]
    outcome = run_task(options, task, "random", TINY, **args)
    assert outcome.result.ok, outcome.result.error
    assert outcome.result.cache["keys"] == keys

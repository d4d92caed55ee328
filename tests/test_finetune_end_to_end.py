"""End to end on embedded data: fine-tuning and few-label learning from ImageNet MobileNetV2 beat the
same architecture from random weights."""

from __future__ import annotations

import pytest

from bob.runner import RunOptions, execute
from bob.spec import make_spec

RUNS = {
    # Two epochs of the BoB recipe on 1,212 digits: about 30 CPU-seconds per run.
    "finetune/digits": {"epochs": "2"},
    # A linear probe on 10% of the shapes labels (random-init features are strong on digits).
    "few-label/shapes": {"fraction": "0.1", "mode": "linear"},
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft-e2e")
    options = RunOptions(results_dir=root / "results", cache_dir=root / "cache", device="cpu", num_workers=0)
    out = {}
    for task, args in RUNS.items():
        for weights in ("pretrained", "random"):
            outcome = execute(make_spec("torchvision/mobilenet_v2", task, weights, task_args=args), options)
            assert outcome.result.ok, outcome.result.error
            out[task, weights] = outcome.result
    return out


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.parametrize(
    ("task", "floor", "margin"), [("finetune/digits", 0.3, 0.2), ("few-label/shapes", 0.7, 0.3)]
)
def test_pretrained_beats_random_init_by_a_clear_margin(outcomes, task, floor, margin):
    pretrained = outcomes[task, "pretrained"].metrics["top1"]
    random = outcomes[task, "random"].metrics["top1"]
    assert pretrained >= floor, pretrained
    assert pretrained - random >= margin, (pretrained, random)


@pytest.mark.slow
@pytest.mark.long
def test_finetune_results_record_the_recipe(outcomes):
    result = outcomes["finetune/digits", "pretrained"]
    p = result.protocol
    assert result.backbone["resolved_name"] == "torchvision/mobilenet_v2.IMAGENET1K_V1"
    assert p["image_size"] == 64 and p["transform"]["input_size"] == 64
    assert p["layer_decay_grouping"] == "feature_info stages" and p["drop_path"] == 0.0
    assert p["epochs"] == 2 and len(p["history"]) == 2 and p["best_epoch"] in (1, 2)
    assert result.artifacts["checkpoint"].endswith(".checkpoint.pt")
    few = outcomes["few-label/shapes", "pretrained"].protocol
    assert few["subset"]["num_labelled"] == 200 and few["subset"]["method"] == "seeded class-balanced"

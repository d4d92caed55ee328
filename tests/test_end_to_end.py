"""End to end on embedded data: ImageNet MobileNetV2 beats the same architecture with random weights."""

from __future__ import annotations

import pytest
import torch

from bob.runner import RunOptions, execute
from bob.spec import make_spec


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    options = RunOptions(results_dir=root / "results", cache_dir=root / "cache", device="cpu", num_workers=0)
    out = {}
    for task, args in (("linear-probe/shapes", {}), ("knn/shapes", {})):
        for weights in ("pretrained", "random"):
            outcome = execute(make_spec("torchvision/mobilenet_v2", task, weights, task_args=args), options)
            assert outcome.result.ok, outcome.result.error
            out[task, weights] = outcome.result
    return out


@pytest.mark.parametrize("task", ["linear-probe/shapes", "knn/shapes"])
def test_pretrained_beats_random_init_by_a_clear_margin(outcomes, task):
    pretrained = outcomes[task, "pretrained"].metrics["top1"]
    random = outcomes[task, "random"].metrics["top1"]
    assert pretrained >= 0.85, pretrained
    assert pretrained - random >= 0.25, (pretrained, random)


def test_results_record_provenance(outcomes):
    result = outcomes["linear-probe/shapes", "pretrained"]
    assert result.backbone["resolved_name"] == "torchvision/mobilenet_v2.IMAGENET1K_V1"
    assert result.backbone["weights"]["sha256"].startswith("b0353104")
    assert result.backbone["method"] == "supervised" and result.backbone["family"] == "cnn"
    assert result.protocol["transform"]["input_size"] == 64
    assert result.protocol["selected_weight_decay"] > 0 and result.protocol["sweep"]
    assert result.artifacts["head"].endswith(".head.pt")
    head = torch.load(result.artifacts["head"], weights_only=True)
    assert head["weight"].shape == (1280, 10) and len(head["classes"]) == 10
    assert outcomes["knn/shapes", "pretrained"].cache["extractions"] == 0, "knn reuses the probe's features"

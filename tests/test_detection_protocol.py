"""Detection under `protocol=bob` and `frozen_stages`: BoB's Sim10k→Cityscapes ResNet configs
(bob-ood-detection configs/bob_sim2real/resnet/*) inherit mmdetection's ResNet `frozen_stages=1` (stem
and first stage frozen); its ConvNeXt, SwinV2 and ViTDet configs and every COCO config (bob-detection
configs/bob) freeze no stage; its SD detector reads ImageNet-normalised 512 px input with the prompt
"object detection" (bob-detection configs/bob/stable_diff, mmdet/models/backbones/sd.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bob.backbones import build_backbone, resolve_backbone
from bob.errors import UsageError
from bob.task import parse_task_args
from bob.tasks.common.pyramid import stage_modules
from bob.tasks.common.rcnn import rcnn_detector
from bob.tasks.detection import BOB_FROZEN_STAGES, DetectionArgs
from bob.tasks.detection.model import frozen_stages
from bob.tasks.detection.run import apply_protocol

SIM2REAL = "sim10k-cityscapes"


def _args(**kw: str) -> DetectionArgs:
    return parse_task_args(DetectionArgs, kw, f"detection/{SIM2REAL}")


def test_bob_protocol_freezes_stem_and_first_stage_of_resnets_on_sim2real() -> None:
    resnet = build_backbone("timm/resnet18", "random")
    convnext = build_backbone("timm/convnext_atto", "random")
    assert BOB_FROZEN_STAGES == 1  # mmdetection's ResNet base: frozen_stages=1
    assert frozen_stages(_args(protocol="bob"), SIM2REAL, resnet)[0] == 1
    assert frozen_stages(_args(protocol="bob"), SIM2REAL, convnext)[0] == 0, "BoB's ConvNeXt trains all"
    assert frozen_stages(_args(protocol="bob"), "coco", resnet)[0] == 0, "BoB's COCO configs: -1"
    assert frozen_stages(_args(), SIM2REAL, resnet)[0] == 0, "bob's default trains every stage"
    assert frozen_stages(_args(frozen_stages="2"), SIM2REAL, convnext) == (2, "task arg frozen_stages")
    assert frozen_stages(_args(mode="frozen", protocol="bob"), SIM2REAL, resnet)[0] == 0
    default = _args()
    assert "protocol" not in default.identity() and "frozen_stages" not in default.identity()
    with pytest.raises(UsageError, match="frozen_stages"):
        _args(frozen_stages="-1")
    with pytest.raises(UsageError, match="mode=frozen"):
        _args(frozen_stages="1", mode="frozen")
    with pytest.raises(UsageError, match="protocol"):
        _args(protocol="mmdet")


def test_stage_modules_are_mmdetections_stem_and_stages() -> None:
    def names(backbone, k):
        ids = {id(m): n.removeprefix("model.") for n, m in backbone.named_modules()}
        return sorted(ids[id(m)] for m in stage_modules(backbone, k))

    resnet = build_backbone("timm/resnet18", "random")
    assert names(resnet, 1) == ["act1", "bn1", "conv1", "layer1", "maxpool"]
    assert names(resnet, 2) == ["act1", "bn1", "conv1", "layer1", "layer2", "maxpool"]
    assert names(build_backbone("timm/convnext_atto", "random"), 1) == ["stages.0", "stem"]
    assert stage_modules(resnet, 0) == []
    with pytest.raises(UsageError, match="strides"):
        stage_modules(resnet, 4)  # no trained stage would be left


def test_frozen_stages_stay_fixed_through_a_training_step() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("timm/resnet18", "random", input_size=64)
    model, _ = rcnn_detector(backbone, _args(fpn_channels="32"), 3, False, 64, frozen_stages=1)
    model.train()
    frozen = {n: p.detach().clone() for n, p in backbone.named_parameters() if ".layer2." not in n}
    stem = [n for n in frozen if n.startswith(("model.conv1.", "model.bn1.", "model.layer1."))]
    assert stem and all(not dict(backbone.named_parameters())[n].requires_grad for n in stem)
    assert all(p.requires_grad for n, p in backbone.named_parameters() if ".layer2." in n)
    assert not backbone.model.layer1.training and not backbone.model.bn1.training
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}] * 2
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sum(model(images, targets).values()).backward()
    optimizer.step()
    after = dict(backbone.named_parameters())
    assert all(torch.equal(after[n], frozen[n]) for n in stem)
    assert any(not torch.equal(after[n], frozen[n]) for n in frozen if ".layer3." in n)


def test_bob_protocol_gives_sd_imagenet_input_512_px_and_the_detection_prompt(monkeypatch) -> None:
    from bob.backbones import diffusion_backbone as sd

    ref = resolve_backbone("sd/v1-4", "random")
    ctx = SimpleNamespace(
        ref=ref, spec=SimpleNamespace(backbone_args={}), info=SimpleNamespace(image_size=None)
    )
    applied = apply_protocol(ctx, _args(protocol="bob"))
    assert applied == {"prompt": "object detection", "image_size": 512}
    assert ctx.ref.args["prompt"] == "object detection" and ctx.ref.args["protocol"] == "bob"
    assert ctx.ref.data_config.mean == (0.485, 0.456, 0.406) and ctx.ref.data_config.std == (
        0.229,
        0.224,
        0.225,
    )
    own = SimpleNamespace(
        ref=ref, spec=SimpleNamespace(backbone_args={"prompt": "x"}), info=SimpleNamespace(image_size=64)
    )
    assert apply_protocol(own, _args(protocol="bob")) == {}, "a run's own prompt and size stay"
    plain = SimpleNamespace(
        ref=ref, spec=SimpleNamespace(backbone_args={}), info=SimpleNamespace(image_size=None)
    )
    assert apply_protocol(plain, _args()) == {} and plain.ref is ref
    assert sd.BACKBONE_PROTOCOLS == ("default", "bob")


def test_a_protocol_run_records_its_frozen_stages(tmp_path: Path) -> None:
    from bob.runner import RunOptions, execute
    from bob.spec import make_spec

    args = {"iters": "1", "batch_size": "2", "augment": "flip", "fpn_channels": "32", "image_size": "64"}
    spec = make_spec(
        "timm/resnet18",
        "detection/scenes-mini",
        "random",
        0,
        {},
        {**args, "frozen_stages": "1", "protocol": "bob"},
    )
    result = execute(spec, RunOptions(tmp_path / "r", tmp_path / "c", device="cpu", num_workers=0)).result
    assert result.ok, result.error
    p = result.protocol
    assert p["frozen_stages"] == 1 and p["frozen_stages_source"] == "task arg frozen_stages"
    assert p["protocol_preset"] == {"name": "bob"}

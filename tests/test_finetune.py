"""The fine-tuning loop and the finetune suite: layer-decay groups, recipe pieces, failure modes, runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bob.backbones import resolve_backbone
from bob.backbones.meta import DataConfig
from bob.data import load_split
from bob.errors import TrainingDivergedError, UsageError
from bob.runner import execute
from bob.spec import make_spec
from bob.task import parse_task_args
from bob.tasks.common.args import FinetuneRecipeArgs
from bob.tasks.common.finetune import (
    Classifier,
    evaluate,
    finetune_classifier,
    train_transform,
)
from bob.tasks.common.layer_decay import layer_decay_groups, stage_depths
from bob.tasks.common.metrics import classification_metrics
from bob.tasks.common.recipe import FinetuneConfig

SMALL_TIMM = "timm/mobilenetv3_small_050"  # has group_matcher and drop_path_rate
TINY = FinetuneConfig(epochs=1, warmup_epochs=0, batch_size=16, mixup=0.8, cutmix=1.0)


def _backbone(name: str, size: int = 32):
    return resolve_backbone(name, weights="random").build(size)


def _scale_of(groups, param) -> float:
    return next(g["lr_scale"] for g in groups for p in g["params"] if p is param)


# ------------------------------------------------------------------------------------- layer decay


def test_timm_models_use_timm_group_matcher_and_decay_towards_the_stem():
    backbone = _backbone("timm/resnet18")
    head = torch.nn.Linear(backbone.pooled_dim, 10)
    out = layer_decay_groups(backbone, head, weight_decay=0.05, layer_decay=0.75)
    model = backbone.trainable()
    assert out.grouping == "timm group_matcher"
    stem, top = _scale_of(out.groups, model.conv1.weight), _scale_of(out.groups, model.layer4[1].conv2.weight)
    assert _scale_of(out.groups, head.weight) == 1.0
    assert stem < top <= 1.0
    assert stem == pytest.approx(0.75 ** (out.num_layers - 1))
    # timm's weight-decay rule: none on 1-D parameters (biases, norms)
    decay_of = {id(p): g["weight_decay"] for g in out.groups for p in g["params"]}
    assert decay_of[id(model.bn1.weight)] == 0.0 and decay_of[id(model.conv1.weight)] == 0.05
    assert decay_of[id(head.bias)] == 0.0 and decay_of[id(head.weight)] == 0.05


def test_other_models_fall_back_to_feature_info_stages():
    backbone = _backbone("torchvision/mobilenet_v2")
    head = torch.nn.Linear(backbone.pooled_dim, 10)
    out = layer_decay_groups(backbone, head, weight_decay=0.05, layer_decay=0.5)
    assert out.grouping == "feature_info stages"
    depths = stage_depths(backbone, backbone.trainable())
    order = list(depths.values())
    assert order == sorted(order), "depth never decreases in registration order"
    # mobilenet_v2 levels end at features.1, .3, .6, .13 and features (the last parameter): 5 depths
    assert depths["features.0.0.weight"] == 0 and depths["features.2.conv.0.0.weight"] == 1
    assert depths["features.18.0.weight"] == 4 and out.num_layers == 5
    model = backbone.trainable()
    assert _scale_of(out.groups, model.features[0][0].weight) == pytest.approx(0.5**4)
    assert _scale_of(out.groups, model.features[18][0].weight) == 1.0 == _scale_of(out.groups, head.weight)


def test_the_schedule_applies_each_groups_lr_scale():
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    backbone = _backbone("torchvision/mobilenet_v2")
    out = layer_decay_groups(backbone, torch.nn.Linear(backbone.pooled_dim, 3), 0.05, layer_decay=0.5)
    optimizer = create_optimizer_v2(out.groups, opt="adamw", lr=1e-3, weight_decay=0.05)
    scheduler = CosineLRScheduler(
        optimizer, t_initial=100, warmup_t=10, warmup_lr_init=1e-4, t_in_epochs=False
    )
    assert all(g["lr"] == pytest.approx(1e-4 * g["lr_scale"]) for g in optimizer.param_groups)
    scheduler.step_update(num_updates=10)  # end of warm-up: near the peak, scaled per group
    lrs = sorted({round(g["lr"], 12) for g in optimizer.param_groups})
    assert 0.95e-3 < lrs[-1] <= 1e-3
    assert [lr / lrs[-1] for lr in lrs] == pytest.approx([0.5**k for k in range(4, -1, -1)])


def test_layer_decay_one_gives_every_parameter_the_full_rate():
    backbone = _backbone("timm/resnet18")
    out = layer_decay_groups(backbone, torch.nn.Linear(512, 3), 0.05, layer_decay=1.0)
    assert {g["lr_scale"] for g in out.groups} == {1.0}


# ---------------------------------------------------------------------------------- recipe pieces


def test_zero_bit_posterize_gives_a_black_image_instead_of_a_pillow_error():
    from PIL import Image

    from bob.tasks.common.finetune import _posterize_zero_bits_black

    img = Image.new("RGB", (8, 8), (200, 100, 50))
    assert np.asarray(_posterize_zero_bits_black(img, 0)).max() == 0
    assert np.array_equal(np.asarray(_posterize_zero_bits_black(img, 8)), np.asarray(img))
    cfg = resolve_backbone("torchvision/mobilenet_v2", weights="random").data_config.with_overrides(32)
    transform = train_transform(FinetuneConfig(), cfg)
    ops = [op for t in transform.transforms for op in getattr(t, "ops", [])]
    assert any(op.aug_fn is _posterize_zero_bits_black for op in ops), "RandAugment posterize is patched"
    assert transform(img).shape == (3, 32, 32)


def test_metrics_match_torchmetrics_on_random_and_hand_built_cases():
    from torchmetrics.functional.classification import multiclass_accuracy

    rng = np.random.default_rng(0)
    for trial in range(5):
        scores, labels = rng.normal(size=(200, 10)).astype(np.float32), rng.integers(0, 10, 200)
        labels[:10] = np.arange(10)  # every class present
        ours = classification_metrics(scores, labels, 10)
        ts, tl = torch.from_numpy(scores), torch.from_numpy(labels)
        for k in (1, 5):
            ref = multiclass_accuracy(ts, tl, num_classes=10, top_k=k, average="micro")
            assert ours[f"top{k}"] == pytest.approx(float(ref), abs=1e-6), (trial, k)
        balanced = multiclass_accuracy(ts, tl, num_classes=10, average="macro")
        assert ours["mean_per_class_recall"] == pytest.approx(float(balanced), abs=1e-6)
    hand = np.array([[0.1, 0.9, 0.0, 0, 0, 0], [0.8, 0.1, 0.05, 0.03, 0.01, 0.01]])
    out = classification_metrics(hand, np.array([1, 5]), 6)
    assert out["top1"] == 0.5 and out["top5"] == 0.5 and out["mean_per_class_recall"] == 0.5


# --------------------------------------------------------------------------------------- the loop


def test_loop_trains_selects_an_epoch_and_returns_a_working_classifier():
    backbone = _backbone(SMALL_TIMM)
    split = load_split("shapes-mini", "train")
    train, val = split.subset(np.arange(0, 160), "train"), split.subset(np.arange(160, 200), "val")
    cfg = FinetuneConfig(epochs=2, warmup_epochs=1, batch_size=32)
    data = backbone.data_config.with_overrides(32, crop_pct=1.0)
    stem_name, stem = next(iter(backbone.trainable().named_parameters()))
    stem_before = stem.detach().clone()
    out = finetune_classifier(backbone, train, val, 10, cfg, data, "cpu", seed=0)
    assert [h["epoch"] for h in out.history] == [1, 2] and 1 <= out.best_epoch <= 2
    assert out.best_epoch == 1 + int(np.argmax([h["val_top1"] for h in out.history]))
    assert out.protocol["layer_decay_grouping"] == "timm group_matcher"
    assert out.protocol["mixup_active"] and out.protocol["loss"] == "SoftTargetCrossEntropy"
    assert out.protocol["amp"] == "off" and out.protocol["steps_per_epoch"] == 5
    stem_after = dict(out.model.backbone.trainable().named_parameters())[stem_name]
    assert not torch.equal(stem_after, stem_before), "the backbone itself was trained, down to the stem"
    assert isinstance(out.model, Classifier)
    assert set(out.state_dict) == set(out.model.state_dict())


def test_a_non_finite_loss_stops_the_run_with_a_clear_error():
    backbone = _backbone(SMALL_TIMM)
    original = backbone.forward_pooled
    backbone.forward_pooled = lambda x: original(x) * float("nan")
    split = load_split("shapes-mini", "train")
    data = backbone.data_config.with_overrides(32, crop_pct=1.0)
    with pytest.raises(TrainingDivergedError, match="loss became nan at epoch 1, step 1"):
        finetune_classifier(backbone, split, None, 10, TINY, data, "cpu", seed=0)


def test_mixup_needs_an_even_batch_and_tiny_sets_get_one():
    from bob.tasks.common.finetune import _train_batch_size

    assert _train_batch_size(1000, 64) == 64
    assert _train_batch_size(11, 64) == 10
    assert _train_batch_size(33, 33) == 32
    with pytest.raises(UsageError, match="at least 2 training images"):
        _train_batch_size(1, 64)


# ------------------------------------------------------------------------------------------ args


@pytest.mark.parametrize(
    "raw",
    [
        {"epochs": "0"},
        {"layer_decay": "0"},
        {"layer_decay": "1.5"},
        {"drop_path": "1.0"},
        {"lr": "-1"},
        {"val_fraction": "0"},
        {"epochs": "3", "warmup_epochs": "3"},
        {"mixup": "-0.1"},
    ],
)
def test_out_of_range_args_are_usage_errors(raw):
    with pytest.raises(UsageError):
        parse_task_args(FinetuneRecipeArgs, raw, "finetune/shapes-mini")


def test_schedule_defaults_depend_on_the_dataset_kind():
    args = FinetuneRecipeArgs()
    real, small = args.config("real"), args.config("embedded")
    assert (real.epochs, real.warmup_epochs, real.batch_size) == (100, 5, 128)
    assert (small.epochs, small.warmup_epochs, small.batch_size) == (3, 1, 64)
    assert FinetuneRecipeArgs(epochs=1).config("embedded").warmup_epochs == 0
    assert FinetuneRecipeArgs(auto_augment="none").config("real").auto_augment is None


# ------------------------------------------------------------------------------------------- runs


def test_finetune_run_records_its_protocol_and_saves_the_best_checkpoint(options):
    args = {"epochs": "2", "warmup_epochs": "1", "batch_size": "32", "image_size": "32"}
    spec = make_spec(SMALL_TIMM, "finetune/shapes-mini", "random", task_args=args)
    result = execute(spec, options).result
    assert result.ok, result.error
    p = result.protocol
    assert p["drop_path"] == 0.1 and p["drop_path_arg"] == "drop_path_rate"
    assert p["layer_decay"] == 0.75 and p["layer_decay_grouping"] == "timm group_matcher"
    assert p["lr"] == 1e-3 and p["weight_decay"] == 0.05 and p["epochs"] == 2 and p["image_size"] == 32
    assert p["auto_augment"] == "rand-m9-mstd0.5-inc1" and p["mixup"] == 0.8 and p["cutmix"] == 1.0
    assert p["val_source"].startswith("stratified 10% of train") and p["num_val"] == 20
    assert set(result.metrics) >= {"top1", "top5", "val_top1"}
    assert result.cache["extractions"] == 0, "fine-tuning never touches the feature cache"
    checkpoint = torch.load(result.artifacts["checkpoint"], weights_only=True)
    assert checkpoint["best_epoch"] == p["best_epoch"]
    # The checkpoint is the scored model: reloaded, it gives the reported test top-1 again.
    model = Classifier(resolve_backbone(SMALL_TIMM, weights="random").build(32), 10, 32)
    model.load_state_dict(checkpoint["state_dict"])
    test = load_split("shapes-mini", "test")
    logits = evaluate(model, test, DataConfig.from_dict(checkpoint["data_config"]), "cpu")
    assert classification_metrics(logits, test.labels, 10)["top1"] == result.metrics["top1"]
    drop_paths = [m for m in _built_with_drop_path().modules() if type(m).__name__ == "DropPath"]
    assert drop_paths, "the timm model takes drop_path_rate and builds DropPath modules"


def _built_with_drop_path():
    ref = resolve_backbone(SMALL_TIMM, weights="random", args={"drop_path_rate": 0.1})
    return ref.build(32)


def test_architectures_without_drop_path_say_so_in_the_protocol(options):
    args = {"epochs": "1", "warmup_epochs": "0", "batch_size": "50", "image_size": "32"}
    spec = make_spec("torchvision/mobilenet_v2", "finetune/shapes-mini", "random", task_args=args)
    result = execute(spec, options).result
    assert result.ok, result.error
    assert result.protocol["drop_path"] == 0.0
    assert "takes no stochastic_depth_prob" in result.protocol["drop_path_note"]
    assert result.protocol["layer_decay_grouping"] == "feature_info stages"

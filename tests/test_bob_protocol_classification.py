"""protocol=bob in the classification suites: every knob checked against BoB's value (the file in
hsouri/bob-classification @ 19a93cd named beside each), the recipes file, accumulation and lr scaling,
BoB's LARS probe against MAE's definition, the evaluation splits and the EuroSAT CoOp split."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from bob.backbones.catalog import BACKBONES
from bob.backbones.meta import DataConfig
from bob.data.base import ArraySplit
from bob.errors import DatasetNotFoundError, UnknownNameError, UsageError
from bob.tasks.common.args import PROTOCOLS, check_protocol
from bob.tasks.common.bob_recipes import bob_crop_pct, bob_recipe, load_recipes
from bob.tasks.common.finetune_run import bob_data_config, bob_eval_split
from bob.tasks.few_label import FewLabelArgs
from bob.tasks.finetune import FinetuneArgs
from bob.tasks.knn import KnnArgs
from bob.tasks.linear_probe import LinearProbeArgs
from bob.tasks.linear_probe.bob_probe import (
    BobProbe,
    bob_train_transform,
    lars_optimizer,
    mae_lr,
)
from bob.tasks.linear_probe.bob_probe import bob_data_config as probe_data_config
from bob.transforms import eval_transform

# ------------------------------------------------------------------------------------------- the arg


@pytest.mark.parametrize("args_cls", [LinearProbeArgs, FinetuneArgs, FewLabelArgs])
def test_protocol_is_out_of_the_identity_until_set(args_cls):
    assert "protocol" not in args_cls().identity()
    assert args_cls(protocol="bob").identity()["protocol"] == "bob"
    with pytest.raises(UnknownNameError, match="Did you mean: bob"):
        args_cls(protocol="bobb").validate()


def test_knn_has_no_protocol_because_bob_ran_no_knn():
    assert not hasattr(KnnArgs(), "protocol")
    assert PROTOCOLS == ("default", "bob")
    check_protocol("bob")


def test_new_args_keep_default_run_identities():
    new_args = {
        FinetuneArgs: ("protocol", "accum_steps", "effective_batch"),
        FewLabelArgs: ("protocol", "accum_steps", "effective_batch"),
        LinearProbeArgs: ("protocol", "mode", "bob_epochs", "bob_warmup_epochs", "bob_blr", "bob_batch_size"),
    }
    for args_cls, names in new_args.items():
        ident = args_cls().identity()
        assert not set(names) & set(ident), args_cls


# ------------------------------------------------------------------------------------- fine-tuning


def test_finetune_under_bob_is_bobs_ft_recipe():
    """model_configs/*_ft.yaml: lr 1e-3, wd 0.05, layer decay 0.75, 100 epochs, 5 warm-up, batch 128
    per GPU × accum_iter 1 × 8 GPUs (README launch) = 1024; drop path 0.1, rand-m9-mstd0.5-inc1."""
    args = FinetuneArgs(protocol="bob")
    cfg, record = args.resolve("embedded", "timm/resnet50.a1_in1k")
    assert (cfg.epochs, cfg.warmup_epochs, cfg.lr, cfg.weight_decay, cfg.layer_decay) == (
        100,
        5,
        1e-3,
        0.05,
        0.75,
    )
    assert (cfg.batch_size, cfg.accum_steps) == (128, 8)
    assert cfg.batch_size * cfg.accum_steps == 1024
    assert cfg.auto_augment == "rand-m9-mstd0.5-inc1" and args.drop_path_rate() == 0.1
    assert (cfg.mixup, cfg.cutmix, cfg.label_smoothing, cfg.random_erasing) == (0.8, 1.0, 0.1, 0.25)
    assert "lr_scaling" not in record and record["recipe"]["bob_effective_batch"] == 1024


def test_default_protocol_is_unchanged():
    cfg, record = FinetuneArgs().resolve("real")
    assert (cfg.epochs, cfg.batch_size, cfg.accum_steps, cfg.lr) == (100, 128, 1, 1e-3)
    assert record == {}
    assert FinetuneArgs().config("embedded").epochs == 3


@pytest.mark.parametrize(
    ("backbone", "epochs", "lr", "batch", "accum"),
    [
        ("clip/vit_l14_laion2b", 50, 1e-3, 128, 8),  # vit_large_patch14_224_clip_ft.yaml
        ("mae/vit_large_patch16", 50, 1e-3, 128, 8),  # vit_large_patch16_224_mae_ft.yaml
        ("sd/v1-4", 100, 5e-4, 16, 64),  # sd_256_ft.yaml: batch 16, accum_iter 8, lr 5e-4
        ("midas/dpt_swinv2_base_384", 100, 1e-3, 8, 128),  # midas_swin2_base_384_ft.yaml: 8, 16
        ("timm/convnext_xlarge.fb_in22k_ft_in1k", 100, 1e-3, 32, 32),  # convnext_xl_im1k_ft.yaml: 32, 4
        ("vicregl/convnext_xlarge_alpha0.75", 100, 1e-3, 32, 32),  # convnext_xl_vicreg_ft.yaml
    ],
)
def test_per_backbone_overrides(backbone, epochs, lr, batch, accum):
    cfg, record = FinetuneArgs(protocol="bob").resolve("real", backbone)
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.accum_steps) == (epochs, lr, batch, accum)
    assert cfg.batch_size * cfg.accum_steps == 1024  # BoB's effective batch for every model
    assert record["recipe"]["backbone"] == backbone and len(record["recipe"]["sources"]) == 2


def test_set_args_win_over_the_recipe():
    cfg, record = FinetuneArgs(protocol="bob", epochs=7, lr=3e-4).resolve("real", "clip/vit_l14_laion2b")
    assert (cfg.epochs, cfg.lr) == (7, 3e-4)
    assert {"lr", "epochs"} <= set(record["args_kept_over_recipe"])


def test_bobs_lr_scales_linearly_with_the_effective_batch():
    cfg, record = FinetuneArgs(protocol="bob", effective_batch=512).resolve("real")
    assert (cfg.batch_size, cfg.accum_steps) == (128, 4)
    assert cfg.lr == pytest.approx(1e-3 * 512 / 1024)
    assert "512/1024" in record["lr_scaling"]
    # a smaller per-step batch keeps BoB's effective batch (more accumulation), hence BoB's lr
    cfg, _ = FinetuneArgs(protocol="bob", batch_size=64).resolve("real")
    assert (cfg.accum_steps, cfg.lr) == (16, 1e-3)


def test_accumulation_args_in_the_default_protocol():
    cfg = FinetuneArgs(batch_size=32, effective_batch=128).config("real")
    assert (cfg.accum_steps, cfg.lr) == (4, 1e-3)
    assert FinetuneArgs(accum_steps=3).config("real").accum_steps == 3
    with pytest.raises(UsageError, match="multiple of batch_size"):
        FinetuneArgs(batch_size=48, effective_batch=128).config("real")
    with pytest.raises(UsageError, match="disagrees"):
        FinetuneArgs(batch_size=32, effective_batch=128, accum_steps=2).config("real")
    with pytest.raises(UsageError, match="does not divide"):
        FinetuneArgs(protocol="bob", batch_size=48).config("real")
    with pytest.raises(UsageError, match="positive"):
        FinetuneArgs(accum_steps=0).validate()


def test_bob_rules_out_what_bob_never_ran():
    with pytest.raises(UsageError, match="protocol=bob"):
        FinetuneArgs(protocol="bob", search="lr").validate()
    with pytest.raises(UsageError, match="protocol=bob"):
        FewLabelArgs(protocol="bob", mode="linear").validate()


def test_few_label_under_bob_is_bobs_low_data_command():
    """README.md (train_semi.py): -b 16 --accum_iter 4 on 8 GPUs (512), --lr 2.5e-4, --layer-decay
    0.65, --epochs 60, --weight-decay 0.05, --drop-path 0.1, --aa rand-m9-mstd0.5-inc1; 5 warm-up
    epochs from vit_small_patch16_224_dino_semi.yaml."""
    args = FewLabelArgs(protocol="bob")
    cfg, record = args.resolve("embedded", "sd/v1-4")
    assert (cfg.lr, cfg.layer_decay, cfg.epochs, cfg.warmup_epochs, cfg.weight_decay) == (
        2.5e-4,
        0.65,
        60,
        5,
        0.05,
    )
    assert (cfg.batch_size, cfg.accum_steps, cfg.batch_size * cfg.accum_steps) == (16, 32, 512)
    assert cfg.auto_augment == "rand-m9-mstd0.5-inc1" and args.drop_path_rate() == 0.1
    # the finetune-only overrides (sd_256_ft.yaml's lr 5e-4) do not reach few-label
    assert record["recipe"]["backbone_overrides"] == {}
    default = FewLabelArgs().config("real")
    assert (default.lr, default.layer_decay, default.batch_size, default.accum_steps) == (1e-3, 0.75, 128, 1)


# --------------------------------------------------------------------------------- the recipes file


def test_recipes_file_names_catalog_backbones_and_sources():
    recipes = load_recipes()
    assert set(recipes["suites"]) == {"finetune", "few-label"}
    for name, entry in recipes["backbones"].items():
        assert BACKBONES.get(name) is not None, name
        assert entry["source"]
    assert bob_recipe("finetune", "not/in-the-file").overrides == {}


def test_clip_eval_crop_is_bobs():
    """models/vit_clip.py: _cfg crop_pct .9 for the LAION-2B CLIP ViTs; other backbones keep their own."""
    assert bob_crop_pct("clip/vit_l14_laion2b") == 0.9 == bob_crop_pct("clip/vit_b16_laion2b")
    assert bob_crop_pct("timm/resnet50.a1_in1k") is None
    config = DataConfig(224, (0.5,) * 3, (0.5,) * 3, "bicubic", 1.0)
    ctx = SimpleNamespace(
        ref=SimpleNamespace(name="clip/vit_l14_laion2b"),
        data_config=config,
        info=SimpleNamespace(crop_pct=None),
    )
    changed, record = bob_data_config(ctx)
    assert changed.crop_pct == 0.9 and record == {"eval_crop_pct": 0.9}
    ctx.info.crop_pct = 1.0  # a dataset that fixes its own crop keeps it
    assert bob_data_config(ctx)[0].crop_pct == 1.0


# ----------------------------------------------------------------------------------- evaluation splits


def _ctx(dataset, splits):
    loaded = {name: f"<{name}>" for name in splits}
    return SimpleNamespace(
        dataset=dataset,
        task=SimpleNamespace(suite="finetune"),
        has_split=lambda name: name in splits,
        split=lambda name: loaded[name],
    )


def test_bob_evaluates_val_where_there_is_one_else_test():
    """timm_dataset.create_other_dataset: every non-train split is 'val' — Flowers-102 setid 'valid',
    FGVC-Aircraft's held-out val, EuroSAT JSON 'val'; CIFAR's 'val' is its test set."""
    assert bob_eval_split(_ctx("flowers102", ("train", "val", "test"))) == ("val", "<val>")
    assert bob_eval_split(_ctx("fgvc-aircraft", ("train", "val", "test")))[0] == "val"
    assert bob_eval_split(_ctx("eurosat-coop", ("train", "val", "test")))[0] == "val"
    assert bob_eval_split(_ctx("cifar100", ("train", "test"))) == ("test", "<test>")
    with pytest.raises(UsageError, match="eurosat-coop"):
        bob_eval_split(_ctx("eurosat", ("train", "test")))


def test_eurosat_coop_split_file(tmp_path):
    from bob.data import dataset_info
    from bob.data.real import load_eurosat_json

    tiles = tmp_path / "eurosat" / "2750"
    for cls in ("AnnualCrop", "Forest"):
        (tiles / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (64, 64), (i * 40, 0, 0)).save(tiles / cls / f"{cls}_{i}.jpg")
    split = {
        "train": [
            ["AnnualCrop/AnnualCrop_0.jpg", 0, "Annual Crop Land"],
            ["Forest/Forest_0.jpg", 1, "Forest"],
        ],
        "val": [["Forest/Forest_1.jpg", 1, "Forest"]],
        "test": [
            ["AnnualCrop/AnnualCrop_2.jpg", 0, "Annual Crop Land"],
            ["Forest/Forest_2.jpg", 1, "Forest"],
        ],
    }
    (tmp_path / "eurosat" / "split_zhou_EuroSAT.json").write_text(json.dumps(split))
    info = dataset_info("eurosat-coop")
    val = load_eurosat_json(info, "val", root=tmp_path)
    assert val.classes == ("AnnualCrop", "Forest") and list(val.labels) == [1]
    assert val.image(0).size == (64, 64)
    assert len(load_eurosat_json(info, "train", root=tmp_path)) == 2
    (tmp_path / "eurosat" / "split_zhou_EuroSAT.json").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"split_zhou_EuroSAT\.json"):
        load_eurosat_json(info, "val", root=tmp_path)


# -------------------------------------------------------------------------------- BoB's linear probe


def test_linear_probe_bob_mode_defaults_are_bobs():
    """linear_probe.py + README: 90 epochs, 10 warm-up, blr 0.1, batch 512 per GPU on 4 GPUs."""
    args = LinearProbeArgs(mode="bob")
    args.validate()
    assert (args.bob_epochs, args.bob_warmup_epochs, args.bob_blr) == (90, 10, 0.1)
    assert args.bob_batch_size * args.bob_accum_steps == 2048
    ident = LinearProbeArgs(mode="bob").identity()
    assert ident["mode"] == "bob" and "lr" not in ident and "weight_decay" not in ident
    with pytest.raises(UnknownNameError):
        LinearProbeArgs(mode="lars").validate()
    with pytest.raises(UsageError, match="only apply with mode=bob"):
        LinearProbeArgs(bob_epochs=5).validate()


def test_bob_probe_transforms():
    """linear_probe.py: Resize(int(224 × 1.143), bicubic) + CenterCrop(224), ImageNet mean/std for
    every model; training RandomResizedCrop(224, bicubic) + flip."""
    own = DataConfig(224, (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0)
    config = probe_data_config(own)
    assert config.mean == (0.485, 0.456, 0.406) and config.std == (0.229, 0.224, 0.225)
    resize = eval_transform(config).transforms[0]
    assert resize.size == int(224 * 1.143) == 256 and resize.interpolation.value == "bicubic"
    assert (
        eval_transform(probe_data_config(DataConfig(256, (0.5,) * 3, (0.5,) * 3))).transforms[0].size == 292
    )
    crop = bob_train_transform(224).transforms[0]
    assert crop.size == (224, 224) and crop.interpolation.value == "bicubic" and crop.scale == (0.08, 1.0)


def test_mae_schedule_values():
    """mae_util/lr_sched.py: lr × epoch / warmup in warm-up, then the half-cycle cosine to min_lr 0."""
    assert mae_lr(0.0, 0.8, 10, 90) == 0.0
    assert mae_lr(5.0, 0.8, 10, 90) == pytest.approx(0.4)
    assert mae_lr(10.0, 0.8, 10, 90) == pytest.approx(0.8)
    assert mae_lr(50.0, 0.8, 10, 90) == pytest.approx(0.4)
    assert mae_lr(90.0, 0.8, 10, 90) == pytest.approx(0.0, abs=1e-12)


def _mae_lars_step(params, grads, state, lr, weight_decay=0.0, momentum=0.9, trust=0.001):
    """MAE's util/lars.py, written from its definition: for ndim > 1, dp = g + wd·p scaled by
    trust·‖p‖/‖dp‖ (1 where a norm is 0); mu = momentum·mu + dp; p -= lr·mu."""
    for p, g, key in zip(params, grads, range(len(params)), strict=True):
        dp = g.clone()
        if p.ndim > 1:
            dp = dp + weight_decay * p
            pn, un = p.norm(), dp.norm()
            q = trust * pn / un if (pn > 0 and un > 0) else torch.tensor(1.0)
            dp = dp * q
        mu = state.setdefault(key, torch.zeros_like(p))
        mu.mul_(momentum).add_(dp)
        p.sub_(lr * mu)


def test_lars_matches_maes_definition():
    torch.manual_seed(0)
    head = torch.nn.Linear(6, 4)
    reference = [p.detach().clone() for p in head.parameters()]
    optimizer = lars_optimizer(head, lr=0.8)
    state: dict[int, torch.Tensor] = {}
    for _ in range(4):
        grads = [torch.randn_like(p) for p in head.parameters()]
        for p, g in zip(head.parameters(), grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        _mae_lars_step(reference, grads, state, lr=0.8)
    for p, ref in zip(head.parameters(), reference, strict=True):
        torch.testing.assert_close(p.detach(), ref, rtol=1e-5, atol=1e-6)


class _Frozen(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3)
        self.bn = torch.nn.BatchNorm2d(5)

    def forward_pooled(self, x):
        return self.bn(self.conv(x)).mean((2, 3))


def test_bob_probe_head_and_frozen_backbone(monkeypatch):
    monkeypatch.setattr("bob.tasks.linear_probe.bob_probe.pooled_width", lambda backbone, size: 5)
    backbone = _Frozen()
    probe = BobProbe(backbone, num_classes=3, input_size=8).train()
    norm, linear = probe.head
    assert isinstance(norm, torch.nn.BatchNorm1d) and not norm.affine and norm.eps == 1e-6
    assert linear.weight.std().item() < 0.05 and torch.all(linear.bias == 0)
    assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())
    before = backbone.bn.running_mean.clone()
    probe(torch.randn(4, 3, 8, 8)).sum().backward()
    assert torch.equal(backbone.bn.running_mean, before) and backbone.conv.weight.grad is None


# ------------------------------------------------------------------------------------- end to end


def _run(task, args):
    import os
    import tempfile
    from pathlib import Path

    from bob.runner import RunOptions, execute
    from bob.spec import make_spec

    root = Path(tempfile.mkdtemp())
    os.environ.setdefault("BOB_OFFLINE", "1")
    opts = RunOptions(root / "results", root / "cache", device="cpu", num_workers=0)
    return execute(make_spec("timm/test_resnet", task, "random", 0, {}, args), opts).result


def test_finetune_bob_end_to_end_records_the_recipe():
    result = _run(
        "finetune/shapes-mini", {"protocol": "bob", "epochs": "1", "warmup_epochs": "0", "batch_size": "16"}
    )
    assert result.status == "ok", result.error
    protocol = result.protocol
    assert protocol["protocol"] == "bob" and protocol["evaluated_split"] == "test"
    assert protocol["recipe"]["values"]["gpus"] == 8 and protocol["recipe"]["bob_effective_batch"] == 1024
    assert set(protocol["args_kept_over_recipe"]) == {"epochs", "warmup_epochs", "batch_size"}
    # 16 per step, accumulated to 1024 = 64 steps; an epoch of fewer batches steps once on all of them
    batches = protocol["num_train"] // 16
    assert protocol["accum_steps_requested"] == 64 and protocol["accum_steps"] == min(64, batches)
    assert protocol["effective_batch"] == 16 * min(64, batches) and protocol["steps_per_epoch"] == 1


def test_linear_probe_bob_mode_end_to_end():
    args = {
        "mode": "bob",
        "bob_epochs": "2",
        "bob_warmup_epochs": "1",
        "bob_batch_size": "32",
        "bob_accum_steps": "2",
    }
    result = _run("linear-probe/shapes-mini", args)
    assert result.status == "ok", result.error
    protocol = result.protocol
    assert protocol["mode"] == "bob" and "not cached" in protocol["features"]
    assert protocol["effective_batch"] == 64 and protocol["lr"] == pytest.approx(0.1 * 64 / 256)
    assert protocol["transform"]["mean"] == [0.485, 0.456, 0.406]
    assert 0.0 <= result.metrics["top1"] <= 1.0


def test_bob_probe_trains_on_the_train_loop(monkeypatch):
    """A separable toy problem: BoB's probe learns it through TrainLoop with accumulation."""
    from bob.tasks.linear_probe.bob_probe import BobProbeConfig, train_bob_probe

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(2), 32)
    images = np.zeros((64, 16, 16, 3), dtype=np.uint8)
    images[labels == 1] = 200
    images += rng.integers(0, 30, images.shape, dtype=np.uint8)
    split = ArraySplit("toy", "train", ["dark", "bright"], images, labels)

    class Mean(torch.nn.Module):
        def forward_pooled(self, x):
            return x.mean((2, 3))

    monkeypatch.setattr("bob.tasks.linear_probe.bob_probe.pooled_width", lambda backbone, size: 3)
    # LARS moves a weight by about lr × 0.001 of its norm per step: a toy with 120 steps needs a large blr.
    cfg = BobProbeConfig(epochs=30, warmup_epochs=1, blr=300.0, batch_size=8, accum_steps=2)
    out = train_bob_probe(Mean(), split, split, 2, cfg, DataConfig(16, (0.5,) * 3, (0.5,) * 3), "cpu", 0)
    assert (out["logits"].argmax(1) == labels).mean() == 1.0
    assert out["protocol"]["accum_steps"] == 2 and out["protocol"]["effective_batch"] == 16

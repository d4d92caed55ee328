"""The `dg/<dataset>` suite: matrix averaging, MixStyle/AdvStyle hooks, folder-of-domains checks, runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from bob.data import load_split
from bob.errors import DatasetNotFoundError, UnknownNameError, UsageError
from bob.runner import execute
from bob.spec import make_spec
from bob.task import parse_task_args
from bob.tasks.dg import DgArgs
from bob.tasks.dg.matrix import summarise_matrix
from bob.tasks.dg.style_aug import StyleHooks, mix_stats, stage_modules, style_stats

MINI = "dg/shapes-multidomain-mini"

# ------------------------------------------------------------------------------------ the matrix


def test_matrix_summary_against_a_hand_computed_case():
    matrix = {
        "a": {"a": 0.9, "b": 0.5, "c": 0.3},
        "b": {"a": 0.6, "b": 0.8, "c": 0.4},
        "c": {"a": 0.2, "b": 0.1, "c": 0.7},
    }
    # per source: a → (0.5 + 0.3)/2 = 0.4, b → (0.6 + 0.4)/2 = 0.5, c → (0.2 + 0.1)/2 = 0.15
    m = summarise_matrix(matrix)
    assert m["top1_target"] == pytest.approx((0.4 + 0.5 + 0.15) / 3)
    assert m["top1_target/c"] == pytest.approx(0.15)
    assert m["top1_in_domain"] == pytest.approx((0.9 + 0.8 + 0.7) / 3)
    assert m["drop"] == pytest.approx(0.8 - 0.35)
    assert m["top1/b->c"] == 0.4 and m["top1/a->a"] == 0.9
    assert list(m)[:3] == ["top1_target", "top1_in_domain", "drop"]


@pytest.mark.parametrize("seed", range(5))
def test_matrix_summary_equals_masked_numpy_means(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 7))
    acc = rng.random((n, n))
    names = [f"d{i}" for i in range(n)]
    sources = sorted(rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False))
    matrix = {names[s]: {names[t]: float(acc[s, t]) for t in range(n)} for s in sources}
    off = np.ma.masked_array(acc, mask=np.eye(n, dtype=bool))[sources]
    m = summarise_matrix(matrix)
    assert m["top1_target"] == pytest.approx(float(off.mean(axis=1).mean()))
    assert m["top1_in_domain"] == pytest.approx(float(np.diag(acc)[sources].mean()))


def test_matrix_summary_rejects_rows_without_targets_or_diagonal():
    with pytest.raises(ValueError, match="no target"):
        summarise_matrix({"a": {"a": 1.0}})
    with pytest.raises(ValueError, match="diagonal"):
        summarise_matrix({"a": {"b": 1.0}})


# ------------------------------------------------------------------------------------ style hooks


def _two_stage_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1))


def test_mix_stats_mixes_mean_and_std_by_lambda():
    torch.manual_seed(0)
    x = torch.randn(6, 5, 7, 7) * torch.rand(6, 5, 1, 1) * 3 + torch.randn(6, 5, 1, 1)
    lam = torch.rand(6, 1, 1, 1)
    perm = torch.tensor([3, 0, 5, 1, 2, 4])
    out = mix_stats(x, lam, perm)
    mu, sig = style_stats(x)
    mu_out, sig_out = style_stats(out)
    assert out.shape == x.shape
    torch.testing.assert_close(mu_out, lam * mu + (1 - lam) * mu[perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sig_out, lam * sig + (1 - lam) * sig[perm], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mix_stats(x, torch.ones(6, 1, 1, 1), perm), x, atol=1e-5, rtol=1e-5)


def test_mixstyle_hook_changes_statistics_only_in_training_mode():
    net = _two_stage_net()
    x = torch.randn(8, 3, 12, 12)
    with torch.no_grad():
        plain = net(x)
        with StyleHooks([("0", net[0])], "mixstyle", p=1.0, alpha=0.1):
            net.eval()
            evaluated = net(x)
            net.train()
            torch.manual_seed(1)
            trained = net(x)
        after = net(x)  # hooks removed on exit
    torch.testing.assert_close(evaluated, plain)
    torch.testing.assert_close(after, plain)
    assert trained.shape == plain.shape
    mu_plain, _ = style_stats(plain)
    mu_trained, _ = style_stats(trained)
    assert not torch.allclose(mu_plain, mu_trained, atol=1e-3)


def test_mixstyle_probability_zero_is_identity():
    net = _two_stage_net().train()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad(), StyleHooks([("0", net[0])], "mixstyle", p=0.0):
        hooked = net(x)
    torch.testing.assert_close(hooked, net(x).detach())


def _adv_setup():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).train()
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 5, (16,))
    return net, x, y


def test_advstyle_step_increases_the_loss_on_the_perturbed_batch():
    net, x, y = _adv_setup()
    criterion = nn.CrossEntropyLoss()
    losses = {}
    for name, eps in (("ascent", 0.3), ("descent", -0.3)):  # a negative radius steps down the gradient
        with StyleHooks([("0", net[0]), ("3", net[3])], "advstyle", eps=eps) as hooks:
            clean = criterion(net(x), y).item()
            total = hooks.adversarial_loss(net, x, y, criterion)
        losses[name] = 2 * total.item() - clean  # the step's loss is the mean of clean and perturbed
        assert total.requires_grad
    assert losses["ascent"] > clean > losses["descent"], (losses, clean)


def test_advstyle_pass_leaves_batchnorm_running_statistics_to_the_clean_pass():
    net, x, y = _adv_setup()
    bn = net[1]
    start = bn.running_mean.clone(), bn.running_var.clone()
    with torch.no_grad():
        net(x)  # one clean update
    expected = bn.running_mean.clone(), bn.running_var.clone()
    bn.running_mean.copy_(start[0]), bn.running_var.copy_(start[1])
    with StyleHooks([("0", net[0])], "advstyle", eps=0.5) as hooks:
        hooks.adversarial_loss(net, x, y, nn.CrossEntropyLoss())
    torch.testing.assert_close(bn.running_mean, expected[0])
    torch.testing.assert_close(bn.running_var, expected[1])
    assert bn.momentum == 0.1


def test_advstyle_is_inactive_in_eval_mode():
    net, x, y = _adv_setup()
    net.eval()
    criterion = nn.CrossEntropyLoss()
    with torch.no_grad():
        clean = criterion(net(x), y)
    with StyleHooks([("0", net[0])], "advstyle") as hooks:
        assert hooks.adversarial_loss(net, x, y, criterion).item() == pytest.approx(clean.item())


def _backbone(name: str, size: int = 64):
    from bob.backbones import resolve_backbone

    return resolve_backbone(name, "random").build(size)


def test_stages_of_a_cnn_are_its_middle_feature_levels():
    backbone = _backbone("timm/resnet18")
    assert [n for n, _ in stage_modules(backbone)] == ["layer1", "layer2", "layer3"]
    assert [n for n, _ in stage_modules(backbone, [1, -1])] == ["layer1", "layer4"]
    mobilenet = _backbone("torchvision/mobilenet_v2")  # levels found by the adapter's probe pass
    assert [n for n, _ in stage_modules(mobilenet)] == ["features.3", "features.6", "features.13"]


def test_style_aug_on_a_backbone_without_stages_names_it():
    backbone = _backbone("timm/vit_tiny_patch16_224", 32)
    with pytest.raises(UsageError, match="vit_tiny_patch16_224 exposes no stages"):
        stage_modules(backbone)


# ------------------------------------------------------------------------------------ task args


def test_task_args_are_checked_before_any_run():
    with pytest.raises(UsageError, match="mode=finetune"):
        parse_task_args(DgArgs, {"mode": "linear", "style_aug": "mixstyle"}, "dg/x")
    with pytest.raises(UsageError, match="epochs, lr set the fine-tuning schedule"):
        parse_task_args(DgArgs, {"mode": "linear", "epochs": "3", "lr": "0.1"}, "dg/x")
    with pytest.raises(UnknownNameError, match="mixstyle"):
        parse_task_args(DgArgs, {"style_aug": "mixstyel"}, "dg/x")
    with pytest.raises(UsageError, match="holdout_fraction"):
        parse_task_args(DgArgs, {"holdout_fraction": "1.5"}, "dg/x")
    with pytest.raises(UsageError, match="advstyle_eps"):
        parse_task_args(DgArgs, {"advstyle_eps": "1"}, "dg/x")
    args = parse_task_args(DgArgs, {"sources": "plain,sketch"}, "dg/x")
    assert args.sources == ("plain", "sketch")


def test_listing_dg_imports_no_torch():
    code = (
        "import sys\n"
        "import bob.tasks.dg, bob.tasks.dg.matrix, bob.tasks.dg.data\n"
        "from bob.suites import task_names\n"
        "assert 'dg/shapes-multidomain' in task_names('dg/*')\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------- folder of domains

PACS = ("art_painting", "cartoon", "photo", "sketch")


def _tree(root: Path, domains=PACS, classes=("dog", "horse"), n: int = 2, subdir: str = "pacs") -> Path:
    for d in domains:
        for c in classes:
            folder = root / subdir / d / c
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / f"{i}.jpg")
    return root


def test_a_valid_domain_tree_loads_every_domain(tmp_path):
    root = _tree(tmp_path)
    split = load_split("pacs", "sketch", root=root)
    assert split.classes == ("dog", "horse") and len(split) == 4
    assert split.labels.tolist() == [0, 0, 1, 1] and split.image(0).size == (8, 8)


def test_office_home_real_world_folder_may_keep_its_archive_spelling(tmp_path):
    root = _tree(tmp_path, domains=("Art", "Clipart", "Product", "Real World"), subdir="office-home")
    split = load_split("office-home", "Real_World", root=root)
    assert len(split) == 4 and "Real World" in str(split.paths[0])


def test_a_missing_domain_is_named(tmp_path):
    root = _tree(tmp_path, domains=PACS[:3])
    with pytest.raises(DatasetNotFoundError, match=r"pacs/sketch.*missing"):
        load_split("pacs", "photo", root=root)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_split("pacs", "photo", root=tmp_path / "elsewhere")


def test_mismatched_classes_between_domains_are_refused(tmp_path):
    root = _tree(tmp_path)
    (root / "pacs" / "sketch" / "cat").mkdir()
    Image.new("RGB", (8, 8)).save(root / "pacs" / "sketch" / "cat" / "0.jpg")
    with pytest.raises(UsageError, match=r"only in .*sketch: cat"):
        load_split("pacs", "photo", root=root)


def test_an_empty_class_folder_is_refused(tmp_path):
    root = _tree(tmp_path)
    for f in (root / "pacs" / "cartoon" / "horse").iterdir():
        f.unlink()
    with pytest.raises(UsageError, match=r"cartoon/horse holds no image"):
        load_split("pacs", "photo", root=root)


# ------------------------------------------------------------------------------------------ runs


def test_unknown_source_fails_before_training(options):
    out = execute(make_spec("timm/resnet18", MINI, "random", task_args={"sources": "skecth"}), options)
    assert not out.result.ok and out.result.error["type"] == "UnknownNameError"
    assert "sketch" in out.result.error["message"] and out.stats["extractions"] == 0


def test_style_aug_on_a_vit_fails_before_training(options):
    args = {"style_aug": "mixstyle", "sources": "plain", "image_size": "32"}
    out = execute(make_spec("timm/vit_tiny_patch16_224", MINI, "random", task_args=args), options)
    assert not out.result.ok and out.result.error["type"] == "UsageError"
    assert "exposes no stages" in out.result.error["message"]


def test_missing_real_domains_fail_before_training(options, tmp_path):
    root = _tree(tmp_path / "data", domains=PACS[:2])
    out = execute(make_spec("timm/resnet18", "dg/pacs", "random", task_args={"root": str(root)}), options)
    assert not out.result.ok and out.result.error["type"] == "DatasetNotFoundError"
    assert "photo" in out.result.error["message"] and out.stats["extractions"] == 0


def test_linear_mode_end_to_end_fills_the_whole_matrix(options):
    args = {"mode": "linear", "image_size": "32", "probe_min_steps": "20"}
    out = execute(make_spec("timm/mobilenetv3_small_050", MINI, "random", task_args=args), options)
    assert out.result.ok, out.result.error
    m, p = out.result.metrics, out.result.protocol
    domains = ["plain", "texture", "cartoon", "sketch", "noise"]
    assert p["sources"] == domains and set(p["matrix"]) == set(domains)
    assert all(set(row) == set(domains) for row in p["matrix"].values())
    assert m["top1_target"] == pytest.approx(summarise_matrix(p["matrix"])["top1_target"])
    assert p["num_held_out"]["plain"] == 10 and p["num_train"]["plain"] == 50
    assert out.stats["extractions"] == 5  # one per domain, shared by every source


@pytest.mark.slow
@pytest.mark.parametrize("style_aug", ["mixstyle", "advstyle"])
def test_finetune_with_style_aug_end_to_end(options, style_aug):
    args = {"style_aug": style_aug, "sources": "plain", "epochs": "1", "batch_size": "16", "image_size": "32"}
    out = execute(make_spec("timm/resnet18", MINI, "random", task_args=args), options)
    assert out.result.ok, out.result.error
    source = out.result.protocol["per_source"]["plain"]
    assert source["style_aug"] == style_aug and source["style_stages"] == ["layer1", "layer2", "layer3"]
    assert source["optimizer"].startswith("SGD") and source["num_train"] == 50
    assert set(out.result.protocol["matrix"]["plain"]) == {"plain", "texture", "cartoon", "sketch", "noise"}
    assert 0.0 <= out.result.metrics["top1_target"] <= 1.0


def _pretrained_vs_random(options, task: str, args: dict[str, str]) -> tuple[dict, dict]:
    runs = {}
    for weights in ("pretrained", "random"):
        out = execute(make_spec("torchvision/mobilenet_v2", task, weights, task_args=args), options)
        assert out.result.ok, out.result.error
        runs[weights] = out.result.metrics
    return runs["pretrained"], runs["random"]


@pytest.mark.slow
def test_imagenet_mobilenet_beats_random_init_in_linear_mode(options, weights_dir):
    """ImageNet MobileNetV2 vs random init, frozen features, every source of the mini set."""
    pre, rnd = _pretrained_vs_random(options, MINI, {"mode": "linear", "probe_min_steps": "50"})
    assert pre["top1_target"] - rnd["top1_target"] >= 0.05, (pre["top1_target"], rnd["top1_target"])
    assert pre["top1_in_domain"] - rnd["top1_in_domain"] >= 0.2, (pre, rnd)


@pytest.mark.long
def test_imagenet_mobilenet_beats_random_init_fine_tuned(options, weights_dir):
    """The embedded default (fine-tuned, every source of `shapes-multidomain`), pretrained vs random:
    minutes on a CPU; numbers in docs/suites/dg.md."""
    pre, rnd = _pretrained_vs_random(options, "dg/shapes-multidomain", {})
    print({k: (round(pre[k], 4), round(rnd[k], 4)) for k in pre if "->" not in k})
    assert pre["top1_target"] - rnd["top1_target"] >= 0.1, (pre["top1_target"], rnd["top1_target"])
    assert pre["top1_in_domain"] > rnd["top1_in_domain"]


@pytest.mark.long
def test_imagenet_mobilenet_beats_random_init_in_linear_mode_full(options, weights_dir):
    pre, rnd = _pretrained_vs_random(options, "dg/shapes-multidomain", {"mode": "linear"})
    print({k: (round(pre[k], 4), round(rnd[k], 4)) for k in pre if "->" not in k})
    assert pre["top1_target"] - rnd["top1_target"] >= 0.1, (pre["top1_target"], rnd["top1_target"])

"""Distillation (finetune / few-label `teacher=`): KD losses against torch's kl_div and scipy's
Jensen-Shannon, the batch loss with labelled/unlabeled rows and mixup, the teacher's soft labels
covering the unlabeled pool, unchanged run ids without a teacher, bad input, and the end-to-end gain
of a pretrained teacher over a random-init student."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import jensenshannon

from bob.errors import UnknownNameError, UsageError
from bob.task import parse_task_args
from bob.tasks.common.args import DISTILL_ARGS
from bob.tasks.common.distill_loss import KDConfig, SoftTargets, batch_loss, kd_loss
from bob.tasks.few_label import FewLabelArgs
from bob.tasks.finetune import FinetuneArgs


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_matches_torch_kl_div(temperature):
    g = torch.Generator().manual_seed(int(temperature))
    student, teacher = torch.randn(6, 9, generator=g) * 3, torch.randn(6, 9, generator=g) * 3
    p_t = torch.softmax(teacher / temperature, -1)
    ref = F.kl_div(F.log_softmax(student / temperature, -1), p_t, reduction="none").sum(-1) * temperature**2
    torch.testing.assert_close(kd_loss(student, p_t, temperature, "kl"), ref)
    batchmean = F.kl_div(F.log_softmax(student / temperature, -1), p_t, reduction="batchmean")
    torch.testing.assert_close(kd_loss(student, p_t, temperature, "kl").mean(), batchmean * temperature**2)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_js_matches_scipy_and_is_symmetric(temperature):
    rng = np.random.default_rng(0)
    student = torch.tensor(rng.normal(size=(5, 7)) * 2, dtype=torch.float32)
    teacher = torch.tensor(rng.normal(size=(5, 7)) * 2, dtype=torch.float32)
    p_t = torch.softmax(teacher / temperature, -1)
    p_s = torch.softmax(student / temperature, -1)
    got = kd_loss(student, p_t, temperature, "js") / temperature**2
    ref = [jensenshannon(a, b) ** 2 for a, b in zip(p_t.double().numpy(), p_s.double().numpy(), strict=True)]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-7)
    swapped = kd_loss(teacher, p_s, temperature, "js") / temperature**2
    torch.testing.assert_close(got, swapped, rtol=1e-4, atol=1e-6)
    assert float(got.max()) <= np.log(2) + 1e-6  # JS is bounded by ln 2


def test_losses_vanish_when_student_equals_teacher():
    logits = torch.randn(4, 5)
    probs = torch.softmax(logits / 2, -1)
    for kind in ("kl", "js"):
        assert kd_loss(logits, probs, 2.0, kind).abs().max() < 1e-5


class _Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(x)


class _FixedMixup:
    """timm's batch-mode mixup with a known λ."""

    def __init__(self, lam: float) -> None:
        self.lam = lam

    def _mix_batch(self, x):
        flipped = x.flip(0).mul_(1.0 - self.lam)
        x.mul_(self.lam).add_(flipped)
        return self.lam


def _batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, generator=g)
    y = torch.tensor([0, 1, 2, 3])
    probs = torch.softmax(torch.randn(4, 4, generator=g), -1)
    labelled = torch.tensor([True, True, False, True])
    return x, y, probs, labelled


def test_batch_loss_uses_labels_only_where_they_exist():
    model, (x, y, probs, labelled) = _Linear(), _batch()
    cfg = KDConfig(temperature=2.0, alpha=0.25, loss="kl")
    got = batch_loss(model, (x, y, probs, labelled), None, cfg, 4, 0.0, "cpu")
    logits = model(x)
    kd = kd_loss(logits, probs, 2.0, "kl").mean()
    ce = F.cross_entropy(logits[labelled], y[labelled])
    torch.testing.assert_close(got, 0.25 * kd + 0.75 * ce)
    pure = batch_loss(model, (x, y, probs, labelled), None, KDConfig(2.0, 1.0, "kl"), 4, 0.0, "cpu")
    torch.testing.assert_close(pure, kd)


def test_batch_loss_mixes_teacher_probabilities_like_the_images():
    model, (x, y, probs, labelled) = _Linear(), _batch()
    cfg = KDConfig(temperature=1.0, alpha=0.5, loss="js")
    got = batch_loss(model, (x.clone(), y, probs, labelled), _FixedMixup(0.7), cfg, 4, 0.1, "cpu")
    mixed_x = 0.7 * x + 0.3 * x.flip(0)
    logits = model(mixed_x)
    mixed_p = 0.7 * probs + 0.3 * probs.flip(0)
    kd = kd_loss(logits, mixed_p, 1.0, "js").mean()
    # CE only where both partners carry a label: rows 0 and 3 (row 1 pairs with the unlabeled row 2)
    smooth = lambda t: F.one_hot(t, 4).float() * 0.9 + 0.1 / 4  # noqa: E731
    target = 0.7 * smooth(y) + 0.3 * smooth(y.flip(0))
    ce = -(target * F.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(got, 0.5 * kd + 0.5 * ce[[0, 3]].mean())


def test_soft_targets_must_cover_the_training_split():
    three_images = type("Split", (), {"__len__": lambda self: 3})()
    targets = SoftTargets(np.zeros((2, 4)), np.ones(2, bool), KDConfig())
    with pytest.raises(ValueError, match="2 teacher rows for 3"):
        targets.dataset(three_images, None)


def test_runs_without_a_teacher_keep_their_identity():
    for cls in (FinetuneArgs, FewLabelArgs):
        plain = cls().identity()
        assert not set(DISTILL_ARGS) & set(plain)
        with_teacher = cls(teacher="torchvision/mobilenet_v2").identity()
        assert with_teacher["teacher"] == "torchvision/mobilenet_v2" and "kd_loss" in with_teacher
        assert {k: v for k, v in with_teacher.items() if k not in DISTILL_ARGS} == plain


@pytest.mark.parametrize(
    ("cls", "raw", "error", "match"),
    [
        (FinetuneArgs, {"teacher": "torchvision/mobilenet_v3"}, UnknownNameError, "mobilenet"),
        (FinetuneArgs, {"kd_loss": "jsd"}, UnknownNameError, "js"),
        (FinetuneArgs, {"kd_temperature": "0"}, UsageError, "kd_temperature"),
        (FinetuneArgs, {"kd_alpha": "1.5"}, UsageError, "kd_alpha"),
        (
            FinetuneArgs,
            {"teacher": "timm/resnet18", "teacher_weights": "/no/such.pt"},
            UsageError,
            "no such",
        ),
        (FinetuneArgs, {"teacher": "timm/resnet18", "search": "lr"}, UsageError, "search=lr"),
        (FewLabelArgs, {"teacher": "timm/resnet18", "mode": "linear"}, UsageError, "mode=finetune"),
    ],
)
def test_bad_distillation_args_are_refused_before_any_run(cls, raw, error, match):
    with pytest.raises(error, match=match):
        parse_task_args(cls, raw, "finetune/shapes-mini")


def test_teacher_soft_labels_cover_the_unlabeled_pool(tmp_path, monkeypatch):
    """few-label + teacher: the student trains on the labelled rows and the whole unlabeled pool, each
    row with the teacher's logits of that very image; held-out val images are in neither."""
    import bob.tasks.common.distill as distill
    from bob.backbones import resolve_backbone
    from bob.cache import FeatureCache
    from bob.context import RunContext
    from bob.results import ResultStore
    from bob.spec import make_spec
    from bob.task import TaskOutput
    from bob.tasks.few_label import FewLabel

    seen = {}
    n_train = 200
    fake_logits = np.arange(n_train * 10, dtype=np.float32).reshape(n_train, 10)  # row r starts at 10·r

    def fake_teacher(ctx, teacher, weights, labelled_rows):
        seen["teacher_rows"] = labelled_rows
        return distill.TeacherFit(fake_logits, {"teacher": teacher, "teacher_test": {"top1": 0.5}})

    def fake_finetune(ctx, train, val, cfg, drop_path, distill=None, artifact="checkpoint"):
        seen.update(train=train, val=val, targets=distill)
        return TaskOutput({"top1": 0.4}, {}, {})

    monkeypatch.setattr(distill, "fit_teacher", fake_teacher)
    monkeypatch.setattr(distill, "finetune_and_test", fake_finetune)
    task_args = {"teacher": "torchvision/mobilenet_v2", "fraction": "0.2"}
    spec = make_spec("timm/test_resnet", "few-label/shapes-mini", "random", 0, {}, task_args)
    ref = resolve_backbone("timm/test_resnet", "random", {}, 0)
    args = parse_task_args(FewLabelArgs, task_args, spec.task)
    task = FewLabel("shapes-mini", args)
    ctx = RunContext(spec, task, ref, ResultStore(tmp_path / "raw"), FeatureCache(tmp_path / "cache"), "cpu")
    out = task.run(ctx)

    train, targets, val = seen["train"], seen["targets"], seen["val"]
    rows = train.indices
    subset = out.protocol["subset"]
    assert len(val.indices) + len(rows) == n_train, "every train image is used once: val, labelled or pool"
    assert not set(val.indices) & set(rows)
    assert targets.labelled.sum() == len(seen["teacher_rows"]) == subset["num_labelled"] - len(val.indices)
    assert set(rows[targets.labelled]) == set(seen["teacher_rows"])
    assert (~targets.labelled).sum() == n_train - subset["num_labelled"], "the whole unlabeled pool"
    np.testing.assert_array_equal(targets.teacher_logits[:, 0], rows * 10.0)  # each row's own logits
    assert out.metrics["teacher_top1"] == 0.5 and "unlabeled_pool" in out.protocol["distillation"]


@pytest.mark.slow
def test_distillation_runs_end_to_end_with_baseline(tmp_path):
    """A seconds-long real run: random teacher and student on shapes-mini; the plumbing, not the gain."""
    from bob.cli.run import run_grid
    from bob.results import read_result

    task_args = [
        "teacher=timm/test_resnet", "teacher_weights=random", "epochs=1", "warmup_epochs=0",
        "batch_size=16", "image_size=32", "kd_baseline=true", "kd_loss=js",
    ]  # fmt: skip
    code = run_grid(
        ["timm/test_resnet"], ["finetune/shapes-mini"], ["random"], [0], task_args, [],
        tmp_path / "raw", tmp_path / "cache", "cpu", 64, 0, False, progress=False,
    )  # fmt: skip
    assert code == 0
    (path,) = (tmp_path / "raw").rglob("*.json")
    result = read_result(path)
    m, kd = result.metrics, result.protocol["distillation"]
    assert m["gain_top1"] == pytest.approx(m["top1"] - m["baseline_top1"])
    assert 0 <= m["teacher_top1"] <= 1 and kd["kd_loss"] == "js" and kd["num_unlabeled"] == 0
    assert set(result.artifacts) == {"checkpoint", "baseline-checkpoint", "samples"}
    assert result.protocol["loss"].startswith("distillation")


@pytest.mark.slow
@pytest.mark.long
def test_pretrained_teacher_lifts_a_random_student_on_animal_mnist(tmp_path):
    """SimCLRv2's distillation step on CPU: an ImageNet MobileNetV2 teacher (linear probe on 10% of the
    labels) teaches a random-init ResNet-18 on the unlabeled 90%; it must beat the same student
    fine-tuned on the labelled 10% alone."""
    from bob.cli.run import run_grid
    from bob.results import read_result

    task_args = [
        "teacher=torchvision/mobilenet_v2", "fraction=0.1", "epochs=4", "image_size=32", "kd_baseline=true",
    ]  # fmt: skip
    code = run_grid(
        ["timm/resnet18"], ["few-label/animal-mnist"], ["random"], [0], task_args, [],
        tmp_path / "raw", tmp_path / "cache", "cpu", 64, 0, False, progress=False,
    )  # fmt: skip
    assert code == 0
    (path,) = (tmp_path / "raw").rglob("*.json")
    result = read_result(path)
    m = result.metrics
    print(f"distillation on animal-mnist: {m} in {result.timings['total_s']:.0f}s")  # for the docs
    assert m["teacher_top1"] > 0.5
    assert m["gain_top1"] > 0.05, m

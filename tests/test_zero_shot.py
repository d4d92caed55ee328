"""zero-shot/<dataset>: CLIP's prompt-ensemble math against a direct computation, known accuracies from
a hand-built text/image stub, the open_clip plumbing on a tiny random model, and the `skipped` status
of backbones without a text tower through `bob run`, the sweep and the leaderboard."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bob.backbones.base import Backbone
from bob.backbones.meta import BackboneMeta, DataConfig
from bob.errors import TaskNotApplicable, UnknownNameError, UsageError
from bob.results import read_result
from bob.task import parse_task_args
from bob.tasks.zero_shot import ZeroShot, ZeroShotArgs
from bob.tasks.zero_shot.run import class_text_embeddings, prompt_classnames, template_set, zero_shot_logits

D = 16


def _table_encoder(dim: int = D, seed: int = 0):
    """Text -> a fixed random vector per string (stable within the test), plus a call log."""
    rng = np.random.default_rng(seed)
    table: dict[str, torch.Tensor] = {}
    calls: list[int] = []

    def encode(texts: list[str]) -> torch.Tensor:
        calls.append(len(texts))
        for t in texts:
            if t not in table:
                table[t] = torch.tensor(rng.normal(size=dim) * rng.uniform(0.5, 3.0), dtype=torch.float32)
        return torch.stack([table[t] for t in texts])

    return encode, table, calls


def test_text_embeddings_average_normalised_prompts_then_renormalise():
    encode, table, calls = _table_encoder()
    names = ["cat", "dog", "zebra"]
    templates = template_set("simple")
    got = class_text_embeddings(encode, names, templates, batch_size=5)
    assert max(calls) <= 5 and sum(calls) == len(names) * len(templates), "prompts go in batches"
    for i, name in enumerate(names):
        rows = torch.stack([table[t(name)] for t in templates])
        direct = (rows / rows.norm(dim=1, keepdim=True)).mean(0)
        direct = direct / direct.norm()
        torch.testing.assert_close(got[i], direct)
        # averaging *normalised* prompts differs from averaging raw ones (the norms vary on purpose)
        raw = rows.mean(0) / rows.mean(0).norm()
        assert not torch.allclose(got[i], raw, atol=1e-4)
    assert torch.allclose(got.norm(dim=1), torch.ones(3))


def test_logits_are_scaled_cosines():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(7, D)).astype(np.float32) * 5
    text = F.normalize(torch.randn(4, D), dim=-1)
    got = zero_shot_logits(images, text, 100.0)
    cos = (images / np.linalg.norm(images, axis=1, keepdims=True)) @ text.numpy().T
    np.testing.assert_allclose(got, 100 * cos, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(zero_shot_logits(images, text, 1.0) * 100, got, rtol=1e-5, atol=1e-4)


def test_template_sets_are_open_clips():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    assert template_set("openai") is OPENAI_IMAGENET_TEMPLATES and len(template_set("openai")) == 80
    assert template_set("simple") is SIMPLE_IMAGENET_TEMPLATES and len(template_set("simple")) == 7


def test_class_names_are_cleaned_mapped_or_refused():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    assert prompt_classnames("eurosat", ["AnnualCrop", "SeaLake"]) == ["Annual Crop", "Sea Lake"]
    assert prompt_classnames("cub200", ["001.Black_footed_Albatross"]) == ["Black footed Albatross"]
    assert prompt_classnames("food101", ["apple_pie"]) == ["apple pie"]
    assert prompt_classnames("digits", [str(i) for i in range(10)])[3] == "three"
    wnids = [f"n{i:08d}" for i in range(1000)]
    assert prompt_classnames("imagenet", wnids) == list(IMAGENET_CLASSNAMES)
    with pytest.raises(UsageError, match="bare indices"):
        prompt_classnames("flowers102", [str(i) for i in range(102)])


@pytest.mark.parametrize(
    ("raw", "error", "match"),
    [
        ({"templates": "opnai"}, UnknownNameError, "openai"),
        ({"logit_scale": "0"}, UsageError, "logit_scale"),
        ({"text_batch_size": "0"}, UsageError, "text_batch_size"),
    ],
)
def test_bad_args_are_refused(raw, error, match):
    with pytest.raises(error, match=match):
        parse_task_args(ZeroShotArgs, raw, "zero-shot/shapes")


def test_text_batch_size_is_not_part_of_the_run_identity():
    assert "text_batch_size" not in ZeroShotArgs().identity()


class _StubCLIP(Backbone):
    """A known joint space: class i's prompts embed near axis i; images are given directly."""

    def __init__(self, classnames: list[str], text: bool = True) -> None:
        meta = BackboneMeta(
            name="stub-clip",
            resolved_name="stub-clip",
            adapter="user",
            family="vit",
            method="vision-language",
        )
        super().__init__(meta, DataConfig(32, (0.5,) * 3, (0.5,) * 3), [])
        self.has_text_tower = text
        self.classnames = classnames
        self.rng = np.random.default_rng(0)

    def encode_text(self, texts):
        out = []
        for t in texts:
            i = next(k for k, n in enumerate(self.classnames) if f" {n}" in f" {t}".replace(".", " "))
            v = np.zeros(D, dtype=np.float32)
            v[i] = 1.0
            out.append(v + 0.05 * self.rng.normal(size=D).astype(np.float32))  # prompt noise
        return torch.tensor(np.stack(out))


def _fake_ctx(
    backbone: _StubCLIP, classes: list[str], images: np.ndarray, labels: np.ndarray, text_tower=None
):
    """A run context whose backbone ref says `text_tower` (None: unknown until built, as user factories)."""
    seen = {}

    def pooled(split: str, output: str = "pooled"):
        seen["output"] = output
        return SimpleNamespace(features=images, labels=labels)

    def build():
        seen["built"] = True
        return backbone

    ref = SimpleNamespace(name="stub-clip", text_tower=text_tower)
    ctx = SimpleNamespace(classes=tuple(classes), backbone=build, pooled=pooled, ref=ref, save_samples=False)
    return ctx, seen


def test_known_accuracy_from_a_stub_joint_space():
    classes = ["bear", "cat", "dog", "zebra", "horse", "sheep"]
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(6), 20)
    images = np.eye(D, dtype=np.float32)[labels] * 4 + 0.1 * rng.normal(size=(120, D)).astype(np.float32)
    # the first 30 images sit on the next class's axis, pointing away from their own: wrong at top-1,
    # and their own class ranks last, so they miss top-5 too
    eye = np.eye(D, dtype=np.float32)
    images[:30] = eye[(labels[:30] + 1) % 6] * 4 - eye[labels[:30]]
    ctx, seen = _fake_ctx(_StubCLIP(classes), classes, images, labels)
    out = ZeroShot("animals", ZeroShotArgs(templates="simple")).run(ctx)
    assert seen["output"] == "image_embedding", "zero-shot reads the joint embedding, not forward_pooled"
    assert out.metrics["top1"] == pytest.approx(90 / 120)
    assert out.metrics["top5"] == pytest.approx(90 / 120)
    # classes 0 and 1 lose 20 and 10 images: recalls 0, 0.5, 1, 1, 1, 1
    assert out.metrics["mean_per_class_recall"] == pytest.approx((0 + 0.5 + 4) / 6)
    assert out.protocol["num_templates"] == 7 and out.protocol["logit_scale"] == 100.0
    assert out.protocol["classnames"] == classes


def test_backbone_without_text_tower_is_not_applicable_before_any_extraction():
    classes = ["cat", "dog"]
    ctx, seen = _fake_ctx(_StubCLIP(classes, text=False), classes, np.zeros((2, D)), np.zeros(2))
    with pytest.raises(TaskNotApplicable, match="no text tower"):
        ZeroShot("animals", ZeroShotArgs()).run(ctx)
    assert seen == {"built": True}, "built to ask the model, nothing extracted"
    # an adapter that knows it has no text tower (timm, torchvision, ...) is skipped unbuilt
    ctx, seen = _fake_ctx(_StubCLIP(classes), classes, np.zeros((2, D)), np.zeros(2), text_tower=False)
    with pytest.raises(TaskNotApplicable, match="stub-clip has no text tower"):
        ZeroShot("animals", ZeroShotArgs()).run(ctx)
    assert not seen, "neither built nor extracted"


def test_adapters_declare_their_text_tower_without_building():
    from bob.backbones import resolve_backbone

    assert resolve_backbone("open_clip/ViT-S-32-alt", "random", {}, 0).text_tower is True
    assert resolve_backbone("timm/test_resnet", "random", {}, 0).text_tower is False
    assert resolve_backbone("torchvision/mobilenet_v2", "random", {}, 0).text_tower is False


def _run(tmp_path: Path, backbone: str, task: str, *task_args: str, overwrite: bool = False) -> int:
    """`bob run` in-process (what the CLI calls); returns its exit code."""
    from bob.cli.run import run_grid

    return run_grid(
        [backbone], [task], ["random"], [0], list(task_args), [], tmp_path / "raw", tmp_path / "cache",
        "cpu", 64, 0, overwrite, progress=False,
    )  # fmt: skip


@pytest.mark.slow
def test_open_clip_tiny_random_runs_end_to_end(tmp_path):
    """The plumbing on a real open_clip model: text tower built lazily, joint embeddings cached under
    their own key. Random weights, so the numbers say nothing about CLIP."""
    task_args = ("templates=simple", "image_size=32")
    assert _run(tmp_path, "open_clip/ViT-S-32-alt", "zero-shot/shapes-mini", *task_args) == 0
    (path,) = (tmp_path / "raw").rglob("*.json")
    result = read_result(path)
    assert result.status == "ok" and 0 <= result.metrics["top1"] <= 1 and "top5" in result.metrics
    assert result.protocol["embed_dim"] == 256 and result.protocol["num_test"] == 100
    assert result.cache["extractions"] == 1


@pytest.mark.slow
def test_skipped_end_to_end_run_sweep_leaderboard(tmp_path, capsys):
    from bob.runner import RunOptions
    from bob.sweep.driver import plan_sweep, run_sweep
    from bob.sweep.executors.local import LocalExecutor
    from bob.sweep.spec import parse_sweep
    from tests.leaderboard_results import write_result

    raw = tmp_path / "raw"
    assert _run(tmp_path, "timm/test_resnet", "zero-shot/shapes-mini") == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "skipped: timm/test_resnet has no text tower" in printed
    (path,) = raw.rglob("*.json")
    result = read_result(path)
    assert result.status == "skipped" and "no text tower" in result.reason and result.error is None
    assert json.loads(path.read_text())["reason"] == result.reason
    assert _run(tmp_path, "timm/test_resnet", "zero-shot/shapes-mini") == 0
    assert "already done" in capsys.readouterr().err, "a skipped run is settled"

    # the sweep: counted apart, settled, and not re-run by --retry-failed
    sweep = {"name": "zs", "grids": [{"backbones": ["timm/test_resnet"], "weights": ["random"],
             "seeds": [0, 1], "tasks": [{"task": "zero-shot/shapes-mini"}]}]}  # fmt: skip
    options = RunOptions(results_dir=raw, cache_dir=tmp_path / "cache", device="cpu", num_workers=0)
    first = run_sweep(plan_sweep(parse_sweep(sweep)), LocalExecutor(), options)
    assert first.counts["not_applicable_before"] == 1 and first.counts["not_applicable"] == 1
    assert "failed" not in first.counts and first.exit_code == 0
    retry = run_sweep(plan_sweep(parse_sweep(sweep)), LocalExecutor(), options, mode="failed")
    assert retry.counts["not_applicable_before"] == 2 and not retry.reports

    # the leaderboard ignores skipped runs: neither ranked nor failures
    from bob.leaderboard import build_leaderboard, load_results

    write_result(raw, "cnn-a", "knn/shapes-mini", 0.5)
    loaded = load_results(raw)
    assert len(loaded.runs) == 1 and loaded.failed.empty and len(loaded.not_applicable) == 2
    assert "no text tower" in loaded.not_applicable["error"].iloc[0]
    board = build_leaderboard(raw, tmp_path / "board", formats=("csv",)).board
    assert "zero-shot/shapes-mini" not in " ".join(map(str, board.table.columns))


def test_settled_and_reason_layout():
    from bob.results import RunResult

    ok = RunResult(id="a", status="ok", spec={})
    assert ok.settled and "reason" not in json.loads(ok.to_json()), "ok results keep their layout"
    skipped = RunResult(id="a", status="skipped", spec={}, reason="no text tower")
    assert skipped.settled and not skipped.ok
    assert RunResult.from_dict(json.loads(skipped.to_json())).reason == "no text tower"
    assert not RunResult(id="a", status="failed", spec={}).settled

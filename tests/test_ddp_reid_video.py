"""Data-parallel `reid` and `video-cls` fine-tuning (`bob run --gpus-per-run N`): how each step's batch
is split over the ranks, that the sharded and gathered evaluation equals one process's for the same
model, the modes that train nothing refused, and one two-rank run of each suite end to end on the
CPU with gloo."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bob.errors import UsageError
from bob.spec import make_spec
from bob.tasks.common.train_loop import sync_buffers
from bob.tasks.reid import ReidArgs
from bob.tasks.reid import train as reid_train
from bob.tasks.video_cls import finetune as video_finetune
from tests.cli_harness import bob_run_on_cpu, invoke

TINY = "timm/test_resnet"  # BatchNorm throughout: the per-rank statistics are exercised
SIZE = 32
REID_TASK = "reid/shapes-reid-mini"
REID_ARGS = {
    "mode": "finetune",
    "epochs": "1",
    "ids_per_batch": "4",
    "images_per_id": "2",
    "image_size": "32",
}
VIDEO_TASK = "video-cls/moving-sprites-mini"
# 48 training videos at 20 a step: two full steps and a last one of 8, 4 clips a rank.
VIDEO_ARGS = {"mode": "finetune", "ft_epochs": "1", "ft_batch": "20", "views": "2x1", "image_size": "32"}


def _two_ranks(monkeypatch: pytest.MonkeyPatch, module: object, me: int, world: int = 2) -> None:
    """Make `module` see rank `me` of `world` without a process group (its imported helpers)."""
    monkeypatch.setattr(module, "world_size", lambda: world)
    monkeypatch.setattr(module, "rank", lambda: me)


# ------------------------------------------------------------------------------- the split of steps


def test_reid_ranks_split_each_batch_by_whole_identities(monkeypatch):
    args = ReidArgs(mode="finetune", ids_per_batch=4, images_per_id=3)
    labels = np.repeat(np.arange(10), 6)
    plan = reid_train.identity_batches(labels, 4, 3, np.random.default_rng(0))
    parts = []
    for me in range(2):
        _two_ranks(monkeypatch, reid_train, me)
        share = reid_train.identities_per_rank(args)
        parts.append([reid_train.rank_share(batch, share, 3) for batch in plan])
    for batch, *shares in zip(plan, *parts, strict=True):
        assert np.array_equal(np.concatenate(shares), batch)  # together, the whole step; disjoint
        for part in shares:
            ids, counts = np.unique(labels[part], return_counts=True)
            assert len(ids) == 2 and set(counts) == {3}  # two whole identities: positives and negatives
        assert not set(labels[shares[0]]) & set(labels[shares[1]])


def test_reid_refuses_identities_the_ranks_cannot_share(monkeypatch):
    _two_ranks(monkeypatch, reid_train, 0, world=3)
    with pytest.raises(UsageError, match="ids_per_batch=4 must be a multiple of 3"):
        reid_train.identities_per_rank(ReidArgs(mode="finetune", ids_per_batch=4))
    _two_ranks(monkeypatch, reid_train, 0, world=2)
    with pytest.raises(UsageError, match="triplet loss needs 2 or more a rank"):
        reid_train.identities_per_rank(ReidArgs(mode="finetune", ids_per_batch=2))
    assert reid_train.identities_per_rank(ReidArgs(mode="finetune", ids_per_batch=2, triplet_weight=0)) == 1


@pytest.mark.parametrize(("n", "kept_last"), [(56, 8), (53, 5), (50, None)])
def test_video_ranks_share_every_step_and_weight_the_last_one_to_the_batch_mean(monkeypatch, n, kept_last):
    batch, order = 16, np.random.default_rng(1).permutation(n)
    one = video_finetune.rank_steps(order, batch)  # one process: every step whole
    assert [len(s) for s, _ in one] == [min(batch, n - i) for i in range(0, n, batch)]
    assert all(w == 1.0 for _, w in one)
    ranks = []
    for me in range(2):
        _two_ranks(monkeypatch, video_finetune, me)
        ranks.append(video_finetune.rank_steps(order, batch))
    # A last step of 2 clips (n=50) would leave a rank 1 clip, which the head's BatchNorm cannot train on.
    assert len(ranks[0]) == len(ranks[1]) == n // batch + int(kept_last is not None)
    losses = np.random.default_rng(2).random(n)  # any per-clip loss
    for (step, _), (a, wa), (b, wb) in zip(one, *ranks, strict=False):
        assert np.array_equal(np.concatenate([a, b]), step)
        # What DDP's gradient average gives: the mean over ranks of each rank's weighted mean loss.
        assert (wa * losses[a].mean() + wb * losses[b].mean()) / 2 == pytest.approx(losses[step].mean())
    if kept_last is not None:
        assert len(ranks[0][-1][0]) + len(ranks[1][-1][0]) == kept_last


@pytest.mark.parametrize(
    ("task", "args", "needle"),
    [
        (VIDEO_TASK, [], f"{VIDEO_TASK} with mode=linear fits heads on cached frozen features"),
        (VIDEO_TASK, ["-a", "mode=linear", "-a", "pool=temporal-conv"], "with mode=linear"),
    ],
)
def test_modes_that_train_nothing_are_refused(task, args, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["run", "-b", TINY, "-w", "random", "-t", task, *args, "--gpus-per-run", "2", "--results-dir", "r"]
    code, out = invoke(argv, capsys)
    assert code == 2, out
    assert needle in " ".join(out.split()), out
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------- the evaluation, gathered


def _evaluate(offset: float) -> dict[str, np.ndarray]:
    """The re-ID features and video view logits of a fixed model. `offset` shifts every BatchNorm's
    running mean first, as a rank's own statistics would after training; `sync_buffers` (the one loop's) then puts
    rank 0's back on every rank. Re-ID embeds one image a forward, so a row's arithmetic does not
    depend on which rows share its batch: what differs between one and two processes is the shards."""
    from bob.api import build_backbone
    from bob.backbones.base import pooled_width
    from bob.data import load_split
    from bob.data.video import Views
    from bob.progress import Progress
    from bob.tasks.video_cls.features import ClipSpec
    from bob.tasks.video_cls.model import VideoClassifier, temporal_head

    def shifted(model: torch.nn.Module) -> torch.nn.Module:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if name.endswith("running_mean"):
                    buffer.add_(offset)
        return model

    torch.manual_seed(0)
    backbone = build_backbone(TINY, "random", input_size=SIZE)
    reid_model = shifted(reid_train.BNNeckEmbedding(backbone, 12, pooled_width(backbone, SIZE)))
    sync_buffers(reid_model)
    test = load_split("shapes-reid-mini", "test")
    test = test.subset(np.arange(0, len(test), 3), "test")  # 27 rows: the shards differ in size
    ctx = SimpleNamespace(data_config=backbone.data_config, batch_size=1, num_workers=0, device="cpu")
    features = reid_train._embed(ctx, reid_model, test, Progress())

    torch.manual_seed(0)
    frames = build_backbone(TINY, "random", input_size=SIZE)
    videos = load_split("moving-sprites-mini", "test")
    head = temporal_head("mean+diff", pooled_width(frames, SIZE), len(videos.classes))
    video_model = shifted(VideoClassifier(frames, head))
    sync_buffers(video_model)
    cfg = frames.data_config
    spec = ClipSpec(8, 2, SIZE, cfg.mean, cfg.std)
    sizes = (64, len(videos.classes))
    logits = video_finetune.score_views(
        video_model, videos, spec, Views.parse("2x1"), sizes, "cpu", Progress()
    )
    return {"reid": features, "video": logits}


def _evaluate_worker(rank: int, size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=size)
    np.savez(Path(out) / f"{rank}.npz", **_evaluate(offset=float(rank)))
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two processes that import torch and build a backbone: about 10 s on a quiet machine
def test_sharded_evaluation_equals_one_process_for_the_same_model(tmp_path):
    from torch.distributed.elastic.utils.distributed import get_free_port

    expected = _evaluate(offset=0.0)  # one process: rank 0's statistics
    assert expected["reid"].shape[0] == 27 and expected["video"].shape[:2] == (24, 2)
    torch.multiprocessing.spawn(_evaluate_worker, args=(2, get_free_port(), str(tmp_path)), nprocs=2)
    for rank in range(2):
        got = np.load(tmp_path / f"{rank}.npz")
        np.testing.assert_array_equal(got["reid"], expected["reid"])
        np.testing.assert_array_equal(got["video"], expected["video"])


# ------------------------------------------------------------------------------------------ end to end


def _spec_args(task_args: dict[str, str], prefix: str) -> list[str]:
    """Task args for the tasks of one suite only (`-a SUITE:ARG=VALUE`)."""
    return [f"{prefix}:{k}={v}" for k, v in task_args.items()]


@pytest.mark.slow  # one launch of two ranks for both runs: about 15 s on a quiet machine
def test_reid_and_video_finetune_on_two_ranks(tmp_path):
    args = [*_spec_args(REID_ARGS, "reid"), *_spec_args(VIDEO_ARGS, "video-cls")]
    proc = bob_run_on_cpu(tmp_path, TINY, [REID_TASK, VIDEO_TASK], args, "--gpus-per-run", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = {}
    for task, task_args in ((REID_TASK, REID_ARGS), (VIDEO_TASK, VIDEO_ARGS)):
        folder = tmp_path / "results" / task
        (path,) = folder.rglob("*.json")  # rank 0 alone wrote
        assert len(list(folder.rglob("*.samples.npz"))) == 1
        result = json.loads(path.read_text())
        assert result["status"] == "ok", result.get("error")
        assert result["id"] == make_spec(TINY, task, "random", task_args=task_args).id
        assert result["protocol"]["data_parallel"]["world_size"] == 2
        assert all(math.isfinite(v) for v in result["metrics"].values())
        results[task] = result["protocol"]

    reid = results[REID_TASK]
    shards = reid["data_parallel"]
    assert (shards["per_device_identities"], shards["per_device_batch"], shards["effective_batch"]) == (
        2,
        4,
        8,
    )
    assert 7 <= reid["steps"] <= 9  # the one-process plan: 12 identities × 3 chunks of K = 2, P = 4
    assert reid["samples"]["rows"] == reid["queries_valid"] == 36  # every query, gathered once

    video = results[VIDEO_TASK]
    shards = video["data_parallel"]
    assert (shards["per_device_batch"], shards["effective_batch"], shards["steps_per_epoch"]) == (10, 20, 3)
    assert video["train_batch_clips"] == 20 and len(video["history"]) == 1
    assert video["samples"]["rows"] == video["num_test_videos"] == 24  # every video, gathered once

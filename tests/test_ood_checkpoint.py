"""`ood/<shift>` with mode=checkpoint: BoB's OOD classification scores the classifier a `finetune/<in-dist>`
run saved. On embedded data: fine-tune on shapes-mini, then score its checkpoint on shapes-mini-domains;
the default lookup, the run-id lookup, the errors, and the dependency the sweep planner reads."""

from __future__ import annotations

import numpy as np
import pytest

from bob.errors import UsageError
from bob.runner import execute
from bob.spec import make_spec
from bob.tasks.ood import Ood, OodArgs, finetune_spec

TINY = "timm/mobilenetv3_small_050"
FT_ARGS = {"epochs": "1", "warmup_epochs": "0", "batch_size": "16", "image_size": "32"}
SHIFT = "ood/shapes-mini-domains"


def _ood(**args: str):
    return make_spec(TINY, SHIFT, "random", task_args={"mode": "checkpoint", **args})


def test_checkpoint_mode_names_the_finetune_run_it_consumes():
    spec = _ood()
    provider = finetune_spec(spec)
    assert provider.task == "finetune/shapes-mini"
    assert (provider.backbone, provider.weights, provider.seed) == (spec.backbone, "random", spec.seed)
    assert "protocol" not in provider.task_args
    (wanted,) = Ood.consumes(spec)
    assert (wanted.task, wanted.run_id, wanted.task_args) == (
        "finetune/shapes-mini",
        None,
        (("protocol", None),),
    )
    (by_id,) = Ood.consumes(_ood(finetune_run="0123456789abcdef"))
    assert by_id.run_id == "0123456789abcdef"
    assert Ood.consumes(make_spec(TINY, SHIFT, "random")) == [], "linear mode consumes nothing"
    assert "finetune_run" not in make_spec(TINY, SHIFT, "random").task_args, "omitted while unset"
    assert "protocol" not in make_spec(TINY, SHIFT, "random").task_args, "omitted while default"
    with pytest.raises(UsageError, match="mode=checkpoint"):
        OodArgs(mode="linear", finetune_run="abc").validate()
    with pytest.raises(UsageError, match="mode=finetune"):
        OodArgs(mode="checkpoint", ft_epochs=3).validate()


def test_missing_finetune_run_is_a_clear_error(options):
    out = execute(_ood(), options)
    assert out.result.status == "failed"
    message = out.result.error["message"]
    assert "finetune/shapes-mini" in message and finetune_spec(_ood()).id in message
    assert "bob run" in message
    out = execute(_ood(finetune_run="0123456789abcdef"), options)
    assert out.result.status == "failed" and "no result with that id" in out.result.error["message"]


def test_scores_the_saved_classifier_of_a_finetune_run(options):
    # The finetune run the OOD run consumes by default has the finetune suite's default args; a run
    # with other args is found when it is the only one of that backbone (and named by id otherwise).
    ft = execute(make_spec(TINY, "finetune/shapes-mini", "random", task_args=FT_ARGS), options)
    assert ft.result.ok, ft.result.error
    out = execute(_ood(), options)
    assert out.result.ok, out.result.error
    m, p = out.result.metrics, out.result.protocol
    assert p["finetune_run"] == ft.result.id and p["mode"] == "checkpoint"
    assert p["classifier"].startswith("the saved classifier")
    assert p["transform"]["input_size"] == 32, "the finetune run's own eval transform"
    assert out.stats["extractions"] == 0, "nothing trained, nothing extracted"
    assert all(np.isfinite(v) for v in m.values())
    # The in-distribution score is the finetune run's own test top-1: the same weights, the same split.
    assert m["top1_id"] == pytest.approx(ft.result.metrics["top1"], abs=1e-6)
    by_id = execute(_ood(finetune_run=ft.result.id), options)
    assert by_id.result.ok and by_id.result.metrics == pytest.approx(m)


def test_a_finetune_run_of_another_backbone_is_refused(options):
    other = make_spec("timm/test_resnet", "finetune/shapes-mini", "random", task_args=FT_ARGS)
    ft = execute(other, options)
    assert ft.result.ok, ft.result.error
    out = execute(_ood(finetune_run=ft.result.id), options)
    assert out.result.status == "failed" and "fine-tuned timm/test_resnet" in out.result.error["message"]


def test_each_protocol_scores_the_finetune_run_of_its_own_protocol(options):
    default = execute(make_spec(TINY, "finetune/shapes-mini", "random", task_args=FT_ARGS), options)
    bob = execute(
        make_spec(TINY, "finetune/shapes-mini", "random", task_args={**FT_ARGS, "protocol": "bob"}), options
    )
    assert default.result.ok and bob.result.ok and default.result.id != bob.result.id
    under_bob = execute(_ood(protocol="bob"), options)
    assert under_bob.result.ok, under_bob.result.error
    assert under_bob.result.protocol["finetune_run"] == bob.result.id
    assert under_bob.result.protocol["protocol_preset"] == "bob"
    under_default = execute(_ood(), options)
    assert under_default.result.protocol["finetune_run"] == default.result.id
    assert "protocol_preset" not in under_default.result.protocol
    crossed = execute(_ood(finetune_run=bob.result.id), options).result
    assert crossed.status == "failed" and "under protocol default" in crossed.error["message"]


def test_a_failed_finetune_run_is_named_with_how_to_rerun_it(options):
    # A diverging fine-tune (non-finite loss) is a failed result; the OOD run that reads it says so.
    bad = make_spec(TINY, "finetune/shapes-mini", "random", task_args={**FT_ARGS, "lr": "1e12"})
    failed = execute(bad, options).result
    assert failed.status == "failed", "an lr of 1e12 diverges"
    out = execute(_ood(), options).result
    assert (
        out.status == "failed"
        and f"{failed.id} that mode=checkpoint scores is failed" in out.error["message"]
    )
    by_id = execute(_ood(finetune_run=failed.id), options).result
    assert "is failed" in by_id.error["message"]

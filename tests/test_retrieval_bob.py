"""Retrieval under `protocol=bob` and the `crop_queries` switch: each of BoB's retrieval knobs
(bob-retrieval's main_ret.py and utils.py) checked against BoB's value, and the default protocol's
run ids, cache keys and numbers left as they were."""

from __future__ import annotations

import numpy as np
import pytest
from task_runs import TINY, run_task

from bob import data
from bob.backbones.meta import DataConfig
from bob.errors import UsageError
from bob.spec import make_spec
from bob.tasks.retrieval.metrics import QueryTruth, retrieval_metrics
from bob.tasks.retrieval.queries import BOB_THUMBNAIL, IMAGENET_MEAN, IMAGENET_STD, bob_transform
from tests.test_retrieval_data import make_roxford

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def test_new_args_stay_out_of_default_run_ids():
    default = make_spec(TINY, "retrieval/roxford5k", "random")
    assert "protocol" not in default.task_args and "crop_queries" not in default.task_args
    assert (
        make_spec(TINY, "retrieval/roxford5k", "random", task_args={"protocol": "default"}).id == default.id
    )
    ids = {
        make_spec(TINY, "retrieval/roxford5k", "random", task_args=a).id
        for a in ({}, {"protocol": "bob"}, {"crop_queries": "false"}, {"crop_queries": "true"})
    }
    assert len(ids) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"protocol": "bobb"}, "Unknown protocol 'bobb'. Did you mean: bob"),
        ({"protocol": "bob", "image_size": "96"}, "drop image_size"),
    ],
)
def test_bad_protocol_args_are_usage_errors(args, message):
    with pytest.raises(UsageError, match=message):
        make_spec(TINY, "retrieval/skimage-views", "random", task_args=args)


def test_crop_queries_on_a_set_without_boxes_fails_before_extraction(options):
    result = run_task(options, "retrieval/skimage-views", crop_queries="false").result
    assert not result.ok and "crop_queries only applies to roxford5k, rparis6k" in result.error["message"]
    assert result.cache.get("extractions", 0) == 0


def test_bob_transform_is_resize_256_crop_224_bicubic_with_imagenet_statistics():
    """main_ret.py: Resize(256, bicubic) + CenterCrop(224) + ImageNet mean/std; Resize 400 -> 384 for
    "384" models; Resize 460 -> 448 with CLIP statistics for RN50x64. Its "clip" branch tests the
    architecture name, which never contains "clip", so CLIP ViTs and ResNets got the ImageNet one."""
    clip_vit = DataConfig(224, CLIP_MEAN, CLIP_STD, interpolation="bicubic", crop_pct=1.0)
    timm_convnext = DataConfig(288, (0.5,) * 3, (0.5,) * 3, interpolation="bilinear", crop_pct=0.95)
    for own in (clip_vit, timm_convnext):
        cfg = bob_transform(own)
        assert (cfg.input_size, cfg.resize_size, cfg.interpolation) == (224, 256, "bicubic")
        assert (cfg.mean, cfg.std, cfg.crop_mode) == (IMAGENET_MEAN, IMAGENET_STD, "center")
    big = bob_transform(DataConfig(384, CLIP_MEAN, CLIP_STD))
    assert (big.input_size, big.resize_size, big.mean) == (384, 400, IMAGENET_MEAN)
    rn50x64 = bob_transform(DataConfig(448, CLIP_MEAN, CLIP_STD, interpolation="bicubic", crop_pct=1.0))
    assert (rn50x64.input_size, rn50x64.resize_size, rn50x64.mean, rn50x64.std) == (
        448,
        460,
        CLIP_MEAN,
        CLIP_STD,
    )


def test_bob_mrr_keeps_junk_and_counts_every_query():
    """utils.compute_map: MRR's first relevant rank is read before junk is removed, and the sum is
    divided by every query (one without a relevant item adds 0); AP and R@k remove junk first."""
    scores = np.array([[0.9, 0.8, 0.1], [0.9, 0.8, 0.1]])  # ranking: item 0, 1, 2
    truths = [QueryTruth(np.array([1]), np.array([0])), QueryTruth(np.zeros(0, dtype=np.int64))]
    default = retrieval_metrics(scores, truths, (1,), "revisitop")
    bob = retrieval_metrics(scores, truths, (1,), "revisitop", mrr_rule="bob")
    assert default["mrr"] == 1.0  # junk item 0 removed: the relevant item ranks first
    assert bob["mrr"] == pytest.approx(0.5 / 2)  # rank 2 with the junk kept, over both queries
    assert bob["map"] == default["map"] == 1.0 and bob["recall_at_1"] == default["recall_at_1"] == 1.0


def test_whole_queries_and_bob_thumbnails_on_revisited_oxford(tmp_path):
    make_roxford(tmp_path)
    split = data.load_split("roxford5k", "test", root=tmp_path)
    whole = split.variant(crop_queries=False, thumbnail=None)
    assert split.image(0).size == (30, 30) and whole.image(0).size == (60, 50)  # box vs whole image
    assert whole.num_queries == split.num_queries and whole.judgements is split.judgements
    assert split.variant(crop_queries=True, thumbnail=None).fingerprint == split.fingerprint
    bob = split.variant(crop_queries=False, thumbnail=BOB_THUMBNAIL)
    assert len({split.fingerprint, whole.fingerprint, bob.fingerprint}) == 3
    small = split.variant(crop_queries=False, thumbnail=24)  # thumbnail: fit in a square, keep aspect
    assert small.image(0).size == (24, 20) and small.image(2).size == (24, 18)
    assert bob.image(0).size == (60, 50)  # never enlarged (BoB's 224 px limit on 60 px images)


def test_roxford_run_under_each_protocol(options, tmp_path):
    make_roxford(tmp_path / "data")
    root = tmp_path / "data"
    default = run_task(options, "retrieval/roxford5k", root=root).result
    whole = run_task(options, "retrieval/roxford5k", root=root, crop_queries="false").result
    bob = run_task(options, "retrieval/roxford5k", root=root, protocol="bob").result
    for r in (default, whole, bob):
        assert r.ok, r.error
    assert default.protocol["queries"] == "cropped to their box" and default.protocol["thumbnail"] is None
    assert whole.protocol["queries"] == bob.protocol["queries"] == "whole images"
    assert "224 px" in bob.protocol["thumbnail"] and bob.protocol["mrr_rule"].startswith("BoB's")
    assert bob.protocol["transform"]["input_size"] == 224 and bob.protocol["transform"]["crop_pct"] == 0.875
    assert bob.protocol["convention"] == "revisitop"
    keys = [
        r.cache["keys"]["test" if r is default else next(iter(r.cache["keys"]))]
        for r in (default, whole, bob)
    ]
    assert len(set(keys)) == 3  # three different inputs, three feature-cache entries


def test_bob_protocol_on_a_generated_set_uses_revisitop_everywhere(options):
    default = run_task(options, "retrieval/skimage-views").result
    bob = run_task(options, "retrieval/skimage-views", protocol="bob").result
    assert default.ok and bob.ok, (default.error, bob.error)
    assert default.protocol["convention"] == "standard" and bob.protocol["convention"] == "revisitop"
    assert bob.cache["extractions"] == 1  # BoB's transform: features of its own
    assert bob.cache["keys"]["test"] != default.cache["keys"]["test"]
    assert "queries" not in bob.protocol  # no boxes on this set


def test_bob_midas_transform_and_descriptor():
    """main_ret.py's MiDaS branches: Resize 256 -> CenterCrop 256 (MiDaS-T) and 400 -> 384 (MiDaS-B),
    mean/std 0.5; the descriptor is `model(x)`, the encoder's 1000-d timm head on the pooled feature."""
    import torch

    from bob.backbones.base import BackboneRef
    from bob.tasks.retrieval.queries import HALF, descriptor_head, is_bob_midas

    tiny = bob_transform(DataConfig(256, IMAGENET_MEAN, IMAGENET_STD), midas=True)
    base = bob_transform(DataConfig(384, IMAGENET_MEAN, IMAGENET_STD), midas=True)
    assert (tiny.input_size, tiny.resize_size, tiny.mean, tiny.std) == (256, 256, HALF, HALF)
    assert (base.input_size, base.resize_size, base.mean) == (384, 400, HALF)

    def ref(adapter: str, args: dict) -> BackboneRef:
        return BackboneRef(
            name="x", resolved_name="x", adapter=adapter, weights=None, data_config=tiny, args=args
        )

    assert is_bob_midas(ref("hf", {"protocol": "bob"}))
    assert not is_bob_midas(ref("hf", {})) and not is_bob_midas(ref("timm", {"protocol": "bob"}))

    class WithHead:
        def native_classifier(self):
            return torch.nn.Linear(4, 1000), "imagenet-1k"

    assert descriptor_head(WithHead(), midas=False) is None
    assert descriptor_head(WithHead(), midas=True).out_features == 1000
    with pytest.raises(UsageError, match="1000-d head"):
        descriptor_head(type("NoHead", (), {"native_classifier": lambda self: None})(), midas=True)

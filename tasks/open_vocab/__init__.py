"""`open-vocab/<dataset>`: open-vocabulary detection, ViLD-text style (Gu et al., ICLR 2022).

The detection suite's Mask/Faster R-CNN on the backbone's pyramid (tasks/common/rcnn.py), with its
classifier replaced by cosine similarity to text embeddings of the category names (model.py):

    p(c | region) = softmax_c( cos(W·r, t_c) / τ ),   c ∈ {background} ∪ categories

`r` is the box head's 1024-d region feature, `W` a learned projection, `t_c` the L2-normalised
text embedding of category `c` (fixed), the background a learned embedding, τ = 0.01 (ViLD). Box
regression and masks are class-agnostic, so they transfer to categories never trained on.

Protocol: the categories split into **base** and **novel** (the dataset's own split — `"split":
"novel"` on a category, or LVIS-style `"frequency": "r"` — or the `novel=` task arg; vocab.py).
Training sees base annotations only: novel objects are background, and the novel text embeddings are
masked out of the softmax. Evaluation scores all categories at once (the open vocabulary) with
COCOeval, and reports AP on the novel categories (the main metric), on the base ones and on all; on
LVIS also its federated AP (metrics.py), with up to 300 detections kept per image (LVIS's setting;
elsewhere torchvision's 100). The main metric on `lvis-v1` is ViLD's headline, the federated mask
APr (`lvis_mask_APr`: rare categories = novel), not COCOeval's non-federated `box_ap_novel`.

Text embeddings (`text_encoder`, tasks/common/text.py):
  - `backbone`: the backbone's own text tower (`has_text_tower`, `encode_text`: open_clip backbones), with `prompt`;
  - `open_clip:<model>[/<pretrained>]`: an open_clip text tower, with `prompt`;
  - `bow`: bob's fixed bag-of-words encoder — each word a seeded Gaussian vector (seed from the
    word's sha256), a name the normalised mean of its words. It knows no semantics, but it is
    compositional: a novel `red star` shares its words with base `red circle` and `blue star`.
  - `auto` (default): `backbone` when the backbone has a text tower, else `bow`.
The encoder used is recorded in the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from bob.errors import UsageError
from bob.task import Task, run_arg
from bob.tasks.common.args import DetectorArgs, check_text_encoder


@dataclass
class OpenVocabArgs(DetectorArgs):
    """The detector's knobs (tasks/common/args.py) plus the text classifier's and the novel set."""

    search_space: ClassVar[dict[str, Any]] = {}

    text_encoder: str = run_arg(
        "auto",
        "auto, backbone (its CLIP text tower), bow (bob's fixed bag of words) or open_clip:<model>[/<pretrained>]",
    )
    prompt: str = run_arg(
        "a photo of a {}.", "prompt template for CLIP-style text towers ({} = category name)"
    )
    temperature: float = run_arg(0.01, "softmax temperature on cosine similarities (ViLD: 0.01)")
    novel: tuple[str, ...] = run_arg(
        (),
        "novel category names (default: the dataset's own split, e.g. LVIS rare, the scenes' held-out pairs)",
    )

    def validate(self) -> None:
        super().validate()
        if self.head != "rcnn":
            raise UsageError(
                "open-vocab runs on the R-CNN head (ViLD's); head=query is a detection-suite option."
            )
        if self.search != "none":
            raise UsageError("open-vocab has no in-protocol search; sweep lr with a sweep file instead.")
        if self.temperature <= 0:
            raise UsageError(f"temperature must be positive, got {self.temperature}.")
        if "{}" not in self.prompt:
            raise UsageError(f"prompt must contain {{}} where the category name goes, got '{self.prompt}'.")
        check_text_encoder(self.text_encoder)


# Datasets whose headline is not COCOeval's box AP on the novel categories: LVIS reports ViLD's
# federated mask APr (LVIS v1 has masks; rare categories are the novel set).
MAIN_METRIC_BY_DATASET = {"lvis-v1": "lvis_mask_APr"}


class OpenVocab(Task):
    suite = "open-vocab"
    version = "1"
    main_metric = "box_ap_novel"
    needs = ("features", "trainable")
    data_parallel = True  # the detection suite's loop and prediction (tasks/common/detector_train.py)
    task_types = ("open-vocab", "detection")
    description = (
        "ViLD-text: the detection suite's R-CNN classifying by cosine to category-name text "
        "embeddings; trained on base categories, AP on novel ones"
    )
    Args = OpenVocabArgs
    check_dataset: ClassVar[str] = "scenes-ov-mini"
    # `bob check`: 3 steps, then 16 test scenes scored with 64 sampled RoIs per training image (a
    # prediction runs the box and mask heads on every proposal: the test images set the mock's time).
    check_args: ClassVar[dict[str, str]] = {
        "iters": "3",
        "batch_size": "2",
        "augment": "flip",
        "fpn_channels": "32",
        "rois_per_image": "64",
        "limit": "16",
    }

    def meta(self) -> dict[str, Any]:
        """The main metric is per dataset: LVIS's federated mask APr on lvis-v1, box AP novel elsewhere."""
        return {**super().meta(), "main_metric": MAIN_METRIC_BY_DATASET.get(self.dataset, self.main_metric)}

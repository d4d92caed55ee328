"""`zero-shot/<dataset>`: CLIP-style zero-shot classification with the backbone's own text tower.

Protocol (CLIP; CLIP_benchmark's `zeroshot_classification`):
  1. class names come from the dataset (cleaned: `_` and CamelCase to words, numbered folder prefixes
     dropped; ImageNet's WordNet ids become open_clip's IMAGENET_CLASSNAMES; digits become number
     words); a dataset whose names are bare indices is refused before anything is built;
  2. every class name fills every template of the chosen set (`templates=openai`: CLIP's 80 ImageNet
     prompts, `simple`: its 7-prompt subset, both from `open_clip.zero_shot_metadata`); each class's
     prompts are encoded, L2-normalised, averaged and renormalised into one classifier row;
  3. test images go through the backbone's own eval transform and `encode_image` (the joint,
     post-projection embedding), are L2-normalised, and logits = `logit_scale` (100) · image · text;
  4. top-1, top-5 and mean per-class recall on the test split. No training, no train split.
Backbones without a text tower are skipped (result status `skipped`, with the reason), not failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest
from bob.task import Task, TaskArgs, run_arg

TEMPLATE_SETS = ("openai", "simple")


@dataclass
class ZeroShotArgs(TaskArgs):
    templates: str = run_arg("openai", "prompt set: openai (CLIP's 80 ImageNet templates) or simple (7)")
    logit_scale: float = run_arg(100.0, "logits = logit_scale · cos(image, class text); CLIP uses 100")
    text_batch_size: int = run_arg(256, "prompts encoded per text-tower batch", False)

    def validate(self) -> None:
        super().validate()
        if self.templates not in TEMPLATE_SETS:
            hint = f"Valid values: {', '.join(TEMPLATE_SETS)}."
            raise UnknownNameError(
                "template set", self.templates, suggest(self.templates, TEMPLATE_SETS, 2), hint
            )
        if self.logit_scale <= 0:
            raise UsageError(f"logit_scale must be positive, got {self.logit_scale}.")
        if self.text_batch_size < 1:
            raise UsageError(f"text_batch_size must be a positive integer, got {self.text_batch_size}.")


class ZeroShot(Task):
    suite = "zero-shot"
    version = "1"
    main_metric = "top1"
    needs = ("text_tower",)
    description = "CLIP zero-shot: class-name prompts through the backbone's text tower (skipped without one)"
    Args = ZeroShotArgs
    args: ZeroShotArgs
    check_args: ClassVar[dict[str, str]] = {"templates": "simple"}

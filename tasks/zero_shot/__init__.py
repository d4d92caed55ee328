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

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bob.errors import TaskNotApplicable, UnknownNameError, UsageError
from bob.registry import suggest
from bob.task import Task, TaskArgs, TaskOutput, run_arg

if TYPE_CHECKING:
    import numpy as np
    import torch

    from bob.context import RunContext

TEMPLATE_SETS = ("openai", "simple")
# Class names whose dataset labels are not words a text tower can read.
DATASET_CLASSNAMES: dict[str, tuple[str, ...]] = {
    "digits": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
}
_WNID = re.compile(r"^n\d{8}$")


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


def template_set(name: str) -> tuple[Callable[[str], str], ...]:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    return {"openai": OPENAI_IMAGENET_TEMPLATES, "simple": SIMPLE_IMAGENET_TEMPLATES}[name]


def _words(name: str) -> str:
    name = re.sub(r"^\d+\.", "", name)  # CUB's `001.Black_footed_Albatross`
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)  # EuroSAT's `AnnualCrop`
    return " ".join(name.replace("_", " ").split())


def prompt_classnames(dataset: str, classes: Sequence[str]) -> list[str]:
    """The names prompts are built from; raises before any work when the labels carry no words."""
    if dataset in DATASET_CLASSNAMES and len(DATASET_CLASSNAMES[dataset]) == len(classes):
        return list(DATASET_CLASSNAMES[dataset])
    if len(classes) == 1000 and all(_WNID.match(c) for c in classes):
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        return list(IMAGENET_CLASSNAMES)  # in WordNet-id order, as torchvision's ImageFolder sorts them
    names = [_words(c) for c in classes]
    if not classes or all(not re.search(r"[A-Za-z]", n) for n in names):
        raise UsageError(
            f"zero-shot/{dataset}: the class names of {dataset} are bare indices ({', '.join(classes[:3])}, "
            "...), so there is nothing to prompt a text tower with. Use a dataset whose class folders are "
            "named by their classes (e.g. imagefolder with one folder per class name)."
        )
    return names


def class_text_embeddings(
    encode_text: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[Callable[[str], str]],
    batch_size: int = 256,
    progress: Any = None,
) -> torch.Tensor:
    """[C, D]: per class, its prompts encoded, L2-normalised, averaged and renormalised (CLIP's recipe)."""
    import torch
    import torch.nn.functional as F

    prompts = [template(name) for name in classnames for template in templates]
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            chunks.append(F.normalize(encode_text(prompts[start : start + batch_size]).float(), dim=-1).cpu())
            if progress is not None:
                progress.advance(len(chunks[-1]))
    per_prompt = torch.cat(chunks).reshape(len(classnames), len(templates), -1)
    return F.normalize(per_prompt.mean(dim=1), dim=-1)


def zero_shot_logits(images: np.ndarray, text: torch.Tensor, logit_scale: float) -> np.ndarray:
    """logit_scale · normalise(images) · text.T, as numpy [N, C]."""
    import torch
    import torch.nn.functional as F

    image = F.normalize(torch.as_tensor(images, dtype=torch.float32), dim=-1)
    return (logit_scale * image @ text.float().T).numpy()


def _no_text_tower(name: str) -> str:
    return (
        f"{name} has no text tower; zero-shot classification needs a vision-language backbone "
        "(e.g. open_clip/<arch>:<tag>)."
    )


class ZeroShot(Task):
    suite = "zero-shot"
    version = "1"
    main_metric = "top1"
    needs = ("text_tower",)
    description = "CLIP zero-shot: class-name prompts through the backbone's text tower (skipped without one)"
    Args = ZeroShotArgs
    args: ZeroShotArgs
    check_args: ClassVar[dict[str, str]] = {"templates": "simple"}

    def run(self, ctx: RunContext) -> TaskOutput:
        from bob.progress import progress_bar
        from bob.tasks.common.metrics import classification_metrics

        classnames = prompt_classnames(self.dataset, ctx.classes)
        if ctx.ref.text_tower is False:  # the adapter knows: skip without building the model
            raise TaskNotApplicable(_no_text_tower(ctx.ref.name))
        backbone = ctx.backbone()
        if not backbone.has_text_tower:
            raise TaskNotApplicable(_no_text_tower(backbone.meta.name))
        templates = template_set(self.args.templates)
        n_prompts = len(classnames) * len(templates)
        with progress_bar("encoding class prompts", n_prompts, "prompts") as bar:
            text = class_text_embeddings(
                backbone.encode_text, classnames, templates, self.args.text_batch_size, bar
            )
        test = ctx.pooled("test", output="image_embedding")
        if test.features.shape[1] != text.shape[1]:
            raise UsageError(
                f"{backbone.meta.name}: image embeddings have {test.features.shape[1]} dimensions but text "
                f"embeddings {text.shape[1]}; encode_image and encode_text must share one joint space."
            )
        logits = zero_shot_logits(test.features, text, self.args.logit_scale)
        metrics = classification_metrics(logits, test.labels, len(classnames))
        protocol = {
            "templates": self.args.templates,
            "num_templates": len(templates),
            "template_source": "open_clip.zero_shot_metadata",
            "classnames": classnames,
            "text_embedding": "per class: prompts encoded, L2-normalised, averaged, renormalised",
            "image_embedding": "encode_image (joint space, post-projection), L2-normalised",
            "logit_scale": self.args.logit_scale,
            "embed_dim": int(text.shape[1]),
            "num_test": len(test.labels),
        }
        return TaskOutput(metrics, protocol)

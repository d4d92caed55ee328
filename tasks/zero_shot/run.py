"""The zero-shot protocol: class-name prompts through the text tower, cosine logits against the joint
image embeddings of the test split (see the package docstring)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bob.context import RunContext
from bob.errors import TaskNotApplicable, UsageError
from bob.progress import Progress, progress_bar
from bob.task import TaskOutput
from bob.tasks.common.metrics import classification_metrics
from bob.tasks.common.samples import classification_samples, save_samples
from bob.tasks.zero_shot import ZeroShot

# Class names whose dataset labels are not words a text tower can read.
DATASET_CLASSNAMES: dict[str, tuple[str, ...]] = {
    "digits": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
}
_WNID = re.compile(r"^n\d{8}$")


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
    progress: Progress | None = None,
) -> torch.Tensor:
    """[C, D]: per class, its prompts encoded, L2-normalised, averaged and renormalised (CLIP's recipe)."""
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
    image = F.normalize(torch.as_tensor(images, dtype=torch.float32), dim=-1)
    return (logit_scale * image @ text.float().T).numpy()


def _no_text_tower(name: str) -> str:
    return (
        f"{name} has no text tower; zero-shot classification needs a vision-language backbone "
        "(e.g. open_clip/<arch>:<tag>)."
    )


def run(task: ZeroShot, ctx: RunContext) -> TaskOutput:
    args = task.args
    classnames = prompt_classnames(task.dataset, ctx.classes)
    if ctx.ref.text_tower is False:  # the adapter knows: skip without building the model
        raise TaskNotApplicable(_no_text_tower(ctx.ref.name))
    backbone = ctx.backbone()
    if not backbone.has_text_tower:
        raise TaskNotApplicable(_no_text_tower(backbone.meta.name))
    templates = template_set(args.templates)
    with progress_bar("encoding class prompts", len(classnames) * len(templates), "prompts") as bar:
        text = class_text_embeddings(backbone.encode_text, classnames, templates, args.text_batch_size, bar)
    test = ctx.pooled("test", output="image_embedding")
    if test.features.shape[1] != text.shape[1]:
        raise UsageError(
            f"{backbone.meta.name}: image embeddings have {test.features.shape[1]} dimensions but text "
            f"embeddings {text.shape[1]}; encode_image and encode_text must share one joint space."
        )
    logits = zero_shot_logits(test.features, text, args.logit_scale)
    metrics = classification_metrics(logits, test.labels, len(classnames))
    protocol = {
        "templates": args.templates,
        "num_templates": len(templates),
        "template_source": "open_clip.zero_shot_metadata",
        "classnames": classnames,
        "text_embedding": "per class: prompts encoded, L2-normalised, averaged, renormalised",
        "image_embedding": "encode_image (joint space, post-projection), L2-normalised",
        "logit_scale": args.logit_scale,
        "embed_dim": int(text.shape[1]),
        "num_test": len(test.labels),
    }
    return save_samples(ctx, TaskOutput(metrics, protocol), classification_samples(logits, test.labels))

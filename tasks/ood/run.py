"""The OOD protocol: load and check every shifted set, train the in-distribution classifier, score
the in-distribution test split and every set with it (tasks/ood/__init__.py describes the steps)."""

from __future__ import annotations

from typing import Any

from bob.backbones.protocols import with_protocol
from bob.context import RunContext
from bob.progress import progress_bar
from bob.task import TaskOutput
from bob.tasks.common.samples import save_samples
from bob.tasks.ood import Ood
from bob.tasks.ood.data import get_shift
from bob.tasks.ood.metrics import masked_probs, score, scores_of, set_samples, summarise, top1_rows
from bob.tasks.ood.sets import load_sets, select_sets
from bob.tasks.ood.train import fit_classifier


def run(task: Ood, ctx: RunContext) -> TaskOutput:
    ctx.ref = with_protocol(ctx.ref, task.args.protocol)  # before any feature or model is made
    shift = get_shift(task.dataset)
    names = select_sets(shift, task.args)
    masks = load_sets(ctx, shift, names)
    classifier = fit_classifier(task.args.mode, ctx, task.args)
    bins = task.args.ece_bins
    id_scores = score(classifier.logits("test"), ctx.split("test").labels, None, bins)
    set_scores, predictions = {}, {}
    with progress_bar(f"scoring {shift.name}", len(names), "sets") as bar:
        for name in names:
            logits, labels = classifier.logits(name), ctx.split(name).labels
            probs, labels = masked_probs(logits, labels, masks[name])
            set_scores[name] = scores_of(probs, labels, bins)
            predictions[name] = top1_rows(probs, labels)
            bar.advance(1)
    protocol = {
        "shift": shift.name,
        "in_distribution": shift.in_dist,
        "sets": names,
        "num_per_set": {name: len(ctx.split(name)) for name in names},
        "class_subsets": {n: f"{len(m)} classes (logits masked)" for n, m in masks.items() if m is not None},
        "mode": task.args.mode,
        **({"protocol_preset": task.args.protocol} if task.args.protocol != "default" else {}),
        "ece": {"n_bins": bins, "norm": "l1", "bins": "uniform, left-closed; confidence = max softmax"},
        **classifier.protocol,
    }
    protocol.update(_corruption_protocol(ctx, names) if shift.corruption_sets else {})
    artifacts = {
        "head": ctx.save_artifact("head", {**classifier.state, "classes": list(ctx.classes)}),
        "sets": ctx.save_artifact("sets", {"id": id_scores, **set_scores}),
    }
    output = TaskOutput(summarise(id_scores, set_scores), protocol, artifacts)
    return save_samples(ctx, output, set_samples(predictions))


def _corruption_protocol(ctx: RunContext, names: list[str]) -> dict[str, Any]:
    split = ctx.split(names[0])
    render = getattr(split, "render", None)
    out: dict[str, Any] = {"severities": sorted({int(n.rpartition("-")[2]) for n in names})}
    if render is not None:  # rendered on the fly (not the released JPEGs)
        out["corruption_render"] = render.describe()
        out["corruption_library"] = f"imagecorruptions-imaug {split.library_version}"
        out["corruption_seed"] = split.seed
    return out

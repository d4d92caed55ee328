"""Text embeddings of category names or referring expressions, for the suites that classify or query
by text (open-vocab, rvos): the backbone's own text tower (CLIP-style backbones), an open_clip model,
or bob's fixed bag-of-words encoder, which needs no weights and works for any backbone.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import torch

from bob.backbones.base import Backbone
from bob.errors import UsageError

BOW_DIM = 512


def bow_embeddings(names: list[str], dim: int = BOW_DIM) -> torch.Tensor:
    """bob's fixed bag-of-words text encoder: words → seeded Gaussian vectors, names → normalised mean."""
    out = []
    for name in names:
        words = re.findall(r"[a-z0-9]+", name.lower())
        if not words:
            raise UsageError(f"Category name '{name}' has no word for the bow text encoder.")
        vecs = [
            np.random.default_rng(
                int.from_bytes(hashlib.sha256(w.encode()).digest()[:8], "little")
            ).standard_normal(dim)
            for w in words
        ]
        out.append(np.mean(vecs, axis=0))
    return torch.nn.functional.normalize(torch.as_tensor(np.stack(out), dtype=torch.float32), dim=1)


def text_embeddings(
    encoder: str, prompt: str, backbone: Backbone, names: list[str]
) -> tuple[torch.Tensor, str]:
    """(normalised [K, D] embeddings of `names`, the encoder's name for the record).

    `encoder` is one of `TEXT_ENCODERS` (tasks/common/args.py); `prompt` a template with `{}` where
    the name goes, used by the text towers (not by the bag-of-words encoder)."""
    enc = encoder
    has_tower = bool(getattr(backbone, "has_text_tower", False))
    if enc == "auto":
        enc = "backbone" if has_tower else "bow"
    if enc == "bow":
        return bow_embeddings(names), f"bob bag-of-words (hashed Gaussian words, {BOW_DIM}-d)"
    prompts = [prompt.format(n) for n in names]
    if enc == "backbone":
        if not has_tower:
            raise UsageError(
                f"{backbone.meta.name} has no text tower (encode_text); use text_encoder=bow or open_clip:<model>."
            )
        with torch.no_grad():
            emb = backbone.encode_text(prompts)
        return torch.nn.functional.normalize(emb.float().cpu(), dim=1), f"{backbone.meta.name} text tower"
    import open_clip

    model_name, _, pretrained = enc.removeprefix("open_clip:").partition("/")
    model = open_clip.create_model(model_name, pretrained=pretrained or None).eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    with torch.no_grad():
        emb = model.encode_text(tokenizer(prompts))
    return torch.nn.functional.normalize(
        emb.float(), dim=1
    ), f"open_clip {model_name} ({pretrained or 'random init'})"

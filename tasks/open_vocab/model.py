"""ViLD-text's heads on the shared R-CNN: a box predictor that classifies regions by cosine similarity
to fixed text embeddings (novel categories masked out while training), and a class-agnostic mask
predictor, so boxes and masks transfer to categories never trained on."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor


class TextPredictor(nn.Module):
    """The ViLD-text box predictor: (class logits over background + K, class-agnostic box deltas)."""

    def __init__(self, in_channels: int, text: torch.Tensor, base: torch.Tensor, temperature: float) -> None:
        super().__init__()
        self.project = nn.Linear(in_channels, text.shape[1])
        self.background = nn.Parameter(torch.randn(text.shape[1]) * 0.02)
        self.bbox_pred = nn.Linear(in_channels, 4)
        self.register_buffer("text", torch.nn.functional.normalize(text, dim=1))
        self.register_buffer("base", base.bool())
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        region = torch.nn.functional.normalize(self.project(x), dim=1)
        classes = torch.cat([torch.nn.functional.normalize(self.background, dim=0)[None], self.text])
        logits = region @ classes.T / self.temperature
        if self.training:  # novel categories are not in the training vocabulary
            novel = torch.cat([self.base.new_zeros(1), ~self.base])
            logits = logits.masked_fill(novel[None], -1e4)
        deltas = self.bbox_pred(x).repeat(1, classes.shape[0])
        return logits, deltas


class AgnosticMask(nn.Module):
    """Mask R-CNN's predictor with one mask channel shared by every one of `num_outputs` classes."""

    def __init__(self, predictor: MaskRCNNPredictor, num_outputs: int) -> None:
        super().__init__()
        self.inner = MaskRCNNPredictor(predictor.conv5_mask.in_channels, predictor.conv5_mask.out_channels, 1)
        self.num_outputs = num_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return out.expand(-1, self.num_outputs, -1, -1)


def text_predictor(
    in_channels: int, text: torch.Tensor, base: torch.Tensor, temperature: float
) -> TextPredictor:
    """The ViLD-text box predictor for `text` ([K, D] category embeddings; `base` marks the trained ones)."""
    return TextPredictor(in_channels, text, base, temperature)


def class_agnostic_masks(predictor: MaskRCNNPredictor, num_outputs: int) -> AgnosticMask:
    """Mask R-CNN's predictor with one mask channel shared by every category."""
    return AgnosticMask(predictor, num_outputs)


def with_text_classifier(
    model: nn.Module, text: torch.Tensor, base: torch.Tensor, temperature: float, masks: bool
) -> nn.Module:
    """`model` (the shared R-CNN) with ViLD-text's box predictor and, with masks, class-agnostic masks."""
    heads = model.roi_heads
    heads.box_predictor = text_predictor(heads.box_head.fc7.out_features, text, base, temperature)
    if masks:
        heads.mask_predictor = class_agnostic_masks(heads.mask_predictor, len(text) + 1)
    return model

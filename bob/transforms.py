"""The eval transform a backbone's `DataConfig` describes, built with torchvision transforms.

Same recipe as timm's eval transform: resize to `floor(input_size / crop_pct)` (shorter side for
`center`, both sides for `squash`), center-crop `input_size`, to tensor, normalise.
"""

from __future__ import annotations

import math
from typing import Any

from bob.backbones.meta import DataConfig
from bob.errors import UsageError


def eval_transform(cfg: DataConfig) -> Any:
    from torchvision import transforms as T

    try:
        interpolation = T.InterpolationMode(cfg.interpolation)
    except ValueError as err:
        raise UsageError(
            f"Unknown interpolation '{cfg.interpolation}' in the backbone's data config."
        ) from err
    scale = math.floor(cfg.input_size / cfg.crop_pct)
    if cfg.crop_mode == "center":
        resize = T.Resize(scale, interpolation=interpolation)
    elif cfg.crop_mode == "squash":
        resize = T.Resize((scale, scale), interpolation=interpolation)
    else:
        raise UsageError(
            f"crop_mode '{cfg.crop_mode}' is not supported; bob implements 'center' and 'squash'."
        )
    return T.Compose(
        [
            resize,
            T.CenterCrop(cfg.input_size),
            T.ToTensor(),
            T.Normalize(mean=list(cfg.mean), std=list(cfg.std)),
        ]
    )

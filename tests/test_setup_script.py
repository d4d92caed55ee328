"""scripts/setup.sh: safe to source (no shell options, directory or arguments leak), fails fast as a script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="setup.sh is a bash script")

# Prints the shell state a user would notice: options, directory, positional arguments, status.
_STATE = 'echo "opts=$(set -o | awk \'$2 == "on" {print $1}\' | sort | tr "\\n" ,)"; echo "cwd=$PWD"; echo "args=$*"'


def _venv(tmp_path: Path, body: str) -> Path:
    """A venv folder whose python is a wrapper script, so setup.sh runs against it without installing."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f"#!/bin/sh\n{body}\n")
    python.chmod(0o755)
    return venv


def _bash(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("BOB_", "PYTHON"))}
    full.update(env)
    return subprocess.run(
        [BASH, "-c", script, "bash", "one", "two"],
        cwd=tmp_path,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _state(stdout: str, marker: str) -> dict[str, str]:
    block = stdout.split(marker, 1)[1].strip().splitlines()
    return dict(line.split("=", 1) for line in block[:4])


def test_sourcing_keeps_options_directory_and_arguments(tmp_path: Path) -> None:
    venv = _venv(tmp_path, f'exec "{sys.executable}" "$@"')
    script = (
        f"echo BEFORE; {_STATE}; echo status=0; "
        f'source "{SETUP}"; rc=$?; '
        f"echo AFTER; {_STATE}; echo status=$rc; "
        'echo "path=$PATH"; echo "weights=${BOB_WEIGHTS_PATH:-}"; '
        "declare -F | grep -c _bob_setup || true; set | grep -c '^_bob_setup' || true"
    )
    out = _bash(script, tmp_path, BOB_SETUP_DRY_RUN="1", BOB_VENV=str(venv))
    assert out.returncode == 0, out.stderr
    before, after = _state(out.stdout, "BEFORE"), _state(out.stdout, "AFTER")
    assert after["status"] == "0", out.stderr
    assert after["opts"] == before["opts"]
    assert (
        "errexit" not in after["opts"] and "nounset" not in after["opts"] and "pipefail" not in after["opts"]
    )
    assert after["cwd"] == before["cwd"] == str(tmp_path)
    assert after["args"] == before["args"] == "one two"
    # What sourcing is for: the venv on PATH, the weights mirror on BOB_WEIGHTS_PATH.
    tail = out.stdout.split("AFTER", 1)[1]
    assert f"path={venv}/bin:" in tail
    weights = tail.split("weights=", 1)[1].splitlines()[0]
    assert weights and Path(weights).is_dir()
    # No private helpers or variables are left behind in the caller's shell.
    assert tail.strip().splitlines()[-2:] == ["0", "0"]
    # The dry run printed its install steps instead of running them.
    assert "dry run, would run:" in out.stderr and "pip" in out.stderr
    assert not (venv / ".bob-setup-stamp").exists()


def test_sourcing_with_a_failing_step_returns_its_status(tmp_path: Path) -> None:
    """An interactive shell survives a failed setup: it gets the status back, options unchanged."""
    script = f'echo BEFORE; {_STATE}; echo status=0; source "{SETUP}"; rc=$?; echo AFTER; {_STATE}; echo status=$rc'
    out = _bash(script, tmp_path, PYTHON=str(tmp_path / "no-python"))
    assert out.returncode == 0
    after = _state(out.stdout, "AFTER")
    assert after["status"] == "2"
    assert after["opts"] == _state(out.stdout, "BEFORE")["opts"]
    assert after["cwd"] == str(tmp_path)
    assert "no-python" in out.stderr and "install Python 3.10+" in out.stderr


def test_running_as_a_script_fails_fast(tmp_path: Path) -> None:
    """A failing install step stops the script: later steps never run, the status is not 0."""
    venv = _venv(tmp_path, "exit 7")
    out = subprocess.run(
        [BASH, str(SETUP)],
        cwd=tmp_path,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("BOB_")}, "BOB_VENV": str(venv)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 7
    assert "installing torch" in out.stderr
    assert "installing bob and its dev tools" not in out.stderr
    assert not (venv / ".bob-setup-stamp").exists()


def test_running_as_a_script_rejects_a_missing_python(tmp_path: Path) -> None:
    out = _bash(f'bash "{SETUP}"', tmp_path, PYTHON=str(tmp_path / "no-python"))
    assert out.returncode == 2
    assert "set PYTHON=" in out.stderr

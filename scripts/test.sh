#!/usr/bin/env bash
# Set everything up, then lint and run the test suite. Extra arguments go to pytest
# (e.g. `bash scripts/test.sh -m slow` for the slow tests only).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
say "ruff"
ruff check .
ruff format --check .
say "pytest"
python -m pytest "$@"

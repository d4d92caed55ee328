#!/usr/bin/env bash
# Set everything up, then lint and run the whole test suite, slow tests included (about 5 minutes
# on 2 cores). Arguments replace that selection and go to pytest: `bash scripts/test.sh -k cache`
# (plain `pytest` skips the slow tests).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
say "ruff"
ruff check .
ruff format --check .
say "pytest"
# The leaderboard browser test fails here, rather than skips, when Chromium is missing.
export BOB_REQUIRE_BROWSER=1
if [ "$#" -eq 0 ]; then set -- -m "slow or not slow"; fi
python -m pytest "$@"

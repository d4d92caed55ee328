#!/usr/bin/env bash
# Set everything up, then lint and run the test suite, slow tests included (about 15 minutes on
# 2 cores). Only the tests marked `long` (minutes-long training checks) are left out;
# `bash scripts/test.sh -m long` runs them. Arguments replace that selection and go to pytest:
# `bash scripts/test.sh -k cache` (plain `pytest` skips the slow and the long tests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."  # results and tests live in the repository
source scripts/setup.sh
# The leaderboard's browser test drives the system Chromium through playwright's executable_path,
# so no browser download is needed; a missing Chromium fails that test here (BOB_REQUIRE_BROWSER).
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && [ -z "${BOB_CHROMIUM:-}" ]; then
    if command -v apt-get >/dev/null; then
        say "installing chromium (apt) for the leaderboard's browser test"
        { as_root apt-get update -qq && as_root apt-get install -y -qq chromium >/dev/null; } ||
            say "could not install chromium; install it yourself or set BOB_CHROMIUM=/path/to/chrome"
    else
        say "no chromium and no apt-get: install Chromium or set BOB_CHROMIUM=/path/to/chrome"
    fi
fi

say "ruff"
ruff check .
ruff format --check .
say "pytest"
# The leaderboard browser test fails here, rather than skips, when Chromium is missing.
export BOB_REQUIRE_BROWSER=1
if [ "$#" -eq 0 ]; then set -- -m "not long"; fi
python -m pytest "$@"

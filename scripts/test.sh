#!/usr/bin/env bash
# README command 2: installs what is missing, builds everything and runs the
# whole test suite with ctest (C++ unit and end-to-end tests and the Python
# integration tests, which ctest runs as one more test). Output ends with
# ctest's summary line.
#
#   scripts/test.sh [ctest args...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
"$QUANTD_ROOT/scripts/install-deps.sh"
"$QUANTD_ROOT/scripts/build.sh"
cd "$QUANTD_BUILD"
exec ctest --output-on-failure -j"$QUANTD_JOBS" --timeout 900 "$@"

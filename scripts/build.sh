#!/usr/bin/env bash
# Configures and builds quantd into $QUANTD_BUILD (default: build/).
#   scripts/build.sh [cmake -D options...]
# CC/CXX pick the compiler of a new build folder (clang for fuzzing).
# Uses ccache when present, so a rebuild of a fresh clone on the same machine
# is quick.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
cmake -S "$QUANTD_ROOT" -B "$QUANTD_BUILD" -G Ninja \
  -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-RelWithDebInfo}" \
  -DQUANTD_PYTHON="$QUANTD_VENV/bin/python" \
  "${launcher[@]}" "$@" >/dev/null
# QUANTD_TARGETS (space-separated) limits what is built; default: all.
# shellcheck disable=SC2086
cmake --build "$QUANTD_BUILD" -j"$QUANTD_JOBS" ${QUANTD_TARGETS:+--target $QUANTD_TARGETS}

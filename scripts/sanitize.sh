#!/usr/bin/env bash
# Builds with sanitizers into build-<name>/ and runs the whole suite there
# (the Python tests then drive the instrumented binaries too).
#   scripts/sanitize.sh               # AddressSanitizer + UndefinedBehaviorSanitizer
#   scripts/sanitize.sh thread        # ThreadSanitizer
#   scripts/sanitize.sh SAN [ctest args...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
SAN="${1:-address;undefined}"
shift || true
NAME="$(echo "$SAN" | tr ';' '-')"
"$QUANTD_ROOT/scripts/install-deps.sh"
QUANTD_BUILD="$QUANTD_ROOT/build-$NAME" "$QUANTD_ROOT/scripts/build.sh" \
  -DQUANTD_SANITIZE="$SAN" -DQUANTD_BUILD_BENCH=OFF
cd "$QUANTD_ROOT/build-$NAME"
ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" \
LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$QUANTD_ROOT/tests/lsan.supp}" \
UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}" \
  exec ctest --output-on-failure -j"$QUANTD_JOBS" --timeout 1800 "$@"

#!/usr/bin/env bash
# README command 2: installs what is missing, builds everything, runs a short
# fuzzing session, the suite under ASan+UBSan and the pool/budget tests under
# TSan, then the whole test suite with ctest (C++ unit and
# end-to-end tests, the Python integration tests, the deploy checks: the
# dashboard against a real Prometheus, the Kubernetes manifests and the
# container image). Output ends with ctest's summary line.
#
#   scripts/test.sh [ctest args...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
"$QUANTD_ROOT/scripts/install-deps.sh"
"$QUANTD_ROOT/scripts/build.sh"
# A short libFuzzer run over the request decoding and assembly path
# (scripts/fuzz.sh; longer runs by hand). Before ctest, so ctest's summary
# is the last line.
"$QUANTD_ROOT/scripts/fuzz.sh" "${QUANTD_FUZZ_SECONDS:-30}"
# The suite under AddressSanitizer + UndefinedBehaviorSanitizer (the deploy
# checks, which test packaging rather than code, run once, below).
# QUANTD_TEST_SANITIZE=0 skips it for a quick local run.
if [[ "${QUANTD_TEST_SANITIZE:-1}" != 0 ]]; then
  echo "test: the suite under ASan+UBSan"
  "$QUANTD_ROOT/scripts/sanitize.sh" "address;undefined" -E '^deploy_' \
    >"$QUANTD_ROOT/build-address-undefined.log" 2>&1 || {
    tail -80 "$QUANTD_ROOT/build-address-undefined.log"
    echo "test: FAILED under ASan+UBSan (log: build-address-undefined.log)" >&2
    exit 1
  }
  tail -3 "$QUANTD_ROOT/build-address-undefined.log"
  # The job queue and the memory budget (the server's shared state between
  # reactors and workers) under ThreadSanitizer.
  echo "test: the worker pool and memory budget tests under TSan"
  QUANTD_TARGETS=quantd_server_tests "$QUANTD_ROOT/scripts/sanitize.sh" thread \
    -R '^server\.(WorkerPool|MemoryBudget)' \
    >"$QUANTD_ROOT/build-thread.log" 2>&1 || {
    tail -80 "$QUANTD_ROOT/build-thread.log"
    echo "test: FAILED under TSan (log: build-thread.log)" >&2
    exit 1
  }
  tail -3 "$QUANTD_ROOT/build-thread.log"
fi
cd "$QUANTD_BUILD"
exec ctest --output-on-failure -j"$QUANTD_JOBS" --timeout 900 "$@"

#!/usr/bin/env bash
# Fuzzes the request decoding and assembly path with libFuzzer (clang,
# ASan+UBSan) for SECONDS (default 30), then prints the run's statistics.
# The corpus lives in build-fuzz/corpus and grows across runs.
#   scripts/fuzz.sh [SECONDS] [extra libFuzzer flags...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
SECONDS_TO_RUN="${1:-30}"
shift || true
FUZZ_BUILD="$QUANTD_ROOT/build-fuzz"
CC=clang CXX=clang++ QUANTD_BUILD="$FUZZ_BUILD" QUANTD_TARGETS=assembler_fuzzer \
  "$QUANTD_ROOT/scripts/build.sh" -DQUANTD_FUZZ=ON -DQUANTD_BUILD_CLIENT=OFF \
  -DQUANTD_BUILD_BENCH=OFF >/dev/null
mkdir -p "$FUZZ_BUILD/corpus" "$FUZZ_BUILD/crashes"
echo "fuzz: assembler_fuzzer for ${SECONDS_TO_RUN}s"
# -print_final_stats: executions and coverage at the end; any crash, leak or
# sanitizer report makes the run (and this script) fail, with the input
# saved under build-fuzz/crashes.
LOG="$FUZZ_BUILD/last-run.log"
rc=0
"$FUZZ_BUILD/tests/fuzz/assembler_fuzzer" "$FUZZ_BUILD/corpus" \
  -max_total_time="$SECONDS_TO_RUN" -max_len=4096 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$FUZZ_BUILD/crashes/" "$@" \
  >"$LOG" 2>&1 || rc=$?
grep -E "^stat::|DONE|SUMMARY|==[0-9]+==ERROR|Test unit written" "$LOG" || true
if ((rc != 0)); then
  echo "fuzz: FAILED (exit $rc); full log: $LOG" >&2
  tail -60 "$LOG" >&2
fi
exit "$rc"

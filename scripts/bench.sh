#!/usr/bin/env bash
# Builds and runs the benchmarks (not part of the test suite): kernel
# throughput on one core, then client -> server over loopback.
#   scripts/bench.sh [--gb=1.0] [--streams=2]   (flags go to the e2e bench)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
"$QUANTD_ROOT/scripts/install-deps.sh"
"$QUANTD_ROOT/scripts/build.sh"
echo "== kernels (one core) =="
OMP_NUM_THREADS=1 taskset -c 0 "$QUANTD_BUILD/bench/quantd_kernels_bench" \
  --benchmark_min_time=0.3
echo "== end to end (loopback gRPC) =="
"$QUANTD_BUILD/bench/quantd_e2e_bench" "$@"

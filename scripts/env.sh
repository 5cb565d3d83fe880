# Sourced by the scripts: where things are. Override any of these in the
# environment.
QUANTD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUANTD_VENV="${QUANTD_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/quantd/venv}"
QUANTD_BUILD="${QUANTD_BUILD:-$QUANTD_ROOT/build}"
QUANTD_JOBS="${QUANTD_JOBS:-$(nproc)}"
export QUANTD_ROOT QUANTD_VENV QUANTD_BUILD QUANTD_JOBS

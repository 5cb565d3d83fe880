# quantd container image: build on Debian bookworm, run on bookworm-slim as a
# non-root user. Both stages install their packages with the project's own
# scripts/install-deps.sh, the one list of dependencies: the build stage what
# a build and the C++ unit tests need (it runs them; the end-to-end, Python
# and deploy checks run outside, on the same sources, beside the image's own
# probe), the runtime stage only the shared libraries the binaries load.
#
#   docker build -t quantd .   (or: buildah bud -t quantd .)
#   docker run -p 50051:50051 -p 9090:9090 quantd
#   deploy/check-image         (builds, runs and checks it with buildah)
ARG DEBIAN_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/requirements.txt scripts/
RUN scripts/install-deps.sh --build-only && rm -rf /var/lib/apt/lists/*
COPY . .
ARG QUANTD_GIT_REV=unknown
# RelWithDebInfo (-O2) as scripts/build.sh: GCC 12 at -O3 reports false
# -Wrestrict positives in std::string code under -Werror. The installed
# binaries are stripped.
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DQUANTD_BUILD_BENCH=OFF -DQUANTD_GIT_REV="${QUANTD_GIT_REV}" \
 && cmake --build /build -j"$(nproc)" \
 && ctest --test-dir /build --output-on-failure -j"$(nproc)" \
      -E '^(e2e\.|python_|deploy_)' \
 && install -s -D -m 0755 /build/server/quantd /out/usr/local/bin/quantd \
 && install -s -D -m 0755 /build/client/quantctl /out/usr/local/bin/quantctl

FROM ${RUNTIME_IMAGE}
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN /tmp/install-deps.sh --runtime && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh
COPY --from=build /out/ /
ARG QUANTD_GIT_REV=unknown
LABEL org.opencontainers.image.title="quantd" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.description="Quantization as a service: a gRPC server that quantizes model weight tensors" \
      org.opencontainers.image.revision="${QUANTD_GIT_REV}"
USER 65532:65532
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/quantd"]
CMD ["--listen=0.0.0.0:50051", "--metrics_listen=0.0.0.0:9090"]

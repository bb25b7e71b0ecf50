# keygate container image.
#
#   docker build -t keygate .                       # builds from source (stage "build")
#   podman build --build-arg BIN_STAGE=prebuilt .   # packs target/release/keygate built on the host
#
# The runtime stage runs as a non-root numeric user, needs no shell, and is meant for
# a read-only root filesystem: config, keys and the state/log folders are volumes.
# Liveness/readiness are the metrics listener's /healthz and /readyz (no HEALTHCHECK:
# Kubernetes probes do that job).

# Base images, pinned to exact tags: the Rust release this repository is tested with,
# and distroless's Debian 12 "cc" image (glibc, libgcc, CA certificates; no shell).
# Tags can be re-pushed; for reproducible builds pin digests as well, e.g.
#   --build-arg RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:<digest>
# (the digest is not recorded here: this repository is built and tested without
# access to a container registry, see deploy/build-image.sh).
ARG RUST_IMAGE=docker.io/library/rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BIN_STAGE=build
# For the OCI labels: deploy/build-image.sh passes the git revision and the time.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

FROM ${RUST_IMAGE} AS build
ARG REVISION
WORKDIR /src
# Dependencies first, in their own layer: they change far less often than src/.
COPY Cargo.toml Cargo.lock build.rs ./
# Cargo.toml names a bench target; a stub keeps the manifest valid (never built).
RUN mkdir src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/hot_paths.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/.fingerprint/keygate-* target/release/deps/keygate-* target/release/deps/libkeygate-*
COPY src ./src
# `keygate --version` shows the revision (there is no .git in the build context).
RUN KEYGATE_REVISION="${REVISION}" cargo build --release --locked \
    && install -D -m 0755 target/release/keygate /out/keygate

# A binary built outside the image (see deploy/build-image.sh).
FROM scratch AS prebuilt
COPY target/release/keygate /out/keygate

FROM ${BIN_STAGE} AS bin

FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION
ARG REVISION
ARG CREATED
LABEL org.opencontainers.image.title="keygate" \
      org.opencontainers.image.description="An API-key gateway: a strict reverse-proxy sidecar that adds named, per-category API keys, rate limits and request logs to an unmodified backend." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.documentation="docs/deploy.md in the source repository"
COPY --from=bin /out/keygate /usr/local/bin/keygate
USER 65532:65532
WORKDIR /var/lib/keygate
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["--config", "/etc/keygate/config.yaml", "serve"]

# keygate container image.
#
#   docker build -t keygate .                       # builds from source (stage "build")
#   podman build --build-arg BIN_STAGE=prebuilt .   # packs target/release/keygate built on the host
#
# The runtime stage runs as a non-root numeric user, needs no shell, and is meant for
# a read-only root filesystem: config, keys and the state/log folders are volumes.
# Liveness/readiness are the metrics listener's /healthz and /readyz (no HEALTHCHECK:
# Kubernetes probes do that job).

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BIN_STAGE=build

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Dependencies first, in their own layer: they change far less often than src/.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/.fingerprint/keygate-* target/release/deps/keygate-* target/release/deps/libkeygate-*
COPY src ./src
RUN cargo build --release --locked \
    && install -D -m 0755 target/release/keygate /out/keygate

# A binary built outside the image (see deploy/build-image.sh).
FROM scratch AS prebuilt
COPY target/release/keygate /out/keygate

FROM ${BIN_STAGE} AS bin

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=bin /out/keygate /usr/local/bin/keygate
USER 65532:65532
WORKDIR /var/lib/keygate
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["--config", "/etc/keygate/config.yaml", "serve"]

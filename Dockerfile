# syntax=docker/dockerfile:1
# integration-hub: a Rust binary on distroless (glibc, CA certificates, no shell), non-root.
#
# Production (a real registry; the binary is compiled in the `build` stage):
#   docker build -t ghcr.io/example/integration-hub:0.1.0 .
#   podman build -t ghcr.io/example/integration-hub:0.1.0 .
# No protoc is needed: build.rs compiles the protos with protox.
#
# The same runtime stage around a release binary built outside (what CI does, since no
# registry is reachable there): the build context is a directory holding only the binary,
# named `integration-hub`, and RUNTIME_BASE may name a locally made base image:
#   cargo build --release --locked --bin integration-hub
#   mkdir -p dist && cp target/release/integration-hub dist/
#   podman build -f Dockerfile --build-arg BINARY_FROM=context -t integration-hub:dev dist
# (.ci/image-check does this on a Debian base made with mmdebstrap.) The binary must be built
# for the runtime base's glibc (Debian 12 bookworm for distroless cc-debian12).

# Where the runtime stage takes the binary from: `build` (compile it here) or `context` (a
# prebuilt `integration-hub` at the root of the build context). Only the stage named here is
# built; BuildKit and buildah (podman) both skip the other.
ARG BINARY_FROM=build
# The runtime base: distroless cc (glibc, libgcc, CA certificates, user nonroot = 65532).
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and the target directory between builds; the binary is
# copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin integration-hub \
 && cp target/release/integration-hub /integration-hub

FROM scratch AS context
COPY integration-hub /integration-hub

FROM ${BINARY_FROM} AS binary

FROM ${RUNTIME_BASE} AS runtime
COPY --from=binary /integration-hub /integration-hub
# A writable working directory for the default SQLite data dir (./.integration-hub) outside
# Kubernetes; with a read-only root filesystem (the Helm chart, .ci/image-check) mount a volume
# or tmpfs at /home/nonroot/.integration-hub, or use PostgreSQL.
WORKDIR /home/nonroot
# Listen beyond loopback in a container (the binary's own default is 127.0.0.1:50051).
ENV INTEGRATION_HUB_LISTEN=0.0.0.0:50051
# Numeric, so Kubernetes' runAsNonRoot can verify it (65532 is distroless' `nonroot`).
USER 65532:65532
# gRPC (health, reflection, the API). Prometheus metrics use INTEGRATION_HUB_METRICS_LISTEN when set.
EXPOSE 50051
# SIGTERM drains: health NOT_SERVING, watch streams end with their cursor, exit within
# INTEGRATION_HUB_SHUTDOWN_DEADLINE_SECS (20 s by default; give the runtime's stop timeout more).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/integration-hub"]
CMD ["serve"]

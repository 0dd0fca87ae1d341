# syntax=docker/dockerfile:1
# integration-hub: a static-ish Rust binary on distroless (glibc, CA certificates, no shell).
#   docker build -t ghcr.io/example/integration-hub:0.1.0 .
# No protoc is needed: build.rs compiles the protos with protox.

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

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /integration-hub /integration-hub
# A writable working directory for the default SQLite data dir (./.integration-hub) outside
# Kubernetes; the Helm chart runs with a read-only root filesystem and PostgreSQL instead.
WORKDIR /home/nonroot
# Listen beyond loopback in a container (the binary's own default is 127.0.0.1:50051).
ENV INTEGRATION_HUB_LISTEN=0.0.0.0:50051
USER nonroot
# gRPC (health, reflection, the API). Prometheus metrics use INTEGRATION_HUB_METRICS_LISTEN when set.
EXPOSE 50051
ENTRYPOINT ["/integration-hub"]
CMD ["serve"]

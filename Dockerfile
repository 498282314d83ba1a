# syntax=docker/dockerfile:1
# vismig: a Rust binary (rustls, bundled SQLite; links only glibc) on a small Debian
# runtime with CA certificates, run as a non-root user. No secrets are baked in:
# passwords come from the environment (${VAR} in the config), e.g. a Kubernetes Secret.
# tests/dockerfile_build.py replays the build stage's commands (no Docker engine needed)
# and tests/run.sh lints this file with hadolint.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/vismig

FROM debian:bookworm-slim
# ca-certificates is left unpinned on purpose: the image must get Debian's current CA
# bundle (and its security updates), not a version frozen here.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 vismig \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/vismig --create-home vismig
COPY --from=build /src/target/release/vismig /usr/local/bin/vismig
LABEL org.opencontainers.image.title="vismig" \
      org.opencontainers.image.description="Migrates Temporal visibility records from the primary to the secondary visibility store" \
      org.opencontainers.image.licenses="MIT"
USER 10001:10001
WORKDIR /var/lib/vismig
# Metrics and live control (migration.metrics.listen must bind 0.0.0.0:9090 in a pod).
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/vismig"]
CMD ["--help"]

# syntax=docker/dockerfile:1
# vismig: a static-ish Rust binary (rustls, bundled SQLite; links only libc) on a small
# Debian runtime with CA certificates, run as a non-root user. No secrets are baked in:
# passwords come from the environment (${VAR} in the config), e.g. a Kubernetes Secret.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/vismig

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/vismig --create-home vismig
COPY --from=build /src/target/release/vismig /usr/local/bin/vismig
USER 10001
WORKDIR /var/lib/vismig
# Metrics and live control (migration.metrics.listen must bind 0.0.0.0:9090 in a pod).
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/vismig"]
CMD ["--help"]

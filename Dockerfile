# syntax=docker/dockerfile:1
# The service image, built in two stages: the release binary (and the round_trip example, for the compose
# file's demo) with the Rust toolchain, then a slim runtime image that holds only them.

FROM rust:1-bookworm AS build
WORKDIR /src
# The manifest names the benchmarks' files, so they are copied with the sources; nothing else is needed.
COPY Cargo.toml Cargo.lock build.rs ./
COPY crates crates
COPY src src
COPY benches benches
COPY examples examples
RUN cargo build --release --locked --bin anonymous-results --example round_trip \
 && cp target/release/anonymous-results target/release/examples/round_trip /usr/local/bin/

FROM debian:bookworm-slim AS runtime
# CA certificates for HTTPS object stores; a user of its own, whose home holds a local backend's data.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/anonymous-results anonymous-results
COPY --from=build /usr/local/bin/anonymous-results /usr/local/bin/anonymous-results
USER anonymous-results
WORKDIR /var/lib/anonymous-results
# gRPC, and the Prometheus metrics when metrics_listen is set.
EXPOSE 50051 9090
HEALTHCHECK --interval=5s --timeout=6s --start-period=10s --retries=5 \
  CMD ["anonymous-results", "health", "--config", "/etc/anonymous-results/config.toml"]
ENTRYPOINT ["anonymous-results"]
CMD ["serve", "--config", "/etc/anonymous-results/config.toml"]

# The compose file's demo: the runtime image plus the round_trip example.
FROM runtime AS demo
COPY --from=build /usr/local/bin/round_trip /usr/local/bin/round_trip
ENTRYPOINT ["round_trip"]

# Build in the Rust image, run in a slim one as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin esub

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home esub
COPY --from=build /src/target/release/esub /usr/local/bin/esub
USER esub
ENV ESUB_PORT=8090
EXPOSE 8090
HEALTHCHECK --interval=10s --timeout=2s CMD curl -fsS http://127.0.0.1:8090/ping || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/esub"]

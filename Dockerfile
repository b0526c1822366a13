# Build in the Rust image, run in a slim one as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
RUN cargo build --release --locked --bin esub

FROM debian:bookworm-slim
COPY --from=build /src/target/release/esub /usr/local/bin/esub
# A numeric uid that exists nowhere else: no home, no shell, nothing to own.
USER 10001:10001
ENV ESUB_PORT=8090
EXPOSE 8090
# No curl in the image: bash's /dev/tcp asks /ping and expects the body OK.
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${ESUB_PORT:-8090} && printf 'GET /ping HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '^OK' <&3"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/esub"]

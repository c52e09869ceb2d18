# syntax=docker/dockerfile:1
# The chatroom node: built with cargo-leptos (server binary + wasm site), run as an
# unprivileged user on a slim Debian. Configure it with CHATROOM_* variables and
# REDIS_URL (see README.md, Configuration).

FROM rust:1.95-trixie AS build
# npm brings binaryen's wasm-opt 132 (Debian's older binaryen breaks hydration).
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*
RUN rustup target add wasm32-unknown-unknown \
    && cargo install cargo-leptos@0.3.10 --locked \
    && cargo install wasm-bindgen-cli --version 0.2.130
WORKDIR /src
COPY end2end/package.json end2end/package-lock.json end2end/
RUN cd end2end && npm ci --ignore-scripts
COPY . .
ENV PATH=/src/end2end/node_modules/.bin:$PATH
RUN cargo leptos build --release

FROM debian:trixie-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home chatroom
WORKDIR /app
COPY --from=build /src/target/release/server /app/server
COPY --from=build /src/target/site /app/site
ENV CHATROOM_ADDR=0.0.0.0:3000 \
    CHATROOM_SITE_ROOT=/app/site \
    CHATROOM_LOG_FORMAT=json
USER chatroom
EXPOSE 3000
# Ready for traffic: not draining, Redis reachable.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
    CMD curl -fsS http://127.0.0.1:3000/readyz >/dev/null || exit 1
# SIGTERM drains the node (see README.md, Graceful drain); give it the drain bound.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/app/server"]

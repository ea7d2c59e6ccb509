# syntax=docker/dockerfile:1
# Build: docker build -t cvnotify .
# Run:   docker run -e CVNOTIFY__QUEUE__NAME=... -e CVNOTIFY__QUEUE__ACCOUNT=... cvnotify

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && cp target/release/cvnotify /cvnotify

# debian-slim rather than distroless: shell hooks need /bin/sh and the tools
# users call from them.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/cvnotify --create-home cvnotify
COPY --from=build /cvnotify /usr/local/bin/cvnotify
COPY config/container.toml /etc/cvnotify/cvnotify.toml
ENV CVNOTIFY_CONFIG=/etc/cvnotify/cvnotify.toml
USER cvnotify
WORKDIR /var/lib/cvnotify
STOPSIGNAL SIGTERM
ENTRYPOINT ["cvnotify", "run"]

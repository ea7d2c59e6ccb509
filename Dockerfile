# syntax=docker/dockerfile:1
# cvnotify container image.
#   docker build -t cvnotify:0.1.0 .
#   docker run --rm -e CVNOTIFY__QUEUE__NAME=... -e CVNOTIFY__QUEUE__ACCOUNT=... cvnotify:0.1.0
# Mount a full configuration at /etc/cvnotify/cvnotify.toml to replace the
# built-in one. cvnotify runs as PID 1 without an init: it reaps what shell
# hooks leave behind and stops on SIGTERM within shutdown_timeout.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && cp target/release/cvnotify /cvnotify

# debian-slim rather than distroless: shell hooks need /bin/sh and the tools
# users call from them.
FROM debian:bookworm-slim
# ca-certificates is left unpinned on purpose: the image should get the
# current trust store and its security updates at every build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cvnotify \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/cvnotify --create-home cvnotify
COPY --from=build /cvnotify /usr/local/bin/cvnotify
COPY config/container.toml /etc/cvnotify/cvnotify.toml
ENV CVNOTIFY_CONFIG=/etc/cvnotify/cvnotify.toml
USER 10001:10001
WORKDIR /var/lib/cvnotify
EXPOSE 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["cvnotify", "run"]

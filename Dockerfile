# syntax=docker/dockerfile:1
# cvnotify container image.
#   docker build -t cvnotify:0.1.0 .
#   docker run --rm -e CVNOTIFY__QUEUE__NAME=... -e CVNOTIFY__QUEUE__ACCOUNT=... cvnotify:0.1.0
# Mount a full configuration at /etc/cvnotify/cvnotify.toml to replace the
# built-in one. cvnotify runs as PID 1 without an init: it reaps what shell
# hooks leave behind and stops on SIGTERM within shutdown_timeout.
# scripts/check-image builds this file and runs the image against Azurite.

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

# Everything of the image but its binary. debian-slim rather than
# distroless: shell hooks need /bin/sh and the tools users call from them.
FROM debian:bookworm-slim AS runtime
# ca-certificates is left unpinned on purpose: the image should get the
# current trust store and its security updates at every build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cvnotify \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/cvnotify --create-home cvnotify
COPY config/container.toml /etc/cvnotify/cvnotify.toml
ENV CVNOTIFY_CONFIG=/etc/cvnotify/cvnotify.toml
USER 10001:10001
WORKDIR /var/lib/cvnotify
EXPOSE 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["cvnotify", "run"]

# `--target prebuilt`: the runtime with a binary built outside, taken from
# prebuilt/cvnotify in the build context (built on Debian 12 or older). The
# quick form of scripts/check-image (in scripts/test) builds this: what it
# tests is the runtime (user, working directory, CA store, PID 1), with the
# binary the test run has just built, instead of a release build from
# scratch inside the image, which takes many minutes of a 2-core CI run.
# A target rather than a base image carrying the project's toolchain: only
# the binary differs, and builders skip the stages a target does not use.
FROM runtime AS prebuilt
COPY prebuilt/cvnotify /usr/local/bin/cvnotify

# The image: the runtime with the build stage's binary. Last, so that a
# plain `docker build .` makes it.
FROM runtime
COPY --from=build /cvnotify /usr/local/bin/cvnotify

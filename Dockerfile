# syntax=docker/dockerfile:1
# cvnotify container image.
#   docker build -t cvnotify:0.1.0 .
#   docker run --rm -e CVNOTIFY__QUEUE__NAME=... -e CVNOTIFY__QUEUE__ACCOUNT=... cvnotify:0.1.0
# Mount a full configuration at /etc/cvnotify/cvnotify.toml to replace the
# built-in one. cvnotify runs as PID 1 without an init: it reaps what shell
# hooks leave behind and stops on SIGTERM within shutdown_timeout.
# scripts/check-image builds this file and runs the image against Azurite.

# Where the runtime stage's binary comes from: `build` (the default)
# compiles it in the build stage; `prebuilt` takes prebuilt/cvnotify from
# the build context instead (--build-arg BINARY=prebuilt). The argument, and
# not a base image carrying the project's toolchain, because what differs
# between the two is only the binary: the quick form of scripts/check-image
# (in scripts/test) tests the runtime stage (user, working directory, CA
# store, PID 1) with the binary the test run has just built on a Debian 12
# host, instead of a release build from scratch inside the build, which
# takes minutes of a 2-core CI run. Builders skip the stage not chosen
# (BuildKit, buildah/podman).
ARG BINARY=build

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

FROM scratch AS prebuilt
COPY prebuilt/cvnotify /cvnotify

FROM ${BINARY} AS binary

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
COPY --from=binary /cvnotify /usr/local/bin/cvnotify
COPY config/container.toml /etc/cvnotify/cvnotify.toml
ENV CVNOTIFY_CONFIG=/etc/cvnotify/cvnotify.toml
USER 10001:10001
WORKDIR /var/lib/cvnotify
EXPOSE 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["cvnotify", "run"]

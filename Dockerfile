# Runnel server image.
#
#   docker build -t runnel .                      # or: docker-compose build
#   docker build --build-arg CARGO_JOBS=2 -t runnel .   # limit build parallelism
#   docker run -p 6875:6875 -v runnel-data:/data \
#       -e RUNNEL_KAFKA_BOOTSTRAP_SERVERS=broker:9092 runnel
#
# Extra `runnel serve` flags can be appended: docker run runnel --checkpoint-interval-ms 500

# ---- build stage ----------------------------------------------------------------------------
FROM rust:1-bookworm AS builder

# RocksDB's bindings need clang/libclang (bindgen); RocksDB and rdkafka's bundled librdkafka
# are compiled from source (zlib for its `libz` feature, OpenSSL headers found with pkg-config
# for its `ssl` feature: Kafka TLS and SASL SCRAM; cmake so enabling rdkafka's cmake-build
# later needs no change here).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        clang libclang-dev build-essential pkg-config cmake zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# Empty = cargo's default (one job per CPU).
ARG CARGO_JOBS=
RUN cargo build --release --locked -p runnel ${CARGO_JOBS:+-j "$CARGO_JOBS"} \
 && install -m 0755 target/release/runnel /usr/local/bin/runnel

# ---- runtime stage --------------------------------------------------------------------------
FROM debian:bookworm-slim

# libssl3 for librdkafka's TLS; ca-certificates: the CAs a Kafka TLS connection trusts when the
# stream gives no ssl.ca.location.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/*

# Run as an unprivileged user; /data is created owned by it, so a fresh named volume is too.
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin runnel \
 && mkdir -p /data \
 && chown runnel:runnel /data

COPY --from=builder /usr/local/bin/runnel /usr/local/bin/runnel

USER runnel
ENV RUNNEL_LOG=info
VOLUME /data
EXPOSE 6875

# The default Kafka broker for `WITH (connector = 'kafka', ...)` comes from the environment:
# RUNNEL_KAFKA_BOOTSTRAP_SERVERS=host:port. SIGTERM (docker stop) flushes and checkpoints.
# Listening on every interface needs a superuser password: RUNNEL_SUPERUSER_PASSWORD, or
# RUNNEL_SUPERUSER_PASSWORD_FILE naming a mounted secret (the server refuses to start without).
ENTRYPOINT ["runnel", "serve", "--listen", "0.0.0.0:6875", "--data-dir", "/data"]

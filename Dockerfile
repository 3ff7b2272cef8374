# syntax=docker/dockerfile:1
# Build: the release profile plus profile-guided optimization (scripts/build-pgo.sh: an
# instrumented build, a training run on loopback, the optimized build; BENCHMARKS.md).
FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3=3.11.* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY vendor ./vendor
COPY src ./src
COPY tests ./tests
COPY benches ./benches
COPY scripts ./scripts
RUN scripts/build-pgo.sh

# Runtime: slim, non-root, config and data as volumes.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates=20230311* \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/portcullis --create-home portcullis
COPY --from=builder /src/target/pgo/portcullis /usr/local/bin/portcullis
COPY config/portcullis.example.yaml /etc/portcullis/portcullis.example.yaml
USER 10001:10001
WORKDIR /var/lib/portcullis
ENV PORTCULLIS_CONFIG=/etc/portcullis/portcullis.yaml
VOLUME ["/etc/portcullis", "/var/lib/portcullis"]
EXPOSE 8080 8443 9091
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["portcullis", "probe", "--url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["portcullis"]
CMD ["serve"]

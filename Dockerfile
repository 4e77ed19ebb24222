# syntax=docker/dockerfile:1
# Build: docker build -t secure-qdrant-operator:dev .   (needs BuildKit, the default since Docker 23)
FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
# Everything cargo reads to build the operator: the manifest names its benches, so they must be
# present too (tests/dockerfile.rs rebuilds this context and runs `cargo check` on it).
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
# Downloaded crates and compiled dependencies live in BuildKit cache mounts, kept between
# builds, so a source change does not rebuild them. The cache is not part of the image: the
# binary is copied out of the cache-mounted target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin secure-qdrant-operator \
    && cp target/release/secure-qdrant-operator /secure-qdrant-operator

# Runtime: glibc and CA roots only; no shell, no package manager; runs as non-root (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /secure-qdrant-operator /usr/local/bin/secure-qdrant-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/secure-qdrant-operator"]
CMD ["run"]

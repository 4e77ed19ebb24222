# syntax=docker/dockerfile:1
# Build: docker build -t secure-qdrant-operator:dev .   (needs BuildKit, the default since Docker 23)
# Release builds (.github/workflows/release.yml) pass VERSION and REVISION for the OCI labels.
FROM docker.io/library/rust:1.95-slim-bookworm AS build
# cargo-auditable embeds the binary's dependency list (crate names, versions, sources) in a
# section of the binary, so scanners (trivy, grype, `rust-audit-info`) can read what is inside.
# Pinned, built with its own Cargo.lock; tests/tools/build-tools.sh pins the same version.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo install --locked cargo-auditable@0.7.7
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
    cargo auditable build --locked --release --bin secure-qdrant-operator \
    && cp target/release/secure-qdrant-operator /secure-qdrant-operator

# Runtime: glibc and CA roots only; no shell, no package manager; runs as non-root (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
# The release tag without its "v" and the commit it was built from.
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="secure-qdrant-operator" \
      org.opencontainers.image.source="https://github.com/secure-qdrant-operator/secure-qdrant-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /secure-qdrant-operator /usr/local/bin/secure-qdrant-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/secure-qdrant-operator"]
CMD ["run"]

# syntax=docker/dockerfile:1
# Build: docker build -t secure-qdrant-operator:dev .
FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY tests/fake-apiserver/Cargo.toml tests/fake-apiserver/Cargo.toml
RUN mkdir -p src tests/fake-apiserver/src \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > tests/fake-apiserver/src/main.rs && touch tests/fake-apiserver/src/lib.rs \
    && cargo build --locked --release --bin secure-qdrant-operator \
    && rm -rf src tests
COPY src src
RUN touch src/main.rs src/lib.rs \
    && cargo build --locked --release --bin secure-qdrant-operator \
    && cp target/release/secure-qdrant-operator /secure-qdrant-operator

# Runtime: glibc and CA roots only; no shell, no package manager; runs as non-root (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /secure-qdrant-operator /usr/local/bin/secure-qdrant-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/secure-qdrant-operator"]
CMD ["run"]

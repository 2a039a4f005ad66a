# The operator image for machines with Docker (the local test cluster builds the same image
# without a daemon, see e2e/cluster/images.sh). Build from the repository root:
#   docker build -f e2e/image/operator.Dockerfile -t sluice.local/sluice-operator:dev .
# The operator does not link RocksDB, so its build needs no libclang.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p sluice-operator --bin sluice-operator \
 && strip --strip-debug target/release/sluice-operator

FROM debian:bookworm-slim
COPY --from=build /src/target/release/sluice-operator /usr/local/bin/sluice-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sluice-operator"]

# One image holds every binary (api, worker, stripe-sim, payctl); compose.yaml picks the command.
# `--locked`: exactly the dependency versions of Cargo.lock, as tested.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --locked --release --bin api --bin worker --bin stripe-sim --bin payctl

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/api /src/target/release/worker /src/target/release/stripe-sim /src/target/release/payctl /usr/local/bin/
# The healthchecks are the binaries' own `healthcheck` subcommands: no curl in the image.
USER nobody

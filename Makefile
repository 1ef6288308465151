# The two commands: `make run` (the service) and `make test` (every test).
.PHONY: run test lint fmt build chaos

run:
	bash scripts/run.sh

test:
	bash scripts/test.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

build:
	cargo build --release

# The full chaos run (docs/reliability.md): release binaries, thousands of payments, faults,
# worker kills, a Redis wipe and a Postgres restart. Needs a local Postgres it may restart.
chaos:
	cargo build --release --bins
	./target/release/chaos

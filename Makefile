# The two commands: `make run` (the service) and `make test` (every test).
.PHONY: run test lint fmt build chaos bench soak fuzz

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

# Throughput and latency against this machine's Postgres/Redis ceiling (release binaries, ~8
# minutes): writes bench/results.md and bench/results.svg. `bash scripts/bench.sh --quick` for a
# short check of the harness. Never part of `make test`.
bench:
	bash scripts/bench.sh

# 30 minutes at 200 payments/s (release binaries): what grows (memory, Redis, connections, the
# ready queue, Postgres bytes per payment); writes bench/soak.md. Never part of `make test`.
# `bash scripts/bench.sh soak --minutes 2` for a short check.
soak:
	bash scripts/bench.sh soak

# schemathesis (from PyPI, into target/fuzz-venv) against the api's own /openapi.json, on a stack
# of its own (database payments_fuzz, own Redis prefix): fails on any 5xx or crash.
fuzz:
	bash scripts/fuzz.sh

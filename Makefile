# The two commands: `make run` (the service) and `make test` (every test).
.PHONY: run test lint fmt build

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

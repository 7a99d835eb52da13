# rack-secrets: `make demo` runs the main job on the local emulator; `make test` runs every test.
# Both set themselves up: .venv gets pinned moto, cargo-lambda and cfn-lint; cargo fetches crates.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

.PHONY: demo test lint integration lambda-tests log-hygiene fuzz-smoke one-tls-stack venv build \
	release bench fuzz clean

demo: venv
	scripts/with-moto.sh scripts/demo.sh

test: lint one-tls-stack integration lambda-tests log-hygiene
	@echo "make test: all passed"

venv:
	scripts/venv.sh

# The rewritten fixtures must be valid templates too. W2001 (unused parameter) is expected
# there: the parent stack still passes the Key and Settings that CONVOX_ENV_* used.
lint: venv
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	.venv/bin/cfn-lint template.yaml
	.venv/bin/cfn-lint --ignore-checks W2001 -- tests/fixtures/templates/*.expected.json

# Unit tests need no emulator; integration tests talk to moto through the real SDK. Their
# log lines and output are kept in target/test-logs for the log hygiene check.
integration: venv
	rm -rf target/test-logs && mkdir -p target/test-logs
	scripts/with-moto.sh cargo test --workspace 2>&1 | tee target/test-logs/cargo-test.out

# The binaries themselves, run by cargo lambda and invoked with the fixture events.
lambda-tests: venv
	mkdir -p target/test-logs
	FUNCTIONS_LOG=target/test-logs/functions.log scripts/with-moto.sh tests/lambda/functions.sh

# No secret value the tests wrote may appear in any log line or output they produced.
log-hygiene:
	scripts/check-log-hygiene.sh

one-tls-stack:
	scripts/check-one-tls-stack.sh

build:
	cargo build --workspace

# Release bootstraps in target/lambda/{function}/bootstrap. cargo-lambda links with the zig
# that its PyPI package brought into .venv, found through python3 on PATH.
release: venv
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/cargo-lambda lambda build --release \
		-p env-sync -p stack-inject -p app-cleanup

# Figures, not assertions: prints the table and rewrites BENCHMARKS.md. Not part of `make test`.
bench: release
	cargo build --release --quiet -p rack-secrets --bin envelope
	scripts/with-moto.sh .venv/bin/python scripts/bench.py

# Bounded fuzzing of the env parser, the envelope opener and the template rewriter, then
# cfn-lint on what the rewriter made of every template the fuzzer kept. FUZZ_SECONDS each.
fuzz: venv
	scripts/fuzz.sh

clean:
	cargo clean
	rm -rf .venv

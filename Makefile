# One entry point for every check; .ci/run calls these too.
CARGO ?= cargo

.PHONY: run test lint bench count soak deps contracts-check rules-check ui-check

## Run the node on embedded defaults with the hello-world service (no Docker, Redis or chain).
run:
	$(CARGO) build --release -p hello-world
	$(CARGO) run --release -p infernet-node -- --config examples/quickstart.json

## Install test dependencies (Docker included), check the contract artifacts, build the local
## images and every binary, run every test.
test: deps contracts-check rules-check ui-check
	bash scripts/build-images.sh
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

deps:
	bash scripts/install-test-deps.sh

contracts-check:
	cd contracts && node build.mjs --check

## The control interface's built files (ui/dist, embedded in the binaries) match their sources.
ui-check:
	cd ui && node build.mjs --check

## The shipped Prometheus alerting rules: valid, and their unit tests pass.
rules-check:
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts.test.yml

## Formatting and lints, warnings are errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Benchmarks: node streaming vs. direct service; the embedded store per streamed job; chain side on anvil; router probe round and /api/v1/ips latency; the gateway against direct calls; the gateway over a link against over HTTP; the router with 1,000 linked nodes heartbeating.
bench:
	$(CARGO) build --release -p hello-world -p infernet-node -p infernet-router --bins
	$(CARGO) bench -p infernet-node --bench stream
	$(CARGO) bench -p infernet-node --bench store
	$(CARGO) bench -p infernet-node --bench store_memory
	$(CARGO) bench -p infernet-node --bench chain
	$(CARGO) bench -p infernet-router --bench probe
	$(CARGO) bench -p infernet-router --bench gateway
	$(CARGO) bench -p infernet-router --bench ledger
	$(CARGO) bench -p infernet-router --bench link
	$(CARGO) bench -p infernet-router --bench link_fleet

## Instructions per streamed job, node against the bare forwarding proxy (needs valgrind and `make bench`).
count:
	bash scripts/count-instructions.sh

## Hostile cases together against release builds (idle and slow connections, endless container
## output, huge and deep bodies, 10,000-item batches, a hostile node behind the router): prints
## peak RSS and a normal client's p99, fails past the targets. SOAK_SECONDS sets its length.
soak:
	bash scripts/soak.sh

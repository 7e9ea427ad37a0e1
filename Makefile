# The two entry points a fresh machine needs: `make run` and `make test`.
SWIFT ?= swift
PYTHON ?= python3
ARGS ?=

.PHONY: setup run test test-unit test-integration build release clean

setup:
	@bash scripts/setup.sh

build: setup
	$(SWIFT) build

release: setup
	$(SWIFT) build -c release

# Runs the relay with embedded defaults (store in ./relay-data). Extra flags: make run ARGS="--period 60"
run: release
	$(SWIFT) run -c release relay serve $(ARGS)

test: 
	@bash scripts/setup.sh --test
	$(SWIFT) build
	$(SWIFT) test
	RELAY_BIN=$$($(SWIFT) build --show-bin-path)/relay $(PYTHON) -m pytest -q Tests/integration

clean:
	rm -rf .build

# The two entry points a fresh machine needs: `make run` and `make test`.
SWIFT ?= swift
PYTHON ?= python3
ARGS ?=

.PHONY: setup run test test-c build release clean

setup:
	@bash scripts/setup.sh

build: setup
	$(SWIFT) build

release: setup
	$(SWIFT) build -c release

# Runs the relay with embedded defaults (store in ./relay-data). Extra flags: make run ARGS="--period 60"
run: release
	$(SWIFT) run -c release relay serve $(ARGS)

CORE_SRC := $(wildcard Sources/CLibevent/*.c)
CORE_LIBS := -levent_core -levent_pthreads -lhttp_parser -lcrypto -lpthread

# The C core's unit tests, under AddressSanitizer and UndefinedBehaviorSanitizer.
test-c: setup
	@mkdir -p .build
	cc -g -O1 -std=gnu11 -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	  -ISources/CLibevent/include -ISources/CLibevent $(CORE_SRC) Tests/CoreTests/core_tests.c \
	  -o .build/core_tests $(CORE_LIBS)
	.build/core_tests

# Everything: C unit tests, Swift unit tests, then the real processes end to end.
test:
	@bash scripts/setup.sh --test
	$(MAKE) test-c
	$(SWIFT) build
	$(SWIFT) test
	RELAY_BIN=$$($(SWIFT) build --show-bin-path)/relay $(PYTHON) -m pytest -q Tests/integration

clean:
	rm -rf .build

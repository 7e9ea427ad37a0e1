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

CORE_SRC := $(wildcard Sources/CRelayCore/*.c)
CORE_LIBS := -levent_core -levent_pthreads -lhttp_parser -lssl -lcrypto -lpthread

# The C core's unit tests, under AddressSanitizer and UndefinedBehaviorSanitizer.
CORE_TESTS := core_tests inspect_tests route_tests metrics_tests shard_tests registry_stress
test-c: setup
	@mkdir -p .build
	@set -e; for t in $(CORE_TESTS); do \
	  echo "cc ... Tests/CoreTests/$$t.c -o .build/$$t"; \
	  cc -g -O1 -std=gnu11 -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	    -ISources/CRelayCore/include -ISources/CRelayCore $(CORE_SRC) Tests/CoreTests/$$t.c \
	    -o .build/$$t $(CORE_LIBS); \
	  .build/$$t; \
	done

# Everything: C unit tests, Swift unit tests, then the real processes end to end (the agent
# tests against both `relay agent` and the C relay-agent, its armhf/mipsel builds under qemu),
# twice: relays of one loop thread, then of two (every relay a test starts inherits
# RELAY_THREADS).
TEST_ENV = RELAY_BIN=$$($(SWIFT) build --show-bin-path)/relay RELAY_BENCH_BIN=$$($(SWIFT) build --show-bin-path)/relay-bench \
	RELAY_AGENT_BIN=$(CURDIR)/.build-agent/relay-agent RELAY_AGENT_CROSS=1
test:
	@bash scripts/setup.sh --test
	$(MAKE) test-c
	$(SWIFT) build
	$(SWIFT) test
	$(MAKE) --no-print-directory agent agent-cross
	$(TEST_ENV) RELAY_THREADS=1 $(PYTHON) -m pytest -q Tests/integration bench/test_small_run.py bench/test_agent_footprint.py
	$(TEST_ENV) RELAY_THREADS=2 $(PYTHON) -m pytest -q Tests/integration
	$(MAKE) --no-print-directory test-cluster

# A three-node site in network namespaces (root): keepalived from packaging/keepalived, a
# PostgreSQL store, a NAT in front of real and simulated devices; wakes through every node,
# change propagation, throughput through 1-3 nodes, a node's death and return. Its relays run
# --threads 2 whatever RELAY_THREADS says; figures go to stdout and /tmp/relay-cluster-*-figures.json.
.PHONY: test-cluster
test-cluster:
	@bash scripts/setup.sh --test
	$(SWIFT) build
	$(MAKE) --no-print-directory agent
	$(TEST_ENV) $(PYTHON) -m pytest -q -s Tests/cluster

clean:
	rm -rf .build

# ---- hostile input (issue 6): fuzzing and sanitizers. See Tests/fuzz/README.md. ----
# Debian's clang (bookworm: clang-14 with libclang-rt-14-dev), not the Swift toolchain's.
FUZZ_CC ?= clang-14
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := fuzz_dgram fuzz_token fuzz_flow fuzz_front
FUZZ_DIR := .build-fuzz/fuzz
FUZZ_CFLAGS := -g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -ISources/CRelayCore/include -ISources/CRelayCore

.PHONY: fuzz-setup fuzz-build fuzz fuzz-config test-asan test-tsan test-soak

fuzz-setup:
	@bash scripts/setup.sh --fuzz

$(FUZZ_DIR)/%: Tests/fuzz/%.c Tests/fuzz/fuzz_util.h $(CORE_SRC) $(wildcard Sources/CRelayCore/*.h)
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(CORE_SRC) $< -o $@ $(CORE_LIBS)

fuzz-build: fuzz-setup $(addprefix $(FUZZ_DIR)/,$(FUZZ_TARGETS))

# Runs every target for FUZZ_SECONDS on its seed corpus (new finds go to .build-fuzz/corpus,
# crashes to .build-fuzz/artifacts); the summary line of each run is printed.
fuzz: fuzz-build
	@$(PYTHON) Tests/fuzz/make_corpus.py Tests/fuzz/corpus
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p .build-fuzz/corpus/$$t .build-fuzz/artifacts; \
	  echo "== $$t for $(FUZZ_SECONDS)s"; \
	  ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(FUZZ_DIR)/$$t -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
	    -print_final_stats=1 -dict=Tests/fuzz/relay.dict -artifact_prefix=.build-fuzz/artifacts/$$t- \
	    .build-fuzz/corpus/$$t Tests/fuzz/corpus/$$t > .build-fuzz/$$t.log 2>&1 || \
	    { tail -60 .build-fuzz/$$t.log; exit 1; }; \
	  grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb" .build-fuzz/$$t.log | tr '\n' ' '; echo; \
	done
	@$(MAKE) --no-print-directory fuzz-config

# The config file parser (Swift: Yams, swift-configuration, the relay's checks) under
# libFuzzer + ASan (the Swift toolchain's), from Sources/fuzz-config with -DFUZZING; seeds in
# Tests/fuzz/corpus/fuzz_config.
# SwiftPM names the executable's entry point and links `main` to it, so libFuzzer comes in
# without its own main (fuzzer_no_main) and FuzzConfigMain calls LLVMFuzzerRunDriver.
FUZZ_SWIFT := .build-fuzz-swift
FUZZ_SWIFT_FLAGS = -Xswiftc -sanitize=address -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp \
  -Xswiftc -DFUZZING -Xlinker $(firstword $(wildcard /opt/swift/usr/lib/clang/*/lib/linux/libclang_rt.fuzzer_no_main-x86_64.a)) \
  -Xlinker -lstdc++
fuzz-config: setup
	$(SWIFT) build --scratch-path $(FUZZ_SWIFT) --product fuzz-config $(FUZZ_SWIFT_FLAGS)
	@mkdir -p .build-fuzz/corpus/fuzz_config .build-fuzz/artifacts
	@echo "== fuzz_config for $(FUZZ_SECONDS)s"
	@$$($(SWIFT) build --scratch-path $(FUZZ_SWIFT) --show-bin-path $(FUZZ_SWIFT_FLAGS))/fuzz-config \
	  -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	  -artifact_prefix=.build-fuzz/artifacts/fuzz_config- .build-fuzz/corpus/fuzz_config Tests/fuzz/corpus/fuzz_config \
	  > .build-fuzz/fuzz_config.log 2>&1 || { tail -60 .build-fuzz/fuzz_config.log; exit 1; }
	@grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb" .build-fuzz/fuzz_config.log | tr '\n' ' '; echo

# The integration suite against a relay whose C core and Swift code run under AddressSanitizer
# and UndefinedBehaviorSanitizer (swiftc has no -sanitize=undefined on Linux: UBSan goes to the
# C core through -Xcc, its runtime through the clang linker). Any report fails the target:
# the sanitizers halt the process on the first one and write it under $(SAN_LOGS), which must
# stay empty. ASAN_SUBSET picks the tests: by default every module but the soak (whose RSS
# figures mean nothing under ASan's quarantine); about 4.5 minutes of tests on 2 cores after a
# 3.5-minute build. Too long to add to `make test` within its budget, so it is its own target.
ASAN_SCRATCH := .build-asan
SAN_LOGS := $(ASAN_SCRATCH)/sanitizer-logs
ASAN_SUBSET ?= Tests/integration --deselect Tests/integration/test_faults_soak.py::test_soak_flat_rss_and_fds
ASAN_SWIFT_FLAGS := --sanitize=address -Xcc -fsanitize=undefined -Xcc -fno-sanitize-recover=undefined \
  -Xswiftc -Xclang-linker -Xswiftc -fsanitize=undefined

test-asan:
	@bash scripts/setup.sh --test
	$(SWIFT) build --scratch-path $(ASAN_SCRATCH) $(ASAN_SWIFT_FLAGS)
	@rm -rf $(SAN_LOGS) && mkdir -p $(SAN_LOGS)
	ASAN_OPTIONS=log_path=$(CURDIR)/$(SAN_LOGS)/asan:halt_on_error=1:detect_leaks=1 \
	UBSAN_OPTIONS=log_path=$(CURDIR)/$(SAN_LOGS)/ubsan:halt_on_error=1:print_stacktrace=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/fuzz/lsan.supp:print_suppressions=0 \
	RELAY_BIN=$$($(SWIFT) build --scratch-path $(ASAN_SCRATCH) $(ASAN_SWIFT_FLAGS) --show-bin-path)/relay RELAY_THREADS=2 \
	  $(PYTHON) -m pytest -q $(ASAN_SUBSET)
	@if [ -n "$$(ls -A $(SAN_LOGS))" ]; then echo "sanitizer reports:" >&2; cat $(SAN_LOGS)/* >&2; exit 1; fi
	@echo "test-asan: no sanitizer reports"

# ThreadSanitizer on the threaded C core, at 1, 2 and 3 loop threads: the loops against each
# other and against Swift's threads calling
# rl_core_device_put / rl_core_stats / rl_core_drain_records (Tests/fuzz/tsan_core.c, C only:
# the Swift runtime is not TSan-clean on Linux). Fails on any report.
test-tsan: fuzz-setup
	@mkdir -p .build-fuzz
	$(FUZZ_CC) -g -O1 -std=gnu11 -fsanitize=thread -ISources/CRelayCore/include -ISources/CRelayCore \
	  $(CORE_SRC) Tests/fuzz/tsan_core.c -o .build-fuzz/tsan_core $(CORE_LIBS)
	$(FUZZ_CC) -g -O1 -std=gnu11 -fsanitize=thread -ISources/CRelayCore/include -ISources/CRelayCore \
	  $(CORE_SRC) Tests/CoreTests/registry_stress.c -o .build-fuzz/registry_stress $(CORE_LIBS)
	TSAN_OPTIONS=halt_on_error=1 .build-fuzz/registry_stress
	@set -e; for threads in 1 2 3; do \
	  echo "tsan_core: 3 s with $$threads loop thread(s)"; \
	  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 .build-fuzz/tsan_core 3 $$threads; \
	done

# The bounded soak alone, against a plain debug build in its own scratch path, figures printed.
SOAK_SECONDS ?= 60
test-soak:
	@bash scripts/setup.sh --test
	$(SWIFT) build --scratch-path .build-soak
	RELAY_SOAK_SECONDS=$(SOAK_SECONDS) RELAY_BIN=$$($(SWIFT) build --scratch-path .build-soak --show-bin-path)/relay \
	  $(PYTHON) -m pytest -q -s Tests/integration/test_faults_soak.py

# ---- running it as a service: see packaging/README.md ----
# `sudo make install` builds the release binary and installs it with the systemd units and
# the example configuration. `make install-files BIN=path/to/relay` does the same without
# building (the packaging test runs it into a scratch DESTDIR). Units are always replaced
# (local changes belong in drop-ins); configs in /etc/relay are installed only when absent.
PREFIX ?= /usr/local
DESTDIR ?=
BIN ?=
RELEASE_BIN := .build/release/relay
UNIT_DIR := $(DESTDIR)/etc/systemd/system
CONF_DIR := $(DESTDIR)/etc/relay
UNITS := relay.service relay-agent@.service
CONFIGS := relay.yaml agent.yaml

.PHONY: install install-files

install: release
	@$(MAKE) --no-print-directory install-files BIN=$(RELEASE_BIN)

install-files:
	@test -n "$(BIN)" || { echo "install-files: give the binary to install, BIN=path/to/relay" >&2; exit 1; }
	@test -x "$(BIN)" || { echo "install-files: $(BIN) is not an executable file" >&2; exit 1; }
	install -d -m 0755 $(DESTDIR)$(PREFIX)/bin $(UNIT_DIR) $(CONF_DIR)
	install -m 0755 "$(BIN)" $(DESTDIR)$(PREFIX)/bin/relay
	@set -e; for u in $(UNITS); do \
	  sed 's|^ExecStart=[^ ]*/relay |ExecStart=$(PREFIX)/bin/relay |' packaging/$$u > $(UNIT_DIR)/.$$u.tmp; \
	  chmod 0644 $(UNIT_DIR)/.$$u.tmp; mv -f $(UNIT_DIR)/.$$u.tmp $(UNIT_DIR)/$$u; \
	  echo "installed $(UNIT_DIR)/$$u"; \
	done
	@set -e; for c in $(CONFIGS); do \
	  if [ -e $(CONF_DIR)/$$c ]; then echo "kept existing $(CONF_DIR)/$$c (new example: packaging/$$c)"; \
	  else install -m 0644 packaging/$$c $(CONF_DIR)/$$c; echo "installed $(CONF_DIR)/$$c"; fi; \
	done
	@echo
	@echo "Next: edit /etc/relay/relay.yaml (listeners, domain), then"
	@echo "  systemctl daemon-reload && systemctl enable --now relay"

# The demo: a relay and two sample devices behind real agents, with browser links. Extra flags: make demo ARGS="--http-port 8081"
.PHONY: demo
demo: release
	$(PYTHON) demo/run_demo.py --relay-bin $$($(SWIFT) build -c release --show-bin-path)/relay $(ARGS)

# ---- the device agent on its own (issue 13): relay-agent and librelayagent ----
# agent.c and the six core files it uses (leaves and mechanisms only), without Swift, http-parser or the relay core;
# libevent_core and OpenSSL only. `make agent` builds, for this machine:
#   .build-agent/relay-agent          the program (stripped, dynamically linked)
#   .build-agent/relay-agent-static   the same, fully static (glibc; see README)
#   .build-agent/librelayagent.a/.so  the library, header Sources/CRelayCore/include/relay_agent.h
#   .build-agent/agent-example        agent/example.c linked against librelayagent.a
# `make agent-cross` builds relay-agent for armhf and mipsel into .build-cross/ARCH/.
AGENT_LIB_SRC := $(addprefix Sources/CRelayCore/,agent.c stream.c tls.c wire.c crypto.c netaddr.c util.c)
AGENT_HDRS := $(wildcard Sources/CRelayCore/*.h Sources/CRelayCore/include/*.h)
AGENT_OUT ?= .build-agent
AGENT_CC ?= cc
AGENT_STRIP ?= strip
AGENT_CROSS ?=
AGENT_SYSROOT ?=
AGENT_TRIPLET ?=
AGENT_VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# AGENT_EXTRA_CFLAGS/LDFLAGS: a build system's own (OpenWrt's TARGET_CFLAGS, packaging/openwrt).
AGENT_EXTRA_CFLAGS ?=
AGENT_EXTRA_LDFLAGS ?=
AGENT_SYS_FLAGS = $(if $(AGENT_SYSROOT),-isystem $(AGENT_SYSROOT)/usr/include -isystem $(AGENT_SYSROOT)/usr/include/$(AGENT_TRIPLET)) $(AGENT_EXTRA_CFLAGS)
AGENT_SYS_LIBS = $(if $(AGENT_SYSROOT),-L$(AGENT_SYSROOT)/usr/lib/$(AGENT_TRIPLET) -Wl$(comma)-rpath-link$(comma)$(AGENT_SYSROOT)/usr/lib/$(AGENT_TRIPLET)) $(AGENT_EXTRA_LDFLAGS)
comma := ,
AGENT_CFLAGS := -Os -std=gnu11 -Wall -Wextra -Wno-unused-parameter -ffunction-sections -fdata-sections \
  -fno-asynchronous-unwind-tables -ISources/CRelayCore/include -ISources/CRelayCore
AGENT_LDFLAGS := -Wl,--gc-sections -Wl,-O1 -Wl,--as-needed
# MIPS32 has no 64-bit atomics: the counters' come from libatomic there (agent-cross).
AGENT_EXTRA_LIBS ?=
AGENT_LIBS = -levent_core -lssl -lcrypto $(AGENT_EXTRA_LIBS)
AGENT_EXPORTS := agent/librelayagent.map

.PHONY: agent agent-bin agent-static agent-lib agent-cross agent-setup

agent-setup:
	@bash scripts/setup.sh --cross

agent: agent-bin agent-static agent-lib $(AGENT_OUT)/agent-example
	@ls -l $(AGENT_OUT)/relay-agent $(AGENT_OUT)/relay-agent-static $(AGENT_OUT)/librelayagent.a $(AGENT_OUT)/librelayagent.so

agent-bin: $(AGENT_OUT)/relay-agent

$(AGENT_OUT)/relay-agent: $(AGENT_LIB_SRC) agent/main.c $(AGENT_HDRS)
	@mkdir -p $(AGENT_OUT)
	$(AGENT_CC) $(AGENT_CFLAGS) $(AGENT_SYS_FLAGS) -DRELAY_AGENT_VERSION='"$(AGENT_VERSION)"' $(AGENT_LIB_SRC) agent/main.c \
	  -o $@ $(AGENT_LDFLAGS) $(AGENT_SYS_LIBS) $(AGENT_LIBS)
	$(AGENT_STRIP) --strip-all $@

# glibc static: Debian ships libssl.a and libevent_core.a in the -dev packages (musl would
# need OpenSSL and libevent rebuilt against it). getaddrinfo for a relay given by name loads
# glibc's NSS modules at run time; numeric addresses need nothing.
agent-static: $(AGENT_OUT)/relay-agent-static

$(AGENT_OUT)/relay-agent-static: $(AGENT_LIB_SRC) agent/main.c $(AGENT_HDRS)
	@mkdir -p $(AGENT_OUT)
	$(AGENT_CC) $(AGENT_CFLAGS) $(AGENT_SYS_FLAGS) -DRELAY_AGENT_VERSION='"$(AGENT_VERSION)"' $(AGENT_LIB_SRC) agent/main.c \
	  -o $@ -static $(AGENT_LDFLAGS) $(AGENT_SYS_LIBS) $(AGENT_LIBS) -lpthread 2>&1 | grep -v "statically linked applications requires" >&2 || true
	@test -x $@
	$(AGENT_STRIP) --strip-all $@

# The static library is one relocatable object with every symbol but rl_agent_* made local,
# so none can clash with the firmware's own. The shared one exports rl_agent_* only
# (agent/librelayagent.map).
agent-lib: $(AGENT_OUT)/librelayagent.a $(AGENT_OUT)/librelayagent.so

AGENT_ROOTS := rl_agent_new rl_agent_run rl_agent_stop rl_agent_stats_get rl_agent_free rl_agent_parse_secret

$(AGENT_OUT)/librelayagent.a: $(AGENT_LIB_SRC) $(AGENT_HDRS)
	@mkdir -p $(AGENT_OUT)/obj
	$(AGENT_CC) $(AGENT_CFLAGS) $(AGENT_SYS_FLAGS) -fPIC -r -nostdlib -Wl,--gc-sections \
	  $(addprefix -Wl$(comma)-u$(comma),$(AGENT_ROOTS)) $(AGENT_LIB_SRC) -o $(AGENT_OUT)/obj/relayagent.o
	$(AGENT_CROSS)objcopy $(addprefix --keep-global-symbol=,$(AGENT_ROOTS)) $(AGENT_OUT)/obj/relayagent.o
	rm -f $@ && $(AGENT_CROSS)ar rcs $@ $(AGENT_OUT)/obj/relayagent.o

$(AGENT_OUT)/librelayagent.so: $(AGENT_LIB_SRC) $(AGENT_HDRS) $(AGENT_EXPORTS)
	@mkdir -p $(AGENT_OUT)
	$(AGENT_CC) $(AGENT_CFLAGS) $(AGENT_SYS_FLAGS) -fPIC -shared -Wl,-soname,librelayagent.so.1 \
	  -Wl,--version-script=$(AGENT_EXPORTS) $(AGENT_LIB_SRC) -o $@ $(AGENT_LDFLAGS) $(AGENT_SYS_LIBS) $(AGENT_LIBS)
	$(AGENT_STRIP) --strip-unneeded $@

# The library's example: a firmware-like program that starts an agent and serves each link
# itself from the socket on_link hands it (and forwards nothing).
$(AGENT_OUT)/agent-example: agent/example.c $(AGENT_OUT)/librelayagent.a Sources/CRelayCore/include/relay_agent.h
	$(AGENT_CC) -Os -std=gnu11 -Wall -Wextra -Wno-unused-parameter -ISources/CRelayCore/include $(AGENT_SYS_FLAGS) agent/example.c \
	  $(AGENT_OUT)/librelayagent.a -o $@ $(AGENT_LDFLAGS) $(AGENT_SYS_LIBS) $(AGENT_LIBS)

# Cross builds with Debian's cross compilers (gcc-arm-linux-gnueabihf, gcc-mipsel-linux-gnu) against the target's own Debian packages
# (scripts/cross-sysroot.sh); the outputs run under qemu-user-static (Tests/integration/test_agent_c.py).
agent-cross: agent-setup
	@set -e; for t in armhf:arm-linux-gnueabihf: mipsel:mipsel-linux-gnu:-latomic; do \
	  arch=$${t%%:*}; rest=$${t#*:}; triplet=$${rest%%:*}; extra=$${rest#*:}; \
	  bash scripts/cross-sysroot.sh $$arch; \
	  $(MAKE) --no-print-directory agent-bin .build-cross/$$arch/librelayagent.so AGENT_OUT=.build-cross/$$arch \
	    AGENT_CC=$$triplet-gcc AGENT_STRIP=$$triplet-strip AGENT_CROSS=$$triplet- \
	    AGENT_SYSROOT=.build-cross/$$arch/sysroot AGENT_TRIPLET=$$triplet AGENT_EXTRA_LIBS=$$extra; \
	  ls -l .build-cross/$$arch/relay-agent; \
	done

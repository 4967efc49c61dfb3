# SPDX-License-Identifier: BSD-3-Clause
# The front door: each target installs missing Debian build dependencies, then drives CMake.
BUILD ?= build
PREFIX ?= /usr/local
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all deps configure test demo bench install asan fuzz clean

all: configure
	cmake --build $(BUILD) -j $(JOBS)

deps:
	@sh scripts/deps.sh

configure: deps
	@test -f $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

test: all
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

demo: all
	$(BUILD)/examples/afdt-handoff-demo

# afdt(1) runs a socket-activated HTTP server that does not use libafdt: two restarts and an
# upgrade of the supervisor itself, under load (examples/supervisor_demo.sh).
.PHONY: demo-supervisor
demo-supervisor: all
	sh examples/supervisor_demo.sh $(BUILD)

bench: all
	sh bench/run.sh $(BUILD)

# Stock servers (lighttpd, nginx, HAProxy, gunicorn, uvicorn, Node) restarted under load by afdt,
# by their own reloads and naively, side by side (installs them; writes docs/RESTARTS.md).
.PHONY: bench-restarts
bench-restarts: all
	bash bench/restarts/run.sh $(BUILD)

install: all
	cmake --install $(BUILD) --prefix $(PREFIX)

asan: deps
	@test -f build-asan/CMakeCache.txt || cmake -S . -B build-asan -DAFDT_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
	cmake --build build-asan -j $(JOBS)
	ctest --test-dir build-asan --output-on-failure -j $(JOBS)

# libFuzzer targets (clang), each run FUZZ_SECONDS on a copy of its corpus; fails on a crash.
FUZZ_SECONDS ?= 60
fuzz:
	@AFDT_DEPS_EXTRA="clang libclang-rt-14-dev" sh scripts/deps.sh
	@test -f build-fuzz/CMakeCache.txt || CC=clang cmake -S . -B build-fuzz -DAFDT_FUZZ=ON -DBUILD_TESTING=OFF -DAFDT_BUILD_EXAMPLES=OFF
	cmake --build build-fuzz -j $(JOBS) --target fuzz_frame fuzz_server
	sh fuzz/run.sh build-fuzz $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD) build-asan build-deb

# Debian packages (debian/): libafdt0, libafdt-dev and afdt, built from a copy of the tree in
# build-deb/ (where the .debs are left), then checked by lintian.  Built with nocheck (the suite
# is `make test`); `make deb DEB_BUILD_OPTIONS=` also builds and runs it inside the package build.
.PHONY: deb
deb:
	sh scripts/deb.sh build-deb

# Reliability (docs/RELIABILITY.md).  fault: every call the library makes fails at each of its
# uses in turn (tests/test_fault.c), with a summary line; soak: tests/test_soak.c at full size;
# valgrind: every test program under memcheck, failing on any error or leak.
.PHONY: fault soak valgrind
fault: all
	@{ $(BUILD)/tests/test_fault; echo "exit $$?"; } | awk '/^exit [0-9]+$$/ { rc = $$2; next } \
	  { print } /^fault / { for (i = 3; i < NF; i++) if ($$i == "faults") { \
	  injected += $$(i - 1); failures += $$(i + 2); if ($$(i - 1) > 0) calls[$$2] = 1; \
	  if ($$0 ~ /Interrupted system call/) eintr += $$(i - 1) } } \
	  END { for (c in calls) n++; printf "fault injection: %d calls covered, %d faults injected " \
	  "(%d of them EINTR), %d failures found\n", n, injected, eintr, failures; exit rc }'

SOAK_N ?= 1000000
soak: all
	AFDT_SOAK_N=$(SOAK_N) $(BUILD)/tests/test_soak

valgrind: all
	sh scripts/valgrind.sh $(BUILD)

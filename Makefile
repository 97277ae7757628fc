# The README's verbs. CMake does the building; this file only names the steps.
#   make demo     install deps, release build, run a local server+agent demo
#   make test     install deps, ASan/UBSan build, every test through ctest,
#                 then the integration tests under valgrind (release build)
#   make bench    benchmarks (release build), one "name: value unit" per line
#   make fuzz     libFuzzer targets for each parser, fixed number of runs
#   make package  installable packages
#   make windows       cross-build for 64-bit Windows (mingw-w64), deps included
#   make test-windows  the Windows tests under Wine, and the Linux server with
#                      the Windows agent end to end
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
TEST_DIR  := build/test
REL_DIR   := build/release
FUZZ_DIR  := build/fuzz
WIN_DIR   := build/win64
CMAKE_GEN := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")

.PHONY: all deps release test-build test memcheck demo bench fuzz package clean \
        windows test-windows

all: release

deps:
	@scripts/install-deps

release: deps
	@cmake -S . -B $(REL_DIR) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(REL_DIR) -j $(JOBS)

test-build: deps
	@cmake -S . -B $(TEST_DIR) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DMMR_SANITIZE=ON >/dev/null
	@cmake --build $(TEST_DIR) -j $(JOBS)

test: test-build release
	@ctest --test-dir $(TEST_DIR) --output-on-failure -j $(JOBS) -LE windows
	@$(MAKE) --no-print-directory memcheck

# valgrind cannot run ASan binaries: the leak check uses the release build,
# on the integration tests labelled "memcheck" (agent IPC, enrollment): every
# agent, server and CLI process they start runs under valgrind.
memcheck: release
	@MMR_TEST_WRAPPER="valgrind --quiet --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=99" \
	  ctest --test-dir $(REL_DIR) --output-on-failure -L memcheck

DEMO_PORT ?= 18443
demo: release
	@scripts/demo $(REL_DIR) $(DEMO_PORT)

bench: release
	@scripts/bench $(REL_DIR)

fuzz:
	@scripts/install-deps --fuzz
	@CC=clang cmake -S . -B $(FUZZ_DIR) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DMMR_FUZZ=ON -DMMR_TESTS=ON >/dev/null
	@cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzz_all
	@scripts/run-fuzz $(FUZZ_DIR)

# Static .exe files that need only system DLLs; the dependencies are built from
# Debian's source packages into a cache outside the tree (docs/windows.md).
windows:
	@scripts/install-deps --windows
	@deps=$$(scripts/windows/build-deps) && \
	  cmake -S . -B $(WIN_DIR) $(CMAKE_GEN) -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64.cmake \
	    -DMMR_WIN64_DEPS="$$deps" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(WIN_DIR) -j $(JOBS)

test-windows: windows release
	@scripts/windows/run-tests $(WIN_DIR) $(REL_DIR)

package:
	@echo "package: not yet (installer packages arrive with the updater, issue 7)"

clean:
	rm -rf build

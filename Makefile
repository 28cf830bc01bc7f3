# A thin layer over CMake. For a fresh clone, two commands:
#   make test   install what is missing, build everything, run every test
#               (GPU tests skip themselves without a GPU), then rebuild the
#               emulated library under ASan + UBSan and run its tests again
#   make demo   build and run the demo, on the GPU if one is present, else
#               under the CPU emulator
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE      ?= cmake
CMAKE_ARGS ?=

.PHONY: all deps build test test-fast test-asan demo clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)
	$(CMAKE) --build $(BUILD) -j $(JOBS)

# Every test of the ordinary build (emulator, unit, C, and GPU ones, which
# skip without a GPU).
test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The emulated suites again, under AddressSanitizer and UBSan, in a build
# folder of their own (the bnorm_emu users link is never sanitized).
test-asan: deps
	$(CMAKE) -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBNORM_SANITIZE=ON $(CMAKE_ARGS)
	$(CMAKE) --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS) -L 'emu|unit'

test: test-fast test-asan

# The demo (examples/train_mlp.c): only its targets are built. With a GPU
# the real build runs; otherwise the emulated one. Output files (CSV, PNG)
# go to $(BUILD)/demo.
demo: deps
	$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)
	@mkdir -p $(BUILD)/demo
	@if nvidia-smi -L >/dev/null 2>&1 && grep -q '^BNORM_BUILD_GPU:BOOL=ON' $(BUILD)/CMakeCache.txt; then \
	  env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL $(CMAKE) --build $(BUILD) -j $(JOBS) --target train_mlp_gpu && \
	  $(BUILD)/examples/train_mlp_gpu --out $(BUILD)/demo; \
	else \
	  echo "(no GPU found: running the demo under the CPU emulator)"; \
	  env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL $(CMAKE) --build $(BUILD) -j $(JOBS) --target train_mlp_emu && \
	  $(BUILD)/examples/train_mlp_emu --out $(BUILD)/demo; \
	fi

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

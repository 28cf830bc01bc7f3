# A thin layer over CMake. For a fresh clone, two commands:
#   make test   install what is missing, build everything, run every test
#               (GPU tests skip themselves without a GPU), then rebuild the
#               emulated library under ASan + UBSan and run its tests again,
#               run the concurrency tests under TSan (make test-tsan), then
#               fuzz the public API for a minute (make test-fuzz)
#   make demo   build and run the demo, on the GPU if one is present, else
#               under the CPU emulator
BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
FUZZ_TIME  ?= 60
FUZZ_FLAGS ?=
FUZZ_SEED  ?= 1
FUZZ_CC    ?= clang-14
FUZZ_CXX   ?= clang++-14
JOBS       ?= $(shell nproc)
CMAKE      ?= cmake
CMAKE_ARGS ?=

.PHONY: all deps build test test-fast test-asan test-tsan test-fuzz demo clean

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

# The concurrency tests (host threads, and the emulated NCCL's rank threads)
# and the emulator's own tests under ThreadSanitizer
# (the emulator tells TSan about its fiber switches), in a folder of their own;
# only those test programs are built.
test-tsan: deps
	$(CMAKE) -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBNORM_TSAN=ON $(CMAKE_ARGS)
	$(CMAKE) --build $(TSAN_BUILD) -j $(JOBS) --target test_concurrency_emu test_emulator test_nccl_emu
	cd $(TSAN_BUILD) && ctest --output-on-failure -j $(JOBS) -L 'concurrency|emulator'

# libFuzzer over the public API of the emulated library (built with clang,
# coverage, ASan and UBSan in its own folder), FUZZ_TIME seconds from the
# committed seed corpus fuzz/corpus. A fixed seed (FUZZ_SEED=1) makes CI's
# minute replay the same mutations; FUZZ_SEED=0 draws one. A long run:
#   make test-fuzz FUZZ_TIME=28800 FUZZ_SEED=0 FUZZ_FLAGS="-jobs=2 -workers=2"
test-fuzz: deps
	$(CMAKE) -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBNORM_FUZZ=ON \
	  -DCMAKE_C_COMPILER=$(FUZZ_CC) -DCMAKE_CXX_COMPILER=$(FUZZ_CXX) $(CMAKE_ARGS)
	$(CMAKE) --build $(FUZZ_BUILD) -j $(JOBS)
	fuzz/run.sh $(FUZZ_BUILD)/fuzz/bnorm_fuzz $(FUZZ_TIME) -seed=$(FUZZ_SEED) $(FUZZ_FLAGS)

test: test-fast test-asan test-tsan test-fuzz

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
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)

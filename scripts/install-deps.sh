#!/usr/bin/env bash
# Installs the Debian packages bnorm builds and tests with, when missing.
# Run as root it installs them with apt-get; otherwise it names what is
# missing and fails. The CUDA toolkit (nvcc, cudart, cuDNN, NCCL, NVTX) is
# expected where the machine has it (/usr/local/cuda); it is not a Debian
# package here.
#
#   cmake                 the build (3.25)
#   g++, make             host code, the emulator, the tests
#   libgtest-dev          GoogleTest: the test suites
#   libboost-context-dev  Boost.Context fibers: the CPU SIMT emulator
#   python3-torch         PyTorch for Debian's /usr/bin/python3: the Python
#                         binding (python/) is tested against torch.nn.BatchNorm
#                         (ctest emu.python; large: about 800 MB with its deps)
#   python3-pytest        runs those tests
#   libopenblas-dev       OpenBLAS (cblas_sgemm): serves the cuBLAS calls of the
#                         training demo in the emulated build (libbnorm_cublas_emu)
#   gnuplot-nox           draws the training demo's curves to a PNG (no X needed)
#   pkg-config            the packaging test builds a consumer through bnorm_emu.pc
#   clang-14,             libFuzzer: `make test-fuzz` builds the emulated
#   libclang-rt-14-dev    library and fuzz/bnorm_fuzz with clang's
#                         -fsanitize=fuzzer,address,undefined (its runtimes)
set -euo pipefail

packages=(cmake g++ make libgtest-dev libboost-context-dev python3-torch python3-pytest
          libopenblas-dev gnuplot-nox pkg-config clang-14 libclang-rt-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "install-deps: missing Debian packages: ${missing[*]} (run as root, or apt-get install them)" >&2
    exit 1
  fi
fi

if ! command -v nvcc >/dev/null && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  echo "install-deps: the CUDA toolkit (nvcc) is not installed; bnorm needs its headers" >&2
  exit 1
fi

/*
 * A stand-in for a real CUDA runtime that is already in a process's global
 * symbol scope when libbnorm_emu.so arrives: PyTorch built with CUDA loads
 * libcudart with RTLD_GLOBAL, and an unversioned reference binds to its
 * default-version definitions. Every function the emulated library calls
 * internally is defined here; each one counts the call and fails, so a call
 * that escapes the emulator is seen.
 */
#include <stddef.h>

static int g_calls = 0;

int fake_cudart_calls(void) { return g_calls; }

#define FAKE(name, params)     \
  int name params {            \
    ++g_calls;                 \
    return 999; /* cudaErrorUnknown */ \
  }

FAKE(cudaGetDevice, (int* d))
FAKE(cudaSetDevice, (int d))
FAKE(cudaGetDeviceProperties, (void* p, int d))
FAKE(cudaGetLastError, (void))
FAKE(cudaPeekAtLastError, (void))
FAKE(cudaMemset, (void* p, int v, size_t n))
FAKE(cudaMemsetAsync, (void* p, int v, size_t n, void* s))
FAKE(cudaMemcpy, (void* d, const void* s, size_t n, int k))
FAKE(cudaMemcpyAsync, (void* d, const void* s, size_t n, int k, void* st))
FAKE(cudaStreamCreate, (void** s))
FAKE(cudaEventCreate, (void** e))
FAKE(cudaMalloc, (void** p, size_t n))
FAKE(cudaFree, (void* p))

const char* cudaGetErrorString(int e) {
  (void)e;
  ++g_calls;
  return "the fake global CUDA runtime was called";
}

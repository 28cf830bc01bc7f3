// One kernel source, two builds: nvcc for the GPU, g++ with the CPU emulator
// (emu/emu_device.h, force-included, defines BNORM_EMU). Kernel files use
// these macros instead of <<<>>>, extern __shared__ and cooperative groups;
// emu/emu_device.h lists the rules that come with them.
#pragma once

#if defined(BNORM_EMU)

#define BNORM_LAUNCH(kernel, grid, block, smem, stream, ...)                          \
  ::emu::launch(#kernel, reinterpret_cast<const void*>(&kernel), dim3(grid), dim3(block), \
                (smem), (stream), [=]() { kernel(__VA_ARGS__); }, false)
// Cooperative kernels take a single parameter struct.
#define BNORM_LAUNCH_COOPERATIVE(kernel, grid, block, smem, stream, params)           \
  ::emu::launch(#kernel, reinterpret_cast<const void*>(&kernel), dim3(grid), dim3(block), \
                (smem), (stream), [=]() { kernel(params); }, true)
#define BNORM_DYNAMIC_SHARED(name) unsigned char* name = ::emu::tls_block->shared
#define BNORM_GRID_SYNC() ::emu::grid_sync(__FILE__, __LINE__)

#else

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#define BNORM_LAUNCH(kernel, grid, block, smem, stream, ...) \
  kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#define BNORM_LAUNCH_COOPERATIVE(kernel, grid, block, smem, stream, params)             \
  do {                                                                                  \
    auto bnorm_params_ = (params);                                                      \
    void* bnorm_args_[] = {&bnorm_params_};                                             \
    cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(&kernel), dim3(grid),    \
                                dim3(block), bnorm_args_, (smem), (stream));            \
  } while (0)
#define BNORM_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#define BNORM_GRID_SYNC() ::cooperative_groups::this_grid().sync()

#endif

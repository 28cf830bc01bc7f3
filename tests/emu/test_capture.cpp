// Stream capture and graphs in the emulated runtime: captured work runs only
// when the graph is launched, in capture order, as many times as it is
// launched; the calls capture forbids on a GPU are refused and invalidate
// the capture.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include <cuda_runtime_api.h>

#include "emu_test_kernels.h"

namespace {

struct HostLog {
  std::vector<int> calls;
};
void CUDART_CB log_call(void* p) {
  auto* log = static_cast<HostLog*>(p);
  log->calls.push_back(static_cast<int>(log->calls.size()));
}

class Capture : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess);
  }
  void TearDown() override {
    EXPECT_EQ(cudaStreamDestroy(stream_), cudaSuccess);
    cudaGetLastError();
  }
  cudaStream_t stream_ = nullptr;
};

// The work a "training step" does: a kernel reading and advancing a device
// counter, an async copy, an async set, a host function.
void enqueue_step(float* v, int n, int* counter, float* copy, int* flags, HostLog* log,
                  cudaStream_t s) {
  ASSERT_EQ(emu_test::step_with_counter(v, n, counter, s), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(copy, v, sizeof(float) * size_t(n), cudaMemcpyDeviceToDevice, s),
            cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(flags, 0x11, sizeof(int), s), cudaSuccess);
  ASSERT_EQ(cudaLaunchHostFunc(s, log_call, log), cudaSuccess);
}

TEST_F(Capture, GraphReplaysEqualEagerStepsBitwise) {
  const int n = 64, k = 5;
  std::vector<float> v_eager(n), v_graph(n), c_eager(n, -1), c_graph(n, -1);
  for (int i = 0; i < n; ++i) v_eager[size_t(i)] = v_graph[size_t(i)] = 0.1f * float(i) - 2.f;
  int counter_eager = 3, counter_graph = 3, flags_eager = 0, flags_graph = 0;
  HostLog log_eager, log_graph;

  for (int i = 0; i < k; ++i)
    enqueue_step(v_eager.data(), n, &counter_eager, c_eager.data(), &flags_eager, &log_eager,
                 stream_);
  ASSERT_EQ(counter_eager, 3 + k);

  const std::vector<float> before = v_graph;
  cudaStreamCaptureStatus st;
  ASSERT_EQ(cudaStreamIsCapturing(stream_, &st), cudaSuccess);
  EXPECT_EQ(st, cudaStreamCaptureStatusNone);
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cudaStreamIsCapturing(stream_, &st), cudaSuccess);
  EXPECT_EQ(st, cudaStreamCaptureStatusActive);
  enqueue_step(v_graph.data(), n, &counter_graph, c_graph.data(), &flags_graph, &log_graph,
               stream_);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess);
  ASSERT_NE(graph, nullptr);
  ASSERT_EQ(cudaStreamIsCapturing(stream_, &st), cudaSuccess);
  EXPECT_EQ(st, cudaStreamCaptureStatusNone);
  // Capturing ran nothing.
  EXPECT_EQ(std::memcmp(before.data(), v_graph.data(), sizeof(float) * n), 0);
  EXPECT_EQ(counter_graph, 3);
  EXPECT_EQ(flags_graph, 0);
  EXPECT_TRUE(log_graph.calls.empty());
  size_t nodes = 0;
  ASSERT_EQ(cudaGraphGetNodes(graph, nullptr, &nodes), cudaSuccess);
  EXPECT_EQ(nodes, 4u);

  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);  // the executable graph keeps its nodes
  for (int i = 0; i < k; ++i) ASSERT_EQ(cudaGraphLaunch(exec, stream_), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  ASSERT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);

  EXPECT_EQ(counter_graph, counter_eager);
  EXPECT_EQ(std::memcmp(v_eager.data(), v_graph.data(), sizeof(float) * n), 0);
  EXPECT_EQ(std::memcmp(c_eager.data(), c_graph.data(), sizeof(float) * n), 0);
  EXPECT_EQ(flags_graph, 0x11111111);
  EXPECT_EQ(log_graph.calls.size(), size_t(k));
  // Spot value: after k steps from counter c0, v = v0/2^k + sum_j c_j/2^(k-1-j).
  double want = (0.1 * 7 - 2.0) / 32.0;
  for (int j = 0; j < k; ++j) want += (3 + j) / double(1 << (k - 1 - j));
  EXPECT_FLOAT_EQ(v_graph[7], float(want));
}

TEST_F(Capture, AGraphLaunchedDuringACaptureIsRecordedToo) {
  const int n = 32;
  std::vector<float> v(n, 1.f), copy(n);
  int counter = 0, flags = 0;
  HostLog log;
  cudaGraph_t inner = nullptr, outer = nullptr;
  cudaGraphExec_t inner_exec = nullptr, outer_exec = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal), cudaSuccess);
  enqueue_step(v.data(), n, &counter, copy.data(), &flags, &log, stream_);
  ASSERT_EQ(cudaStreamEndCapture(stream_, &inner), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&inner_exec, inner, 0), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(inner_exec, stream_), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(inner_exec, stream_), cudaSuccess);
  ASSERT_EQ(cudaStreamEndCapture(stream_, &outer), cudaSuccess);
  EXPECT_EQ(counter, 0);
  ASSERT_EQ(cudaGraphInstantiate(&outer_exec, outer, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(outer_exec, stream_), cudaSuccess);
  EXPECT_EQ(counter, 2);
  EXPECT_EQ(log.calls.size(), 2u);
  cudaGraphExecDestroy(outer_exec);
  cudaGraphExecDestroy(inner_exec);
  cudaGraphDestroy(outer);
  cudaGraphDestroy(inner);
}

TEST_F(Capture, UnsafeCallsAreRefusedAndInvalidateAGlobalCapture) {
  std::vector<float> v(32, 1.f);
  int counter = 0;
  void* p = nullptr;
  float host = 0;
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(emu_test::step_with_counter(v.data(), 32, &counter, stream_), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&p, 64), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(cudaMemcpy(&host, v.data(), sizeof host, cudaMemcpyDeviceToHost),
            cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamSynchronize(stream_), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorStreamCaptureUnsupported);
  cudaStreamCaptureStatus st;
  ASSERT_EQ(cudaStreamIsCapturing(stream_, &st), cudaSuccess);
  EXPECT_EQ(st, cudaStreamCaptureStatusInvalidated);
  // Work issued to an invalidated capture is refused.
  EXPECT_EQ(emu_test::step_with_counter(v.data(), 32, &counter, stream_),
            cudaErrorStreamCaptureInvalidated);
  cudaGraph_t graph = reinterpret_cast<cudaGraph_t>(&host);
  EXPECT_EQ(cudaStreamEndCapture(stream_, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(graph, nullptr);
  EXPECT_EQ(counter, 0);
  // After the capture ended, the same calls work again.
  ASSERT_EQ(cudaMalloc(&p, 64), cudaSuccess);
  EXPECT_EQ(cudaFree(p), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
}

TEST_F(Capture, RelaxedModeAllowsAllocation) {
  void* p = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&p, 64), cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess);
  size_t nodes = 99;
  ASSERT_EQ(cudaGraphGetNodes(graph, nullptr, &nodes), cudaSuccess);
  EXPECT_EQ(nodes, 0u);
  cudaGraphDestroy(graph);
  cudaFree(p);
}

TEST_F(Capture, TheLegacyStreamMayNotTouchACapturedBlockingStream) {
  cudaStream_t blocking = nullptr;
  ASSERT_EQ(cudaStreamCreate(&blocking), cudaSuccess);
  std::vector<float> v(32, 1.f);
  int counter = 0;
  ASSERT_EQ(cudaStreamBeginCapture(blocking, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT_EQ(emu_test::step_with_counter(v.data(), 32, &counter, nullptr),
            cudaErrorStreamCaptureImplicit);
  EXPECT_EQ(counter, 0);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(blocking, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(cudaStreamDestroy(blocking), cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), cudaErrorStreamCaptureInvalidated) << "the last error, as on a GPU";

  // A non-blocking captured stream does not synchronize with the legacy
  // one: work there runs at once.
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT_EQ(emu_test::step_with_counter(v.data(), 32, &counter, nullptr), cudaSuccess);
  EXPECT_EQ(counter, 1);
  ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess);
  cudaGraphDestroy(graph);
}

TEST_F(Capture, MisuseIsRefused) {
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeGlobal),
            cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamEndCapture(stream_, &graph), cudaErrorIllegalState);
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal), cudaErrorIllegalState);
  ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess);
  cudaGraphDestroy(graph);
  EXPECT_EQ(cudaGraphLaunch(nullptr, stream_), cudaErrorInvalidValue);
}

}  // namespace

// The emulated NCCL (in libbnorm_emu): the NCCL calls of synchronized batch norm with ranks as
// host threads. Every result is checked against a plain loop written here
// (wide integer arithmetic for the integer types, the rank-order rule for
// the floating-point ones); float sums are also checked to be bitwise equal
// on every rank and from run to run. Failures must never hang: a watchdog
// aborts the process if the rank threads do not finish, and the error tests
// set the emulator's timeout small.
//
// gtest's assertions are thread-safe (pthreads), so the rank threads use
// EXPECT_* directly.
#include <nccl.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "threads.h"

namespace {

using Clock = std::chrono::steady_clock;

// Runs body(rank) on n threads; a hang aborts the process (threads.h).
void run_ranks(int n, const std::function<void(int)>& body,
               std::chrono::seconds limit = std::chrono::seconds(120)) {
  bt::run_threads(n, body, limit, "test_nccl_emu");
}

using bt::Barrier;

// Sets an environment variable for the scope of the test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_, old_.c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

ncclUniqueId new_id() {
  ncclUniqueId id;
  EXPECT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  return id;
}

// One rank's communicator and stream, made on its own thread.
struct RankCtx {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  void init(int nranks, const ncclUniqueId& id, int rank) {
    ASSERT_EQ(ncclCommInitRank(&comm, nranks, id, rank), ncclSuccess) << ncclGetLastError(nullptr);
    ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  }
  ~RankCtx() {
    if (stream) cudaStreamDestroy(stream);
    if (comm) ncclCommDestroy(comm);
  }
};

// ---- datatypes and the expected reductions --------------------------------------------------

template <typename T> ncclDataType_t dtype_of();
template <> ncclDataType_t dtype_of<int8_t>() { return ncclInt8; }
template <> ncclDataType_t dtype_of<uint8_t>() { return ncclUint8; }
template <> ncclDataType_t dtype_of<int32_t>() { return ncclInt32; }
template <> ncclDataType_t dtype_of<uint32_t>() { return ncclUint32; }
template <> ncclDataType_t dtype_of<int64_t>() { return ncclInt64; }
template <> ncclDataType_t dtype_of<uint64_t>() { return ncclUint64; }
template <> ncclDataType_t dtype_of<float>() { return ncclFloat32; }
template <> ncclDataType_t dtype_of<double>() { return ncclFloat64; }

// Rank k's i-th value: small integers (so that products of 8 ranks wrap the
// narrow types, and the wrap is checked), or floats of many magnitudes and
// both signs (so that the order of a sum matters).
uint64_t mix(uint64_t x) {  // splitmix64's finalizer: a cheap hash of (rank, index)
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

template <typename T>
T value(int k, size_t i) {
  const uint64_t h = mix(uint64_t(k) * 1000003u + i);
  if constexpr (std::is_floating_point_v<T>) {
    const double u = 1.0 + double(h % 1000) / 1000.0;
    const int e = int((h >> 10) % 21) - 10;
    return T(((h >> 20) & 1 ? -1 : 1) * std::ldexp(u, e));
  } else if constexpr (std::is_signed_v<T>) {
    return T(int(h % 7) - 3);
  } else {
    return T(h % 6);
  }
}

// The reduction of `v` (one value per rank) computed independently of the
// library: integers in 64-bit arithmetic and then reduced modulo the type's
// width; floating point in the type, in rank order.
template <typename T>
T expected(const std::vector<T>& v, ncclRedOp_t op) {
  const int n = int(v.size());
  if constexpr (std::is_integral_v<T>) {
    uint64_t wide = op == ncclProd ? 1 : 0;
    int64_t lo = v[0], hi = v[0];
    for (T x : v) {
      if (op == ncclProd) wide *= uint64_t(int64_t(x));
      else wide += uint64_t(int64_t(x));
      lo = std::min<int64_t>(lo, x);
      hi = std::max<int64_t>(hi, x);
    }
    switch (op) {
      case ncclMax: return T(hi);
      case ncclMin: return T(lo);
      case ncclAvg:
        if constexpr (std::is_signed_v<T>) return T(int64_t(wide) / n);
        else return T(wide / uint64_t(n));
      default: return T(wide);  // modulo 2^bits
    }
  } else {
    T acc = v[0];
    for (int k = 1; k < n; ++k) {
      if (op == ncclProd) acc = acc * v[k];
      else if (op == ncclMax) acc = v[k] > acc ? v[k] : acc;
      else if (op == ncclMin) acc = v[k] < acc ? v[k] : acc;
      else acc = acc + v[k];
    }
    return op == ncclAvg ? acc / T(n) : acc;
  }
}

template <typename T>
std::vector<T> rank_values(int rank, size_t count) {
  std::vector<T> v(count);
  for (size_t i = 0; i < count; ++i) v[i] = value<T>(rank, i);
  return v;
}

template <typename T>
std::vector<T> expected_allreduce(int nranks, size_t count, ncclRedOp_t op) {
  std::vector<T> out(count);
  std::vector<T> col(static_cast<size_t>(nranks));
  for (size_t i = 0; i < count; ++i) {
    for (int k = 0; k < nranks; ++k) col[k] = value<T>(k, i);
    out[i] = expected(col, op);
  }
  return out;
}

bool same_bits(const void* a, const void* b, size_t bytes) {
  return bytes == 0 || std::memcmp(a, b, bytes) == 0;  // an empty vector's data() may be NULL
}

const ncclRedOp_t kOps[] = {ncclSum, ncclProd, ncclMax, ncclMin, ncclAvg};

// Every op on `nranks` ranks, for one type, checked bitwise on every rank.
template <typename T>
void check_allreduce_all_ops(int nranks, size_t count) {
  const ncclUniqueId id = new_id();
  run_ranks(nranks, [&](int rank) {
    RankCtx ctx;
    ctx.init(nranks, id, rank);
    const std::vector<T> send = rank_values<T>(rank, count);
    for (ncclRedOp_t op : kOps) {
      std::vector<T> recv(count, T(99));
      ASSERT_EQ(ncclAllReduce(send.data(), recv.data(), count, dtype_of<T>(), op, ctx.comm,
                              ctx.stream), ncclSuccess) << ncclGetLastError(ctx.comm);
      const std::vector<T> want = expected_allreduce<T>(nranks, count, op);
      EXPECT_TRUE(same_bits(recv.data(), want.data(), count * sizeof(T)))
          << "op " << op << " dtype " << dtype_of<T>() << " rank " << rank << " of " << nranks;
    }
  });
}

// ---- basics ------------------------------------------------------------------------------

TEST(NcclEmu, VersionAndUniqueIds) {
  int v = 0;
  ASSERT_EQ(ncclGetVersion(&v), ncclSuccess);
  EXPECT_EQ(v, NCCL_VERSION_CODE);
  EXPECT_EQ(ncclGetVersion(nullptr), ncclInvalidArgument);
  const ncclUniqueId a = new_id(), b = new_id();
  EXPECT_NE(std::memcmp(a.internal, b.internal, sizeof a.internal), 0);
  EXPECT_EQ(ncclGetUniqueId(nullptr), ncclInvalidArgument);
}

TEST(NcclEmu, InitRankJoinsAllRanksAndReportsThem) {
  for (int n : {1, 2, 3, 8}) {
    const ncclUniqueId id = new_id();
    run_ranks(n, [&](int rank) {
      RankCtx ctx;
      ctx.init(n, id, rank);
      int count = -1, me = -1, dev = -1;
      EXPECT_EQ(ncclCommCount(ctx.comm, &count), ncclSuccess);
      EXPECT_EQ(ncclCommUserRank(ctx.comm, &me), ncclSuccess);
      EXPECT_EQ(ncclCommCuDevice(ctx.comm, &dev), ncclSuccess);
      EXPECT_EQ(count, n);
      EXPECT_EQ(me, rank);
      EXPECT_EQ(dev, 0);  // the emulator's one device
      ncclResult_t async = ncclInternalError;
      EXPECT_EQ(ncclCommGetAsyncError(ctx.comm, &async), ncclSuccess);
      EXPECT_EQ(async, ncclSuccess);
      EXPECT_EQ(ncclCommFinalize(ctx.comm), ncclSuccess);
    });
  }
}

TEST(NcclEmu, InitRankConfigIgnoresTheConfig) {
  const ncclUniqueId id = new_id();
  run_ranks(2, [&](int rank) {
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t comm = nullptr;
    ASSERT_EQ(ncclCommInitRankConfig(&comm, 2, id, rank, &config), ncclSuccess);
    int me = -1;
    EXPECT_EQ(ncclCommUserRank(comm, &me), ncclSuccess);
    EXPECT_EQ(me, rank);
    int x = rank + 1, sum = 0;
    EXPECT_EQ(ncclAllReduce(&x, &sum, 1, ncclInt32, ncclSum, comm, nullptr), ncclSuccess);
    EXPECT_EQ(sum, 3);
    EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);
  });
}

// ---- all-gather ---------------------------------------------------------------------------

TEST(NcclEmu, AllGather) {
  for (int n : {2, 3, 8})
    for (size_t count : {size_t(0), size_t(1), size_t(37), size_t(100003)}) {
      const ncclUniqueId id = new_id();
      run_ranks(n, [&](int rank) {
        RankCtx ctx;
        ctx.init(n, id, rank);
        const std::vector<float> send = rank_values<float>(rank, count);
        std::vector<float> recv(count * n + 1, -7.0f);  // one guard value past the end
        ASSERT_EQ(ncclAllGather(send.data(), recv.data(), count, ncclFloat32, ctx.comm,
                                ctx.stream), ncclSuccess) << ncclGetLastError(ctx.comm);
        for (int k = 0; k < n; ++k) {
          const std::vector<float> want = rank_values<float>(k, count);
          EXPECT_TRUE(same_bits(recv.data() + k * count, want.data(), count * sizeof(float)))
              << "segment of rank " << k << " on rank " << rank << ", n " << n << " count "
              << count;
        }
        EXPECT_EQ(recv[count * n], -7.0f) << "wrote past the receive buffer";
      });
    }
}

TEST(NcclEmu, AllGatherInPlace) {
  for (int n : {2, 3, 8}) {
    const size_t count = 1001;
    const ncclUniqueId id = new_id();
    run_ranks(n, [&](int rank) {
      RankCtx ctx;
      ctx.init(n, id, rank);
      std::vector<int64_t> buf(count * n, -1);
      for (size_t i = 0; i < count; ++i)
        buf[rank * count + i] = value<int64_t>(rank, i) + (int64_t(1) << 53);
      ASSERT_EQ(ncclAllGather(buf.data() + rank * count, buf.data(), count, ncclInt64, ctx.comm,
                              ctx.stream), ncclSuccess) << ncclGetLastError(ctx.comm);
      for (int k = 0; k < n; ++k)
        for (size_t i = 0; i < count; ++i)
          ASSERT_EQ(buf[k * count + i], value<int64_t>(k, i) + (int64_t(1) << 53))
              << "rank " << rank << " segment " << k << " i " << i;
    });
  }
}

// ---- all-reduce ---------------------------------------------------------------------------

TEST(NcclEmu, AllReduceEveryOpAndType) {
  for (int n : {2, 3, 8})
    for (size_t count : {size_t(1), size_t(257)}) {
      check_allreduce_all_ops<float>(n, count);
      check_allreduce_all_ops<double>(n, count);
      check_allreduce_all_ops<int32_t>(n, count);
      check_allreduce_all_ops<int64_t>(n, count);
      check_allreduce_all_ops<uint8_t>(n, count);
      check_allreduce_all_ops<int8_t>(n, count);
      check_allreduce_all_ops<uint32_t>(n, count);
      check_allreduce_all_ops<uint64_t>(n, count);
    }
}

TEST(NcclEmu, AllReduceOddLargeCountAndZero) {
  const int n = 3;
  const size_t count = 200001;
  const std::vector<double> want = expected_allreduce<double>(n, count, ncclSum);
  const ncclUniqueId id = new_id();
  run_ranks(n, [&](int rank) {
    RankCtx ctx;
    ctx.init(n, id, rank);
    const std::vector<double> send = rank_values<double>(rank, count);
    std::vector<double> recv(count, 0.0);
    ASSERT_EQ(ncclAllReduce(send.data(), recv.data(), count, ncclFloat64, ncclSum, ctx.comm,
                            ctx.stream), ncclSuccess);
    EXPECT_TRUE(same_bits(recv.data(), want.data(), count * sizeof(double)));
    // count 0 with no buffers at all is a successful no-op.
    EXPECT_EQ(ncclAllReduce(nullptr, nullptr, 0, ncclFloat64, ncclSum, ctx.comm, ctx.stream),
              ncclSuccess);
  });
}

TEST(NcclEmu, AllReduceInPlace) {
  const int n = 8;
  const size_t count = 999;
  const std::vector<float> want = expected_allreduce<float>(n, count, ncclSum);
  const ncclUniqueId id = new_id();
  run_ranks(n, [&](int rank) {
    RankCtx ctx;
    ctx.init(n, id, rank);
    std::vector<float> buf = rank_values<float>(rank, count);
    ASSERT_EQ(ncclAllReduce(buf.data(), buf.data(), count, ncclFloat32, ncclSum, ctx.comm,
                            ctx.stream), ncclSuccess);
    EXPECT_TRUE(same_bits(buf.data(), want.data(), count * sizeof(float))) << "rank " << rank;
  });
}

// Float sums add the ranks in order 0, 1, 2, ...: bitwise the same on every
// rank and in every run.
TEST(NcclEmu, FloatSumIsInRankOrderAndBitwiseReproducible) {
  // (1 + 1e8) - 1e8 is 0 in float; any other order of these three gives 1.
  const float three[3] = {1.0f, 1e8f, -1e8f};
  const float in_rank_order = (three[0] + three[1]) + three[2];
  ASSERT_EQ(in_rank_order, 0.0f);
  ASSERT_NE(three[0] + (three[1] + three[2]), in_rank_order);  // the test can tell
  const ncclUniqueId id3 = new_id();
  run_ranks(3, [&](int rank) {
    RankCtx ctx;
    ctx.init(3, id3, rank);
    float out = -1.0f;
    ASSERT_EQ(ncclAllReduce(&three[rank], &out, 1, ncclFloat32, ncclSum, ctx.comm, ctx.stream),
              ncclSuccess);
    EXPECT_EQ(out, in_rank_order);
  });

  const int n = 8;
  const size_t count = 4097;
  std::vector<std::vector<float>> results(size_t(2 * n));
  for (int run = 0; run < 2; ++run) {
    const ncclUniqueId id = new_id();
    run_ranks(n, [&](int rank) {
      RankCtx ctx;
      ctx.init(n, id, rank);
      const std::vector<float> send = rank_values<float>(rank, count);
      std::vector<float>& out = results[size_t(run * n + rank)];
      out.assign(count, 0.0f);
      ASSERT_EQ(ncclAllReduce(send.data(), out.data(), count, ncclFloat32, ncclSum, ctx.comm,
                              ctx.stream), ncclSuccess);
    });
  }
  const std::vector<float> want = expected_allreduce<float>(n, count, ncclSum);
  for (const auto& r : results)
    EXPECT_TRUE(same_bits(r.data(), want.data(), count * sizeof(float)));
  for (const auto& r : results)
    EXPECT_TRUE(same_bits(r.data(), results[0].data(), count * sizeof(float)));
}

TEST(NcclEmu, HalfAndBfloat16Reductions) {
  const int n = 3;
  const size_t count = 64;
  const ncclUniqueId id = new_id();
  run_ranks(n, [&](int rank) {
    RankCtx ctx;
    ctx.init(n, id, rank);
    // Small integers: exact in both types, so the expectation is exact.
    std::vector<__half> h(count);
    std::vector<__nv_bfloat16> b(count);
    for (size_t i = 0; i < count; ++i) {
      h[i] = __float2half(float(rank * 10 + int(i % 7)));
      b[i] = __float2bfloat16(float(rank * 10 + int(i % 7)));
    }
    std::vector<__half> hs(count), hm(count);
    std::vector<__nv_bfloat16> bs(count);
    ASSERT_EQ(ncclAllReduce(h.data(), hs.data(), count, ncclFloat16, ncclSum, ctx.comm, ctx.stream),
              ncclSuccess);
    ASSERT_EQ(ncclAllReduce(h.data(), hm.data(), count, ncclFloat16, ncclMax, ctx.comm, ctx.stream),
              ncclSuccess);
    ASSERT_EQ(
        ncclAllReduce(b.data(), bs.data(), count, ncclBfloat16, ncclSum, ctx.comm, ctx.stream),
        ncclSuccess);
    for (size_t i = 0; i < count; ++i) {
      const float v = float(i % 7);
      EXPECT_EQ(__half2float(hs[i]), 3 * v + 30.0f);   // (0 + 10 + 20) + 3v
      EXPECT_EQ(__half2float(hm[i]), v + 20.0f);
      EXPECT_EQ(__bfloat162float(bs[i]), 3 * v + 30.0f);
    }
  });
}

// ---- broadcast, reduce-scatter ----------------------------------------------------------------

TEST(NcclEmu, BroadcastFromEveryRoot) {
  const int n = 3;
  const size_t count = 513;
  const ncclUniqueId id = new_id();
  run_ranks(n, [&](int rank) {
    RankCtx ctx;
    ctx.init(n, id, rank);
    for (int root = 0; root < n; ++root) {
      const std::vector<int32_t> send = rank_values<int32_t>(root * 100 + rank, count);
      std::vector<int32_t> recv(count, 12345);
      // Only the root's send buffer is read: the others pass none.
      const void* s = rank == root ? send.data() : nullptr;
      ASSERT_EQ(ncclBroadcast(s, recv.data(), count, ncclInt32, root, ctx.comm, ctx.stream),
                ncclSuccess) << ncclGetLastError(ctx.comm);
      EXPECT_EQ(recv, rank_values<int32_t>(root * 100 + root, count)) << "root " << root;
      // In place: the root's receive buffer is its send buffer.
      std::vector<int32_t> buf = rank == root ? send : std::vector<int32_t>(count, 0);
      ASSERT_EQ(ncclBroadcast(buf.data(), buf.data(), count, ncclInt32, root, ctx.comm,
                              ctx.stream), ncclSuccess);
      EXPECT_EQ(buf, rank_values<int32_t>(root * 100 + root, count)) << "in place, root " << root;
    }
  });
}

TEST(NcclEmu, ReduceScatter) {
  for (int n : {2, 3, 8}) {
    const size_t rc = 33;  // per-rank result count
    const std::vector<double> full = expected_allreduce<double>(n, rc * n, ncclSum);
    const std::vector<int32_t> full_max = expected_allreduce<int32_t>(n, rc * n, ncclMax);
    const ncclUniqueId id = new_id();
    run_ranks(n, [&](int rank) {
      RankCtx ctx;
      ctx.init(n, id, rank);
      const std::vector<double> send = rank_values<double>(rank, rc * n);
      std::vector<double> recv(rc, 0.0);
      ASSERT_EQ(ncclReduceScatter(send.data(), recv.data(), rc, ncclFloat64, ncclSum, ctx.comm,
                                  ctx.stream), ncclSuccess);
      EXPECT_TRUE(same_bits(recv.data(), full.data() + rank * rc, rc * sizeof(double)));
      // In place: recvbuff == sendbuff + rank * recvcount.
      std::vector<int32_t> buf = rank_values<int32_t>(rank, rc * n);
      ASSERT_EQ(ncclReduceScatter(buf.data(), buf.data() + rank * rc, rc, ncclInt32, ncclMax,
                                  ctx.comm, ctx.stream), ncclSuccess);
      for (size_t i = 0; i < rc; ++i) EXPECT_EQ(buf[rank * rc + i], full_max[rank * rc + i]);
    });
  }
}

// ---- ncclCommInitAll and groups -----------------------------------------------------------------

TEST(NcclEmu, CommInitAllFromOneThreadWithAGroup) {
  const int n = 4;
  const int devs[n] = {3, 1, 0, 2};
  ncclComm_t comms[n];
  ASSERT_EQ(ncclCommInitAll(comms, n, devs), ncclSuccess);
  for (int i = 0; i < n; ++i) {
    int count = 0, rank = -1, dev = -1;
    EXPECT_EQ(ncclCommCount(comms[i], &count), ncclSuccess);
    EXPECT_EQ(ncclCommUserRank(comms[i], &rank), ncclSuccess);
    EXPECT_EQ(ncclCommCuDevice(comms[i], &dev), ncclSuccess);
    EXPECT_EQ(count, n);
    EXPECT_EQ(rank, i);
    EXPECT_EQ(dev, devs[i]);
  }
  // One thread drives every rank: the calls must be grouped (as with NCCL).
  const size_t count = 101;
  std::vector<std::vector<int64_t>> send(n), recv(n, std::vector<int64_t>(count, 0));
  for (int i = 0; i < n; ++i) send[i] = rank_values<int64_t>(i, count);
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  for (int i = 0; i < n; ++i)
    ASSERT_EQ(ncclAllReduce(send[i].data(), recv[i].data(), count, ncclInt64, ncclSum, comms[i],
                            nullptr), ncclSuccess);
  for (int i = 0; i < n; ++i)
    EXPECT_EQ(recv[i], std::vector<int64_t>(count, 0)) << "ran before ncclGroupEnd";
  ASSERT_EQ(ncclGroupEnd(), ncclSuccess) << ncclGetLastError(nullptr);
  const std::vector<int64_t> want = expected_allreduce<int64_t>(n, count, ncclSum);
  for (int i = 0; i < n; ++i) EXPECT_EQ(recv[i], want) << "rank " << i;
  for (int i = 0; i < n; ++i) EXPECT_EQ(ncclCommDestroy(comms[i]), ncclSuccess);

  // Without a devlist the devices are 0 .. ndev-1.
  ASSERT_EQ(ncclCommInitAll(comms, 2, nullptr), ncclSuccess);
  int dev = -1;
  EXPECT_EQ(ncclCommCuDevice(comms[1], &dev), ncclSuccess);
  EXPECT_EQ(dev, 1);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(ncclCommDestroy(comms[i]), ncclSuccess);
}

TEST(NcclEmu, InitRankOfEveryRankInOneGroupFromOneThread) {
  const int n = 3;
  const ncclUniqueId id = new_id();
  ncclComm_t comms[n];
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  for (int i = 0; i < n; ++i) ASSERT_EQ(ncclCommInitRank(&comms[i], n, id, i), ncclSuccess);
  ASSERT_EQ(ncclGroupEnd(), ncclSuccess) << ncclGetLastError(nullptr);
  int x[n] = {1, 20, 300}, y[n] = {0, 0, 0};
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  for (int i = 0; i < n; ++i)
    ASSERT_EQ(ncclAllReduce(&x[i], &y[i], 1, ncclInt32, ncclSum, comms[i], nullptr), ncclSuccess);
  ASSERT_EQ(ncclGroupEnd(), ncclSuccess);
  for (int i = 0; i < n; ++i) EXPECT_EQ(y[i], 321);
  for (int i = 0; i < n; ++i) EXPECT_EQ(ncclCommDestroy(comms[i]), ncclSuccess);
}

// On each rank's own thread: calls of a (nested) group are queued and run,
// in order, at the outermost ncclGroupEnd.
TEST(NcclEmu, GroupQueuesCallsUntilTheOutermostEnd) {
  const int n = 3;
  const size_t count = 17;
  const ncclUniqueId id = new_id();
  run_ranks(n, [&](int rank) {
    RankCtx ctx;
    ctx.init(n, id, rank);
    const std::vector<float> a = rank_values<float>(rank, count);
    const std::vector<int32_t> b = rank_values<int32_t>(rank, count);
    std::vector<float> sum(count, 0.0f), gathered(count * n, 0.0f);
    std::vector<int32_t> mx(count, 0);
    ASSERT_EQ(ncclGroupStart(), ncclSuccess);
    ASSERT_EQ(
        ncclAllReduce(a.data(), sum.data(), count, ncclFloat32, ncclSum, ctx.comm, ctx.stream),
        ncclSuccess);
    ASSERT_EQ(ncclGroupStart(), ncclSuccess);
    ASSERT_EQ(ncclAllGather(a.data(), gathered.data(), count, ncclFloat32, ctx.comm, ctx.stream),
              ncclSuccess);
    ASSERT_EQ(ncclAllReduce(b.data(), mx.data(), count, ncclInt32, ncclMax, ctx.comm, ctx.stream),
              ncclSuccess);
    ASSERT_EQ(ncclGroupEnd(), ncclSuccess);
    EXPECT_EQ(sum, std::vector<float>(count, 0.0f)) << "an inner ncclGroupEnd issued the group";
    EXPECT_EQ(mx, std::vector<int32_t>(count, 0));
    ASSERT_EQ(ncclGroupEnd(), ncclSuccess) << ncclGetLastError(ctx.comm);
    const std::vector<float> want = expected_allreduce<float>(n, count, ncclSum);
    EXPECT_TRUE(same_bits(sum.data(), want.data(), count * sizeof(float)));
    EXPECT_EQ(mx, expected_allreduce<int32_t>(n, count, ncclMax));
    for (int k = 0; k < n; ++k)
      EXPECT_TRUE(same_bits(gathered.data() + k * count, rank_values<float>(k, count).data(),
                            count * sizeof(float)));
  });
  EXPECT_EQ(ncclGroupEnd(), ncclInvalidUsage);  // no group open
}

TEST(NcclEmu, AGroupWithAFailedCallIssuesNothing) {
  ncclComm_t comms[2];
  ASSERT_EQ(ncclCommInitAll(comms, 2, nullptr), ncclSuccess);
  int x = 5, y = 0;
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  EXPECT_EQ(ncclAllReduce(&x, &y, 1, ncclInt32, ncclSum, comms[0], nullptr), ncclSuccess);
  EXPECT_EQ(ncclAllReduce(&x, nullptr, 1, ncclInt32, ncclSum, comms[1], nullptr),
            ncclInvalidArgument);
  EXPECT_EQ(ncclGroupEnd(), ncclInvalidArgument);  // returns at once: rank 1 never joins
  EXPECT_EQ(y, 0);
  EXPECT_NE(std::string(ncclGetLastError(nullptr)).find("recvbuff"), std::string::npos)
      << ncclGetLastError(nullptr);
  // The communicators are still usable.
  int xs[2] = {5, 6}, ys[2] = {0, 0};
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  for (int i = 0; i < 2; ++i)
    EXPECT_EQ(ncclAllReduce(&xs[i], &ys[i], 1, ncclInt32, ncclSum, comms[i], nullptr), ncclSuccess);
  ASSERT_EQ(ncclGroupEnd(), ncclSuccess);
  EXPECT_EQ(ys[0], 11);
  EXPECT_EQ(ys[1], 11);
  for (ncclComm_t c : comms) EXPECT_EQ(ncclCommDestroy(c), ncclSuccess);
}

// ---- stream capture
// -------------------------------------------------------------------------------

// Captured (a copy into the send buffer, then the all-reduce), the
// collective does nothing; at each launch of the graph on every rank it
// runs, after the copy, with the values of that launch.
TEST(NcclEmu, CollectiveInsideStreamCaptureRunsAtEachGraphLaunch) {
  const int n = 3;
  const size_t count = 129;
  const ncclUniqueId id = new_id();
  Barrier barrier(n);
  run_ranks(n, [&](int rank) {
    RankCtx ctx;
    ctx.init(n, id, rank);
    std::vector<float> src(count), send(count, 0.0f), recv(count, -1.0f);
    ASSERT_EQ(cudaStreamBeginCapture(ctx.stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    ASSERT_EQ(cudaMemcpyAsync(send.data(), src.data(), count * sizeof(float),
                              cudaMemcpyHostToDevice, ctx.stream), cudaSuccess);
    ASSERT_EQ(ncclAllReduce(send.data(), recv.data(), count, ncclFloat32, ncclSum, ctx.comm,
                            ctx.stream), ncclSuccess);
    cudaGraph_t graph = nullptr;
    ASSERT_EQ(cudaStreamEndCapture(ctx.stream, &graph), cudaSuccess);
    size_t nodes = 0;
    EXPECT_EQ(cudaGraphGetNodes(graph, nullptr, &nodes), cudaSuccess);
    EXPECT_EQ(nodes, 2u);
    EXPECT_EQ(recv, std::vector<float>(count, -1.0f)) << "the captured collective ran";
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);

    // A collective outside the graph still pairs with the other ranks' next
    // one: capture advanced no sequence number.
    int one = 1, ranks = 0;
    ASSERT_EQ(ncclAllReduce(&one, &ranks, 1, ncclInt32, ncclSum, ctx.comm, ctx.stream),
              ncclSuccess);
    EXPECT_EQ(ranks, n);
    EXPECT_EQ(recv, std::vector<float>(count, -1.0f));

    for (int launch = 0; launch < 3; ++launch) {
      for (size_t i = 0; i < count; ++i) src[i] = value<float>(rank + 10 * launch, i);
      ASSERT_EQ(cudaGraphLaunch(exec, ctx.stream), cudaSuccess);
      ASSERT_EQ(cudaStreamSynchronize(ctx.stream), cudaSuccess);
      ncclResult_t async = ncclInternalError;
      EXPECT_EQ(ncclCommGetAsyncError(ctx.comm, &async), ncclSuccess);
      EXPECT_EQ(async, ncclSuccess) << ncclGetLastError(ctx.comm);
      std::vector<float> want(count);
      for (size_t i = 0; i < count; ++i) {
        float acc = value<float>(0 + 10 * launch, i);
        for (int k = 1; k < n; ++k) acc += value<float>(k + 10 * launch, i);
        want[i] = acc;
      }
      EXPECT_TRUE(same_bits(recv.data(), want.data(), count * sizeof(float)))
          << "launch " << launch << " rank " << rank;
      barrier.wait();  // every rank has read this launch's src before it changes
    }
    EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
    EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  });
}

TEST(NcclEmu, CapturedGroupWithTwoRanksOfOneCommunicatorIsRefused) {
  ncclComm_t comms[2];
  ASSERT_EQ(ncclCommInitAll(comms, 2, nullptr), ncclSuccess);
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  int x[2] = {1, 2}, y[2] = {0, 0};
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  for (int i = 0; i < 2; ++i)
    ASSERT_EQ(ncclAllReduce(&x[i], &y[i], 1, ncclInt32, ncclSum, comms[i], s), ncclSuccess);
  EXPECT_EQ(ncclGroupEnd(), ncclInvalidUsage);
  cudaGraph_t g = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
  size_t nodes = 1;
  EXPECT_EQ(cudaGraphGetNodes(g, nullptr, &nodes), cudaSuccess);
  EXPECT_EQ(nodes, 0u);
  EXPECT_EQ(cudaGraphDestroy(g), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
  for (ncclComm_t c : comms) EXPECT_EQ(ncclCommDestroy(c), ncclSuccess);
}

// The graph holds the rank's state, not its handle: launched after
// ncclCommDestroy, the collective fails (says so) instead of touching freed
// memory or waiting for peers.
TEST(NcclEmu, GraphLaunchedAfterItsCommunicatorIsDestroyedFails) {
  ncclComm_t comm = nullptr;
  ASSERT_EQ(ncclCommInitAll(&comm, 1, nullptr), ncclSuccess);
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  int x = 4, y = 0;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(ncclAllReduce(&x, &y, 1, ncclInt32, ncclSum, comm, s), ncclSuccess);
  cudaGraph_t g = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, g, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  EXPECT_EQ(y, 4);
  y = 0;
  ASSERT_EQ(ncclCommDestroy(comm), ncclSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  EXPECT_EQ(y, 0);
  EXPECT_NE(std::string(ncclGetLastError(nullptr)).find("destroyed"), std::string::npos)
      << ncclGetLastError(nullptr);
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(g), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

// ---- errors
// ---------------------------------------------------------------------------------------

TEST(NcclEmu, BadArgumentsAreRefused) {
  ncclComm_t comm = nullptr;
  ASSERT_EQ(ncclCommInitAll(&comm, 1, nullptr), ncclSuccess);
  float a[4] = {1, 2, 3, 4}, b[4] = {};
  const ncclDataType_t bad_type = ncclDataType_t(ncclNumTypes);
  const ncclRedOp_t bad_op = ncclRedOp_t(ncclNumOps);
  auto last = [] { return std::string(ncclGetLastError(nullptr)); };

  // NULL communicator.
  EXPECT_EQ(ncclAllReduce(a, b, 4, ncclFloat32, ncclSum, nullptr, nullptr), ncclInvalidArgument);
  EXPECT_NE(last().find("ncclAllReduce"), std::string::npos) << last();
  EXPECT_EQ(ncclAllGather(a, b, 1, ncclFloat32, nullptr, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclBroadcast(a, b, 4, ncclFloat32, 0, nullptr, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclReduceScatter(a, b, 4, ncclFloat32, ncclSum, nullptr, nullptr),
            ncclInvalidArgument);
  int v = 0;
  ncclResult_t r = ncclSuccess;
  EXPECT_EQ(ncclCommCount(nullptr, &v), ncclInvalidArgument);
  EXPECT_EQ(ncclCommUserRank(nullptr, &v), ncclInvalidArgument);
  EXPECT_EQ(ncclCommCuDevice(nullptr, &v), ncclInvalidArgument);
  EXPECT_EQ(ncclCommGetAsyncError(nullptr, &r), ncclInvalidArgument);
  EXPECT_EQ(ncclCommCount(comm, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclCommGetAsyncError(comm, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclCommFinalize(nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclCommDestroy(nullptr), ncclSuccess);  // as NCCL: nothing to destroy
  EXPECT_EQ(ncclCommAbort(nullptr), ncclSuccess);

  // NULL buffers with a count; none needed with count 0.
  EXPECT_EQ(ncclAllReduce(nullptr, b, 4, ncclFloat32, ncclSum, comm, nullptr), ncclInvalidArgument);
  EXPECT_NE(last().find("sendbuff"), std::string::npos) << last();
  EXPECT_EQ(ncclAllReduce(a, nullptr, 4, ncclFloat32, ncclSum, comm, nullptr), ncclInvalidArgument);
  EXPECT_NE(last().find("recvbuff"), std::string::npos) << last();
  EXPECT_EQ(ncclAllGather(nullptr, b, 1, ncclFloat32, comm, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclReduceScatter(a, nullptr, 1, ncclFloat32, ncclSum, comm, nullptr),
            ncclInvalidArgument);
  EXPECT_EQ(ncclBroadcast(nullptr, b, 1, ncclFloat32, 0, comm, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(nullptr, nullptr, 0, ncclFloat32, ncclSum, comm, nullptr), ncclSuccess);
  EXPECT_EQ(ncclAllGather(nullptr, nullptr, 0, ncclFloat32, comm, nullptr), ncclSuccess);

  // Bad datatype, op, root.
  EXPECT_EQ(ncclAllReduce(a, b, 4, bad_type, ncclSum, comm, nullptr), ncclInvalidArgument);
  EXPECT_NE(last().find("datatype"), std::string::npos) << last();
  EXPECT_EQ(ncclAllGather(a, b, 1, bad_type, comm, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(a, b, 4, ncclFloat32, bad_op, comm, nullptr), ncclInvalidArgument);
  EXPECT_NE(last().find("op"), std::string::npos) << last();
  EXPECT_EQ(ncclReduceScatter(a, b, 4, ncclFloat32, bad_op, comm, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclBroadcast(a, b, 4, ncclFloat32, 1, comm, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclBroadcast(a, b, 4, ncclFloat32, -1, comm, nullptr), ncclInvalidArgument);

  // Nothing above touched the output or advanced the sequence: a 1-rank
  // all-reduce still works.
  EXPECT_EQ(b[0], 0.0f);
  ASSERT_EQ(ncclAllReduce(a, b, 4, ncclFloat32, ncclSum, comm, nullptr), ncclSuccess);
  EXPECT_EQ(b[3], 4.0f);
  EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);

  // Init.
  const ncclUniqueId id = new_id();
  ncclComm_t c = nullptr;
  EXPECT_EQ(ncclCommInitRank(nullptr, 2, id, 0), ncclInvalidArgument);
  EXPECT_EQ(ncclCommInitRank(&c, 0, id, 0), ncclInvalidArgument);
  EXPECT_EQ(ncclCommInitRank(&c, -1, id, 0), ncclInvalidArgument);
  EXPECT_EQ(ncclCommInitRank(&c, 2, id, 2), ncclInvalidArgument);
  EXPECT_EQ(ncclCommInitRank(&c, 2, id, -1), ncclInvalidArgument);
  EXPECT_NE(last().find("rank"), std::string::npos) << last();
  ncclUniqueId zero;
  std::memset(&zero, 0, sizeof zero);
  EXPECT_EQ(ncclCommInitRank(&c, 1, zero, 0), ncclInvalidArgument);
  EXPECT_EQ(c, nullptr);
  EXPECT_EQ(ncclCommInitAll(nullptr, 2, nullptr), ncclInvalidArgument);
  ncclComm_t cs[2];
  EXPECT_EQ(ncclCommInitAll(cs, 0, nullptr), ncclInvalidArgument);
  const int bad_dev[2] = {0, -1};
  EXPECT_EQ(ncclCommInitAll(cs, 2, bad_dev), ncclInvalidArgument);

  // Every result has its string.
  for (int e = ncclSuccess; e < ncclNumResults; ++e) {
    ASSERT_NE(ncclGetErrorString(ncclResult_t(e)), nullptr);
    for (int f = 0; f < e; ++f)
      EXPECT_STRNE(ncclGetErrorString(ncclResult_t(e)), ncclGetErrorString(ncclResult_t(f)));
  }
}

TEST(NcclEmu, InitWithDisagreeingRanksFails) {
  ScopedEnv env("BNORM_NCCL_EMU_TIMEOUT_S", "0.5");
  const ncclUniqueId id = new_id();
  std::atomic<int> ok{0}, usage{0}, remote{0};
  // Rank 0 twice: the second is refused; the clique of two never completes.
  run_ranks(2, [&](int) {
    ncclComm_t c = nullptr;
    const ncclResult_t e = ncclCommInitRank(&c, 2, id, 0);
    (e == ncclSuccess ? ok : e == ncclInvalidUsage ? usage : remote)++;
    if (c) ncclCommDestroy(c);
  });
  EXPECT_EQ(ok.load(), 0);
  EXPECT_EQ(usage.load(), 1);
  EXPECT_EQ(remote.load(), 1);  // the first timed out waiting for rank 1
}

// The same sequence number, different collectives: every rank of the round
// fails with ncclInvalidUsage at once (not at the timeout), the async error
// says so, and later collectives fail at once too.
TEST(NcclEmu, MismatchedCollectivesFailWithoutHanging) {
  ScopedEnv env("BNORM_NCCL_EMU_TIMEOUT_S", "30");
  struct Mismatch {
    const char* what;
    std::function<ncclResult_t(int rank, ncclComm_t, float*, float*)> call;
  };
  const std::vector<Mismatch> cases = {
      {"kind", [](int r, ncclComm_t c, float* s, float* d) {
         return r == 0 ? ncclAllReduce(s, d, 4, ncclFloat32, ncclSum, c, nullptr)
                       : ncclAllGather(s, d, 2, ncclFloat32, c, nullptr); }},
      {"count", [](int r, ncclComm_t c, float* s, float* d) {
         return ncclAllReduce(s, d, r == 0 ? 4 : 3, ncclFloat32, ncclSum, c, nullptr); }},
      {"datatype", [](int r, ncclComm_t c, float* s, float* d) {
         return ncclAllReduce(s, d, 4, r == 0 ? ncclFloat32 : ncclInt32, ncclSum, c, nullptr); }},
      {"op", [](int r, ncclComm_t c, float* s, float* d) {
         return ncclAllReduce(s, d, 4, ncclFloat32, r == 0 ? ncclSum : ncclMax, c, nullptr); }},
      {"root", [](int r, ncclComm_t c, float* s, float* d) {
         return ncclBroadcast(s, d, 4, ncclFloat32, r, c, nullptr); }},
  };
  for (const Mismatch& m : cases) {
    const ncclUniqueId id = new_id();
    const Clock::time_point t0 = Clock::now();
    run_ranks(2, [&](int rank) {
      RankCtx ctx;
      ctx.init(2, id, rank);
      float s[4] = {1, 2, 3, 4}, d[4] = {0, 0, 0, 0};
      EXPECT_EQ(m.call(rank, ctx.comm, s, d), ncclInvalidUsage) << m.what;
      const std::string msg = ncclGetLastError(ctx.comm);
      EXPECT_NE(msg.find("mismatched"), std::string::npos) << msg;
      ncclResult_t async = ncclSuccess;
      EXPECT_EQ(ncclCommGetAsyncError(ctx.comm, &async), ncclSuccess);
      EXPECT_EQ(async, ncclInvalidUsage);
      EXPECT_EQ(ncclAllReduce(s, d, 4, ncclFloat32, ncclSum, ctx.comm, nullptr), ncclInvalidUsage);
      EXPECT_EQ(d[0], 0.0f) << "a failed collective wrote its output";
    });
    EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 10.0) << m.what;
  }
}

// A rank that never arrives: the others fail with ncclRemoteError after the
// timeout, and so does the late rank when it arrives at the failed round.
TEST(NcclEmu, MissingRankTimesOut) {
  ScopedEnv env("BNORM_NCCL_EMU_TIMEOUT_S", "0.3");
  const ncclUniqueId id = new_id();
  Barrier barrier(3);
  run_ranks(3, [&](int rank) {
    RankCtx ctx;
    ctx.init(3, id, rank);
    float s = 1.0f, d = 0.0f;
    if (rank != 2) {
      const Clock::time_point t0 = Clock::now();
      EXPECT_EQ(ncclAllReduce(&s, &d, 1, ncclFloat32, ncclSum, ctx.comm, nullptr), ncclRemoteError);
      const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
      EXPECT_GE(waited, 0.1);  // the first to give up waited 0.3 s; the other, a little less
      EXPECT_LT(waited, 10.0);
      const std::string msg = ncclGetLastError(ctx.comm);
      EXPECT_NE(msg.find("BNORM_NCCL_EMU_TIMEOUT_S"), std::string::npos) << msg;
    }
    barrier.wait();  // rank 2 comes late
    if (rank == 2) {
      const Clock::time_point t0 = Clock::now();
      EXPECT_EQ(ncclAllReduce(&s, &d, 1, ncclFloat32, ncclSum, ctx.comm, nullptr), ncclRemoteError);
      EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 0.25);
    }
    ncclResult_t async = ncclSuccess;
    EXPECT_EQ(ncclCommGetAsyncError(ctx.comm, &async), ncclSuccess);
    EXPECT_EQ(async, ncclRemoteError);
    EXPECT_EQ(d, 0.0f);
  });

  // An init that waits for a rank that never joins.
  ncclComm_t c = nullptr;
  EXPECT_EQ(ncclCommInitRank(&c, 2, new_id(), 1), ncclRemoteError);
  EXPECT_EQ(c, nullptr);
}

TEST(NcclEmu, AbortWakesTheRanksWaitingForIt) {
  ScopedEnv env("BNORM_NCCL_EMU_TIMEOUT_S", "60");
  const ncclUniqueId id = new_id();
  const Clock::time_point t0 = Clock::now();
  run_ranks(2, [&](int rank) {
    ncclComm_t comm = nullptr;
    ASSERT_EQ(ncclCommInitRank(&comm, 2, id, rank), ncclSuccess);
    if (rank == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let rank 0 wait
      EXPECT_EQ(ncclCommAbort(comm), ncclSuccess);
      return;
    }
    int s = 1, d = 0;
    EXPECT_EQ(ncclAllReduce(&s, &d, 1, ncclInt32, ncclSum, comm, nullptr), ncclRemoteError);
    EXPECT_NE(std::string(ncclGetLastError(comm)).find("aborted"), std::string::npos);
    EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);
  });
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 10.0);
}

// ---- several communicators at once
// --------------------------------------------------------------------

// Two jobs of three ranks each, all six threads issuing at once, plus a
// third communicator spanning one rank of each job (threads 0 and 3): the
// rendezvous of one never pairs with another's.
TEST(NcclEmu, IndependentCommunicatorsConcurrently) {
  const ncclUniqueId job_id[2] = {new_id(), new_id()};
  const ncclUniqueId cross_id = new_id();
  const int rounds = 200;  // back to back: a rank may start the next round before all left
  run_ranks(6, [&](int t) {
    const int job = t / 3, rank = t % 3;
    RankCtx ctx;
    ctx.init(3, job_id[job], rank);
    ncclComm_t cross = nullptr;
    if (rank == 0) {
      ASSERT_EQ(ncclCommInitRank(&cross, 2, cross_id, job), ncclSuccess);
    }
    for (int i = 0; i < rounds; ++i) {
      int64_t s[2] = {int64_t(1000 * job + 10 * rank + i), int64_t(rank)}, d[2] = {0, 0};
      ASSERT_EQ(ncclAllReduce(s, d, 2, ncclInt64, ncclSum, ctx.comm, ctx.stream), ncclSuccess)
          << ncclGetLastError(ctx.comm);
      EXPECT_EQ(d[0], 3 * (1000 * job + i) + 10 * (0 + 1 + 2));
      EXPECT_EQ(d[1], 3);
      if (cross) {
        int g[2] = {-1, -1};
        const int mine = 7 * job + i;
        ASSERT_EQ(ncclAllGather(&mine, g, 1, ncclInt32, cross, nullptr), ncclSuccess);
        EXPECT_EQ(g[0], i);
        EXPECT_EQ(g[1], 7 + i);
      }
    }
    if (cross) {
      EXPECT_EQ(ncclCommDestroy(cross), ncclSuccess);
    }
  });
}

}  // namespace

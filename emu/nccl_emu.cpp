// The part of NCCL that synchronized batch norm uses, for the emulated
// build (part of libbnorm_emu, as its CUDA runtime subset is). A program
// written for several GPUs over NCCL runs on the CPU with one host thread
// per rank and links against bnorm_emu instead of libnccl (and cudart). The signatures are the
// toolkit's own: this file includes <nccl.h>, so the compiler checks them.
//
// Ranks are threads of one process. A unique id names a rendezvous (a
// "clique"); ncclCommInitRank blocks until all ranks of the id have joined,
// as NCCL does; ncclCommInitAll makes every rank of a new clique at once.
//
// A collective is issued on the caller's stream through the emulator's
// stream machinery (emu::submit): it runs when issued, ordered with the
// kernels before and after it, or, while the stream is captured into a CUDA
// graph, is recorded and runs at each launch of the graph. When it runs, the
// ranks of the communicator meet at the same collective sequence number (the
// n-th collective each rank runs): each posts its buffers, waits until all
// have posted, computes its result from the others' send buffers into
// private scratch, waits until all have finished reading, and only then
// writes its receive buffer -- so every in-place form works. Reductions
// combine the ranks' values in rank order 0, 1, 2, ... for every element, so
// a float sum is bitwise the same on every rank and in every run.
//
// Failures never hang: ranks that meet at one sequence number with different
// collectives (kind, count, datatype, op or root) all fail with
// ncclInvalidUsage, a rank that waits longer than the timeout (60 s, or
// BNORM_NCCL_EMU_TIMEOUT_S) for its peers fails with ncclRemoteError, and so
// does every rank of the round it gave up on. Either leaves the failing
// communicators with that asynchronous error (ncclCommGetAsyncError); their
// later collectives fail at once with it, as a broken NCCL communicator must
// be aborted. A collective that ran at issue returns its result; one that ran
// at a graph launch reports through the async error and ncclGetLastError.
// ncclCommAbort fails the rounds its peers wait in, or will, the same way.
//
// Groups: the calls between ncclGroupStart and the outermost ncclGroupEnd
// are queued on the calling thread and issued at that end, in order; when
// they span several communicators (one thread driving several ranks, as
// after ncclCommInitAll), each communicator's calls run on a thread of their
// own, so that the ranks can meet. A call that fails its checks in a group
// makes ncclGroupEnd fail with its error and issue nothing. Under capture a
// group may not hold two ranks of one clique: a graph runs on one thread, so
// they could never meet (ncclInvalidUsage).
#include <nccl.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <unistd.h>
#include <vector>

#include "emu_internal.h"

#define NCCL_EMU_EXPORT __attribute__((visibility("default")))

namespace nccl_emu {

using Clock = std::chrono::steady_clock;

enum class Kind { AllGather, AllReduce, Broadcast, ReduceScatter };

// What every rank must agree on at one sequence number.
struct Desc {
  Kind kind;
  size_t count;  // per-rank send count (all-gather), receive count (reduce-scatter), else count
  ncclDataType_t type;
  ncclRedOp_t op;  // reductions only
  int root;        // broadcast only
  bool operator==(const Desc& o) const {
    return kind == o.kind && count == o.count && type == o.type && op == o.op && root == o.root;
  }
};

// One rank's collective call.
struct Call {
  Desc d;
  const void* send;
  void* recv;
};

// The meeting of all ranks at one sequence number.
struct Round {
  Desc d;
  std::vector<const void*> send;
  int posted = 0, read = 0, left = 0;
  ncclResult_t error = ncclSuccess;  // set once: every rank of the round returns it
  std::string why;
};

// The ranks that share one unique id: the rendezvous of its init and of
// every collective.
struct Clique {
  explicit Clique(int n) : nranks(n), joined(n, false) {}
  const int nranks;
  std::mutex m;
  std::condition_variable cv;
  std::vector<bool> joined;  // guarded by m
  int njoined = 0;
  ncclResult_t error = ncclSuccess;  // the init failed, or a rank aborted
  std::string why;
  std::map<uint64_t, std::shared_ptr<Round>> rounds;
};

// One rank's state; shared with the collectives captured into graphs, which
// may outlive the handle.
struct Rank {
  std::shared_ptr<Clique> clique;
  int rank = 0, nranks = 0, device = 0;
  uint64_t seq = 0;                              // collectives run so far (executing thread)
  std::vector<unsigned char> scratch;            // the result before it is written
  std::atomic<int> async_error{ncclSuccess};
  std::atomic<bool> destroyed{false};
};

}  // namespace nccl_emu

struct ncclComm {
  unsigned magic = 0x4ecc1u;
  std::shared_ptr<nccl_emu::Rank> r;
};

namespace nccl_emu {
namespace {

constexpr unsigned kMagic = 0x4ecc1u;
constexpr char kIdMagic[8] = {'b', 'n', 'o', 'r', 'm', 'N', 'C', 'L'};

thread_local std::string t_last_error;

// Records the message of a failure for ncclGetLastError and returns `r`.
ncclResult_t fail(ncclResult_t r, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
ncclResult_t fail(ncclResult_t r, const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  t_last_error = buf;
  return r;
}

bool valid(const ncclComm* c) { return c && c->magic == kMagic; }

// BNORM_NCCL_EMU_TIMEOUT_S (seconds, may be fractional), read at each wait
// so that a test can change it; 60 s otherwise.
Clock::duration timeout() {
  double s = 60.0;
  if (const char* e = std::getenv("BNORM_NCCL_EMU_TIMEOUT_S")) {
    char* end = nullptr;
    const double v = std::strtod(e, &end);
    if (end != e && v > 0) s = v;
  }
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// ---- datatypes and reductions -------------------------------------------------------------

size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: case ncclFloat8e4m3: case ncclFloat8e5m2: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    default: return 0;
  }
}

const char* type_name(ncclDataType_t t) {
  static const char* const names[] = {"int8",    "uint8",   "int32",   "uint32",
                                      "int64",   "uint64",  "float16", "float32",
                                      "float64", "bfloat16", "float8e4m3", "float8e5m2"};
  return unsigned(t) < ncclNumTypes ? names[t] : "?";
}

const char* op_name(ncclRedOp_t op) {
  static const char* const names[] = {"sum", "prod", "max", "min", "avg"};
  return unsigned(op) < ncclNumOps ? names[op] : "?";
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::AllGather: return "ncclAllGather";
    case Kind::AllReduce: return "ncclAllReduce";
    case Kind::Broadcast: return "ncclBroadcast";
    default: return "ncclReduceScatter";
  }
}

std::string describe(const Desc& d) {
  char buf[160];
  if (d.kind == Kind::Broadcast)
    std::snprintf(buf, sizeof buf, "%s(count %zu, %s, root %d)", kind_name(d.kind), d.count,
                  type_name(d.type), d.root);
  else if (d.kind == Kind::AllGather)
    std::snprintf(buf, sizeof buf, "%s(count %zu, %s)", kind_name(d.kind), d.count,
                  type_name(d.type));
  else
    std::snprintf(buf, sizeof buf, "%s(count %zu, %s, %s)", kind_name(d.kind), d.count,
                  type_name(d.type), op_name(d.op));
  return buf;
}

// Integer arithmetic wraps (two's complement, as on the GPU) instead of
// overflowing: it is done in the unsigned type of the same width.
template <typename T>
T wrap_add(T a, T b) {
  using U = std::make_unsigned_t<T>;
  return T(U(U(a) + U(b)));
}
template <typename T>
T wrap_mul(T a, T b) {
  using U = std::conditional_t<sizeof(T) < sizeof(unsigned), unsigned, std::make_unsigned_t<T>>;
  return T(U(U(a) * U(b)));
}

// Element arithmetic of one type: plain for integers and fp32/fp64; fp16 and
// bf16 go through float and are rounded back to the type after every step.
template <typename T>
struct Arith {
  static T add(T a, T b) {
    if constexpr (std::is_integral_v<T>) return wrap_add(a, b);
    else return a + b;
  }
  static T mul(T a, T b) {
    if constexpr (std::is_integral_v<T>) return wrap_mul(a, b);
    else return a * b;
  }
  static bool less(T a, T b) { return a < b; }
  static T div(T a, int n) {  // integers: truncated toward zero
    if constexpr (std::is_floating_point_v<T>) return a / T(n);
    else if constexpr (std::is_signed_v<T>) return T(int64_t(a) / int64_t(n));
    else return T(uint64_t(a) / uint64_t(n));
  }
};
template <typename H>
struct ArithViaFloat {
  static H add(H a, H b) { return H(float(a) + float(b)); }
  static H mul(H a, H b) { return H(float(a) * float(b)); }
  static bool less(H a, H b) { return float(a) < float(b); }
  static H div(H a, int n) { return H(float(a) / float(n)); }
};
template <>
struct Arith<__half> : ArithViaFloat<__half> {};
template <>
struct Arith<__nv_bfloat16> : ArithViaFloat<__nv_bfloat16> {};

// out[i] = in[0][i] op in[1][i] op ... in rank order, then / n for avg.
template <typename T>
void reduce_typed(const std::vector<const void*>& in, size_t offset, size_t count,
                  ncclRedOp_t op, void* out_v) {
  using A = Arith<T>;
  T* out = static_cast<T*>(out_v);
  const size_t n = in.size();
  std::memcpy(out, static_cast<const T*>(in[0]) + offset, count * sizeof(T));
  for (size_t k = 1; k < n; ++k) {
    const T* x = static_cast<const T*>(in[k]) + offset;
    for (size_t i = 0; i < count; ++i) {
      switch (op) {
        case ncclSum: case ncclAvg: out[i] = A::add(out[i], x[i]); break;
        case ncclProd: out[i] = A::mul(out[i], x[i]); break;
        case ncclMax: if (A::less(out[i], x[i])) out[i] = x[i]; break;
        default: if (A::less(x[i], out[i])) out[i] = x[i]; break;  // ncclMin
      }
    }
  }
  if (op == ncclAvg)
    for (size_t i = 0; i < count; ++i) out[i] = A::div(out[i], int(n));
}

// False for the fp8 types, whose reductions the emulator does not provide.
bool reducible(ncclDataType_t t) { return t != ncclFloat8e4m3 && t != ncclFloat8e5m2; }

void reduce(ncclDataType_t t, const std::vector<const void*>& in, size_t offset, size_t count,
            ncclRedOp_t op, void* out) {
  switch (t) {
    case ncclInt8: return reduce_typed<int8_t>(in, offset, count, op, out);
    case ncclUint8: return reduce_typed<uint8_t>(in, offset, count, op, out);
    case ncclInt32: return reduce_typed<int32_t>(in, offset, count, op, out);
    case ncclUint32: return reduce_typed<uint32_t>(in, offset, count, op, out);
    case ncclInt64: return reduce_typed<int64_t>(in, offset, count, op, out);
    case ncclUint64: return reduce_typed<uint64_t>(in, offset, count, op, out);
    case ncclFloat16: return reduce_typed<__half>(in, offset, count, op, out);
    case ncclFloat32: return reduce_typed<float>(in, offset, count, op, out);
    case ncclFloat64: return reduce_typed<double>(in, offset, count, op, out);
    default: return reduce_typed<__nv_bfloat16>(in, offset, count, op, out);
  }
}

// ---- a collective, run by one rank --------------------------------------------------------

size_t result_bytes(const Desc& d, int nranks) {
  const size_t n = d.kind == Kind::AllGather ? d.count * size_t(nranks) : d.count;
  return n * type_size(d.type);
}

// This rank's result, from every rank's send buffer.
void compute(const Rank& me, const Round& R, void* out) {
  const Desc& d = R.d;
  const size_t bytes = d.count * type_size(d.type);
  switch (d.kind) {
    case Kind::AllGather:
      for (int k = 0; k < me.nranks; ++k)
        std::memcpy(static_cast<char*>(out) + size_t(k) * bytes, R.send[k], bytes);
      break;
    case Kind::Broadcast: std::memcpy(out, R.send[d.root], bytes); break;
    case Kind::AllReduce: reduce(d.type, R.send, 0, d.count, d.op, out); break;
    case Kind::ReduceScatter:
      reduce(d.type, R.send, size_t(me.rank) * d.count, d.count, d.op, out);
      break;
  }
}

// Fails the round (once) and wakes every rank waiting on it.
void fail_round_locked(Clique& c, Round& R, ncclResult_t e, std::string why) {
  if (R.error == ncclSuccess) {
    R.error = e;
    R.why = std::move(why);
  }
  c.cv.notify_all();
}

// Waits under `lock` until `done()` or the round fails; gives up (failing
// the round for everyone) at `deadline`.
template <typename Pred>
void wait_round(std::unique_lock<std::mutex>& lock, Clique& c, Round& R, const Rank& me,
                Clock::time_point deadline, const char* phase, Pred done) {
  auto settled = [&] { return done() || R.error != ncclSuccess || c.error != ncclSuccess; };
  if (c.cv.wait_until(lock, deadline, settled)) {
    // An abort fails the round unless it is already complete for everyone.
    if (!done() && c.error != ncclSuccess) fail_round_locked(c, R, c.error, c.why);
    return;
  }
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "%s: rank %d of %d waited %.3g s for the other ranks to %s collective #%llu "
                "(timeout: BNORM_NCCL_EMU_TIMEOUT_S): a rank never arrived",
                kind_name(R.d.kind), me.rank, me.nranks, seconds(timeout()), phase,
                (unsigned long long)me.seq);
  fail_round_locked(c, R, ncclRemoteError, buf);
}

// Joins the round of this rank's next sequence number (creating it if this
// rank is the first), or fails it if the collective does not match.
std::shared_ptr<Round> join_round_locked(Clique& c, const Rank& me, const Call& call) {
  std::shared_ptr<Round>& slot = c.rounds[me.seq];
  if (!slot) {
    slot = std::make_shared<Round>();
    slot->d = call.d;
    slot->send.assign(size_t(me.nranks), nullptr);
  } else if (!(slot->d == call.d)) {
    char buf[400];
    std::snprintf(buf, sizeof buf,
                  "%s: mismatched collectives at collective #%llu: rank %d issued %s, another "
                  "rank %s",
                  kind_name(call.d.kind), (unsigned long long)me.seq, me.rank,
                  describe(call.d).c_str(), describe(slot->d).c_str());
    fail_round_locked(c, *slot, ncclInvalidUsage, buf);
  }
  return slot;
}

// The last rank to leave a round forgets it.
void leave_round_locked(Clique& c, Round& R, uint64_t seq, int nranks) {
  if (++R.left == nranks) c.rounds.erase(seq);
}

ncclResult_t run_collective(Rank& me, const Call& call) {
  if (me.destroyed.load() || !me.clique)
    return fail(ncclInvalidUsage, "%s: the communicator was destroyed, or its init failed, "
                "before this collective ran", kind_name(call.d.kind));
  if (const int e = me.async_error.load())
    return fail(ncclResult_t(e), "%s: the communicator has failed (asynchronous error %d); "
                                 "abort it", kind_name(call.d.kind), e);
  Clique& c = *me.clique;
  const Clock::time_point deadline = Clock::now() + timeout();
  me.scratch.resize(result_bytes(call.d, me.nranks));
  std::unique_lock<std::mutex> lock(c.m);
  std::shared_ptr<Round> R = join_round_locked(c, me, call);
  R->send[me.rank] = call.send;
  ++R->posted;
  c.cv.notify_all();
  wait_round(lock, c, *R, me, deadline, "post their buffers at",
             [&] { return R->posted == me.nranks; });
  if (R->error == ncclSuccess) {
    lock.unlock();  // every send buffer is known and stays untouched until all have read
    if (!me.scratch.empty()) compute(me, *R, me.scratch.data());
    lock.lock();
    ++R->read;
    c.cv.notify_all();
    wait_round(lock, c, *R, me, deadline, "finish reading at",
               [&] { return R->read == me.nranks; });
  }
  const ncclResult_t e = R->error;
  const std::string why = R->why;
  leave_round_locked(c, *R, me.seq++, me.nranks);
  lock.unlock();
  if (e != ncclSuccess) {
    me.async_error.store(e);
    return fail(e, "%s", why.c_str());
  }
  if (!me.scratch.empty()) std::memcpy(call.recv, me.scratch.data(), me.scratch.size());
  return ncclSuccess;
}

// ---- issue: on the stream, or queued in a group --------------------------------------------

// Where a collective that runs at its issue leaves its result (none runs
// nested in another, so one slot per thread is enough).
thread_local ncclResult_t* t_result_sink = nullptr;

ncclResult_t issue(const std::shared_ptr<Rank>& r, const Call& call, cudaStream_t stream) {
  ncclResult_t result = ncclSuccess;
  t_result_sink = &result;
  const cudaError_t e = emu::submit(stream, [r, call] {
    const ncclResult_t res = run_collective(*r, call);
    if (t_result_sink) *t_result_sink = res;
    t_result_sink = nullptr;
  });
  t_result_sink = nullptr;
  if (e != cudaSuccess)
    return fail(ncclUnhandledCudaError, "%s: the stream refused the work: %s",
                kind_name(call.d.kind), cudaGetErrorString(e));
  return result;
}

// A call made between ncclGroupStart and ncclGroupEnd.
struct Pending {
  std::shared_ptr<Rank> r;
  bool capture;  // its stream was being captured when the call was made
  std::function<ncclResult_t()> run;
};

thread_local int t_group_depth = 0;
thread_local std::vector<Pending> t_group;
thread_local ncclResult_t t_group_error = ncclSuccess;  // a call in the group failed its checks
thread_local std::string t_group_message;                 // and what it said

bool capturing(cudaStream_t s) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  return s && cudaStreamIsCapturing(s, &st) == cudaSuccess && st != cudaStreamCaptureStatusNone;
}

ncclResult_t run_in_order(const std::vector<Pending>& calls) {
  ncclResult_t first = ncclSuccess;
  for (const Pending& p : calls) {
    const ncclResult_t e = p.run();
    if (first == ncclSuccess) first = e;
  }
  return first;
}

// Several ranks' calls from one thread must progress together: each
// communicator's calls run in order on a thread of their own.
ncclResult_t run_per_comm(const std::vector<Pending>& calls) {
  std::map<const Rank*, std::vector<Pending>> by_comm;
  for (const Pending& p : calls) by_comm[p.r.get()].push_back(p);
  std::vector<ncclResult_t> results(by_comm.size(), ncclSuccess);
  std::vector<std::string> messages(by_comm.size());
  std::vector<std::thread> threads;
  size_t i = 0;
  for (auto& entry : by_comm) {
    threads.emplace_back([&results, &messages, &entry, i] {
      results[i] = run_in_order(entry.second);
      messages[i] = t_last_error;
    });
    ++i;
  }
  for (std::thread& t : threads) t.join();
  for (i = 0; i < results.size(); ++i)
    if (results[i] != ncclSuccess) return fail(results[i], "%s", messages[i].c_str());
  return ncclSuccess;
}

// Under capture the graph runs on whichever one thread launches it, so a
// captured group may not hold two ranks of one clique (they would wait for
// each other forever).
bool two_ranks_of_one_clique(const std::vector<Pending>& calls) {
  for (size_t i = 0; i < calls.size(); ++i)
    for (size_t j = i + 1; j < calls.size(); ++j)
      if (calls[i].r != calls[j].r && calls[i].r->clique == calls[j].r->clique) return true;
  return false;
}

ncclResult_t flush_group(std::vector<Pending> calls) {
  bool captured = false;
  bool several = false;
  for (const Pending& p : calls) {
    captured = captured || p.capture;
    several = several || p.r != calls.front().r;
  }
  if (captured && two_ranks_of_one_clique(calls))
    return fail(ncclInvalidUsage,
                "ncclGroupEnd: a captured group holds two ranks of one communicator; the "
                "emulator runs a graph on one host thread (capture each rank on its own)");
  return (several && !captured) ? run_per_comm(calls) : run_in_order(calls);
}

// Runs `run` now, or queues it if a group is open.
ncclResult_t issue_or_queue(const std::shared_ptr<Rank>& r, cudaStream_t stream,
                            std::function<ncclResult_t()> run) {
  if (t_group_depth == 0) return run();
  t_group.push_back(Pending{r, capturing(stream), std::move(run)});
  return ncclSuccess;
}

// A failed check inside a group also fails its ncclGroupEnd.
ncclResult_t check_failed(ncclResult_t e) {
  if (t_group_depth > 0 && t_group_error == ncclSuccess) {
    t_group_error = e;
    t_group_message = t_last_error;
  }
  return e;
}

ncclResult_t collective(const char* name, const Call& call, ncclComm_t comm, cudaStream_t stream) {
  if (!valid(comm)) return check_failed(fail(ncclInvalidArgument, "%s: comm is NULL or not a "
                                                                  "communicator", name));
  if (type_size(call.d.type) == 0)
    return check_failed(fail(ncclInvalidArgument, "%s: invalid datatype %d", name, call.d.type));
  const bool reduction = call.d.kind == Kind::AllReduce || call.d.kind == Kind::ReduceScatter;
  if (reduction && unsigned(call.d.op) >= ncclNumOps)
    return check_failed(fail(ncclInvalidArgument, "%s: invalid reduction op %d", name,
                             call.d.op));
  if (reduction && !reducible(call.d.type))
    return check_failed(fail(ncclInvalidArgument, "%s: %s reductions are not emulated", name,
                             type_name(call.d.type)));
  const Rank& me = *comm->r;
  if (call.d.kind == Kind::Broadcast && (call.d.root < 0 || call.d.root >= me.nranks))
    return check_failed(fail(ncclInvalidArgument, "%s: root %d is not a rank of %d", name,
                             call.d.root, me.nranks));
  const bool sends = call.d.kind != Kind::Broadcast || call.d.root == me.rank;
  if (call.d.count > 0 && (!call.recv || (sends && !call.send)))
    return check_failed(fail(ncclInvalidArgument, "%s: %s is NULL with count %zu", name,
                             call.recv ? "sendbuff" : "recvbuff", call.d.count));
  std::shared_ptr<Rank> r = comm->r;
  return issue_or_queue(r, stream, [r, call, stream] { return issue(r, call, stream); });
}

// ---- communicators ---------------------------------------------------------------------------

std::mutex g_pending_m;
// Cliques whose init is under way, by unique id.
std::map<std::string, std::shared_ptr<Clique>>& pending_cliques() {
  static std::map<std::string, std::shared_ptr<Clique>> m;
  return m;
}

// The clique named by `id`: made by the first rank to arrive.
std::shared_ptr<Clique> find_clique(const ncclUniqueId& id, int nranks) {
  std::lock_guard<std::mutex> lock(g_pending_m);
  std::shared_ptr<Clique>& c = pending_cliques()[std::string(id.internal, sizeof id.internal)];
  if (!c) c = std::make_shared<Clique>(nranks);
  return c;
}

void forget_clique(const ncclUniqueId& id, const Clique* c) {
  std::lock_guard<std::mutex> lock(g_pending_m);
  auto it = pending_cliques().find(std::string(id.internal, sizeof id.internal));
  if (it != pending_cliques().end() && it->second.get() == c) pending_cliques().erase(it);
}

// Takes `rank`'s place in the clique and waits until every rank has.
ncclResult_t join(Rank& r, const ncclUniqueId& id) {
  std::shared_ptr<Clique> c = find_clique(id, r.nranks);
  std::unique_lock<std::mutex> lock(c->m);
  if (c->nranks != r.nranks)
    return fail(ncclInvalidUsage, "ncclCommInitRank: rank %d was given nranks %d, another rank "
                "of the same id %d", r.rank, r.nranks, c->nranks);
  if (c->joined[r.rank])
    return fail(ncclInvalidUsage, "ncclCommInitRank: rank %d joined the same id twice", r.rank);
  c->joined[r.rank] = true;
  ++c->njoined;
  c->cv.notify_all();
  auto all_in = [&] { return c->njoined == c->nranks || c->error != ncclSuccess; };
  if (!c->cv.wait_for(lock, timeout(), all_in)) {
    c->error = ncclRemoteError;
    char buf[256];
    std::snprintf(buf, sizeof buf, "ncclCommInitRank: rank %d waited %.3g s for %d of %d ranks "
                  "to join (timeout: BNORM_NCCL_EMU_TIMEOUT_S)", r.rank, seconds(timeout()),
                  c->nranks - c->njoined, c->nranks);
    c->why = buf;
    c->cv.notify_all();
  }
  const ncclResult_t e = c->error;
  const std::string why = c->why;
  lock.unlock();
  forget_clique(id, c.get());  // complete or failed: the id names no rendezvous any more
  if (e != ncclSuccess) return fail(e, "%s", why.c_str());
  r.clique = std::move(c);
  return ncclSuccess;
}

bool is_unique_id(const ncclUniqueId& id) {
  return std::memcmp(id.internal, kIdMagic, sizeof kIdMagic) == 0;
}

ncclResult_t init_rank(ncclComm_t* comm, int nranks, const ncclUniqueId& id, int rank) {
  if (!comm) return check_failed(fail(ncclInvalidArgument, "ncclCommInitRank: comm is NULL"));
  *comm = nullptr;
  if (nranks < 1)
    return check_failed(fail(ncclInvalidArgument, "ncclCommInitRank: nranks %d < 1", nranks));
  if (rank < 0 || rank >= nranks)
    return check_failed(fail(ncclInvalidArgument, "ncclCommInitRank: rank %d is not in [0, %d)",
                             rank, nranks));
  if (!is_unique_id(id))
    return check_failed(fail(ncclInvalidArgument, "ncclCommInitRank: commId was not made by "
                                                  "ncclGetUniqueId"));
  std::unique_ptr<ncclComm> c(new (std::nothrow) ncclComm);
  if (!c) return fail(ncclSystemError, "ncclCommInitRank: out of memory");
  c->r = std::make_shared<Rank>();
  c->r->rank = rank;
  c->r->nranks = nranks;
  cudaGetDevice(&c->r->device);
  std::shared_ptr<Rank> r = c->r;
  // In a group the handle exists at once and its init completes at ncclGroupEnd.
  const ncclResult_t e = issue_or_queue(r, nullptr, [r, id] { return join(*r, id); });
  if (e != ncclSuccess) return e;
  *comm = c.release();
  return ncclSuccess;
}

// Marks the communicator unusable for the collectives still captured in
// graphs, and frees the handle.
void release(ncclComm_t comm) {
  comm->r->destroyed.store(true);
  comm->magic = 0;
  delete comm;
}

}  // namespace
}  // namespace nccl_emu

using nccl_emu::fail;

extern "C" {

NCCL_EMU_EXPORT ncclResult_t ncclGetVersion(int* version) {
  if (!version) return fail(ncclInvalidArgument, "ncclGetVersion: version is NULL");
  *version = NCCL_VERSION_CODE;  // the API these declarations describe
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return fail(ncclInvalidArgument, "ncclGetUniqueId: uniqueId is NULL");
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  const uint64_t n = ++counter;
  const int64_t pid = getpid();
  std::memset(id->internal, 0, sizeof id->internal);
  std::memcpy(id->internal, nccl_emu::kIdMagic, sizeof nccl_emu::kIdMagic);
  std::memcpy(id->internal + 8, &n, sizeof n);
  std::memcpy(id->internal + 16, &pid, sizeof pid);
  std::memcpy(id->internal + 24, &salt, sizeof salt);
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId,
                                              int rank) {
  return nccl_emu::init_rank(comm, nranks, commId, rank);
}

NCCL_EMU_EXPORT ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks,
                                                    ncclUniqueId commId, int rank,
                                                    ncclConfig_t*) {
  // The configuration tunes transports and CTAs: nothing to tune here.
  return nccl_emu::init_rank(comm, nranks, commId, rank);
}

NCCL_EMU_EXPORT ncclResult_t ncclCommInitAll(ncclComm_t* comm, int ndev, const int* devlist) {
  using nccl_emu::Rank;
  if (!comm) return fail(ncclInvalidArgument, "ncclCommInitAll: comm is NULL");
  if (ndev < 1) return fail(ncclInvalidArgument, "ncclCommInitAll: ndev %d < 1", ndev);
  for (int i = 0; devlist && i < ndev; ++i)
    if (devlist[i] < 0)
      return fail(ncclInvalidArgument, "ncclCommInitAll: devlist[%d] = %d", i, devlist[i]);
  // Every rank of a new clique at once: no rendezvous to wait for.
  auto clique = std::make_shared<nccl_emu::Clique>(ndev);
  clique->njoined = ndev;
  std::vector<std::unique_ptr<ncclComm>> made(static_cast<size_t>(ndev));
  for (int i = 0; i < ndev; ++i) {
    made[i].reset(new (std::nothrow) ncclComm);
    if (!made[i]) return fail(ncclSystemError, "ncclCommInitAll: out of memory");
    made[i]->r = std::make_shared<Rank>();
    Rank& r = *made[i]->r;
    r.clique = clique;
    r.rank = i;
    r.nranks = ndev;
    r.device = devlist ? devlist[i] : i;  // any device names the one CPU
    clique->joined[i] = true;
  }
  for (int i = 0; i < ndev; ++i) comm[i] = made[i].release();
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclCommFinalize(ncclComm_t comm) {
  // Every collective has completed when it returns (or runs inside a graph
  // launch): there is nothing to flush.
  if (!nccl_emu::valid(comm)) return fail(ncclInvalidArgument, "ncclCommFinalize: invalid comm");
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclSuccess;  // as NCCL
  if (!nccl_emu::valid(comm)) return fail(ncclInvalidArgument, "ncclCommDestroy: invalid comm");
  nccl_emu::release(comm);
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return ncclSuccess;  // as NCCL
  if (!nccl_emu::valid(comm)) return fail(ncclInvalidArgument, "ncclCommAbort: invalid comm");
  // The ranks waiting for this one, now or later, fail instead of timing out.
  if (nccl_emu::Clique* c = comm->r->clique.get()) {
    std::lock_guard<std::mutex> lock(c->m);
    if (c->error == ncclSuccess) {
      c->error = ncclRemoteError;
      c->why = "rank " + std::to_string(comm->r->rank) + " aborted the communicator";
    }
    c->cv.notify_all();
  }
  nccl_emu::release(comm);
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (!nccl_emu::valid(comm) || !count)
    return fail(ncclInvalidArgument, "ncclCommCount: comm or count is NULL");
  *count = comm->r->nranks;
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (!nccl_emu::valid(comm) || !rank)
    return fail(ncclInvalidArgument, "ncclCommUserRank: comm or rank is NULL");
  *rank = comm->r->rank;
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  if (!nccl_emu::valid(comm) || !device)
    return fail(ncclInvalidArgument, "ncclCommCuDevice: comm or device is NULL");
  *device = comm->r->device;
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError) {
  if (!nccl_emu::valid(comm) || !asyncError)
    return fail(ncclInvalidArgument, "ncclCommGetAsyncError: comm or asyncError is NULL");
  *asyncError = ncclResult_t(comm->r->async_error.load());
  return ncclSuccess;
}

NCCL_EMU_EXPORT const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError:
      return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError:
      return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

NCCL_EMU_EXPORT const char* ncclGetLastError(ncclComm_t) {
  // As NCCL: the calling thread's last failure, whatever the communicator.
  return nccl_emu::t_last_error.c_str();
}

NCCL_EMU_EXPORT ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                                           ncclDataType_t datatype, ncclComm_t comm,
                                           cudaStream_t stream) {
  const nccl_emu::Call call{{nccl_emu::Kind::AllGather, sendcount, datatype, ncclSum, 0},
                            sendbuff, recvbuff};
  return nccl_emu::collective("ncclAllGather", call, comm, stream);
}

NCCL_EMU_EXPORT ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                                           ncclDataType_t datatype, ncclRedOp_t op,
                                           ncclComm_t comm, cudaStream_t stream) {
  const nccl_emu::Call call{{nccl_emu::Kind::AllReduce, count, datatype, op, 0}, sendbuff,
                            recvbuff};
  return nccl_emu::collective("ncclAllReduce", call, comm, stream);
}

NCCL_EMU_EXPORT ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                                           ncclDataType_t datatype, int root, ncclComm_t comm,
                                           cudaStream_t stream) {
  const nccl_emu::Call call{{nccl_emu::Kind::Broadcast, count, datatype, ncclSum, root},
                            sendbuff, recvbuff};
  return nccl_emu::collective("ncclBroadcast", call, comm, stream);
}

NCCL_EMU_EXPORT ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff,
                                               size_t recvcount, ncclDataType_t datatype,
                                               ncclRedOp_t op, ncclComm_t comm,
                                               cudaStream_t stream) {
  const nccl_emu::Call call{{nccl_emu::Kind::ReduceScatter, recvcount, datatype, op, 0},
                            sendbuff, recvbuff};
  return nccl_emu::collective("ncclReduceScatter", call, comm, stream);
}

NCCL_EMU_EXPORT ncclResult_t ncclGroupStart(void) {
  if (nccl_emu::t_group_depth++ == 0) nccl_emu::t_group_error = ncclSuccess;
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclGroupEnd(void) {
  using namespace nccl_emu;
  if (t_group_depth == 0) return fail(ncclInvalidUsage, "ncclGroupEnd: no ncclGroupStart");
  if (--t_group_depth > 0) return ncclSuccess;
  std::vector<Pending> calls;
  calls.swap(t_group);
  if (t_group_error != ncclSuccess)  // a call of the group failed: none of it is issued
    return fail(t_group_error, "ncclGroupEnd: nothing of the group was issued, since %s",
                t_group_message.c_str());
  return flush_group(std::move(calls));
}

}  // extern "C"

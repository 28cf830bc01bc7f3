// The CPU SIMT emulator, execution side: fibers, barriers, warp collectives,
// and grid launches.
//
// Model. An ordinary grid's blocks are dealt to a pool of OS threads; each OS
// thread runs one block at a time, with one fiber per CUDA thread. Fibers are
// created once per OS thread (guarded 64 KiB stacks; creation is ~15 us, a
// switch ~8 ns) and reused for every block of every launch. Within a block,
// the scheduler resumes every runnable fiber until it blocks (at a barrier or
// warp collective) or returns; then it releases whatever barrier is complete.
// If nothing can be released while threads still wait, that is a deadlock (or
// a barrier reached from divergent code) and the process aborts with a
// description, because on a GPU the same kernel would hang or be undefined.
//
// A cooperative grid runs each block on an OS thread of its own, so that a
// grid-wide barrier can hold every block at once.
#include <boost/context/fiber.hpp>
#include <boost/context/protected_fixedsize_stack.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "emu_device.h"
#include "emu_internal.h"

// ASan needs to be told about every fiber switch. GCC says it is on with
// __SANITIZE_ADDRESS__, clang (the fuzzing build) with __has_feature.
#if defined(__SANITIZE_ADDRESS__)
#define BNORM_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BNORM_EMU_ASAN 1
#endif
#endif
#if defined(BNORM_EMU_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif
// ThreadSanitizer must be told about fiber switches too (the TSan build runs
// the concurrency tests): each CUDA thread's fiber gets a TSan context.
#if defined(__SANITIZE_THREAD__)
#define BNORM_EMU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BNORM_EMU_TSAN 1
#endif
#endif
#if defined(BNORM_EMU_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

namespace bctx = boost::context;

namespace emu {

thread_local ThreadState* tls_thread = nullptr;
thread_local BlockState* tls_block = nullptr;

namespace {

enum class Wait : uint8_t { Ready, Barrier, Warp, Grid, Done };

#if defined(BNORM_EMU_ASAN)
constexpr size_t kStackBytes = 512 * 1024;  // ASan's redzones inflate frames
#else
constexpr size_t kStackBytes = 64 * 1024;
#endif
constexpr uint64_t kPoisonBits = 0xffffffffffffffffull;  // NaN as float, -1 as int

// A copy started by copy_async (kernels/async_copy.cuh) and not yet waited for.
struct AsyncCopy {
  void* dst;
  const void* src;
  size_t bytes;
};

struct Thread : ThreadState {
  Wait wait = Wait::Done;
  std::vector<AsyncCopy> async_pending;  // they land at async_wait_all, not before
  unsigned warp_mask = 0;
  const char* file = nullptr;
  int line = 0;
  uint32_t gen = 0;
  bool quit = false;
  bctx::fiber self;  // resumes this thread; held by the scheduler
  bctx::fiber sink;  // resumes the scheduler; held by this thread
  const void* stack_bottom = nullptr;
  size_t stack_size = 0;
  const void* sched_bottom = nullptr;
  size_t sched_size = 0;
  void* fake_stack = nullptr;
  void* tsan_fiber = nullptr;  // TSan's context of this fiber
  void* tsan_sched = nullptr;  // and of the scheduler that resumed it
};

struct WarpSlots {
  uint64_t slot[2][32];
};

class GridBarrier;

struct Block : BlockState {
  const KernelBody* body = nullptr;
  const char* kernel = nullptr;
  unsigned nthreads = 0;
  size_t shared_bytes = 0;
  std::vector<WarpSlots> warps;
  GridBarrier* grid_barrier = nullptr;
};

[[noreturn]] void fatal(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "bnorm emulator: ");
  std::vfprintf(stderr, fmt, ap);
  std::fprintf(stderr, "\n");
  va_end(ap);
  std::fflush(stderr);
  std::abort();
}

std::string where(const Block& b) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "kernel %s, block (%u,%u,%u) of (%u,%u,%u)", b.kernel, b.idx.x,
                b.idx.y, b.idx.z, b.grid.x, b.grid.y, b.grid.z);
  return buf;
}

// ---- ASan's fiber-switch protocol (a no-op without ASan) ----------------------
inline void asan_start(void** fake, const void* bottom, size_t size) {
#if defined(BNORM_EMU_ASAN)
  __sanitizer_start_switch_fiber(fake, bottom, size);
#else
  (void)fake, (void)bottom, (void)size;
#endif
}
inline void asan_finish(void* fake, const void** bottom, size_t* size) {
#if defined(BNORM_EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake, bottom, size);
#else
  (void)fake, (void)bottom, (void)size;
#endif
}

// A guarded stack that tells its thread where it lives (for ASan).
struct RecordingStack {
  bctx::protected_fixedsize_stack inner{kStackBytes};
  Thread* t;
  explicit RecordingStack(Thread* thread) : t(thread) {}
  bctx::stack_context allocate() {
    bctx::stack_context sc = inner.allocate();
    t->stack_bottom = static_cast<char*>(sc.sp) - sc.size;
    t->stack_size = sc.size;
    return sc;
  }
  void deallocate(bctx::stack_context& sc) noexcept { inner.deallocate(sc); }
};

// TSan's side of a switch, made just before it (a no-op without TSan).
inline void tsan_to_fiber(Thread* t) {
#if defined(BNORM_EMU_TSAN)
  if (!t->tsan_fiber) t->tsan_fiber = __tsan_create_fiber(0);
  t->tsan_sched = __tsan_get_current_fiber();
  __tsan_switch_to_fiber(t->tsan_fiber, 0);
#else
  (void)t;
#endif
}
inline void tsan_to_scheduler(Thread* t) {
#if defined(BNORM_EMU_TSAN)
  __tsan_switch_to_fiber(t->tsan_sched, 0);
#else
  (void)t;
#endif
}
inline void tsan_destroy(Thread* t) {
#if defined(BNORM_EMU_TSAN)
  if (t->tsan_fiber) __tsan_destroy_fiber(t->tsan_fiber);
  t->tsan_fiber = nullptr;
#else
  (void)t;
#endif
}

// Called on a fiber: hand control back to the scheduler until resumed.
void yield(Thread* t) {
  tsan_to_scheduler(t);
  asan_start(&t->fake_stack, t->sched_bottom, t->sched_size);
  t->sink = std::move(t->sink).resume();
  asan_finish(t->fake_stack, &t->sched_bottom, &t->sched_size);
}

// One per OS thread: the fibers it owns, reused for every block it runs.
class Worker {
 public:
  ~Worker() {
    for (auto& t : threads_) {
      if (!t->self) continue;
      t->quit = true;
      resume(t.get());
      tsan_destroy(t.get());
    }
  }
  Thread* thread(unsigned i) { return threads_[i].get(); }
  void ensure(unsigned n) {
    while (threads_.size() < n) {
      auto t = std::make_unique<Thread>();
      Thread* tp = t.get();
      tp->self = bctx::fiber(std::allocator_arg, RecordingStack(tp), [tp](bctx::fiber&& sink) {
        tp->sink = std::move(sink);
        asan_finish(nullptr, &tp->sched_bottom, &tp->sched_size);
        while (!tp->quit) {
          (*static_cast<Block*>(tls_block)->body)();
          if (!tp->async_pending.empty())
            fatal("%s: thread %u exits with %zu copy_async copies not waited for",
                  where(*static_cast<Block*>(tls_block)).c_str(), tp->linear,
                  tp->async_pending.size());
          tp->wait = Wait::Done;
          yield(tp);
        }
        asan_start(nullptr, tp->sched_bottom, tp->sched_size);  // this fiber ends
        tsan_to_scheduler(tp);
        return std::move(tp->sink);
      });
      threads_.push_back(std::move(t));
    }
  }
  static void resume(Thread* t) {
    tls_thread = t;
    void* fake = nullptr;
    asan_start(&fake, t->stack_bottom, t->stack_size);
    tsan_to_fiber(t);
    t->self = std::move(t->self).resume();
    asan_finish(fake, nullptr, nullptr);
  }

 private:
  std::vector<std::unique_ptr<Thread>> threads_;
};

Worker& worker() {
  static thread_local Worker w;
  return w;
}

// Holds every block of a cooperative grid at BNORM_GRID_SYNC. A block that
// finishes while others wait there would hang a GPU: report it.
class GridBarrier {
 public:
  explicit GridBarrier(uint64_t blocks) : expected_(blocks) {}
  void arrive_and_wait(const Block& b) {
    std::unique_lock<std::mutex> lock(m_);
    if (finished_ > 0)
      fatal("%s: grid sync reached after %llu block(s) of the grid exited", where(b).c_str(),
            static_cast<unsigned long long>(finished_));
    uint64_t gen = generation_;
    if (++arrived_ == expected_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != gen || finished_ > 0; });
    if (generation_ == gen)
      fatal("%s: waits at a grid sync that another block exited without reaching",
            where(b).c_str());
  }
  void block_finished() {
    std::lock_guard<std::mutex> lock(m_);
    ++finished_;
    cv_.notify_all();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  uint64_t expected_;
  uint64_t arrived_ = 0;
  uint64_t generation_ = 0;
  uint64_t finished_ = 0;
};

// ---- schedule control ---------------------------------------------------------
std::atomic<bool> g_random{false};
std::atomic<uint64_t> g_seed{0};
std::atomic<uint64_t> g_launch_counter{0};
std::atomic<uint64_t> g_cooperative_counter{0};

uint64_t mix(uint64_t x) {  // splitmix64 finalizer
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

Block* current_block() { return static_cast<Block*>(tls_block); }
Thread* current_thread() { return static_cast<Thread*>(tls_thread); }

unsigned lanes_in_warp(const Block& b, unsigned warp) {
  unsigned first = warp * 32u;
  return std::min(32u, b.nthreads - first);
}

// Releases every warp collective whose lanes have all arrived. Returns
// whether anything was released.
bool release_warps(Block& b, Worker& w) {
  bool any = false;
  unsigned nwarps = (b.nthreads + 31) / 32;
  for (unsigned wi = 0; wi < nwarps; ++wi) {
    unsigned n = lanes_in_warp(b, wi);
    unsigned exists = n == 32 ? 0xffffffffu : ((1u << n) - 1);
    unsigned arrived = 0, done = 0;
    for (unsigned l = 0; l < n; ++l) {
      Thread* t = w.thread(wi * 32 + l);
      if (t->wait == Wait::Warp) arrived |= 1u << l;
      if (t->wait == Wait::Done) done |= 1u << l;
    }
    for (unsigned l = 0; l < n; ++l) {
      Thread* t = w.thread(wi * 32 + l);
      if (t->wait != Wait::Warp) continue;
      unsigned mask = t->warp_mask;
      if (mask & ~exists)
        fatal("%s: warp %u: collective mask 0x%08x names lanes that do not exist (%u lanes)",
              where(b).c_str(), wi, mask, n);
      if (mask & done)
        fatal("%s: warp %u: collective mask 0x%08x names lanes that have exited (0x%08x)",
              where(b).c_str(), wi, mask, mask & done);
      if ((mask & arrived) != mask) continue;
      for (unsigned k = 0; k < n; ++k) {
        if (!((mask >> k) & 1)) continue;
        Thread* o = w.thread(wi * 32 + k);
        if (o->warp_mask != mask)
          fatal("%s: warp %u: lanes %u and %u meet at a collective with masks 0x%08x and 0x%08x",
                where(b).c_str(), wi, l, k, mask, o->warp_mask);
        o->wait = Wait::Ready;
      }
      arrived &= ~mask;
      any = true;
    }
  }
  return any;
}

[[noreturn]] void report_deadlock(Block& b, Worker& w) {
  unsigned counts[5] = {0, 0, 0, 0, 0};
  const Thread* at_barrier = nullptr;
  for (unsigned i = 0; i < b.nthreads; ++i) {
    const Thread* t = w.thread(i);
    counts[static_cast<int>(t->wait)]++;
    if (t->wait == Wait::Barrier && !at_barrier) at_barrier = t;
  }
  fatal("%s: deadlock: %u thread(s) at __syncthreads%s%s%s%d%s, %u at a warp collective, %u at "
        "a grid sync, %u exited",
        where(b).c_str(), counts[1], at_barrier ? " (first at " : "",
        at_barrier ? at_barrier->file : "", at_barrier ? ":" : "",
        at_barrier ? at_barrier->line : 0, at_barrier ? ")" : "", counts[2], counts[3],
        counts[4]);
}

// Releases a complete block barrier or grid sync.
bool release_block(Block& b, Worker& w) {
  unsigned at_barrier = 0, at_grid = 0, done = 0;
  for (unsigned i = 0; i < b.nthreads; ++i) {
    Wait s = w.thread(i)->wait;
    at_barrier += s == Wait::Barrier;
    at_grid += s == Wait::Grid;
    done += s == Wait::Done;
  }
  Wait kind;
  if (at_barrier > 0 && at_barrier + done == b.nthreads) {
    kind = Wait::Barrier;
  } else if (at_grid > 0 && at_grid + done == b.nthreads) {
    kind = Wait::Grid;
  } else {
    return false;
  }
  const Thread* first = nullptr;
  for (unsigned i = 0; i < b.nthreads; ++i) {
    const Thread* t = w.thread(i);
    if (t->wait != kind) continue;
    if (!first) first = t;
    if (t->line != first->line || std::strcmp(t->file, first->file) != 0)
      fatal("%s: divergent barrier: thread %u waits at %s:%d, thread %u at %s:%d",
            where(b).c_str(), first->linear, first->file, first->line, t->linear, t->file,
            t->line);
  }
  if (done > 0)
    fatal("%s: %s at %s:%d is awaited by %u thread(s) while %u thread(s) of the block have "
          "exited",
          where(b).c_str(), kind == Wait::Barrier ? "__syncthreads" : "grid sync", first->file,
          first->line, b.nthreads - done, done);
  if (kind == Wait::Grid) b.grid_barrier->arrive_and_wait(b);
  for (unsigned i = 0; i < b.nthreads; ++i) w.thread(i)->wait = Wait::Ready;
  return true;
}

void run_block(Block& b, unsigned char* shared, size_t shared_bytes, uint64_t launch_id) {
  Worker& w = worker();
  w.ensure(b.nthreads);
  const unsigned bx = b.dim.x, by = b.dim.y;
  for (unsigned i = 0; i < b.nthreads; ++i) {
    Thread* t = w.thread(i);
    t->idx = make_uint3(i % bx, (i / bx) % by, i / (bx * by));
    t->linear = i;
    t->lane = i % 32;
    t->warp = i / 32;
    t->wait = Wait::Ready;
    t->gen = 0;
    t->warp_mask = 0;
  }
  b.warps.assign((b.nthreads + 31) / 32, WarpSlots{});
  if (shared_bytes) std::memset(shared, 0xff, shared_bytes);
  b.shared = shared;
  b.shared_bytes = shared_bytes;
  tls_block = &b;

  std::vector<unsigned> order(b.nthreads);
  for (unsigned i = 0; i < b.nthreads; ++i) order[i] = i;
  const bool random = g_random.load(std::memory_order_relaxed);
  std::mt19937_64 rng(mix(g_seed.load() ^ mix(launch_id) ^
                          mix((uint64_t(b.idx.z) << 42) ^ (uint64_t(b.idx.y) << 21) ^ b.idx.x)));
  for (;;) {
    if (random) std::shuffle(order.begin(), order.end(), rng);
    for (unsigned i : order) {
      Thread* t = w.thread(i);
      if (t->wait == Wait::Ready) Worker::resume(t);
    }
    bool all_done = true;
    for (unsigned i = 0; i < b.nthreads && all_done; ++i)
      all_done = w.thread(i)->wait == Wait::Done;
    if (all_done) break;
    if (!release_warps(b, w) && !release_block(b, w)) report_deadlock(b, w);
  }
  if (b.grid_barrier) b.grid_barrier->block_finished();
  tls_block = nullptr;
  tls_thread = nullptr;
}

// ---- the OS-thread pool for ordinary grids ----------------------------------------
class Pool {
 public:
  explicit Pool(int n) {
    for (int i = 1; i < n; ++i) threads_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int size() const { return static_cast<int>(threads_.size()) + 1; }
  // Runs job on every pool thread and the caller; returns when all are done.
  void run(const std::function<void()>& job) {
    std::lock_guard<std::mutex> serial(launch_m_);
    {
      std::lock_guard<std::mutex> lock(m_);
      job_ = &job;
      pending_ = static_cast<int>(threads_.size());
      ++epoch_;
    }
    cv_.notify_all();
    job();
    std::unique_lock<std::mutex> lock(m_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void loop() {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void()>* job;
      {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [&] { return stop_ || epoch_ != seen; });
        if (stop_) return;
        seen = epoch_;
        job = job_;
      }
      (*job)();
      std::lock_guard<std::mutex> lock(m_);
      if (--pending_ == 0) done_cv_.notify_all();
    }
  }
  std::vector<std::thread> threads_;
  std::mutex launch_m_;  // launches from different host threads take turns
  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  const std::function<void()>* job_ = nullptr;
  int pending_ = 0;
  uint64_t epoch_ = 0;
  bool stop_ = false;
};

int configured_threads() {
  const char* env = std::getenv("BNORM_EMU_THREADS");
  int n = env ? std::atoi(env) : static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, std::min(n, 64));
}

Pool& pool() {
  static Pool p(configured_threads());
  return p;
}

struct SharedBuffer {  // exact size, so ASan catches an overrun
  explicit SharedBuffer(size_t n) : bytes(n), p(n ? static_cast<unsigned char*>(std::malloc(n)) : nullptr) {}
  ~SharedBuffer() { std::free(p); }
  size_t bytes;
  unsigned char* p;
};

}  // namespace

// ---- kernel-side entry points ------------------------------------------------------

void syncthreads(const char* file, int line) {
  Thread* t = current_thread();
  t->wait = Wait::Barrier;
  t->file = file;
  t->line = line;
  yield(t);
}

void grid_sync(const char* file, int line) {
  Thread* t = current_thread();
  if (!current_block()->grid_barrier)
    fatal("%s: grid sync at %s:%d in a kernel not launched cooperatively",
          where(*current_block()).c_str(), file, line);
  t->wait = Wait::Grid;
  t->file = file;
  t->line = line;
  yield(t);
}

void async_copy(void* dst, const void* src, size_t bytes) {
  Thread* t = current_thread();
  Block* b = current_block();
  const auto d = reinterpret_cast<uintptr_t>(dst), sp = reinterpret_cast<uintptr_t>(src),
             lo = reinterpret_cast<uintptr_t>(b->shared);
  if (bytes == 0 || d % bytes != 0 || sp % bytes != 0)
    fatal("%s: thread %u: copy_async of %zu bytes from %p to %p is not aligned to its size",
          where(*b).c_str(), t->linear, bytes, src, dst);
  if (d < lo || d + bytes > lo + b->shared_bytes)
    fatal("%s: thread %u: copy_async to %p, outside the block's %zu bytes of shared memory",
          where(*b).c_str(), t->linear, dst, b->shared_bytes);
  t->async_pending.push_back(AsyncCopy{dst, src, bytes});
}

void async_wait_all() {
  Thread* t = current_thread();
  for (const AsyncCopy& c : t->async_pending) std::memcpy(c.dst, c.src, c.bytes);
  t->async_pending.clear();
}

static void warp_wait(Thread* t, unsigned mask) {
  if (!((mask >> t->lane) & 1))
    fatal("%s: thread %u calls a warp collective with mask 0x%08x that excludes its own lane",
          where(*current_block()).c_str(), t->linear, mask);
  t->wait = Wait::Warp;
  t->warp_mask = mask;
  yield(t);
}

void syncwarp(unsigned mask) { warp_wait(current_thread(), mask); }

uint64_t warp_exchange(unsigned mask, uint64_t mine, int src) {
  Thread* t = current_thread();
  Block* b = current_block();
  WarpSlots& w = b->warps[t->warp];
  const unsigned g = t->gen & 1;
  w.slot[g][t->lane] = mine;
  warp_wait(t, mask);
  ++t->gen;
  bool valid = src >= 0 && src < 32 && ((mask >> src) & 1);
  return valid ? w.slot[g][src] : kPoisonBits;
}

unsigned warp_ballot(unsigned mask, bool pred) {
  Thread* t = current_thread();
  Block* b = current_block();
  WarpSlots& w = b->warps[t->warp];
  const unsigned g = t->gen & 1;
  w.slot[g][t->lane] = pred ? 1 : 0;
  warp_wait(t, mask);
  ++t->gen;
  unsigned bits = 0;
  for (unsigned l = 0; l < 32; ++l)
    if (((mask >> l) & 1) && w.slot[g][l]) bits |= 1u << l;
  return bits;
}

// ---- launch -----------------------------------------------------------------------------

int worker_threads() { return pool().size(); }

void set_random_schedule(bool on, uint64_t seed) {
  g_seed.store(seed);
  g_random.store(on);
}

// Runs a validated grid to completion.
static void run_grid(const char* name, dim3 grid, dim3 block, size_t shared_bytes,
                     const KernelBody& body, bool cooperative) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  const uint64_t launch_id = g_launch_counter.fetch_add(1);
  auto make_block = [&](uint64_t i, Block& b) {
    b.idx = make_uint3(static_cast<unsigned>(i % grid.x),
                       static_cast<unsigned>((i / grid.x) % grid.y),
                       static_cast<unsigned>(i / (uint64_t(grid.x) * grid.y)));
    b.dim = block;
    b.grid = grid;
    b.body = &body;
    b.kernel = name;
    b.nthreads = static_cast<unsigned>(threads);
  };

  if (cooperative) {
    g_cooperative_counter.fetch_add(1);
    GridBarrier barrier(blocks);
    std::vector<std::thread> os_threads;
    for (uint64_t i = 0; i < blocks; ++i) {
      os_threads.emplace_back([&, i] {
        Block b;
        make_block(i, b);
        b.grid_barrier = &barrier;
        SharedBuffer shared(shared_bytes);
        run_block(b, shared.p, shared.bytes, launch_id);
      });
    }
    for (auto& t : os_threads) t.join();
    return;
  }

  std::atomic<uint64_t> next{0};
  std::function<void()> job = [&] {
    SharedBuffer shared(shared_bytes);
    for (;;) {
      uint64_t i = next.fetch_add(1);
      if (i >= blocks) break;
      Block b;
      make_block(i, b);
      run_block(b, shared.p, shared.bytes, launch_id);
    }
  };
  if (blocks == 1) {
    job();  // not worth waking the pool
  } else {
    pool().run(job);
  }
}

uint64_t grids_run(bool cooperative_only) {
  return (cooperative_only ? g_cooperative_counter : g_launch_counter).load();
}

void launch(const char* name, const void* func, dim3 grid, dim3 block, size_t shared_bytes,
            cudaStream_t stream, KernelBody body, bool cooperative) {
  const Limits& lim = limits();
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  if (threads == 0 || threads > uint64_t(lim.max_threads_per_block) ||
      block.x > unsigned(lim.max_block[0]) || block.y > unsigned(lim.max_block[1]) ||
      block.z > unsigned(lim.max_block[2]) || blocks == 0 ||
      grid.x > unsigned(lim.max_grid[0]) || grid.y > unsigned(lim.max_grid[1]) ||
      grid.z > unsigned(lim.max_grid[2]) || shared_bytes > lim.shared_per_block_optin) {
    set_last_error(cudaErrorInvalidConfiguration);
    return;
  }
  if (shared_bytes > dynamic_shared_limit(func)) {
    set_last_error(cudaErrorInvalidValue);
    return;
  }
  // A cooperative grid must be resident at once: every block of it on an SM
  // together, by threads and shared memory, as cudaLaunchCooperativeKernel
  // checks (so a planner that overfills the shared memory fails here);
  // resident_blocks_per_sm also keeps it within max_cooperative_blocks.
  if (cooperative &&
      blocks > uint64_t(lim.sm_count) * uint64_t(resident_blocks_per_sm(threads, shared_bytes))) {
    set_last_error(cudaErrorCooperativeLaunchTooLarge);
    return;
  }
  // Runs now, or, on a stream being captured, becomes a node of its graph
  // (the body holds the kernel's arguments by value, as a launch does).
  const cudaError_t e = submit(stream, [=]() {
    run_grid(name, grid, block, shared_bytes, body, cooperative);
  });
  if (e != cudaSuccess) set_last_error(e);
}

}  // namespace emu

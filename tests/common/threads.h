// Host threads for the tests that run many callers or ranks at once
// (concurrency, the emulated NCCL, synchronized batch norm). Header-only, so
// test programs that do not link the harness can use it too.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace bt {

// Runs body(i) on n threads and joins them. A thread still running after
// `limit` is a deadlock or a hang: the process aborts with a message naming
// `what`, so that a hang fails instead of stalling CI.
inline void run_threads(int n, const std::function<void(int)>& body, std::chrono::seconds limit,
                        const char* what) {
  std::mutex m;
  std::condition_variable cv;
  int done = 0;
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      body(i);
      std::lock_guard<std::mutex> lock(m);
      ++done;
      cv.notify_all();
    });
  {
    std::unique_lock<std::mutex> lock(m);
    if (!cv.wait_for(lock, limit, [&] { return done == n; })) {
      std::fprintf(stderr, "%s: %d of %d threads still running after %llds: hang\n", what,
                   n - done, n, (long long)limit.count());
      std::abort();
    }
  }
  for (std::thread& t : threads) t.join();
}

// A reusable barrier for n threads (C++17 has none).
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    const uint64_t gen = gen_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++gen_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return gen_ != gen; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, arrived_ = 0;
  uint64_t gen_ = 0;
};

}  // namespace bt

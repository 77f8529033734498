// The emulated CUDA runtime (see psd_cuda_emu.h for what it guarantees and why).
//
// Model: one global mutex and condition variable order everything. A stream is a FIFO of
// operations executed by its own worker thread; an operation may depend on (stream, sequence
// number) pairs of other streams (events, cudaStreamWaitEvent, the legacy default stream's
// implicit synchronisation), and runs once they have completed. Dependencies only ever point at
// operations enqueued earlier, so the graph has no cycles. Device memory is mmap'd PROT_NONE and
// opened (PROT_READ | PROT_WRITE) only while at least one kernel or copy executes.
//
// Stream capture: a capturing stream holds a Capture; everything submitted to it (Submit) is
// appended to the capture's list instead of the stream's queue. cudaStreamEndCapture turns the
// list into a Graph (a linear chain: single-stream capture), cudaGraphInstantiate copies it into
// a GraphExec, and cudaGraphLaunch submits a copy of each operation to the launch stream.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if !defined(__CUDACC__)
#define __CUDACC__ 1  // this file is host code; the header wants the CUDA spelling
#endif
#include "psd_cuda_emu.h"

namespace psd_emu {
namespace {

constexpr int kMaxDevices = 8;
constexpr size_t kSharedMemoryPerBlock = 48 * 1024;

using Clock = std::chrono::steady_clock;

struct Stream;
struct Capture;

struct Dep {
  Stream* stream;
  uint64_t seq;
};

struct Op {
  std::function<void()> fn;
  std::vector<Dep> deps;
  bool device_work = false;  // opens device memory while it runs (kernels, copies, memsets)
};

enum StreamKind { kUser = 0, kLegacy = 1, kPerThread = 2 };

struct Stream {
  int device = 0;
  unsigned flags = 0;
  StreamKind kind = kUser;
  std::deque<Op> queue;
  uint64_t enqueued = 0, completed = 0;
  bool destroyed = false;
  Capture* capture = nullptr;  // non-null between cudaStreamBeginCapture and cudaStreamEndCapture
  bool blocking() const { return kind == kPerThread || (kind == kUser && !(flags & cudaStreamNonBlocking)); }
};

struct Marker {  // the point in a stream an event was last recorded at
  Stream* stream = nullptr;
  uint64_t seq = 0;
  double ms = 0.0;  // host time when it executed (timing events)
  uint64_t capture_id = 0;  // non-zero: recorded inside that capture (never executes)
};

// One capture sequence (cudaStreamBeginCapture .. cudaStreamEndCapture) on one stream.
struct Capture {
  uint64_t id = 0;
  Stream* stream = nullptr;
  int mode = cudaStreamCaptureModeGlobal;
  std::thread::id thread;  // the thread that began it
  bool invalidated = false;
  std::vector<Op> ops;  // recorded, in stream order
};

struct Graph {
  int device = 0;
  std::vector<Op> ops;
  std::vector<char> nodes;  // one byte per node: their addresses are the cudaGraphNode_t handles
};

struct GraphExec {
  int device = 0;
  std::vector<Op> ops;
};

struct Event {
  int device = 0;
  unsigned flags = 0;
  std::shared_ptr<Marker> marker;  // null until recorded
};

struct Alloc {
  char* map = nullptr;  // guard page | data pages | guard page
  size_t map_len = 0;
  char* data = nullptr;
  size_t data_len = 0;
  char* ptr = nullptr;  // what cudaMalloc returned (end-aligned to 256 bytes in the data pages)
  size_t size = 0;
  int device = 0;
};

// Lock-free copy of the allocation ranges for the SIGSEGV handler.
constexpr int kRangeSlots = 16384;
std::atomic<uintptr_t> g_range_begin[kRangeSlots];
std::atomic<uintptr_t> g_range_end[kRangeSlots];
std::atomic<uintptr_t> g_range_ptr[kRangeSlots];
std::atomic<uintptr_t> g_range_size[kRangeSlots];

struct State {
  std::mutex m;
  std::condition_variable cv;
  std::vector<Stream*> streams;  // every stream ever made (never freed: deps may point at them)
  std::vector<Stream*> live_user;
  Stream* legacy[kMaxDevices] = {nullptr};
  std::vector<Event*> live_events;
  std::vector<Capture*> captures;  // active (begun, not ended)
  uint64_t next_capture_id = 1;
  std::vector<Graph*> live_graphs;
  std::vector<GraphExec*> live_execs;
  int devices = 2;
  size_t memory_bytes = size_t(8) << 30;
  std::atomic<int> sticky[kMaxDevices];
  std::atomic<int> order{PSD_EMU_ORDER_SERIAL};
  std::atomic<uint64_t> seed{0};
  std::atomic<int> inject_count{0};
  std::atomic<int> inject_error{cudaErrorIllegalAddress};
  std::atomic<int64_t> kernels{0};
  // copies by resolved direction, indexed like cudaMemcpyKind (H2H, H2D, D2H, D2D): count, bytes
  std::atomic<int64_t> copies[4] = {{0}, {0}, {0}, {0}};
  std::atomic<int64_t> copy_bytes[4] = {{0}, {0}, {0}, {0}};
  std::atomic<int> launch_fail_count{0};
  std::atomic<int> launch_fail_error{cudaErrorLaunchOutOfResources};
  Clock::time_point t0 = Clock::now();
  // memory
  std::mutex mem_m;
  std::map<uintptr_t, Alloc> allocs;  // by ptr
  std::map<uintptr_t, size_t> pinned;  // page-locked host allocations, by ptr
  size_t used[kMaxDevices] = {0};
  int active = 0;  // device operations executing now
  bool handler_installed = false;
  size_t page = 4096;
  State() {
    for (auto& s : sticky) s = cudaSuccess;
    if (const char* d = std::getenv("PSD_CUDA_EMU_DEVICES")) devices = std::max(0, std::min(kMaxDevices, std::atoi(d)));
    if (const char* mb = std::getenv("PSD_CUDA_EMU_MEMORY_MB"))
      memory_bytes = static_cast<size_t>(std::max(1L, std::atol(mb))) << 20;
    if (const char* o = std::getenv("PSD_CUDA_EMU_ORDER")) {
      const std::string v = o;
      if (v.rfind("reversed", 0) == 0) order = PSD_EMU_ORDER_REVERSED;
      if (v.rfind("shuffled", 0) == 0) {
        order = PSD_EMU_ORDER_SHUFFLED;
        const size_t c = v.find(':');
        if (c != std::string::npos) seed = std::strtoull(v.c_str() + c + 1, nullptr, 10);
      }
    }
    page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  }
};

// Never destroyed: detached workers may still wait on it while the process exits.
State& S() {
  static State* s = new State();
  return *s;
}

thread_local cudaError_t t_last_error = cudaSuccess;
thread_local int t_device = 0;
thread_local Stream* t_per_thread[kMaxDevices] = {nullptr};
thread_local int t_capture_mode = cudaStreamCaptureModeGlobal;  // cudaThreadExchangeStreamCaptureMode

cudaError_t Set(cudaError_t e) {
  if (e != cudaSuccess) t_last_error = e;
  return e;
}

cudaError_t Sticky(int device) {
  return device >= 0 && device < kMaxDevices ? static_cast<cudaError_t>(S().sticky[device].load()) : cudaSuccess;
}

// Every API call but the error queries starts here: no device -> no call; a sticky fault
// is reported by every later call, as on a GPU.
cudaError_t Enter() {
  if (S().devices == 0) return Set(cudaErrorNoDevice);
  return Set(Sticky(t_device));
}

double NowMs() { return std::chrono::duration<double, std::milli>(Clock::now() - S().t0).count(); }

// ------------------------------------------------------------------ device memory guard
void Protect(const Alloc& a, bool open) {
  mprotect(a.data, a.data_len, open ? (PROT_READ | PROT_WRITE) : PROT_NONE);
}

struct DeviceWindow {  // device memory is accessible while one of these lives
  DeviceWindow() {
    std::lock_guard<std::mutex> lk(S().mem_m);
    if (S().active++ == 0)
      for (auto& kv : S().allocs) Protect(kv.second, true);
  }
  ~DeviceWindow() {
    std::lock_guard<std::mutex> lk(S().mem_m);
    if (--S().active == 0)
      for (auto& kv : S().allocs) Protect(kv.second, false);
  }
};

struct sigaction g_old_segv;

void AppendHex(char*& p, uintptr_t v) {
  const char* digits = "0123456789abcdef";
  *p++ = '0';
  *p++ = 'x';
  char tmp[32];
  int n = 0;
  do {
    tmp[n++] = digits[v & 15];
    v >>= 4;
  } while (v);
  while (n) *p++ = tmp[--n];
}
void AppendDec(char*& p, uintptr_t v) {
  char tmp[32];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) *p++ = tmp[--n];
}
void AppendStr(char*& p, const char* s) {
  while (*s) *p++ = *s++;
}

void SegvHandler(int sig, siginfo_t* info, void* ctx) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(info->si_addr);
  for (int i = 0; i < kRangeSlots; ++i) {
    const uintptr_t b = g_range_begin[i].load(std::memory_order_relaxed);
    if (b && a >= b && a < g_range_end[i].load(std::memory_order_relaxed)) {
      char msg[512];
      char* p = msg;
      const uintptr_t ptr = g_range_ptr[i].load(), size = g_range_size[i].load();
      const bool outside = a < ptr || a >= ptr + (size + 255) / 256 * 256;
      if (outside) {
        AppendStr(p, "\npsdrt CUDA emulator: out-of-bounds access at ");
        AppendHex(p, a);
        AppendStr(p, ", in the guard pages around the device allocation of ");
        AppendDec(p, size);
        AppendStr(p, " bytes at ");
        AppendHex(p, ptr);
        AppendStr(p, " (a kernel or copy indexing past its buffer).\n");
      } else {
        AppendStr(p, "\npsdrt CUDA emulator: host code touched device memory at ");
        AppendHex(p, a);
        AppendStr(p, " (inside the device allocation of ");
        AppendDec(p, size);
        AppendStr(p, " bytes at ");
        AppendHex(p, ptr);
        AppendStr(p, "). Device memory may only be read or written by kernels and cudaMemcpy*/cudaMemset*; "
                     "copy it to the host first.\n");
      }
      ssize_t ignored = write(2, msg, static_cast<size_t>(p - msg));
      (void)ignored;
      break;
    }
  }
  // hand the fault to whoever handled it before (Python's faulthandler prints a traceback);
  // returning re-executes the access, which faults again under the old disposition
  sigaction(SIGSEGV, &g_old_segv, nullptr);
  (void)sig;
  (void)ctx;
}

void InstallHandler() {  // with mem_m held
  if (S().handler_installed) return;
  S().handler_installed = true;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = SegvHandler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_old_segv);
}

// The allocation holding [p, p + n), or nullptr. With mem_m held.
const Alloc* FindLocked(const void* p, size_t n) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = S().allocs.upper_bound(a);
  if (it == S().allocs.begin()) return nullptr;
  --it;
  const Alloc& al = it->second;
  const uintptr_t b = reinterpret_cast<uintptr_t>(al.ptr);
  if (a < b || a >= b + std::max<size_t>(al.size, 1)) return nullptr;
  if (n > al.size - (a - b)) return reinterpret_cast<const Alloc*>(1);  // starts inside, overruns
  return &al;
}

const Alloc* kOverrun = reinterpret_cast<const Alloc*>(1);

// ------------------------------------------------------------------ streams
void Worker(Stream* s) {
  State& st = S();
  std::unique_lock<std::mutex> lk(st.m);
  for (;;) {
    st.cv.wait(lk, [&] { return !s->queue.empty() || s->destroyed; });
    if (s->queue.empty()) break;  // destroyed and drained
    Op& op = s->queue.front();
    st.cv.wait(lk, [&] {
      for (const Dep& d : op.deps)
        if (d.stream->completed < d.seq) return false;
      return true;
    });
    std::function<void()> fn = std::move(op.fn);
    const bool device_work = op.device_work;
    lk.unlock();
    if (device_work) {
      DeviceWindow w;
      fn();
    } else {
      fn();
    }
    lk.lock();
    s->queue.pop_front();
    ++s->completed;
    st.cv.notify_all();
  }
}

Stream* NewStream(int device, unsigned flags, StreamKind kind) {  // with st.m held
  Stream* s = new Stream();
  s->device = device;
  s->flags = flags;
  s->kind = kind;
  S().streams.push_back(s);
  std::thread(Worker, s).detach();
  return s;
}

// The stream a handle names on the calling thread's device; nullptr + error for a bad handle.
Stream* Resolve(cudaStream_t h, cudaError_t* err) {
  State& st = S();
  std::lock_guard<std::mutex> lk(st.m);
  const int d = t_device;
  if (h == nullptr || h == cudaStreamLegacy) {
    if (!st.legacy[d]) st.legacy[d] = NewStream(d, 0, kLegacy);
    return st.legacy[d];
  }
  if (h == cudaStreamPerThread) {
    if (!t_per_thread[d]) t_per_thread[d] = NewStream(d, 0, kPerThread);
    return t_per_thread[d];
  }
  Stream* s = reinterpret_cast<Stream*>(h);
  if (std::find(st.live_user.begin(), st.live_user.end(), s) == st.live_user.end()) {
    *err = cudaErrorInvalidResourceHandle;
    return nullptr;
  }
  return s;
}

// Appends op to s with the legacy default stream's implicit synchronisation; returns its
// sequence number. With S().m held. (Capturing streams go through SubmitLocked.)
uint64_t EnqueueLocked(Stream* s, Op op) {
  State& st = S();
  if (s->kind == kLegacy) {
    for (Stream* b : st.streams)
      if (b != s && b->device == s->device && b->blocking() && b->enqueued > b->completed)
        op.deps.push_back({b, b->enqueued});
  } else if (s->blocking()) {
    Stream* l = st.legacy[s->device];
    if (l && l->enqueued > l->completed) op.deps.push_back({l, l->enqueued});
  }
  s->queue.push_back(std::move(op));
  st.cv.notify_all();
  return ++s->enqueued;
}

// Work submitted to `s`: recorded into its capture when it captures (*seq = 0), else enqueued
// (*seq = its sequence number). Legacy-default-stream work while a blocking stream of the
// device captures would depend on the capture: cudaErrorStreamCaptureImplicit, and that capture
// is invalidated. With S().m held.
cudaError_t SubmitLocked(Stream* s, Op op, uint64_t* seq = nullptr) {
  State& st = S();
  if (seq) *seq = 0;
  if (s->capture) {
    if (s->capture->invalidated) return cudaErrorStreamCaptureInvalidated;
    op.deps.clear();  // in-stream order only: a capture is a chain
    s->capture->ops.push_back(std::move(op));
    return cudaSuccess;
  }
  if (s->kind == kLegacy) {
    bool implicit = false;
    for (Capture* c : st.captures)
      if (c->stream->device == s->device && c->stream->blocking()) {
        c->invalidated = true;
        implicit = true;
      }
    if (implicit) return cudaErrorStreamCaptureImplicit;
  }
  const uint64_t n = EnqueueLocked(s, std::move(op));
  if (seq) *seq = n;
  return cudaSuccess;
}

cudaError_t Submit(Stream* s, Op op, uint64_t* seq = nullptr) {
  std::lock_guard<std::mutex> lk(S().m);
  return SubmitLocked(s, std::move(op), seq);
}

// The "potentially unsafe" calls (cudaMalloc, cudaFree, the synchronous copies and memsets,
// cudaDeviceSynchronize) under the capture interaction rules: the calling thread is prohibited
// from them when it has a capture of its own not begun in relaxed mode, or, in global mode, when
// another thread has a capture begun in global mode. Those captures are invalidated and the
// call fails with cudaErrorStreamCaptureUnsupported.
cudaError_t CheckUnsafeCall() {
  std::lock_guard<std::mutex> lk(S().m);
  if (S().captures.empty() || t_capture_mode == cudaStreamCaptureModeRelaxed) return cudaSuccess;
  const std::thread::id me = std::this_thread::get_id();
  bool prohibited = false;
  for (Capture* c : S().captures) {
    const bool own = c->thread == me && c->mode != cudaStreamCaptureModeRelaxed;
    const bool global = c->thread != me && c->mode == cudaStreamCaptureModeGlobal &&
                        t_capture_mode == cudaStreamCaptureModeGlobal;
    if (own || global) {
      c->invalidated = true;
      prohibited = true;
    }
  }
  return prohibited ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}

// A synchronisation or query of a capturing stream: not allowed (the capture is invalidated).
cudaError_t CheckNotCapturingLocked(Stream* s) {
  if (!s->capture) return cudaSuccess;
  s->capture->invalidated = true;
  return cudaErrorStreamCaptureUnsupported;
}

void WaitFor(Stream* s, uint64_t seq) {
  std::unique_lock<std::mutex> lk(S().m);
  S().cv.wait(lk, [&] { return s->completed >= seq; });
}

void SyncDevice(int device) {
  std::vector<std::pair<Stream*, uint64_t>> todo;
  {
    std::lock_guard<std::mutex> lk(S().m);
    for (Stream* s : S().streams)
      if (s->device == device && s->enqueued > s->completed) todo.push_back({s, s->enqueued});
  }
  for (auto& t : todo) WaitFor(t.first, t.second);
}

// ------------------------------------------------------------------ copies
enum Side { kHost = 0, kDevice = 1 };

// Checks one side of a copy of a rows x width region with `pitch` bytes between rows.
cudaError_t CheckSide(const void* p, size_t pitch, size_t width, size_t rows, Side want) {
  if (rows == 0 || width == 0) return cudaSuccess;
  if (p == nullptr) return cudaErrorInvalidValue;
  const size_t span = pitch * (rows - 1) + width;
  std::lock_guard<std::mutex> lk(S().mem_m);
  const Alloc* a = FindLocked(p, span);
  if (want == kDevice) return a && a != kOverrun ? cudaSuccess : cudaErrorInvalidValue;
  return a == nullptr && FindLocked(static_cast<const char*>(p) + span - 1, 1) == nullptr ? cudaSuccess
                                                                                          : cudaErrorInvalidValue;
}

bool IsDevice(const void* p) {
  std::lock_guard<std::mutex> lk(S().mem_m);
  return FindLocked(p, 1) != nullptr;
}

cudaError_t CopyKind(cudaMemcpyKind kind, const void* dst, const void* src, Side* ds, Side* ss) {
  switch (kind) {
    case cudaMemcpyHostToHost: *ds = kHost; *ss = kHost; return cudaSuccess;
    case cudaMemcpyHostToDevice: *ds = kDevice; *ss = kHost; return cudaSuccess;
    case cudaMemcpyDeviceToHost: *ds = kHost; *ss = kDevice; return cudaSuccess;
    case cudaMemcpyDeviceToDevice: *ds = kDevice; *ss = kDevice; return cudaSuccess;
    case cudaMemcpyDefault:
      *ds = IsDevice(dst) ? kDevice : kHost;
      *ss = IsDevice(src) ? kDevice : kHost;
      return cudaSuccess;
    default: return cudaErrorInvalidMemcpyDirection;
  }
}

enum class Wait { kNo, kYes };

// sync_call: cudaMemcpy(2D) rather than the Async variants (a host source is staged at once).
cudaError_t Copy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                   cudaMemcpyKind kind, cudaStream_t stream, Wait wait, bool sync_call = false) {
  cudaError_t e = Enter();
  if (e) return e;
  if (width > dpitch || width > spitch) return Set(cudaErrorInvalidPitchValue);
  Side ds, ss;
  if ((e = CopyKind(kind, dst, src, &ds, &ss))) return Set(e);
  if ((e = CheckSide(dst, dpitch, width, height, ds)) || (e = CheckSide(src, spitch, width, height, ss)))
    return Set(e);
  if (width == 0 || height == 0) return cudaSuccess;
  if (sync_call && (e = CheckUnsafeCall())) return Set(e);
  Stream* s = Resolve(stream, &e);
  if (!s) return Set(e);
  if (ds == kHost || ss == kHost) {
    // host memory is pageable here: a copy touching it cannot be captured
    std::lock_guard<std::mutex> lk(S().m);
    if ((e = CheckNotCapturingLocked(s))) return Set(e);
  }
  const int dir = (ss == kDevice ? 2 : 0) + (ds == kDevice ? 1 : 0);  // 0 H2H, 1 H2D, 2 D2H, 3 D2D
  S().copies[dir].fetch_add(1);
  S().copy_bytes[dir].fetch_add(static_cast<int64_t>(width * height));
  Op op;
  op.device_work = true;
  char* d = static_cast<char*>(dst);
  const char* sp = static_cast<const char*>(src);
  std::shared_ptr<std::vector<char>> staged;
  if (sync_call && wait == Wait::kNo && ss == kHost) {
    // synchronous cudaMemcpy from host memory: the source is staged before the call returns
    staged = std::make_shared<std::vector<char>>(spitch * (height - 1) + width);
    std::memcpy(staged->data(), src, staged->size());
    sp = staged->data();
  }
  op.fn = [d, dpitch, sp, spitch, width, height, staged] {
    for (size_t r = 0; r < height; ++r) std::memmove(d + r * dpitch, sp + r * spitch, width);
  };
  uint64_t seq = 0;
  if ((e = Submit(s, std::move(op), &seq))) return Set(e);
  if (wait == Wait::kYes) {
    WaitFor(s, seq);
    return Set(Sticky(t_device));
  }
  return cudaSuccess;
}

// Synchronous cudaMemcpy: on the legacy default stream; returns at once for host-to-device
// (source staged) and device-to-device, after the copy for device-to-host and host-to-host.
cudaError_t SyncCopy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                       cudaMemcpyKind kind) {
  Side ds = kHost, ss = kHost;
  if (CopyKind(kind, dst, src, &ds, &ss) != cudaSuccess) return Set(cudaErrorInvalidMemcpyDirection);
  const Wait w = ds == kHost ? Wait::kYes : Wait::kNo;
  return Copy2D(dst, dpitch, src, spitch, width, height, kind, nullptr, w, true);
}

cudaError_t Memset(void* ptr, int value, size_t count, cudaStream_t stream, bool sync_call) {
  cudaError_t e = Enter();
  if (e) return e;
  if ((e = CheckSide(ptr, count, count, 1, kDevice))) return Set(e);
  if (count == 0) return cudaSuccess;
  if (sync_call && (e = CheckUnsafeCall())) return Set(e);
  Stream* s = Resolve(stream, &e);
  if (!s) return Set(e);
  Op op;
  op.device_work = true;
  char* p = static_cast<char*>(ptr);
  op.fn = [p, value, count] { std::memset(p, value, count); };
  return Set(Submit(s, std::move(op)));
}

// ------------------------------------------------------------------ thread orders
// A seeded bijection of [0, 2^bits) (odd multiply, add, xor-shift rounds), cycle-walked into
// [0, n): a permutation of the grid in O(1) memory.
struct Permutation {
  uint64_t n, mask;
  int shift;
  uint64_t mul[3], add[3];
  Permutation(uint64_t total, uint64_t seed) : n(total) {
    int bits = 1;
    while (bits < 63 && (uint64_t(1) << bits) < total) ++bits;
    mask = (bits >= 64) ? ~uint64_t(0) : ((uint64_t(1) << bits) - 1);
    shift = std::max(1, bits / 2);
    uint64_t z = seed ^ 0x9E3779B97F4A7C15ull;
    for (int r = 0; r < 3; ++r) {
      z += 0x9E3779B97F4A7C15ull;
      uint64_t x = z;
      x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
      x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
      x ^= x >> 31;
      mul[r] = x | 1;
      add[r] = x >> 17;
    }
  }
  uint64_t Step(uint64_t x) const {
    for (int r = 0; r < 3; ++r) {
      x = (x * mul[r] + add[r]) & mask;
      x ^= x >> shift;
    }
    return x;
  }
  uint64_t operator()(uint64_t i) const {
    uint64_t x = Step(i);
    while (x >= n) x = Step(x);
    return x;
  }
};

void RunGrid(dim3 grid, dim3 block, int order, uint64_t seed, const ThreadBody& body) {
  const uint64_t per_block = uint64_t(block.x) * block.y * block.z;
  const uint64_t total = per_block * grid.x * grid.y * grid.z;
  Permutation perm(total ? total : 1, seed);
  for (uint64_t i = 0; i < total; ++i) {
    const uint64_t l = order == PSD_EMU_ORDER_SERIAL ? i : order == PSD_EMU_ORDER_REVERSED ? total - 1 - i : perm(i);
    uint64_t b = l / per_block, t = l % per_block;
    const uint3 ti{static_cast<unsigned>(t % block.x), static_cast<unsigned>((t / block.x) % block.y),
                   static_cast<unsigned>(t / (uint64_t(block.x) * block.y))};
    const uint3 bi{static_cast<unsigned>(b % grid.x), static_cast<unsigned>((b / grid.x) % grid.y),
                   static_cast<unsigned>(b / (uint64_t(grid.x) * grid.y))};
    body(bi, ti, grid, block);
  }
}

const char* ErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidPitchValue: return "cudaErrorInvalidPitchValue";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureIsolation: return "cudaErrorStreamCaptureIsolation";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
    case cudaErrorCapturedEvent: return "cudaErrorCapturedEvent";
    case cudaErrorStreamCaptureWrongThread: return "cudaErrorStreamCaptureWrongThread";
    default: return "cudaErrorUnknown";
  }
}

}  // namespace

cudaError_t EnqueueKernel(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream, ThreadBody body,
                          const char* site) {
  cudaError_t e = Enter();
  if (e) return e;
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
      threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 ||
      grid.z > 65535)
    return Set(cudaErrorInvalidConfiguration);
  if (shared_bytes > kSharedMemoryPerBlock) return Set(cudaErrorInvalidValue);
  if (S().launch_fail_count.load() > 0 && S().launch_fail_count.fetch_sub(1) > 0)
    return Set(static_cast<cudaError_t>(S().launch_fail_error.load()));
  Stream* s = Resolve(stream, &e);
  if (!s) return Set(e);
  if (s->device != t_device) return Set(cudaErrorInvalidResourceHandle);  // a stream of another device
  const int order = S().order.load();
  const uint64_t seed = S().seed.load();
  const int device = s->device;
  Op op;
  op.device_work = true;
  std::string where = site ? site : "kernel";
  op.fn = [grid, block, order, seed, device, body = std::move(body), where] {
    State& st = S();
    ++st.kernels;
    if (st.sticky[device].load() != cudaSuccess) return;  // a faulted context runs nothing
    if (st.inject_count.load() > 0 && st.inject_count.fetch_sub(1) > 0) {
      st.sticky[device] = st.inject_error.load();
      return;
    }
    try {
      RunGrid(grid, block, order, seed, body);
    } catch (...) {
      std::fprintf(stderr, "psdrt CUDA emulator: a C++ exception escaped the kernel launched at %s\n", where.c_str());
      st.sticky[device] = cudaErrorLaunchFailure;
    }
  };
  return Set(Submit(s, std::move(op)));
}

}  // namespace psd_emu

using namespace psd_emu;  // NOLINT

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return Set(cudaErrorInvalidValue);
  *count = S().devices;
  return S().devices ? cudaSuccess : Set(cudaErrorNoDevice);
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* prop, int device) {
  if (!prop) return Set(cudaErrorInvalidValue);
  if (device < 0 || device >= S().devices) return Set(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof *prop);
  std::snprintf(prop->name, sizeof prop->name, "psdrt CUDA emulator (device %d)", device);
  prop->totalGlobalMem = S().memory_bytes;
  prop->sharedMemPerBlock = kSharedMemoryPerBlock;
  prop->regsPerBlock = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = 1024;
  prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = 65535;
  prop->maxGridSize[2] = 65535;
  prop->major = 8;
  prop->minor = 7;
  prop->multiProcessorCount = 1;
  prop->integrated = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  struct cudaDeviceProp p;
  cudaError_t e = cudaGetDeviceProperties(value ? &p : nullptr, device);
  if (e) return e;
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *value = p.maxThreadsDim[0]; break;
    case cudaDevAttrMaxBlockDimY: *value = p.maxThreadsDim[1]; break;
    case cudaDevAttrMaxBlockDimZ: *value = p.maxThreadsDim[2]; break;
    case cudaDevAttrMaxGridDimX: *value = p.maxGridSize[0]; break;
    case cudaDevAttrMaxGridDimY: *value = p.maxGridSize[1]; break;
    case cudaDevAttrMaxGridDimZ: *value = p.maxGridSize[2]; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(p.sharedMemPerBlock); break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrIntegrated: *value = p.integrated; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    default: return Set(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (S().devices == 0) return Set(cudaErrorNoDevice);
  if (device < 0 || device >= S().devices) return Set(cudaErrorInvalidDevice);
  t_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (!device) return Set(cudaErrorInvalidValue);
  if (S().devices == 0) return Set(cudaErrorNoDevice);
  *device = t_device;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  cudaError_t e = Enter();
  if (e) return e;
  if ((e = CheckUnsafeCall())) return Set(e);
  SyncDevice(t_device);
  return Set(Sticky(t_device));
}

cudaError_t cudaMalloc(void** ptr, size_t size) {
  if (!ptr) return Set(cudaErrorInvalidValue);
  *ptr = nullptr;
  cudaError_t e = Enter();
  if (e) return e;
  if ((e = CheckUnsafeCall())) return Set(e);
  if (size == 0) return cudaSuccess;
  State& st = S();
  const size_t page = st.page;
  const size_t rounded = (size + 255) / 256 * 256;
  const size_t data_len = (rounded + page - 1) / page * page;
  std::lock_guard<std::mutex> lk(st.mem_m);
  const int d = t_device;
  if (st.used[d] + size > st.memory_bytes) return Set(cudaErrorMemoryAllocation);
  void* m = mmap(nullptr, data_len + 2 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return Set(cudaErrorMemoryAllocation);
  InstallHandler();
  Alloc a;
  a.map = static_cast<char*>(m);
  a.map_len = data_len + 2 * page;
  a.data = a.map + page;
  a.data_len = data_len;
  a.ptr = a.data + data_len - rounded;
  a.size = size;
  a.device = d;
  Protect(a, true);
  std::memset(a.data, 0xFF, a.data_len);  // never-written memory reads as NaN
  if (st.active == 0) Protect(a, false);
  st.allocs[reinterpret_cast<uintptr_t>(a.ptr)] = a;
  st.used[d] += size;
  for (int i = 0; i < kRangeSlots; ++i) {
    if (g_range_begin[i].load() == 0) {
      g_range_ptr[i] = reinterpret_cast<uintptr_t>(a.ptr);
      g_range_size[i] = size;
      g_range_end[i] = reinterpret_cast<uintptr_t>(a.map + a.map_len);
      g_range_begin[i] = reinterpret_cast<uintptr_t>(a.map);
      break;
    }
  }
  *ptr = a.ptr;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  if (cudaError_t e = CheckUnsafeCall()) return Set(e);
  State& st = S();
  int device = -1;
  {
    std::lock_guard<std::mutex> lk(st.mem_m);
    auto it = st.allocs.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == st.allocs.end()) return Set(cudaErrorInvalidValue);
    device = it->second.device;
  }
  SyncDevice(device);  // cudaFree synchronises the device: nothing may still use the memory
  std::lock_guard<std::mutex> lk(st.mem_m);
  auto it = st.allocs.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == st.allocs.end()) return Set(cudaErrorInvalidValue);  // freed twice concurrently
  const Alloc a = it->second;
  st.allocs.erase(it);
  st.used[a.device] -= a.size;
  for (int i = 0; i < kRangeSlots; ++i) {
    if (g_range_begin[i].load() == reinterpret_cast<uintptr_t>(a.map)) {
      g_range_begin[i] = 0;
      g_range_end[i] = 0;
      break;
    }
  }
  munmap(a.map, a.map_len);
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int flags) {
  if (!ptr) return Set(cudaErrorInvalidValue);
  *ptr = nullptr;
  cudaError_t e = Enter();
  if (e) return e;
  if ((e = CheckUnsafeCall())) return Set(e);
  if (flags & ~(cudaHostAllocPortable | cudaHostAllocMapped | cudaHostAllocWriteCombined))
    return Set(cudaErrorInvalidValue);
  void* m = nullptr;
  if (posix_memalign(&m, 4096, size ? size : 1) != 0) return Set(cudaErrorMemoryAllocation);
  std::lock_guard<std::mutex> lk(S().mem_m);
  S().pinned[reinterpret_cast<uintptr_t>(m)] = size;
  *ptr = m;
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t size) { return cudaHostAlloc(ptr, size, cudaHostAllocDefault); }

cudaError_t cudaFreeHost(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  if (cudaError_t e = CheckUnsafeCall()) return Set(e);
  State& st = S();
  {
    std::lock_guard<std::mutex> lk(st.mem_m);
    if (!st.pinned.count(reinterpret_cast<uintptr_t>(ptr))) return Set(cudaErrorInvalidValue);
  }
  SyncDevice(t_device);  // as cudaFree: no copy may still read or write the memory
  std::lock_guard<std::mutex> lk(st.mem_m);
  auto it = st.pinned.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == st.pinned.end()) return Set(cudaErrorInvalidValue);  // freed twice concurrently
  st.pinned.erase(it);
  free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind) {
  return SyncCopy2D(dst, count, src, count, count, 1, kind);
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream) {
  return Copy2D(dst, count, src, count, count, 1, kind, stream, Wait::kNo);
}

cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                         enum cudaMemcpyKind kind) {
  return SyncCopy2D(dst, dpitch, src, spitch, width, height, kind);
}

cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              enum cudaMemcpyKind kind, cudaStream_t stream) {
  return Copy2D(dst, dpitch, src, spitch, width, height, kind, stream, Wait::kNo);
}

// Device memory only (the project never memsets host memory through CUDA): asynchronous on
// the legacy default stream, as the real call is for device memory.
cudaError_t cudaMemset(void* ptr, int value, size_t count) { return Memset(ptr, value, count, nullptr, true); }

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream) {
  return Memset(ptr, value, count, stream, false);
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  if (!stream) return Set(cudaErrorInvalidValue);
  cudaError_t e = Enter();
  if (e) return e;
  if (flags & ~unsigned(cudaStreamNonBlocking)) return Set(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lk(S().m);
  Stream* s = NewStream(t_device, flags, kUser);
  S().live_user.push_back(s);
  *stream = reinterpret_cast<cudaStream_t>(s);
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread)
    return Set(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::mutex> lk(S().m);
  auto& live = S().live_user;
  auto it = std::find(live.begin(), live.end(), reinterpret_cast<Stream*>(stream));
  if (it == live.end()) return Set(cudaErrorInvalidResourceHandle);
  (*it)->destroyed = true;  // its pending work still completes; the worker exits after it
  if (Capture* c = (*it)->capture) {  // a capture in progress dies with its stream
    auto& caps = S().captures;
    caps.erase(std::find(caps.begin(), caps.end(), c));
    delete c;
    (*it)->capture = nullptr;
  }
  live.erase(it);
  S().cv.notify_all();
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  cudaError_t e = Enter();
  if (e) return e;
  Stream* s = Resolve(stream, &e);
  if (!s) return Set(e);
  uint64_t seq;
  {
    std::lock_guard<std::mutex> lk(S().m);
    if ((e = CheckNotCapturingLocked(s))) return Set(e);
    seq = s->enqueued;
  }
  WaitFor(s, seq);
  return Set(Sticky(s->device));
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
  cudaError_t e = Enter();
  if (e) return e;
  Stream* s = Resolve(stream, &e);
  if (!s) return Set(e);
  std::lock_guard<std::mutex> lk(S().m);
  if ((e = CheckNotCapturingLocked(s))) return Set(e);
  return s->completed >= s->enqueued ? cudaSuccess : cudaErrorNotReady;
}

namespace {
Event* LiveEvent(cudaEvent_t ev) {  // with S().m held
  auto& live = S().live_events;
  Event* e = reinterpret_cast<Event*>(ev);
  return std::find(live.begin(), live.end(), e) == live.end() ? nullptr : e;
}
}  // namespace

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
  cudaError_t e = Enter();
  if (e) return e;
  if (flags != 0) return Set(cudaErrorInvalidValue);
  Stream* s = Resolve(stream, &e);
  if (!s) return Set(e);
  std::lock_guard<std::mutex> lk(S().m);
  Event* ev = LiveEvent(event);
  if (!ev) return Set(cudaErrorInvalidResourceHandle);
  std::shared_ptr<Marker> m = ev->marker;
  if (s->capture) {
    if (s->capture->invalidated) return Set(cudaErrorStreamCaptureInvalidated);
    if (!m || m->capture_id == s->capture->id) return cudaSuccess;  // nothing / in-capture order
    s->capture->invalidated = true;  // a dependency on work outside the capture
    return Set(cudaErrorStreamCaptureIsolation);
  }
  if (!m) return cudaSuccess;  // never recorded: nothing to wait for
  if (m->capture_id) {
    // on a GPU the stream would join the capture (fork/join): not emulated, refused loudly
    for (Capture* c : S().captures)
      if (c->id == m->capture_id) {
        c->invalidated = true;
        return Set(cudaErrorStreamCaptureUnsupported);
      }
    return Set(cudaErrorCapturedEvent);  // its capture has ended
  }
  Op op;
  op.fn = [] {};
  op.deps.push_back({m->stream, m->seq});
  return Set(SubmitLocked(s, std::move(op)));
}

cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  if (!event) return Set(cudaErrorInvalidValue);
  cudaError_t e = Enter();
  if (e) return e;
  if (flags & ~unsigned(cudaEventBlockingSync | cudaEventDisableTiming)) return Set(cudaErrorInvalidValue);
  Event* ev = new Event();
  ev->device = t_device;
  ev->flags = flags;
  std::lock_guard<std::mutex> lk(S().m);
  S().live_events.push_back(ev);
  *event = reinterpret_cast<cudaEvent_t>(ev);
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  std::lock_guard<std::mutex> lk(S().m);
  Event* ev = LiveEvent(event);
  if (!ev) return Set(cudaErrorInvalidResourceHandle);
  auto& live = S().live_events;
  live.erase(std::find(live.begin(), live.end(), ev));
  delete ev;  // a pending record keeps its Marker alive
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  cudaError_t e = Enter();
  if (e) return e;
  Stream* s = Resolve(stream, &e);
  if (!s) return Set(e);
  auto m = std::make_shared<Marker>();
  m->stream = s;
  {
    std::lock_guard<std::mutex> lk(S().m);
    Event* ev = LiveEvent(event);
    if (!ev || ev->device != s->device) return Set(cudaErrorInvalidResourceHandle);
  }
  Op op;
  op.fn = [m] { m->ms = NowMs(); };
  // the marker's sequence number is set under the same lock that enqueues it, so nobody can
  // wait on a half-recorded event
  std::lock_guard<std::mutex> lk(S().m);
  Event* ev = LiveEvent(event);
  if (!ev) return Set(cudaErrorInvalidResourceHandle);
  if (s->capture) {  // recorded into the capture: orders the capture's own work, never executes
    if (s->capture->invalidated) return Set(cudaErrorStreamCaptureInvalidated);
    m->capture_id = s->capture->id;
    ev->marker = m;
    return cudaSuccess;
  }
  if ((e = SubmitLocked(s, std::move(op), &m->seq))) return Set(e);
  ev->marker = m;
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  cudaError_t e = Enter();
  if (e) return e;
  std::shared_ptr<Marker> m;
  {
    std::lock_guard<std::mutex> lk(S().m);
    Event* ev = LiveEvent(event);
    if (!ev) return Set(cudaErrorInvalidResourceHandle);
    m = ev->marker;
    if (m && m->capture_id) return Set(cudaErrorCapturedEvent);
  }
  if (m) WaitFor(m->stream, m->seq);
  return Set(Sticky(t_device));
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
  cudaError_t e = Enter();
  if (e) return e;
  std::lock_guard<std::mutex> lk(S().m);
  Event* ev = LiveEvent(event);
  if (!ev) return Set(cudaErrorInvalidResourceHandle);
  if (!ev->marker) return cudaSuccess;
  if (ev->marker->capture_id) return Set(cudaErrorCapturedEvent);
  return ev->marker->stream->completed >= ev->marker->seq ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms) return Set(cudaErrorInvalidValue);
  cudaError_t e = Enter();
  if (e) return e;
  std::lock_guard<std::mutex> lk(S().m);
  Event* a = LiveEvent(start);
  Event* b = LiveEvent(end);
  if (!a || !b || (a->flags & cudaEventDisableTiming) || (b->flags & cudaEventDisableTiming) || !a->marker ||
      !b->marker)
    return Set(cudaErrorInvalidResourceHandle);
  if (a->marker->capture_id || b->marker->capture_id) return Set(cudaErrorCapturedEvent);
  if (a->marker->stream->completed < a->marker->seq || b->marker->stream->completed < b->marker->seq)
    return Set(cudaErrorNotReady);
  *ms = static_cast<float>(b->marker->ms - a->marker->ms);
  return cudaSuccess;
}

// ------------------------------------------------------------------ stream capture and graphs
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
  cudaError_t e = Enter();
  if (e) return e;
  if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
      mode != cudaStreamCaptureModeRelaxed)
    return Set(cudaErrorInvalidValue);
  Stream* s = Resolve(stream, &e);
  if (!s) return Set(e);
  std::lock_guard<std::mutex> lk(S().m);
  if (s->kind == kLegacy) return Set(cudaErrorStreamCaptureUnsupported);  // the legacy stream cannot capture
  if (s->capture) return Set(cudaErrorIllegalState);
  Capture* c = new Capture();
  c->id = S().next_capture_id++;
  c->stream = s;
  c->mode = mode;
  c->thread = std::this_thread::get_id();
  s->capture = c;
  S().captures.push_back(c);
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  if (!graph) return Set(cudaErrorInvalidValue);
  *graph = nullptr;
  cudaError_t e = Enter();
  if (e) return e;
  Stream* s = Resolve(stream, &e);
  if (!s) return Set(e);
  std::lock_guard<std::mutex> lk(S().m);
  Capture* c = s->capture;
  if (!c) return Set(cudaErrorIllegalState);
  if (c->mode != cudaStreamCaptureModeRelaxed && c->thread != std::this_thread::get_id())
    return Set(cudaErrorStreamCaptureWrongThread);
  s->capture = nullptr;
  auto& caps = S().captures;
  caps.erase(std::find(caps.begin(), caps.end(), c));
  std::unique_ptr<Capture> done(c);
  if (c->invalidated) return Set(cudaErrorStreamCaptureInvalidated);
  Graph* g = new Graph();
  g->device = s->device;
  g->ops = std::move(c->ops);
  g->nodes.assign(g->ops.size(), 0);
  S().live_graphs.push_back(g);
  *graph = reinterpret_cast<cudaGraph_t>(g);
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus* status) {
  if (!status) return Set(cudaErrorInvalidValue);
  cudaError_t e = Enter();
  if (e) return e;
  Stream* s = Resolve(stream, &e);
  if (!s) return Set(e);
  std::lock_guard<std::mutex> lk(S().m);
  if (s->kind == kLegacy) {
    for (Capture* c : S().captures)
      if (c->stream->device == s->device && c->stream->blocking()) return Set(cudaErrorStreamCaptureImplicit);
    *status = cudaStreamCaptureStatusNone;
    return cudaSuccess;
  }
  *status = !s->capture ? cudaStreamCaptureStatusNone
            : s->capture->invalidated ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode* mode) {
  if (!mode || (*mode != cudaStreamCaptureModeGlobal && *mode != cudaStreamCaptureModeThreadLocal &&
                *mode != cudaStreamCaptureModeRelaxed))
    return Set(cudaErrorInvalidValue);
  const int old = t_capture_mode;
  t_capture_mode = *mode;
  *mode = static_cast<cudaStreamCaptureMode>(old);
  return cudaSuccess;
}

namespace {
Graph* LiveGraph(cudaGraph_t h) {  // with S().m held
  auto& v = S().live_graphs;
  Graph* g = reinterpret_cast<Graph*>(h);
  return std::find(v.begin(), v.end(), g) == v.end() ? nullptr : g;
}
GraphExec* LiveExec(cudaGraphExec_t h) {  // with S().m held
  auto& v = S().live_execs;
  GraphExec* x = reinterpret_cast<GraphExec*>(h);
  return std::find(v.begin(), v.end(), x) == v.end() ? nullptr : x;
}
}  // namespace

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags) {
  if (!exec) return Set(cudaErrorInvalidValue);
  *exec = nullptr;
  cudaError_t e = Enter();
  if (e) return e;
  if (flags != 0) return Set(cudaErrorInvalidValue);  // no instantiation flag is emulated
  std::lock_guard<std::mutex> lk(S().m);
  Graph* g = LiveGraph(graph);
  if (!g) return Set(cudaErrorInvalidValue);
  GraphExec* x = new GraphExec();
  x->device = g->device;
  x->ops = g->ops;  // a copy: the graph may be destroyed or reused afterwards
  S().live_execs.push_back(x);
  *exec = reinterpret_cast<cudaGraphExec_t>(x);
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags) {
  return cudaGraphInstantiate(exec, graph, flags);
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  cudaError_t e = Enter();
  if (e) return e;
  Stream* s = Resolve(stream, &e);
  if (!s) return Set(e);
  std::lock_guard<std::mutex> lk(S().m);
  GraphExec* x = LiveExec(exec);
  if (!x) return Set(cudaErrorInvalidValue);
  if (x->device != s->device) return Set(cudaErrorInvalidValue);
  // every operation in captured order on the launch stream (recorded again when it captures)
  for (const Op& op : x->ops)
    if ((e = SubmitLocked(s, op))) return Set(e);
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  std::lock_guard<std::mutex> lk(S().m);
  GraphExec* x = LiveExec(exec);
  if (!x) return Set(cudaErrorInvalidValue);
  auto& v = S().live_execs;
  v.erase(std::find(v.begin(), v.end(), x));
  delete x;  // launches already submitted hold their own copies of the operations
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  std::lock_guard<std::mutex> lk(S().m);
  Graph* g = LiveGraph(graph);
  if (!g) return Set(cudaErrorInvalidValue);
  auto& v = S().live_graphs;
  v.erase(std::find(v.begin(), v.end(), g));
  delete g;
  return cudaSuccess;
}

cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes, size_t* count) {
  if (!count) return Set(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lk(S().m);
  Graph* g = LiveGraph(graph);
  if (!g) return Set(cudaErrorInvalidValue);
  const size_t n = g->nodes.size();
  if (nodes) {  // the first *count nodes; *count becomes the number written
    const size_t k = std::min(*count, n);
    for (size_t i = 0; i < k; ++i) nodes[i] = reinterpret_cast<cudaGraphNode_t>(&g->nodes[i]);
    *count = k;
  } else {
    *count = n;
  }
  return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  const cudaError_t sticky = Sticky(t_device);
  if (sticky != cudaSuccess) return sticky;
  const cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError(void) {
  const cudaError_t sticky = Sticky(t_device);
  return sticky != cudaSuccess ? sticky : t_last_error;
}

const char* cudaGetErrorName(cudaError_t error) { return ErrorName(error); }

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidPitchValue: return "invalid pitch argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureIsolation: return "operation would make the capture depend on uncaptured work";
    case cudaErrorStreamCaptureImplicit:
      return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorCapturedEvent: return "operation not permitted on an event last recorded in a capturing stream";
    case cudaErrorStreamCaptureWrongThread:
      return "attempt to terminate a thread-local capture sequence from another thread";
    default: return "unknown error";
  }
}

// ------------------------------------------------------------------ emulator controls
int psd_emu_set_thread_order(int order, uint64_t seed) {
  if (order < PSD_EMU_ORDER_SERIAL || order > PSD_EMU_ORDER_SHUFFLED) return -1;
  S().order = order;
  S().seed = seed;
  return 0;
}

int psd_emu_thread_order(uint64_t* seed) {
  if (seed) *seed = S().seed.load();
  return S().order.load();
}

void psd_emu_inject_fault(int count, cudaError_t error) {
  S().inject_error = error;
  S().inject_count = count;
}

void psd_emu_inject_launch_error(int count, cudaError_t error) {
  S().launch_fail_error = error;
  S().launch_fail_count = count;
}

void psd_emu_clear_sticky_error(void) {
  for (auto& s : S().sticky) s = cudaSuccess;
  t_last_error = cudaSuccess;
}

cudaError_t psd_emu_stream_sleep(cudaStream_t stream, double ms) {
  cudaError_t e = Enter();
  if (e) return e;
  Stream* s = Resolve(stream, &e);
  if (!s) return Set(e);
  Op op;
  op.fn = [ms] { std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(ms)); };
  return Set(Submit(s, std::move(op)));
}

int64_t psd_emu_live_allocations(int64_t* bytes) {
  std::lock_guard<std::mutex> lk(S().mem_m);
  if (bytes) {
    int64_t b = 0;
    for (auto& kv : S().allocs) b += static_cast<int64_t>(kv.second.size);
    *bytes = b;
  }
  return static_cast<int64_t>(S().allocs.size());
}

int64_t psd_emu_live_host_allocations(int64_t* bytes) {
  std::lock_guard<std::mutex> lk(S().mem_m);
  if (bytes) {
    int64_t b = 0;
    for (auto& kv : S().pinned) b += static_cast<int64_t>(kv.second);
    *bytes = b;
  }
  return static_cast<int64_t>(S().pinned.size());
}

int64_t psd_emu_live_streams(void) {
  std::lock_guard<std::mutex> lk(S().m);
  return static_cast<int64_t>(S().live_user.size());
}

int64_t psd_emu_live_events(void) {
  std::lock_guard<std::mutex> lk(S().m);
  return static_cast<int64_t>(S().live_events.size());
}

int64_t psd_emu_live_graphs(int64_t* execs) {
  std::lock_guard<std::mutex> lk(S().m);
  if (execs) *execs = static_cast<int64_t>(S().live_execs.size());
  return static_cast<int64_t>(S().live_graphs.size());
}

int64_t psd_emu_kernels_executed(void) { return S().kernels.load(); }

int64_t psd_emu_copies(int kind, int64_t* bytes) {
  if (kind < 0 || kind > 3) return -1;
  if (bytes) *bytes = S().copy_bytes[kind].load();
  return S().copies[kind].load();
}

int psd_emu_is_device_pointer(const void* ptr, int* device) {
  std::lock_guard<std::mutex> lk(S().mem_m);
  const Alloc* a = FindLocked(ptr, 1);
  if (!a || a == kOverrun) return 0;
  if (device) *device = a->device;
  return 1;
}

}  // extern "C"

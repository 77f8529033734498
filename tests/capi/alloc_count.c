/* alloc_count.c - heap allocations made during warm psd_session_run calls, by the object
 * that asked for them.
 *
 *   alloc_count [ARTIFACT_DIR]     (no argument: guided mode at 120x160)
 *
 * malloc/calloc/realloc/memalign/aligned_alloc/posix_memalign of the whole process are routed
 * through the counter below, which walks the stack to the first frame outside libstdc++/libc
 * (operator new is in libstdc++ for everyone) and charges the allocation to that frame's shared
 * object. After one warm-up run, five runs are counted; prints one line per object:
 * "<object>: <allocations per run>". Built and run by tests/capi/test_session_guided.py.
 */
#define _GNU_SOURCE
#include <psd/psd.h>

#include <dlfcn.h>
#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern void* __libc_malloc(size_t);
extern void* __libc_calloc(size_t, size_t);
extern void* __libc_realloc(void*, size_t);
extern void* __libc_memalign(size_t, size_t);

#define MAX_OBJECTS 32
static volatile int counting;
static __thread int in_hook;
static const char* names[MAX_OBJECTS];
static long counts[MAX_OBJECTS];
static long unattributed;

static void count(void) {
  void* frames[12];
  int n, i, k;
  if (!counting || in_hook) return;
  in_hook = 1;
  n = backtrace(frames, 12);
  for (i = 1; i < n; ++i) {
    Dl_info info;
    if (dladdr(frames[i], &info) && info.dli_fname) {
      const char* base = strrchr(info.dli_fname, '/');
      base = base ? base + 1 : info.dli_fname;
      if (strncmp(base, "libstdc++", 9) == 0 || strncmp(base, "libc.so", 7) == 0 || strstr(base, "alloc_count"))
        continue;
      for (k = 0; k < MAX_OBJECTS; ++k) {
        if (names[k] == NULL) names[k] = info.dli_fname; /* loader-owned string: stays valid */
        if (names[k] == info.dli_fname || strcmp(names[k], info.dli_fname) == 0) {
          __atomic_add_fetch(&counts[k], 1, __ATOMIC_RELAXED);
          break;
        }
      }
      in_hook = 0;
      return;
    }
  }
  __atomic_add_fetch(&unattributed, 1, __ATOMIC_RELAXED);
  in_hook = 0;
}

void* malloc(size_t n) {
  count();
  return __libc_malloc(n);
}
void* calloc(size_t a, size_t b) {
  count();
  return __libc_calloc(a, b);
}
void* realloc(void* p, size_t n) {
  count();
  return __libc_realloc(p, n);
}
void* aligned_alloc(size_t a, size_t n) {
  count();
  return __libc_memalign(a, n);
}
void* memalign(size_t a, size_t n) {
  count();
  return __libc_memalign(a, n);
}
int posix_memalign(void** p, size_t a, size_t n) {
  count();
  *p = __libc_memalign(a, n);
  return *p ? 0 : 12;
}

int main(int argc, char** argv) {
  psd_session* s = NULL;
  psd_status_t st = psd_session_create(argc > 1 ? argv[1] : NULL, NULL, &s);
  int64_t h = 120, w = 160, i;
  uint8_t* rgb;
  float *sparse, *depth;
  uint16_t* mm;
  double K[9] = {100, 0, 80, 0, 100, 60, 0, 0, 1};
  psd_frame_in in;
  psd_frame_out out;
  int r;
  if (st != PSD_OK) {
    fprintf(stderr, "create: %s: %s\n", psd_status_string(st), psd_last_error());
    return 1;
  }
  psd_session_input_shape(s, &h, &w);
  if (h == 0) {
    h = 120;
    w = 160;
  }
  K[2] = (double)w / 2;
  K[5] = (double)h / 2;
  rgb = (uint8_t*)malloc((size_t)(h * w * 3));
  sparse = (float*)calloc((size_t)(h * w), sizeof(float));
  depth = (float*)malloc((size_t)(h * w) * sizeof(float));
  mm = (uint16_t*)malloc((size_t)(h * w) * sizeof(uint16_t));
  for (i = 0; i < h * w * 3; ++i) rgb[i] = (uint8_t)((i * 2654435761u) >> 24);
  for (i = 0; i < h * w; i += 37) sparse[i] = 1.0f + (float)(i % 97) / 10.0f;
  memset(&in, 0, sizeof in);
  in.struct_size = sizeof in;
  in.height = h;
  in.width = w;
  in.rgb = rgb;
  in.sparse = sparse;
  in.K = K;
  memset(&out, 0, sizeof out);
  out.struct_size = sizeof out;
  out.depth = depth;
  out.depth_mm = mm;
  {
    void* warm[4];
    backtrace(warm, 4); /* loads the unwinder before counting */
  }
  for (r = 0; r < 6; ++r) {
    counting = r > 0;
    st = psd_session_run(s, &in, &out);
    counting = 0;
    if (st != PSD_OK) {
      fprintf(stderr, "run: %s: %s\n", psd_status_string(st), psd_last_error());
      return 1;
    }
  }
  for (r = 0; r < MAX_OBJECTS && names[r]; ++r) printf("%s: %.1f\n", names[r], (double)counts[r] / 5.0);
  printf("unattributed: %.1f\n", (double)unattributed / 5.0);
  psd_session_destroy(s);
  free(rgb);
  free(sparse);
  free(depth);
  free(mm);
  return 0;
}

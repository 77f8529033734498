/* fuzz_session.c - throws malformed calls at the session API; built and run by
 * tests/capi/test_session_sanitize.py against the ASan/UBSan library.
 *
 *   fuzz_session ARTIFACT_DIR SCRATCH_DIR ITERATIONS SEED
 *
 * Seeded and bounded. Each iteration is one of: a psd_session_create with random options over a
 * valid, missing or corrupted artefact directory (mutated copies of manifest.json next to links
 * to the real ONNX files); a psd_session_run / psd_session_enqueue with random sizes, strides,
 * pointers (NULL, misaligned), struct sizes, flags, K (NaN, singular, ...) and sparse depth (NaN,
 * negative, empty, one point); the query calls with NULLs. Memory behind every pointer matches
 * the layout the call declares whenever the declaration is one the API accepts (a caller cannot
 * be protected from lying about a buffer's size); everything else must be refused before any
 * pixel is read.
 *
 * Checks: the status is a known psd_status_t; a failure leaves a non-empty psd_last_error() and
 * the output buffers untouched; a success writes finite depth (and the matching millimetres).
 * Prints the status histogram; exits 1 on the first violation (ASan/UBSan abort on memory
 * errors and undefined behaviour by themselves).
 */
#include <psd/psd.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t rng_state;
static uint64_t rnd(void) { /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}
static int pick(int n) { return (int)(rnd() % (uint64_t)n); }
static double unif(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

static long hist[PSD_STATUS_COUNT + 1];
static long creates_ok, runs_ok;

static void check_status(psd_status_t st, const char* call, long it) {
  if ((int)st < 0 || (int)st >= PSD_STATUS_COUNT) {
    fprintf(stderr, "iteration %ld: %s returned unknown status %d\n", it, call, (int)st);
    exit(1);
  }
  hist[st]++;
  if (st != PSD_OK && (psd_last_error() == NULL || psd_last_error()[0] == '\0')) {
    fprintf(stderr, "iteration %ld: %s failed with %s but psd_last_error() is empty\n", it, call,
            psd_status_string(st));
    exit(1);
  }
  if (strcmp(psd_status_string(st), "PSD_E_UNKNOWN") == 0) {
    fprintf(stderr, "iteration %ld: no name for status %d\n", it, (int)st);
    exit(1);
  }
}

static char* read_text(const char* path, size_t* n) {
  FILE* f = fopen(path, "rb");
  char* s;
  long len;
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  len = ftell(f);
  fseek(f, 0, SEEK_SET);
  s = (char*)malloc((size_t)len + 1);
  if (fread(s, 1, (size_t)len, f) != (size_t)len) len = 0;
  s[len] = 0;
  fclose(f);
  *n = (size_t)len;
  return s;
}

/* A mutated manifest: byte flips, truncation, insertions of JSON-ish tokens, or a value swap. */
static void write_mutant(const char* dir, const char* text, size_t n) {
  static const char* tokens[] = {"{", "}", "[", "]", "\"", ",", ":", "null", "true", "-1", "1e999",
                                 "NaN", "\"fp16\"", "\"psd\"", "\\u12", "0", "[56]", "\"\\ud800\""};
  char path[4096];
  char* m = (char*)malloc(n + 4096);
  size_t len = n, k;
  FILE* f;
  memcpy(m, text, n);
  switch (pick(5)) {
    case 0: /* byte flips */
      for (k = 0; k < 1 + (size_t)pick(4) && len; ++k) m[rnd() % len] = (char)(rnd() & 0xFF);
      break;
    case 1: /* truncation */
      len = len ? rnd() % len : 0;
      break;
    case 2: { /* token insertion */
      const char* t = tokens[pick((int)(sizeof tokens / sizeof *tokens))];
      const size_t at = len ? rnd() % len : 0, tl = strlen(t);
      memmove(m + at + tl, m + at, len - at);
      memcpy(m + at, t, tl);
      len += tl;
      break;
    }
    case 3: { /* replace one quoted value by a token (keeps the JSON well-formed often) */
      const char* q = strstr(m + (len ? rnd() % len : 0), "\": ");
      if (q) {
        const size_t at = (size_t)(q - m) + 3;
        const char* t = tokens[pick((int)(sizeof tokens / sizeof *tokens))];
        size_t end = at;
        while (end < len && m[end] != ',' && m[end] != '\n' && m[end] != '}') ++end;
        memmove(m + at + strlen(t), m + end, len - end);
        memcpy(m + at, t, strlen(t));
        len = at + strlen(t) + (len - end);
      }
      break;
    }
    default: /* deep nesting */
      len = 0;
      for (k = 0; k < 200 + (size_t)pick(3000) && len < n + 4000; ++k) m[len++] = '[';
      break;
  }
  snprintf(path, sizeof path, "%s/manifest.json", dir);
  f = fopen(path, "wb");
  if (f) {
    fwrite(m, 1, len, f);
    fclose(f);
  }
  free(m);
}

static const char* pick_str(const char** options, int n) { return options[pick(n)]; }

static void fuzz_create(const char* art, const char* scratch, const char* manifest, size_t mlen, long it) {
  static const char* precisions[] = {NULL, "fp32", "fp16", "int8", "", "FP32", "fp32 ", "xxxxxxxxxxxxxxxxxxxxxxxxxxx"};
  static const char* presets[] = {NULL, "NYUv2", "kitti", "ARGOVERSE", "", "default", "Stanford", "\xff\xfe"};
  static const char* libs[] = {NULL, NULL, NULL, "/nonexistent/libonnxruntime.so", "", "/dev/null"};
  char dirs[6][4096];
  const char* dir;
  psd_session_options o;
  psd_preset preset;
  psd_session* s = NULL;
  psd_status_t st;
  int which = pick(6);
  snprintf(dirs[0], sizeof dirs[0], "%s", art);
  snprintf(dirs[1], sizeof dirs[1], "%s/mutant%d", scratch, pick(3));
  snprintf(dirs[2], sizeof dirs[2], "%s/missing", scratch);
  snprintf(dirs[3], sizeof dirs[3], "%s/manifest.json", art); /* a file, not a directory */
  snprintf(dirs[4], sizeof dirs[4], "%s", "");
  snprintf(dirs[5], sizeof dirs[5], "%s/mutant%d", scratch, pick(3));
  dir = which == 4 && pick(2) ? NULL : dirs[which];
  if (which == 1 || which == 5) write_mutant(dirs[which], manifest, mlen);
  psd_session_options_init(&o);
  if (pick(4) == 0) o.struct_size = (uint32_t)pick((int)sizeof o + 1);
  if (pick(3) == 0) o.device = pick(4) - 1;
  if (pick(3) == 0) o.precision = pick(5) - 1;
  if (pick(3) == 0) o.mode = pick(6) - 1;
  if (pick(4) == 0) o.backend = pick(5) - 1;
  if (pick(4) == 0) o.intra_op_threads = pick(4) - 1;
  if (pick(4) == 0) o.fm_lower = pick(2) ? pick(600) - 1 : 1 << 20;
  o.seed = rnd();
  if (pick(3) == 0) o.precision_name = pick_str(precisions, 8);
  if (pick(3) == 0) o.preset = pick_str(presets, 8);
  if (pick(4) == 0) o.ort_library = pick_str(libs, 6);
  if (pick(5) == 0) {
    preset.struct_size = sizeof preset;
    psd_preset_get("NYUv2", &preset);
    if (pick(2)) { /* garbage fields (the name is never terminated: the library must cope) */
      size_t k;
      for (k = 0; k < sizeof preset; ++k) ((unsigned char*)&preset)[k] = (unsigned char)rnd();
      if (pick(2)) preset.struct_size = sizeof preset;
    }
    o.preset_override = &preset;
  }
  if (pick(4) == 0) {
    o.guided_levels = pick(30) - 2;
    o.guided_iterations = pick(100) - 2;
    o.guided_colour_scale = pick(2) ? unif() * 50 - 5 : NAN;
  }
  st = psd_session_create(dir, pick(10) ? &o : NULL, pick(20) ? &s : NULL);
  check_status(st, "psd_session_create", it);
  if (st == PSD_OK) {
    creates_ok++;
    psd_session_destroy(s);
  } else if (s != NULL) {
    fprintf(stderr, "iteration %ld: failed create left *out non-NULL\n", it);
    exit(1);
  }
}

/* ------------------------------------------------------------------ runs */
typedef struct {
  unsigned char* mem[5];
} Buffers;

static void* alloc_bytes(Buffers* b, int slot, size_t n) {
  b->mem[slot] = (unsigned char*)malloc(n + 16);
  memset(b->mem[slot], 0, n + 16);
  return b->mem[slot];
}

static int64_t odd_dim(void) {
  static const int64_t v[] = {-1, 0, 1, 3, 1 << 20, INT64_MAX, INT64_MIN, 32769};
  return v[pick(8)];
}

/* One run. Half of the calls are well-formed (only the pixel values vary: empty, one point,
 * equal points); the others carry one fault, so that every check is reached on its own. */
enum {
  F_NONE, F_DIMS, F_RGB_STRIDE, F_SPARSE_STRIDE, F_DEPTH_STRIDE, F_NULL, F_MISALIGNED, F_STRUCT,
  F_FLAGS, F_K, F_K_DTYPE, F_SPARSE_VALUES, F_SIZE_OFF, F_COUNT
};

static void fuzz_run(psd_session* s, int64_t sh, int64_t sw, long it) {
  Buffers b;
  psd_frame_in in;
  psd_frame_out out;
  double K[9] = {50, 0, 40, 0, 50, 28, 0, 0, 1};
  float Kf[9];
  int64_t h, w, rs = 0, ss = 0, ds = 0, ms = 0;
  int plausible, k;
  const int fault = pick(2) ? F_NONE : 1 + pick(F_COUNT - 1);
  uint8_t* rgb;
  float *sparse, *depth;
  uint16_t* mm = NULL;
  psd_status_t st;
  size_t i;
  memset(&b, 0, sizeof b);
  h = sh ? sh : 4 + pick(60);
  w = sw ? sw : 4 + pick(90);
  if (fault == F_DIMS) {
    if (pick(2)) h = odd_dim(); else w = odd_dim();
  }
  if (fault == F_SIZE_OFF) {
    h += pick(2) ? 1 : -1;
  }
  plausible = h >= 1 && w >= 1 && h <= 512 && w <= 512;
  /* strides: 0 (packed), exact or padded (allocated); malformed ones only as the fault */
  if (plausible) {
    if (pick(2)) rs = 3 * w + (pick(2) ? pick(40) : 0);
    if (pick(2)) ss = 4 * w + 4 * (pick(2) ? pick(10) : 0);
    if (pick(3) == 0) ds = 4 * w + 4 * pick(10);
    if (pick(3) == 0) ms = 2 * w + 2 * pick(5);
    if (fault == F_RGB_STRIDE) rs = pick(2) ? 3 * w - 1 - pick(3) : -3 * w;
    if (fault == F_SPARSE_STRIDE) ss = pick(2) ? 4 * w + 2 : 4 * w - 4;
    if (fault == F_DEPTH_STRIDE) {
      if (pick(2)) ds = 4 * w - 4; else ms = 2 * w + 1;
    }
  }
  if (plausible) {
    const int64_t rsz = (rs > 3 * w ? rs : 3 * w) * h, ssz = (ss > 4 * w ? ss : 4 * w) * h;
    const int64_t dsz = (ds > 4 * w ? ds : 4 * w) * h, msz = (ms > 2 * w ? ms : 2 * w) * h;
    rgb = (uint8_t*)alloc_bytes(&b, 0, (size_t)rsz);
    sparse = (float*)alloc_bytes(&b, 1, (size_t)ssz);
    depth = (float*)alloc_bytes(&b, 2, (size_t)dsz);
    if (pick(2) || fault == F_DEPTH_STRIDE) mm = (uint16_t*)alloc_bytes(&b, 3, (size_t)msz);
    for (i = 0; i < (size_t)rsz; ++i) rgb[i] = (uint8_t)rnd();
    for (i = 0; i < (size_t)dsz / 4; ++i) depth[i] = -7.0f; /* sentinel */
    k = pick(5); /* 0: random; 1: one point; 2: all equal; 3, 4: random */
    for (i = 0; i < (size_t)ssz / 4; ++i) {
      const double u = unif();
      sparse[i] = u < 0.05 ? (float)(k == 2 ? 3.0 : 0.2 + 20 * unif()) : 0.0f;
    }
    if (k == 1) {
      memset(sparse, 0, (size_t)ssz);
      sparse[rnd() % (size_t)(ssz / 4)] = 2.5f;
    }
    if (fault == F_SPARSE_VALUES) {
      const int v = pick(4);
      if (v == 0) memset(sparse, 0, (size_t)ssz);
      for (i = 0; v && i < 1 + (size_t)pick(3); ++i)
        sparse[rnd() % (size_t)(ssz / 4)] = v == 1 ? NAN : (v == 2 ? -INFINITY : -0.5f);
    }
  } else {
    rgb = (uint8_t*)alloc_bytes(&b, 0, 64);
    sparse = (float*)alloc_bytes(&b, 1, 64);
    depth = (float*)alloc_bytes(&b, 2, 64);
  }
  if (fault == F_K) {
    switch (pick(6)) {
      case 0: K[pick(9)] = NAN; break;
      case 1: K[4] = 0; break;
      case 2: K[1] = 50; K[3] = 50; break; /* singular */
      case 3: K[8] = 2; break;
      case 4: K[2] = 1e9; break;
      default: K[0] = -1; break;
    }
  }
  for (k = 0; k < 9; ++k) Kf[k] = (float)K[k];
  memset(&in, 0, sizeof in);
  in.struct_size = sizeof in;
  in.height = h;
  in.width = w;
  in.rgb = rgb;
  in.rgb_stride = rs;
  in.sparse = sparse;
  in.sparse_stride = ss;
  in.K_dtype = pick(2);
  in.K = in.K_dtype == PSD_DTYPE_FLOAT32 ? (const void*)Kf : (const void*)K;
  in.flags = (uint32_t)pick(2);
  memset(&out, 0, sizeof out);
  out.struct_size = sizeof out;
  out.depth = depth;
  out.depth_stride = ds;
  out.depth_mm = mm;
  out.depth_mm_stride = ms;
  if (fault == F_K_DTYPE) in.K_dtype = pick(2) ? pick(100) + 2 : -1 - pick(100);
  if (fault == F_FLAGS) in.flags = (uint32_t)(rnd() | 2u);
  if (fault == F_STRUCT) {
    if (pick(2)) in.struct_size = (uint32_t)pick((int)sizeof in); else out.struct_size = (uint32_t)pick((int)sizeof out);
  }
  if (fault == F_NULL) {
    switch (pick(4)) {
      case 0: in.rgb = NULL; break;
      case 1: in.sparse = NULL; break;
      case 2: in.K = NULL; break;
      default: out.depth = NULL; break;
    }
  }
  if (fault == F_MISALIGNED) {
    switch (pick(3)) {
      case 0: in.sparse = (const float*)((const char*)sparse + 1 + pick(3)); break;
      case 1: out.depth = (float*)((char*)depth + 2); break;
      default:
        if (mm) out.depth_mm = (uint16_t*)((char*)mm + 1); else in.sparse = (const float*)((const char*)sparse + 2);
    }
  }
  if (pick(25) == 0) {
    st = psd_session_enqueue(s, &in, &out, NULL);
    check_status(st, "psd_session_enqueue", it);
  } else {
    const int nulls = pick(30);
    st = psd_session_run(nulls == 0 ? NULL : s, nulls == 1 ? NULL : &in, nulls == 2 ? NULL : &out);
    check_status(st, "psd_session_run", it);
    if (st == PSD_OK) {
      const int64_t drow = (ds > 0 ? ds : 4 * w) / 4, mrow = (ms > 0 ? ms : 2 * w) / 2;
      int64_t y, x;
      runs_ok++;
      for (y = 0; y < h; ++y)
        for (x = 0; x < w; ++x) {
          const float d = depth[y * drow + x];
          if (!isfinite(d) || d < 0) {
            fprintf(stderr, "iteration %ld: non-finite/negative depth %g at (%lld, %lld)\n", it, d, (long long)y,
                    (long long)x);
            exit(1);
          }
          if (mm) {
            const double want = nearbyint((double)d * 1000.0);
            const uint16_t m = mm[y * mrow + x];
            if (m != (uint16_t)(want > 65535 ? 65535 : want)) {
              fprintf(stderr, "iteration %ld: depth_mm %u for depth %g\n", it, m, d);
              exit(1);
            }
          }
        }
      if (fault != F_NONE && fault != F_SIZE_OFF) {
        fprintf(stderr, "iteration %ld: a run with fault %d succeeded\n", it, fault);
        exit(1);
      }
    } else if (plausible) {
      const int64_t n = (ds > 4 * w ? ds : 4 * w) * h / 4;
      int64_t j;
      for (j = 0; j < n; ++j)
        if (depth[j] != -7.0f) {
          fprintf(stderr, "iteration %ld: failed run (%s) wrote the output\n", it, psd_status_string(st));
          exit(1);
        }
    }
  }
  for (k = 0; k < 5; ++k) free(b.mem[k]);
}

int main(int argc, char** argv) {
  const char *art, *scratch;
  char* manifest;
  size_t mlen = 0;
  long iters, it;
  char path[4096];
  psd_session *sp = NULL, *sg = NULL;
  psd_session_options o;
  psd_status_t st;
  int64_t h = 0, w = 0;
  int d;
  if (argc != 5) {
    fprintf(stderr, "usage: %s ARTIFACT_DIR SCRATCH_DIR ITERATIONS SEED\n", argv[0]);
    return 2;
  }
  art = argv[1];
  scratch = argv[2];
  iters = atol(argv[3]);
  rng_state = strtoull(argv[4], NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
  snprintf(path, sizeof path, "%s/manifest.json", art);
  manifest = read_text(path, &mlen);
  if (!manifest) {
    fprintf(stderr, "cannot read %s\n", path);
    return 2;
  }
  for (d = 0; d < 3; ++d) { /* mutant directories: links to the real models */
    char dir[4096], src[8300], dst[8300];
    static const char* files[] = {"encoder.fp32.onnx", "head.fp32.onnx"};
    int k;
    snprintf(dir, sizeof dir, "%s/mutant%d", scratch, d);
    snprintf(src, sizeof src, "mkdir -p '%s'", dir);
    if (system(src) != 0) return 2;
    for (k = 0; k < 2; ++k) {
      snprintf(src, sizeof src, "%s/%s", art, files[k]);
      snprintf(dst, sizeof dst, "%s/%s", dir, files[k]);
      if (symlink(src, dst) != 0) { /* exists from an earlier run: fine */
      }
    }
  }
  psd_session_options_init(&o);
  o.intra_op_threads = 1;
  st = psd_session_create(art, &o, &sp);
  if (st != PSD_OK) {
    fprintf(stderr, "valid session: %s: %s\n", psd_status_string(st), psd_last_error());
    return 1;
  }
  psd_session_input_shape(sp, &h, &w);
  st = psd_session_create(NULL, NULL, &sg);
  if (st != PSD_OK) {
    fprintf(stderr, "guided session: %s: %s\n", psd_status_string(st), psd_last_error());
    return 1;
  }
  for (it = 0; it < iters; ++it) {
    const int action = pick(10);
    if (action < 2) {
      fuzz_create(art, scratch, manifest, mlen, it);
    } else if (action < 7) {
      fuzz_run(sp, h, w, it);
    } else if (action < 9) {
      fuzz_run(sg, 0, 0, it);
    } else { /* queries with NULLs */
      int64_t qh, qw;
      psd_session_info info;
      psd_preset p;
      memset(&info, 0, sizeof info);
      info.struct_size = pick(3) ? sizeof info : (uint32_t)pick(64);
      check_status(psd_session_input_shape(pick(3) ? sp : NULL, pick(3) ? &qh : NULL, &qw), "input_shape", it);
      check_status(psd_session_output_shape(sg, &qh, pick(3) ? &qw : NULL), "output_shape", it);
      check_status(psd_session_get_info(pick(3) ? sg : NULL, pick(4) ? &info : NULL), "get_info", it);
      p.struct_size = pick(3) ? sizeof p : 0;
      check_status(psd_preset_get(pick(3) ? "kitti" : (pick(2) ? "" : NULL), pick(5) ? &p : NULL), "preset_get", it);
      check_status(psd_session_options_init(pick(5) ? &o : NULL), "options_init", it);
    }
  }
  psd_session_destroy(sp);
  psd_session_destroy(sg);
  free(manifest);
  printf("iterations %ld, creates ok %ld, runs ok %ld; statuses:", iters, creates_ok, runs_ok);
  for (d = 0; d < PSD_STATUS_COUNT; ++d)
    if (hist[d]) printf(" %s=%ld", psd_status_string((psd_status_t)d), hist[d]);
  printf("\n");
  return 0;
}

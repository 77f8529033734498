/* psd_demo.c - dense metric depth from RGB + sparse depth + K with the psd C API.
 *
 *   psd_demo INPUT_DIR OUT.png [ARTIFACT_DIR]
 *
 * INPUT_DIR holds what `psdrt demo --save-inputs INPUT_DIR` writes: rgb.ppm (binary PPM),
 * sparse.pfm (float metres; sparse_mm.pgm, 16-bit millimetres, is read when the PFM is absent)
 * and K.txt (3x3, or fx fy cx cy). Without ARTIFACT_DIR the weight-free guided mode runs (any
 * frame size); with a `psdrt build` directory the manifest's mode (psd or propagate) runs, and
 * the frame must have the size the directory was built for (`--save-inputs DIR --size HxW`).
 * OUT.png is a 16-bit grayscale PNG in millimetres (0 = invalid), written by the small encoder
 * below (stored deflate blocks, CRC-32, Adler-32: no libpng, no zlib).
 *
 * Build:  cc psd_demo.c $(pkg-config --cflags --libs psd) -o psd_demo
 * C99, no dependency but psd.h / libpsd.
 */
#include <psd/psd.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ tiny readers */

static unsigned char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  unsigned char* buf = NULL;
  long n;
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
    buf = (unsigned char*)malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
      free(buf);
      buf = NULL;
    }
    if (buf) {
      buf[n] = 0;
      *size = (size_t)n;
    }
  }
  fclose(f);
  return buf;
}

/* Next whitespace-separated header token of a PNM/PFM file ('#' comments skipped). */
static int pnm_token(const unsigned char* b, size_t n, size_t* pos, char* tok, size_t cap) {
  size_t k = 0;
  while (*pos < n) {
    if (b[*pos] == '#') {
      while (*pos < n && b[*pos] != '\n') ++*pos;
    } else if (isspace(b[*pos])) {
      ++*pos;
    } else {
      break;
    }
  }
  while (*pos < n && !isspace(b[*pos]) && k + 1 < cap) tok[k++] = (char)b[(*pos)++];
  tok[k] = 0;
  if (*pos < n) ++*pos; /* the single whitespace before the raster */
  return k > 0;
}

/* magic, width, height, maxval/scale; returns the raster offset or 0 on error */
static size_t pnm_header(const unsigned char* b, size_t n, char* magic, long* w, long* h, double* third) {
  char t[64];
  size_t pos = 0;
  if (!pnm_token(b, n, &pos, magic, 8)) return 0;
  if (!pnm_token(b, n, &pos, t, sizeof t)) return 0;
  *w = strtol(t, NULL, 10);
  if (!pnm_token(b, n, &pos, t, sizeof t)) return 0;
  *h = strtol(t, NULL, 10);
  if (!pnm_token(b, n, &pos, t, sizeof t)) return 0;
  *third = strtod(t, NULL);
  if (*w < 1 || *h < 1 || *w > 32768 || *h > 32768) return 0;
  return pos;
}

static uint8_t* read_ppm(const char* path, long* w, long* h) {
  size_t n = 0, off;
  char magic[8];
  double maxval;
  unsigned char* b = read_file(path, &n);
  uint8_t* rgb = NULL;
  if (!b) return NULL;
  off = pnm_header(b, n, magic, w, h, &maxval);
  if (off && strcmp(magic, "P6") == 0 && maxval == 255.0 && n - off >= (size_t)(*w * *h * 3)) {
    rgb = (uint8_t*)malloc((size_t)(*w * *h * 3));
    if (rgb) memcpy(rgb, b + off, (size_t)(*w * *h * 3));
  }
  free(b);
  return rgb;
}

/* PFM (Pf, one channel; scale < 0: little-endian; rows bottom to top) -> metres */
static float* read_pfm(const char* path, long* w, long* h) {
  size_t n = 0, off;
  char magic[8];
  double scale;
  long x, y;
  unsigned char* b = read_file(path, &n);
  float* d = NULL;
  if (!b) return NULL;
  off = pnm_header(b, n, magic, w, h, &scale);
  if (off && strcmp(magic, "Pf") == 0 && scale != 0.0 && n - off >= (size_t)(*w * *h * 4)) {
    d = (float*)malloc((size_t)(*w * *h) * sizeof(float));
    for (y = 0; d && y < *h; ++y)
      for (x = 0; x < *w; ++x) {
        const unsigned char* p = b + off + ((size_t)(*h - 1 - y) * (size_t)*w + (size_t)x) * 4;
        uint32_t u = scale < 0 ? ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24)
                               : ((uint32_t)p[3] | (uint32_t)p[2] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[0] << 24);
        memcpy(&d[y * *w + x], &u, 4);
      }
  }
  free(b);
  return d;
}

/* 16-bit PGM (P5, maxval 65535, big-endian) in millimetres -> metres */
static float* read_pgm_mm(const char* path, long* w, long* h) {
  size_t n = 0, off, i;
  char magic[8];
  double maxval;
  unsigned char* b = read_file(path, &n);
  float* d = NULL;
  if (!b) return NULL;
  off = pnm_header(b, n, magic, w, h, &maxval);
  if (off && strcmp(magic, "P5") == 0 && maxval == 65535.0 && n - off >= (size_t)(*w * *h * 2)) {
    d = (float*)malloc((size_t)(*w * *h) * sizeof(float));
    for (i = 0; d && i < (size_t)(*w * *h); ++i)
      d[i] = (float)(((unsigned)b[off + 2 * i] << 8) | b[off + 2 * i + 1]) / 1000.0f;
  }
  free(b);
  return d;
}

/* K.txt: 9 numbers (row-major 3x3) or 4 (fx fy cx cy); '#' starts a comment */
static int read_k(const char* path, double K[9]) {
  size_t n = 0, i = 0;
  double v[9];
  int count = 0;
  char* s = (char*)read_file(path, &n);
  if (!s) return 0;
  while (i < n && count < 9) {
    if (s[i] == '#') {
      while (i < n && s[i] != '\n') ++i;
    } else if (isspace((unsigned char)s[i]) || s[i] == ',') {
      ++i;
    } else {
      char* end;
      v[count] = strtod(s + i, &end);
      if (end == s + i) break;
      ++count;
      i = (size_t)(end - s);
    }
  }
  free(s);
  if (count == 9) {
    memcpy(K, v, sizeof v);
    return 1;
  }
  if (count == 4) {
    const double k[9] = {v[0], 0, v[2], 0, v[1], v[3], 0, 0, 1};
    memcpy(K, k, sizeof k);
    return 1;
  }
  return 0;
}

/* ------------------------------------------------------------------ minimal PNG encoder */

static uint32_t crc_table[256];

static void crc_init(void) {
  uint32_t n, c;
  int k;
  for (n = 0; n < 256; ++n) {
    for (c = n, k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc_table[n] = c;
  }
}

static uint32_t crc_update(uint32_t crc, const unsigned char* p, size_t n) {
  while (n--) crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
  return crc;
}

static void put32(unsigned char* p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

static int write_chunk(FILE* f, const char* type, const unsigned char* data, size_t n) {
  unsigned char hdr[8], crc[4];
  uint32_t c;
  put32(hdr, (uint32_t)n);
  memcpy(hdr + 4, type, 4);
  c = crc_update(0xFFFFFFFFu, hdr + 4, 4);
  c = crc_update(c, data, n) ^ 0xFFFFFFFFu;
  put32(crc, c);
  return fwrite(hdr, 1, 8, f) == 8 && (n == 0 || fwrite(data, 1, n, f) == n) && fwrite(crc, 1, 4, f) == 4;
}

/* 16-bit grayscale PNG; zlib stream of stored (uncompressed) deflate blocks */
static int write_png16(const char* path, const uint16_t* px, long w, long h) {
  const size_t row = 1 + 2 * (size_t)w, raw_n = row * (size_t)h;
  const size_t blocks = raw_n / 65535 + 1;
  unsigned char *raw = (unsigned char*)malloc(raw_n), *z = (unsigned char*)malloc(raw_n + 5 * blocks + 6);
  unsigned char ihdr[13];
  size_t i, zn = 0, done = 0;
  uint32_t a = 1, b = 0;
  long x, y;
  int ok = 0;
  FILE* f;
  if (!raw || !z) goto out;
  for (y = 0; y < h; ++y) {
    unsigned char* r = raw + (size_t)y * row;
    r[0] = 0; /* filter: none */
    for (x = 0; x < w; ++x) {
      r[1 + 2 * x] = (unsigned char)(px[y * w + x] >> 8);
      r[2 + 2 * x] = (unsigned char)(px[y * w + x] & 0xFF);
    }
  }
  z[zn++] = 0x78; /* CMF: deflate, 32 KiB window */
  z[zn++] = 0x01; /* FLG: (0x78 * 256 + 0x01) % 31 == 0 */
  do {
    const size_t len = raw_n - done < 65535 ? raw_n - done : 65535;
    z[zn++] = (unsigned char)(done + len == raw_n); /* BFINAL, BTYPE = 00 (stored) */
    z[zn++] = (unsigned char)(len & 0xFF);
    z[zn++] = (unsigned char)(len >> 8);
    z[zn++] = (unsigned char)(~len & 0xFF);
    z[zn++] = (unsigned char)((~len >> 8) & 0xFF);
    memcpy(z + zn, raw + done, len);
    zn += len;
    done += len;
  } while (done < raw_n);
  for (i = 0; i < raw_n; ++i) { /* Adler-32 of the uncompressed data */
    a = (a + raw[i]) % 65521u;
    b = (b + a) % 65521u;
  }
  put32(z + zn, (b << 16) | a);
  zn += 4;
  put32(ihdr, (uint32_t)w);
  put32(ihdr + 4, (uint32_t)h);
  ihdr[8] = 16; /* bit depth */
  ihdr[9] = 0;  /* grayscale */
  ihdr[10] = ihdr[11] = ihdr[12] = 0;
  crc_init();
  f = fopen(path, "wb");
  if (!f) goto out;
  ok = fwrite("\x89PNG\r\n\x1a\n", 1, 8, f) == 8 && write_chunk(f, "IHDR", ihdr, 13) &&
       write_chunk(f, "IDAT", z, zn) && write_chunk(f, "IEND", NULL, 0);
  ok = (fclose(f) == 0) && ok;
out:
  free(raw);
  free(z);
  return ok;
}

/* ------------------------------------------------------------------ main */

static int fail(const char* what, psd_status_t st) {
  fprintf(stderr, "psd_demo: %s failed: %s: %s\n", what, psd_status_string(st), psd_last_error());
  return 1;
}

int main(int argc, char** argv) {
  char path[4096];
  long w = 0, h = 0, sw = 0, sh = 0;
  uint8_t* rgb;
  float *sparse, *depth;
  uint16_t* mm;
  double K[9];
  psd_session_options opt;
  psd_session* session = NULL;
  psd_session_info info;
  psd_frame_in in;
  psd_frame_out out;
  psd_status_t st;
  long i, valid = 0;
  double lo = 1e30, hi = 0;
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: %s INPUT_DIR OUT.png [ARTIFACT_DIR]\n"
                    "  INPUT_DIR: from `psdrt demo --save-inputs INPUT_DIR` (rgb.ppm, sparse.pfm, K.txt)\n"
                    "  ARTIFACT_DIR: a `psdrt build` directory (default: guided mode, no weights)\n", argv[0]);
    return 2;
  }
  snprintf(path, sizeof path, "%s/rgb.ppm", argv[1]);
  rgb = read_ppm(path, &w, &h);
  snprintf(path, sizeof path, "%s/sparse.pfm", argv[1]);
  sparse = read_pfm(path, &sw, &sh);
  if (!sparse) {
    snprintf(path, sizeof path, "%s/sparse_mm.pgm", argv[1]);
    sparse = read_pgm_mm(path, &sw, &sh);
  }
  snprintf(path, sizeof path, "%s/K.txt", argv[1]);
  if (!rgb || !sparse || !read_k(path, K) || sw != w || sh != h) {
    fprintf(stderr, "psd_demo: cannot read rgb.ppm, sparse.pfm (or sparse_mm.pgm) and K.txt of the same size "
                    "from %s; write them with `psdrt demo --save-inputs %s`\n", argv[1], argv[1]);
    return 1;
  }

  psd_session_options_init(&opt); /* CPU, FP32, the manifest's mode (guided without a directory) */
  st = psd_session_create(argc == 4 ? argv[3] : NULL, &opt, &session);
  if (st != PSD_OK) return fail("psd_session_create", st);
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  psd_session_get_info(session, &info);

  memset(&in, 0, sizeof in);
  in.struct_size = sizeof in;
  in.height = h;
  in.width = w;
  in.rgb = rgb;
  in.sparse = sparse;
  in.K = K;
  in.K_dtype = PSD_DTYPE_FLOAT64;
  depth = (float*)malloc((size_t)(w * h) * sizeof(float));
  mm = (uint16_t*)malloc((size_t)(w * h) * sizeof(uint16_t));
  memset(&out, 0, sizeof out);
  out.struct_size = sizeof out;
  out.depth = depth;
  out.depth_mm = mm;
  st = psd_session_run(session, &in, &out);
  if (st != PSD_OK) {
    psd_session_destroy(session);
    return fail("psd_session_run", st);
  }
  for (i = 0; i < w * h; ++i)
    if (depth[i] > 0) {
      ++valid;
      lo = depth[i] < lo ? depth[i] : lo;
      hi = depth[i] > hi ? depth[i] : hi;
    }
  printf("%s mode, %ldx%ld, %lld sparse points: depth %.3f..%.3f m on %ld of %ld pixels, %.1f ms "
         "(backend: %s)\n",
         info.mode == PSD_SESSION_MODE_PSD ? "psd" : info.mode == PSD_SESSION_MODE_PROPAGATE ? "propagate" : "guided",
         h, w, (long long)out.points, lo, hi, valid, w * h, out.timings_ms[PSD_STAGE_TOTAL], info.backend);
  if (!write_png16(argv[2], mm, w, h)) {
    fprintf(stderr, "psd_demo: cannot write %s\n", argv[2]);
    return 1;
  }
  printf("wrote %s (16-bit millimetres)\n", argv[2]);
  psd_session_destroy(session);
  free(rgb);
  free(sparse);
  free(depth);
  free(mm);
  return 0;
}

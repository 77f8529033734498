// The weight-free ``guided`` mode as one call (psdrt.runtime.guided documents the method;
// psdrt.export.reference.guided is the FP32 oracle):
//
//   features  phi_c(p) = cos(z_c(p)),  z = (lab(p) / colour_scale) @ W + b       (C channels)
//             lab = CIELAB of the 8-bit sRGB colour, scaled like OpenCV's 8-bit Lab
//             (L * 255 / 100, a + 128, b + 128); sRGB -> linear -> XYZ (D65) -> Lab in float.
//             The kernel folds the constant Lab offsets into the phases (z_c = k0 Lc + k1 a +
//             k2 b + ph_c with Lc = L * 2.55 - 127.5, ph_c = b_c + offsets, reduced mod 2 pi),
//             drops the sqrt(2 / C) factor, which the cosine affinities cancel; the cosine is a
//             minimax polynomial after an exact reduction of z / pi (guided_impl.h GCosPi);
//   geometry  nearest-neighbour fill of the sparse depth, scipy's exact Euclidean feature
//             transform (Maurer et al. 2003) step for step, so ties resolve as
//             scipy.ndimage.distance_transform_edt does (column pass: the upper site; row pass:
//             the left-most surviving site);
//   pyramid   L = max(1, min(levels, floor(log2(min(H, W))) - 1)) levels; level l is
//             (H >> l, W >> l): features block-averaged over 2^l x 2^l, sparse pooled as
//             sum(valid) / (count + 1e-5), the coarsest level starts from the block mean of the
//             fill, finer levels from the bilinear (align_corners=False) upsampling of the
//             coarser result;
//   CSPN      per level `iterations` Jacobi sweeps with the cosine affinities of the features
//             (out-of-image neighbours 0), w = a / sum|a|, centre = 1 - sum w, sparse
//             re-injected before every sweep but not after the last (kernels/cspn/cspn.h);
//   output    clamped to [min, max] of the valid sparse depth.
//
// Arithmetic (equal to the reference up to float rounding): a cosine is (dot of the raw
// features * 1/|f_p|) * 1/|f_q| (1/|f| = 1 / max(|f|, 1e-12), F.normalize's guard); a sweep is
// inv * (sum_j a_j d_j) + centre * draw with inv = 1 / sum|a| (0 when the sum is 0), centre =
// 1 - inv * sum a, the neighbour products summed pairwise.
// Storage: each level keeps four symmetric affinity planes (E, S, SE, SW: a(p, q) = a(q, p)
// is computed once), 1 / sum|a| and centre * draw, zero-padded around the frame so that a
// sweep is the same expression at every pixel. The re-injection is folded into the
// coefficients (inv = 0, centre * draw = sparse at sparse pixels) except in the last sweep.
//
// Sparse values <= 0 or non-finite are missing. No valid point -> the output is 0 everywhere
// (no status: the GPU would need a host sync). One point or equal points -> the clamp range is
// one value and so is the output. Never NaN for finite inputs.
//
// Two implementations of the same arithmetic: GuidedGeneric<D> (per-pixel ParallelFor kernels,
// what the CUDA library runs; on the CPU with PSD_GUIDED_FLAG_GENERIC) and GuidedCpu (row
// bands, 8-wide vector code, features streamed row by row and never stored). Both evaluate the
// same float expressions in the same order (shared templates in guided_impl.h), so on the CPU
// they agree bit for bit; nvcc contracts multiply-adds, so CUDA results differ by rounding.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../common/host_device.h"
#include "../common/workspace.h"
#include "dt.h"

namespace psd {
namespace kernels {

constexpr int32_t kGuidedMaxChannels = 64;
constexpr int32_t kGuidedMaxLevels = 24;
constexpr int64_t kGuidedMaxSide = int64_t{1} << 20;  // keeps the fill's integer tests in int64

// Row buffers of the CPU fast path: a row of width w occupies GuidedRowStride(w) floats, data
// from kGuidedPad on, zeros on both sides.
constexpr int64_t kGuidedPad = 8;
PSD_HOST_DEVICE PSD_INLINE int64_t GuidedUp8(int64_t x) { return (x + 7) / 8 * 8; }
inline int64_t GuidedRowStride(int64_t w) { return GuidedUp8(w) + 32; }
// Floats of one CPU band's row buffers (Lab rows; per level two rows of C features + norms).
int64_t GuidedBandFloats(int64_t w, int32_t channels, int32_t levels);

// Per-channel coefficients of the phase in half-turns, t_c = z_c / pi = ((k0 Lc + k1 a) + k2 b)
// + ph_c (ph_c reduced to [0, 2)), computed on the host in double from W (3 x C), b (C) and the
// colour scale (GuidedCoefficients); the feature is amp * cos(pi t_c). amp is 1 in the guided
// pipeline, sqrt(2 / C) for psd_guided_features.
struct GuidedCoeffs {
  int32_t c;
  float amp;
  float k0[kGuidedMaxChannels], k1[kGuidedMaxChannels], k2[kGuidedMaxChannels];
  float ph[kGuidedMaxChannels];
};

enum GuidedMethod : int32_t { kGuidedMethodDt = 0, kGuidedMethodCspn = 1 };

struct GuidedConfig {
  int32_t method = kGuidedMethodDt;  // DT: dt.h with `dt`; CSPN: this file with the fields below
  GuidedDtConfig dt;
  int32_t channels = 32;
  float colour_scale = 10.0f;
  int32_t levels = 2;      // requested; the effective count is GuidedLevels(h, w, levels)
  int32_t iterations = 40;
  bool generic = false;    // CPU: run GuidedGeneric<kCpu> (the CUDA arithmetic) instead
  bool baseline_isa = false;  // CPU fast path: no AVX2 even where the CPU has it
  const float* w = nullptr;  // host, 3 x C row-major
  const float* b = nullptr;  // host, C
};

// Padded planes: row y of the level at (y + 1) * p, column x at kGuidedCol0 + x (aligned for
// 8-float vectors), zeros around the frame.
constexpr int64_t kGuidedCol0 = 8;

struct GuidedLevel {
  int64_t h, w, p;  // size and padded row stride; planes hold (h + 2) * p floats
  float *ae, *as, *ase, *asw;  // affinities with the E, S, SE, SW neighbour (0 outside)
  float *inv, *inve, *cdr, *cde;  // 1/sum|a| and centre*draw: real (last sweep) / effective
  float *a, *b;  // ping-pong iterates
  float* feat;   // generic path only: C x h x w raw features, then h x w inverse norms
};

struct GuidedPlan {
  int64_t h = 0, w = 0;
  int32_t c = 0, levels = 0, iterations = 0;
  bool generic = false, baseline_isa = false;
  GuidedLevel lv[kGuidedMaxLevels] = {};
  float* lut = nullptr;     // 256: sRGB 8-bit -> linear
  float* stats = nullptr;   // lo, hi, any (3) + per-chunk partials (3 * kChunks)
  int32_t* col = nullptr;   // h x w: nearest valid row in the column (-1: none)
  float* colval = nullptr;  // h x w: its depth
  int32_t* stack = nullptr; // h x w: per-row Voronoi stacks
  int32_t* next = nullptr;  // w: column scan state (CPU)
  float* fill = nullptr;    // h x w nearest fill
  float* scratch = nullptr; // CPU fast path: per-band row buffers
  int64_t bands = 0, band_floats = 0;
};

// Effective pyramid depth: the coarsest level keeps at least 4 pixels on its short side.
int32_t GuidedLevels(int64_t h, int64_t w, int32_t requested);
// Validates sizes and parameters (throws InvalidArgument / NullPointer / ShapeMismatch).
void ValidateGuided(int64_t h, int64_t w, const GuidedConfig& cfg);
GuidedCoeffs GuidedCoefficients(const GuidedConfig& cfg, bool scaled);
GuidedPlan PlanGuided(Workspace& ws, int64_t h, int64_t w, const GuidedConfig& cfg, Device d);

// (C, h, w) features amp * cos(z) (no workspace: the sRGB curve is evaluated per pixel).
template <Device D>
void GuidedFeatures(const GuidedCoeffs& k, const uint8_t* rgb, bool bgr, int64_t h, int64_t w,
                    float* out, Stream s);
template <Device D>
void GuidedGeneric(const GuidedPlan& plan, const GuidedCoeffs& k, const uint8_t* rgb, bool bgr,
                   const float* sparse, float* out, Stream s);
void GuidedCpu(const GuidedPlan& plan, const GuidedCoeffs& k, const uint8_t* rgb, bool bgr,
               const float* sparse, float* out);

// Validated entry points of the C ABI (psd_guided_workspace_size / psd_guided /
// psd_guided_features); the first two dispatch on cfg.method.
size_t GuidedWorkspaceBytes(Device d, int64_t h, int64_t w, const GuidedConfig& cfg);
void GuidedChecked(Device d, int64_t h, int64_t w, const GuidedConfig& cfg, const uint8_t* rgb,
                   bool bgr, const float* sparse, void* workspace, size_t workspace_bytes,
                   float* out, Stream s);
void GuidedFeaturesChecked(Device d, int64_t h, int64_t w, const GuidedConfig& cfg,
                           const uint8_t* rgb, bool bgr, float* out, Stream s);

}  // namespace kernels
}  // namespace psd

"""Naive NumPy references and shared setup for tests/kernels (import as ``_kernel_reference``).

The PyTorch oracle is ``psdrt.export.reference.propagation``; these loops exist for what it
cannot pin down: the kernels' seeded subset selection (splitmix64 partial Fisher-Yates) and a
second, loop-by-loop reading of the kNN / CSPN definitions.
"""

from __future__ import annotations

import numpy as np

MASK64 = (1 << 64) - 1


def kernel_lib(kind: str = "cpu"):
    """The kernel library, built on first use when missing (CPU build only)."""
    from psdrt.runtime import _capi
    from psdrt.runtime.errors import BackendUnavailable

    try:
        return _capi.load(kind)
    except BackendUnavailable:
        if kind != "cpu":
            raise
        from psdrt import build

        build.build_kernels(cuda=False)
        return _capi.load(kind)


def splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def partial_shuffle(a: list, keep: int, seed: int, stream_id: int) -> list:
    """kernels/knn/knn_impl.h PartialShuffle; returns the first ``keep`` entries."""
    a = list(a)
    m = len(a)
    state = (seed ^ ((0xD1B54A32D192ED03 * (stream_id + 1)) & MASK64)) & MASK64
    for i in range(min(keep, m - 1)):
        state, r = splitmix64(state)
        j = i + r % (m - i)
        a[i], a[j] = a[j], a[i]
    return a[:keep]


def _seq_sum(x, axis=-1):
    """Float32 sum from the first element on, one rounding per addition (the kernels' loops; numpy's
    own sum is pairwise)."""
    return np.cumsum(x, axis=axis, dtype=np.float32).take(-1, axis=axis)


def knn_naive(feat, points, init, sparse4, k, rate=1.0, candidates=0, seed=0, ties="lower"):
    """Loop-by-loop kNN propagation of kernels/knn/knn.h, in its float32 arithmetic (unfused
    products, sums in order) and with its documented tie rule: among equal distances, and then
    among equal affinities, the lower candidate cell first. Equal to the kernel bit for bit.
    ``ties="upper"`` reverses that rule (for tests that show a frame's ties decide its output)."""
    c, h, w = feat.shape
    n = h * w
    f = feat.reshape(c, n).T.astype(np.float32)
    norm = np.maximum(np.sqrt(_seq_sum(f * f, 1)), np.float32(1e-12))
    u = (f / norm[:, None]).astype(np.float32)
    p = points.reshape(3, n).T.astype(np.float32)
    s = sparse4.reshape(n)
    out = init.reshape(n).astype(np.float32).copy()
    cand = [i for i in range(n) if s[i] > 1e-4]
    queries = [i for i in range(n) if s[i] <= 0]
    if 0 < candidates < len(cand):
        cand = partial_shuffle(cand, candidates, seed, 0)
    if rate < 1.0:
        nq = int((n - int((s > 1e-6).sum())) * rate)
        queries = partial_shuffle(queries, min(nq, len(queries)), seed, 1)
    cand = np.array(sorted(cand), dtype=np.int64)
    m = len(cand)
    for q in queries:
        if m == 0:
            continue
        d = p[cand] - p[q]
        d2 = _seq_sum(d * d, 1)
        sign = 1 if ties == "lower" else -1
        order = np.lexsort((sign * cand, d2))[: min(2 * k, m)]
        near = cand[order]
        a = _seq_sum(u[near] * u[q], 1)
        sel = np.lexsort((sign * near, a))[: min(k, len(near))]
        a_k, v_k = a[sel], s[near[sel]]
        tot = _seq_sum(a_k)
        wts = a_k / tot if tot != 0 else None
        if wts is None or not np.isfinite(wts).all():
            wts = np.full(len(sel), 1.0 / len(sel), np.float32)
        out[q] = _seq_sum(v_k * wts)
    return out.reshape(h, w)


def cspn_naive(sparse, dense, feat, iterations):
    """Loop-by-loop CSPN of kernels/cspn/cspn.h (float64; compare with a tolerance)."""
    c, h, w = feat.shape
    f = feat.astype(np.float64)
    u = f / np.maximum(np.sqrt((f * f).sum(0)), 1e-12)
    mask = sparse > 0
    raw = np.where(mask, sparse, dense).astype(np.float64)
    offs = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    wts = np.zeros((8, h, w))
    cen = np.ones((h, w))
    for y in range(h):
        for x in range(w):
            a = np.zeros(8)
            for j, (dy, dx) in enumerate(offs):
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    a[j] = (u[:, y, x] * u[:, y + dy, x + dx]).sum()
            sa = np.abs(a).sum()
            if sa > 0:
                wts[:, y, x] = a / sa
                cen[y, x] = 1 - wts[:, y, x].sum()
    d = raw.copy()
    for _ in range(iterations):
        d = np.where(mask, sparse, d)
        pad = np.pad(d, 1)
        acc = sum(wts[j] * pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for j, (dy, dx) in enumerate(offs))
        d = acc + cen * raw
    return d


def t4(a):
    """NumPy (H, W) or (C, H, W) -> a 4-D torch tensor for the PyTorch reference."""
    import torch

    a = torch.from_numpy(np.ascontiguousarray(a))
    return a[None, None] if a.ndim == 2 else a[None]

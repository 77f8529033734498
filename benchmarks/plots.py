"""PNG plots of benchmark results (``psdrt.benchmarks.harness`` run dicts).

* :func:`plot_stage_breakdown`: stacked bars, one per run, of the per-stage mean latency;
* :func:`plot_latency_vs_resolution`: p50 (with p90 whiskers) against megapixels, one line per series;
* :func:`plot_precision_comparison`: p50 bars per precision, grouped by series, with the speed-up
  over the first precision written above each bar;
* :func:`plot_eval_metric`: ``psdrt eval``'s summary as bars of one metric (default RMSE in mm), one
  group per sparse pattern and one bar per configuration.

matplotlib is optional (the ``bench`` extra) and imported on first use through the Agg canvas
only (no pyplot state, no display). Each function writes the PNG and returns the ``Figure`` so
that callers (and tests) can read the plotted data back (``fig.axes[0].patches`` / ``.lines``).
Figures are small (about 6.4 x 3.6 in at 80 dpi) so that the committed PNGs stay under 100 KB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from psdrt.runtime._lazy import lazy_import

__all__ = ["plot_stage_breakdown", "plot_latency_vs_resolution", "plot_precision_comparison", "plot_eval_metric",
           "STAGE_COLOURS"]

_mpl = lazy_import("matplotlib", "3.7", extra="bench")

DPI = 80
#: one colour per known stage, the same in every plot
STAGE_COLOURS = {
    "preprocess": "#4c72b0", "encoder": "#dd8452", "propagation": "#55a868", "head": "#c44e52",
    "post": "#8172b3", "guided": "#937860", "other": "#bbbbbb",
}
_EXTRA = ["#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]


def _figure(size=(6.4, 3.6)):
    _mpl.load()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(p, dpi=DPI, format="png", metadata={"Software": None})


def _colour(stage: str, i: int) -> str:
    return STAGE_COLOURS.get(stage, _EXTRA[i % len(_EXTRA)])


def plot_stage_breakdown(runs: Sequence[Mapping[str, Any]], path, title: str = "Latency per stage",
                         stat: str = "mean_ms"):
    """Stacked bars of per-stage latency (``stat``, default the mean, so that the stages add up to
    the end-to-end mean), one bar per run. Runs without stages get one ``total`` segment.

    Returns:
        matplotlib.figure.Figure: bar ``i`` of stage ``s`` is the patch whose label is ``s``.
    """
    fig = _figure((7.2, 1.0 + 0.42 * max(len(runs), 3)))
    ax = fig.add_subplot(111)
    stages: List[str] = []
    for r in runs:
        stages += [k for k in (r.get("stages") or {"total": None}) if k not in stages]
    if "other" in stages:  # glue last
        stages.remove("other")
        stages.append("other")
    names = [r["name"] for r in runs]
    left = [0.0] * len(runs)
    for i, s in enumerate(stages):
        widths = []
        for r in runs:
            st = r.get("stages") or {}
            if st:
                v = st.get(s, {}).get(stat, 0.0) if s in st else 0.0
            else:
                v = r["total"][stat] if s == "total" else 0.0
            widths.append(max(float(v), 0.0))  # "other" can be slightly negative (clock noise)
        ax.barh(names, widths, left=left, color=_colour(s, i), label=s, edgecolor="white", linewidth=0.5)
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()
    ax.set_xlabel(f"ms ({stat.replace('_ms', '')})")
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _save(fig, path)
    return fig


def _series_key(run: Mapping[str, Any]) -> str:
    p = run.get("params", {})
    return p.get("series") or " ".join(str(p[k]) for k in ("mode", "backend", "precision") if p.get(k)) or run["name"]


def plot_latency_vs_resolution(runs: Sequence[Mapping[str, Any]], path, title: str = "Latency vs resolution"):
    """p50 latency against megapixels (``params['size']``), one line per series (``params['series']``,
    else mode/backend/precision); whiskers up to p90; log y axis when the p50s span more than 20x.

    Returns:
        matplotlib.figure.Figure: one ``Line2D`` per series (label = series) whose x data are the
        megapixels and y data the p50 values, sorted by size.
    """
    fig = _figure()
    ax = fig.add_subplot(111)
    series: Dict[str, List[tuple]] = {}
    for r in runs:
        size = r.get("params", {}).get("size")
        if not size:
            continue
        mp = size[0] * size[1] / 1e6
        series.setdefault(_series_key(r), []).append((mp, r["total"]["p50_ms"], r["total"]["p90_ms"], size))
    for i, (key, pts) in enumerate(series.items()):
        pts.sort()
        xs, p50, p90 = [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]
        (line,) = ax.plot(xs, p50, marker="o", label=key, color=_EXTRA[i % len(_EXTRA)] if i >= 4 else None)
        ax.vlines(xs, p50, p90, color=line.get_color(), linewidth=1.0, alpha=0.6)
        for x, y, s in zip(xs, p50, [p[3] for p in pts]):
            ax.annotate(f"{s[0]}x{s[1]}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ys = [p[1] for pts in series.values() for p in pts]
    log = bool(ys) and min(ys) > 0 and max(ys) / min(ys) > 20
    if log:  # guided (ms) and the networks (s) on one readable axis
        ax.set_yscale("log")
    ax.set_xlabel("megapixels (H x W)")
    ax.set_ylabel("ms (p50, whisker to p90)" + (", log scale" if log else ""))
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7, frameon=False)
    _save(fig, path)
    return fig


def plot_precision_comparison(runs: Sequence[Mapping[str, Any]], path, title: str = "Latency by precision",
                              baseline: Optional[str] = None):
    """Grouped bars of p50 latency per precision (``params['precision']``), one group per series
    (``params['group']``, else mode + size); the text above each bar is the speed-up over the
    group's ``baseline`` precision (default: the first one in the group).

    Returns:
        matplotlib.figure.Figure: one bar container per precision (label = precision), bar heights
        = p50 in the order of the groups.
    """
    fig = _figure()
    ax = fig.add_subplot(111)
    groups: Dict[str, Dict[str, float]] = {}
    precisions: List[str] = []
    for r in runs:
        p = r.get("params", {})
        prec = p.get("precision")
        if not prec:
            continue
        size = p.get("size")
        g = p.get("group") or " ".join(x for x in (p.get("mode"), f"{size[0]}x{size[1]}" if size else None) if x)
        groups.setdefault(g or "run", {})[prec] = r["total"]["p50_ms"]
        if prec not in precisions:
            precisions.append(prec)
    n = max(len(precisions), 1)
    width = 0.8 / n
    gnames = list(groups)
    for j, prec in enumerate(precisions):
        xs = [i + (j - (n - 1) / 2) * width for i in range(len(gnames))]
        hs = [groups[g].get(prec, 0.0) for g in gnames]
        bars = ax.bar(xs, hs, width=width * 0.95, label=prec, color=_EXTRA[j % len(_EXTRA)] if j >= 3 else
                      ("#4c72b0", "#dd8452", "#55a868")[j])
        for g, b, h in zip(gnames, bars, hs):
            base = groups[g].get(baseline) if baseline else next(iter(groups[g].values()))
            if h > 0 and base:
                ax.annotate(f"{base / h:.2f}x", (b.get_x() + b.get_width() / 2, h), ha="center", va="bottom",
                            fontsize=7, textcoords="offset points", xytext=(0, 1))
    ax.set_xticks(range(len(gnames)))
    ax.set_xticklabels(gnames, fontsize=8)
    ax.set_ylabel("ms (p50)")
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    if precisions:
        ax.legend(fontsize=7, frameon=False)
    _save(fig, path)
    return fig


#: units of the ``psdrt eval`` metrics on the plots (``runtime.metrics.METRIC_UNITS``)
_EVAL_UNITS = {"mae": "mm", "rmse": "mm", "imae": "1/km", "irmse": "1/km", "rel": "%", "d1": "%", "d2": "%", "d3": "%",
               "edge_rmse": "mm"}
_EVAL_NAMES = {"mae": "MAE", "rmse": "RMSE", "imae": "iMAE", "irmse": "iRMSE", "rel": "REL", "d1": "δ1", "d2": "δ2",
               "d3": "δ3", "edge_rmse": "edge-band RMSE"}


def plot_eval_metric(result: Mapping[str, Any], path, metric: str = "rmse", title: Optional[str] = None):
    """Bars of one metric of a ``psdrt eval`` result (``runtime.evaluation.evaluate``): one group per
    sparse pattern, one bar per configuration (the mean over frames, as in the summary table), the
    value written above each bar. Non-finite values are drawn as no bar, marked ``inf``/``nan``.

    Returns:
        matplotlib.figure.Figure: one bar container per configuration (label = configuration), bar
        heights = the metric per pattern in ``result['meta']['patterns']`` order.
    """
    import math

    summary = list(result.get("summary", []))
    patterns = list(result.get("meta", {}).get("patterns") or dict.fromkeys(r["pattern"] for r in summary))
    fig = _figure((max(6.4, 2.0 + 1.3 * len(patterns)), 3.6))
    ax = fig.add_subplot(111)
    configs = list(dict.fromkeys(r["config"] for r in summary))
    value = {(r["pattern"], r["config"]): float(r[metric]) for r in summary}
    n = max(len(configs), 1)
    width = 0.8 / n
    for j, cfg in enumerate(configs):
        xs = [i + (j - (n - 1) / 2) * width for i in range(len(patterns))]
        vals = [value.get((p, cfg), math.nan) for p in patterns]
        hs = [v if math.isfinite(v) else 0.0 for v in vals]
        bars = ax.bar(xs, hs, width=width * 0.95, label=cfg, color=_EXTRA[j % len(_EXTRA)] if j >= 3 else
                      ("#4c72b0", "#dd8452", "#55a868")[j])
        for b, v in zip(bars, vals):
            text = (f"{v:.1f}" if metric in ("rmse", "mae", "edge_rmse") else f"{v:.2f}") if math.isfinite(v) else \
                ("nan" if math.isnan(v) else "inf")
            ax.annotate(text, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=6,
                        textcoords="offset points", xytext=(0, 1))
    ax.set_xticks(range(len(patterns)))
    ax.set_xticklabels(patterns, fontsize=8)
    unit = _EVAL_UNITS.get(metric, "")
    ax.set_ylabel(f"{_EVAL_NAMES.get(metric, metric)}" + (f" ({unit})" if unit else "")
                  + (", mean over frames with a depth edge" if metric == "edge_rmse" else ", mean over frames"))
    ds = result.get("meta", {}).get("dataset", {})
    better = "higher" if metric.startswith("d") else "lower"
    ax.set_title(title or f"{_EVAL_NAMES.get(metric, metric)} on {ds.get('title', ds.get('dataset', '?'))} "
                 f"({ds.get('frames', '?')} frame(s)); {better} is better", fontsize=10)
    ax.tick_params(labelsize=8)
    if configs:
        ax.legend(fontsize=7, frameon=False)
    _save(fig, path)
    return fig

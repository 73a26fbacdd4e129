"""Shared drawing rules of :mod:`analysis.plots`: log axes whose tick labels never overlap,
colour limits that do not turn rounding noise into colour, and labels kept inside the axes.

Matplotlib's default log axis labels every minor tick when the data span less than a decade
and crowds ``10^-2`` against ``2x10^-2``; :func:`log_axis` instead puts labelled ticks only at
1, 2, 5 x 10^k (or only at powers of ten over a wide span, or a linear axis over a narrow one)
and leaves minor ticks unlabelled. :func:`colour_limits` widens a colour scale whose values are
equal up to floating-point noise, so equal cells get equal colours.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

__all__ = ["log_axis", "colour_limits", "legend", "keep_inside", "MAX_TICKS"]

MAX_TICKS = 6  # labelled ticks on a log axis at most


def _tick_text(v: float) -> str:
    return f"{v:g}"


def log_axis(ax, values, axis: str = "x") -> None:
    """Scale ``axis`` of ``ax`` for positive ``values``: a log axis with at most
    :data:`MAX_TICKS` labelled ticks from 1, 2, 5 x 10^k (powers of ten only, thinned, over wide
    spans), or a linear one where the values span less than a factor of 4."""
    v = np.asarray([x for x in np.ravel(values) if isinstance(x, (int, float, np.floating)) and x > 0 and math.isfinite(x)])
    setter = ax.xaxis if axis == "x" else ax.yaxis
    if not len(v):
        return
    lo, hi = float(v.min()), float(v.max())
    if hi / lo < 4:
        setter.set_major_locator(MaxNLocator(5))
        return
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    ticks: list[float] = []
    for mult in ((1, 2, 5), (1,)):
        ticks = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
                 for m in mult if lo / 1.05 <= m * 10.0 ** k <= hi * 1.05]
        if len(ticks) <= MAX_TICKS:
            break
    step = max(1, math.ceil(len(ticks) / MAX_TICKS))
    ticks = ticks[::step]
    setter.set_major_locator(FixedLocator(ticks))
    setter.set_major_formatter(FuncFormatter(lambda x, _pos: _tick_text(x)))
    setter.set_minor_locator(LogLocator(subs=np.arange(2, 10)))
    setter.set_minor_formatter(NullFormatter())
    pad = (hi / lo) ** 0.03
    (ax.set_xlim if axis == "x" else ax.set_ylim)(lo / pad, hi * pad)


def colour_limits(grid: np.ndarray, rtol: float = 1e-6) -> tuple[float, float]:
    """``(vmin, vmax)`` of a colour scale for ``grid``: its range, unless the values are equal
    within ``rtol`` of their magnitude (then a range around them, so they share one colour)."""
    finite = grid[np.isfinite(grid)]
    if not len(finite):
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    scale = max(abs(lo), abs(hi))
    if hi - lo <= rtol * scale or hi == lo:
        half = 0.5 * scale if scale > 0 else 0.5
        return lo - half, hi + half
    return lo, hi


def legend(ax, n: int, **kwargs) -> None:
    """A small legend when there are 1-12 labelled lines (more would hide the data)."""
    if 0 < n <= 12:
        ax.legend(fontsize=7, **kwargs)


def keep_inside(ax, x: float, y: float) -> dict:
    """Text placement (offset, alignment) for a label at data point (x, y) that keeps it inside
    the axes: to the left of points in the right half, below points in the upper half."""
    fx, fy = ax.transAxes.inverted().transform(ax.transData.transform((x, y)))
    right, top = fx > 0.5, fy > 0.5
    return {"xytext": (-4 if right else 4, -4 if top else 4), "textcoords": "offset points",
            "ha": "right" if right else "left", "va": "top" if top else "bottom"}

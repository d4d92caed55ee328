"""Pareto fronts and the 2-D hypervolume of (cost, quality) trade-offs.

A point is kept on the front when no other point is at least as good on both axes and strictly
better on one. Each axis is minimised or maximised as asked (`minimize=(True, False)` is the usual
"cost down, accuracy up"). Duplicated points are all on the front when they are not dominated: they
are equally good, and dropping one would make the result depend on row order.

The hypervolume is the area dominated by the front and bounded by a reference point that is worse
than every point on both axes; a larger hypervolume is a better trade-off curve. Pure numpy, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_minimised(points: Sequence[Sequence[float]] | np.ndarray, minimize: tuple[bool, bool]) -> np.ndarray:
    array = np.asarray(points, dtype=float)
    if array.ndim != 2 or (array.size and array.shape[1] != 2):
        raise ValueError(f"points must be an [N, 2] array of (x, y) pairs, got shape {array.shape}")
    if array.size == 0:
        return array.reshape(0, 2)
    if not np.isfinite(array).all():
        raise ValueError("points must be finite; drop missing values before computing a front")
    signs = np.array([1.0 if m else -1.0 for m in minimize])
    return array * signs


def pareto_mask(
    points: Sequence[Sequence[float]] | np.ndarray, minimize: tuple[bool, bool] = (True, False)
) -> np.ndarray:
    """Boolean mask [N]: True where the point is not dominated by any other point."""
    p = _as_minimised(points, minimize)
    if len(p) == 0:
        return np.zeros(0, dtype=bool)
    no_worse = (p[:, None, :] <= p[None, :, :]).all(axis=2)  # [i, j]: i is no worse than j everywhere
    better = (p[:, None, :] < p[None, :, :]).any(axis=2)  # [i, j]: i is strictly better somewhere
    dominated = (no_worse & better).any(axis=0)  # j is dominated by some i
    return ~dominated


def pareto_front(
    points: Sequence[Sequence[float]] | np.ndarray, minimize: tuple[bool, bool] = (True, False)
) -> np.ndarray:
    """Indices of the front's points, sorted along x (the order a trade-off curve is drawn in)."""
    array = np.asarray(points, dtype=float).reshape(-1, 2)
    idx = np.flatnonzero(pareto_mask(array, minimize))
    return idx[np.lexsort((array[idx, 1], array[idx, 0]))]


def hypervolume_2d(
    points: Sequence[Sequence[float]] | np.ndarray,
    reference: tuple[float, float],
    minimize: tuple[bool, bool] = (True, False),
) -> float:
    """Area dominated by `points` and bounded by `reference` (worse than the points on both axes).

    Points that do not strictly improve on the reference on both axes add nothing.
    """
    p = _as_minimised(points, minimize)
    ref = _as_minimised([reference], minimize)[0]
    p = p[(p < ref).all(axis=1)]
    if len(p) == 0:
        return 0.0
    front = p[pareto_mask(p, (True, True))]
    front = front[np.argsort(front[:, 0], kind="stable")]
    # Sorted by x ascending, the front's y descends: sum the rectangles between successive x values.
    xs = np.append(front[:, 0], ref[0])
    return float(np.sum((xs[1:] - xs[:-1]) * (ref[1] - front[:, 1])))

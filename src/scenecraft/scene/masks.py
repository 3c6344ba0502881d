"""Region weights on any grid: boxes, split cells and masks rasterised by exact area overlap.

Every grid cell ``(i, j)`` of an ``h x w`` grid covers the canvas rectangle
``[j/w, (j+1)/w] x [i/h, (i+1)/h]``. A region's raw weight in a cell is the fraction of that cell
the region covers. :func:`region_weights` then makes the weights of a scene sum to one per cell:
where regions overlap by more than the cell they share it in proportion, and what the regions leave
uncovered belongs to the base/background prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["interval_coverage", "rect_coverage", "resample_mask", "region_weights"]


def interval_coverage(start: float, end: float, cells: int) -> np.ndarray:
    """Fraction of each of ``cells`` equal 1-D cells of ``[0, 1]`` that ``[start, end]`` covers."""
    # Work in units of cells, so that a span covering whole cells yields exact ones.
    lower = np.arange(cells, dtype=np.float64)
    return np.clip(np.minimum(lower + 1.0, end * cells) - np.maximum(lower, start * cells), 0.0, 1.0)


def rect_coverage(rect: Sequence[float], height: int, width: int) -> np.ndarray:
    """``(height, width)`` array: fraction of each cell covered by ``rect = (x0, y0, x1, y1)``."""
    x0, y0, x1, y1 = rect
    return np.outer(interval_coverage(y0, y1, height), interval_coverage(x0, x1, width))


def _overlap_matrix(source: int, target: int) -> np.ndarray:
    """``(target, source)`` matrix averaging ``source`` equal cells into ``target`` equal cells."""
    matrix = np.empty((target, source))
    for i in range(target):
        matrix[i] = interval_coverage(i / target, (i + 1) / target, source) / source * target
    return matrix


def resample_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-average a 2-D mask of values in ``[0, 1]`` onto a ``(height, width)`` grid."""
    mask = np.asarray(mask, dtype=np.float64)
    rows = _overlap_matrix(mask.shape[0], height)
    cols = _overlap_matrix(mask.shape[1], width)
    return rows @ mask @ cols.T


def region_weights(raw: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Normalise raw region coverages so that every cell's weights sum to one.

    Returns ``(weights, rest)``: ``weights`` has shape ``(K, h, w)``; ``rest`` (shape ``(h, w)``) is
    the share left to the base/background prompt, so ``weights.sum(0) + rest == 1`` everywhere.
    """
    stacked = np.clip(np.stack([np.asarray(r, dtype=np.float64) for r in raw]), 0.0, 1.0)
    total = stacked.sum(axis=0)
    scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-12), 1.0)
    weights = stacked * scale
    rest = np.clip(1.0 - weights.sum(axis=0), 0.0, 1.0)
    rest[rest < 1e-9] = 0.0
    return weights, rest

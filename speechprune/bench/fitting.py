"""The cost model's fit: non-negative least squares (``nnls``), on relative errors
(``fit_relative``), so that every timed shape counts alike whatever its size and no structure's
cost comes out negative (removing a structure never predicts a slower model)."""

from __future__ import annotations

import numpy as np


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x >= 0 minimising |a x - b| (Lawson and Hanson's active-set method)."""
    n = a.shape[1]
    x, passive = np.zeros(n), np.zeros(n, dtype=bool)
    tolerance = 1e-10 * max(1.0, float(np.abs(a).max()))
    for _ in range(3 * n):
        gradient = a.T @ (b - a @ x)
        candidates = ~passive & (gradient > tolerance)
        if not candidates.any():
            break
        passive[np.argmax(np.where(candidates, gradient, -np.inf))] = True
        while True:  # solve on the passive set; step back to the boundary while a value goes negative
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            blocked = passive & (z <= tolerance)
            if not blocked.any():
                break
            ratios = np.where(blocked, x / np.where(blocked, x - z, 1.0), np.inf)
            first = int(np.argmin(ratios))
            x = x + ratios[first] * (z - x)
            x[first] = 0.0
            passive &= x > tolerance
        x = z
    return x


def fit_relative(rows: list[dict], measured: list[float]) -> dict:
    """Non-negative coefficients of the features in ``rows`` that best fit ``measured`` ms, on
    relative errors (every shape counts alike, whatever its size)."""
    names = list(rows[0])
    a = np.array([[row[name] for name in names] for row in rows], dtype=np.float64) / np.array(measured)[:, None]
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0  # a feature that never varies from 0: its coefficient stays 0
    x = nnls(a / scale, np.ones(len(rows))) / scale
    return dict(zip(names, x.tolist()))

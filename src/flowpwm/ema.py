"""The one exponential moving average used everywhere: the progress monitor's smoothed
metrics, `ESNRTracker`'s EMA and the curve smoothing of plots and comparisons."""

from __future__ import annotations

import math


def ema_update(old: float | None, new: float, alpha: float) -> float:
    """`alpha * old + (1 - alpha) * new`, `alpha` the weight on the past in [0, 1); the first
    value (old is None) starts the average unsmoothed, so early readings are not pulled to 0."""
    return new if old is None else alpha * old + (1 - alpha) * new


def ema_series(values, alpha: float) -> list[float]:
    """`ema_update` along a sequence. Non-finite values are skipped (the running value is
    kept); positions before the first finite value are NaN."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"ema smoothing must be in [0, 1), got {alpha}")
    out, acc = [], None
    for v in values:
        v = float(v)
        if math.isfinite(v):
            acc = ema_update(acc, v, alpha)
        out.append(math.nan if acc is None else acc)
    return out

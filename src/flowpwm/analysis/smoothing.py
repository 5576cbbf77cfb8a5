"""Curve smoothing shared by the plots and the run comparison."""

from __future__ import annotations

import numpy as np

from flowpwm.ema import ema_series


def smooth(values, method: str = "ema", amount: float = 0.0) -> np.ndarray:
    """`ema`: `flowpwm.ema.ema_series` with weight `amount` in [0, 1) on the past (0 = raw;
    the first value starts the average). `window`: trailing mean over the
    last `int(amount)` points (<= 1 = raw). NaNs are skipped (they keep the running value)."""
    y = np.asarray(values, dtype=float)
    if method == "ema":
        return np.asarray(ema_series(y, amount), dtype=float)
    if method == "window":
        n = int(amount)
        if n <= 1:
            return y.copy()
        out = np.empty_like(y)
        for i in range(len(y)):
            chunk = y[max(0, i - n + 1):i + 1]
            chunk = chunk[np.isfinite(chunk)]
            out[i] = chunk.mean() if chunk.size else np.nan
        return out
    raise ValueError(f"smoothing method {method!r}: use ema or window")


def parse_smooth(spec) -> tuple[str, float]:
    """`ema:0.9`, `window:5`, `none`, or a (method, amount) pair -> (method, amount); a bad spec
    is a UserError that names the accepted forms."""
    from flowpwm.config import UserError

    fix = "use ema:AMOUNT with 0 <= AMOUNT < 1 (e.g. ema:0.9), window:N (e.g. window:5) or none"
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("none", "off"):
            return ("ema", 0.0)
        method, sep, amount = text.partition(":")
        if not sep or method not in ("ema", "window"):
            raise UserError(f"--smooth {spec}: unknown smoothing {method!r}; {fix}")
        spec = (method, amount)
    method, amount = spec
    try:
        value = float(amount)
        smooth([0.0], method, value)
    except ValueError:
        raise UserError(f"--smooth {method}:{amount}: bad amount; {fix}") from None
    if method == "window" and value != int(value):
        raise UserError(f"--smooth {method}:{amount}: the window must be a whole number of points; {fix}")
    return method, value

"""Gradient signal-to-noise ratio (ESNR) of a policy gradient.

The gradient is estimated M times at the same parameters from M independent micro-batches. A
gradient whose mean dominates its spread across micro-batches is informative; one dominated by its
spread is mostly noise, whatever its norm. Two summaries are reported:

* norm form      esnr       = ||mean g||^2 / (sum_i Var g_i)
* parameter form esnr_param = mean_i (mean g_i)^2 / Var g_i

The norm form is dominated by the parameters with the largest gradients; the parameter form weighs
every parameter equally, so a few noisy but small parameters pull it down.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Mapping, Sequence, Union

import torch

from flowpwm.ema import ema_update

Grads = Union[torch.Tensor, Sequence[torch.Tensor], Sequence[Sequence[torch.Tensor]]]

# A zero-variance direction with a non-zero mean is "infinitely clean"; capping keeps every value
# finite so that averages, EMAs and loggers never see inf/nan.
RATIO_CAP = 1e12


def _to_matrix(grads: Grads) -> torch.Tensor:
    """(M, P) float64 CPU matrix, one flattened gradient sample per row."""
    if isinstance(grads, torch.Tensor):
        if grads.ndim == 0:
            raise ValueError("compute_esnr: grads must have a leading sample dimension, got a scalar tensor")
        rows = list(grads.detach().to("cpu", torch.float64).reshape(grads.shape[0], -1))
    else:
        rows = []
        for m, sample in enumerate(grads):
            parts = [sample] if isinstance(sample, torch.Tensor) else list(sample)
            if not parts or any(p is None for p in parts):
                raise ValueError(
                    f"compute_esnr: gradient sample {m} is empty or contains None (a parameter without .grad); "
                    "pass zeros for it so every sample has the same layout"
                )
            rows.append(torch.cat([p.detach().reshape(-1).to("cpu", torch.float64) for p in parts]))
    if len(rows) < 2:
        raise ValueError(
            f"compute_esnr: need at least 2 gradient samples (M >= 2) to estimate the noise, got {len(rows)}"
        )
    sizes = {r.numel() for r in rows}
    if len(sizes) != 1:
        raise ValueError(f"compute_esnr: gradient samples have different sizes {sorted(sizes)}")
    return torch.stack(rows)


def _ratio(signal: torch.Tensor, noise: torch.Tensor, cap: float) -> torch.Tensor:
    """signal / noise elementwise, capped; noise == 0 gives the cap (signal > 0) or 0 (signal == 0)."""
    zero_noise = torch.where(signal > 0, signal.new_tensor(cap), signal.new_tensor(0.0))  # keep float64
    return torch.where(noise > 0, signal / noise, zero_noise).clamp(max=cap)


def _db(ratio: float, floor: float) -> float:
    # A zero gradient gives a ratio of 0; flooring before log10 keeps dB finite (-120 dB for the
    # default floor) instead of -inf, which loggers and plots would drop or choke on.
    return 10.0 * math.log10(max(ratio, floor))


def compute_esnr(grads: Grads, eps: float = 1e-12) -> dict[str, float]:
    """ESNR of M gradient samples taken at the same parameters.

    `grads`: a (M, P) tensor (any trailing shape is flattened), a list of M tensors, or a list of
    M lists of per-parameter tensors (each sample is flattened and concatenated).

    Variances are unbiased (divide by M - 1): with the small M affordable here (4-16 micro-batches)
    the biased estimate would understate the noise by a factor (M - 1) / M and flatter the ratio.
    Note that even pure noise gives esnr ~ 1/M, not 0: ||mean g||^2 still holds noise/M.

    `eps` floors the ratios before they are turned into dB. Ratios are capped at RATIO_CAP, so a
    constant gradient (zero variance, or ~1e-32 relative variance from float64 rounding) reads as
    RATIO_CAP rather than inf.
    """
    g = _to_matrix(grads)
    m = g.shape[0]
    mean = g.mean(dim=0)
    var = g.var(dim=0, unbiased=True)  # per parameter, shape (P,)

    signal = mean.square().sum()
    noise = var.sum()  # = mean over samples of ||g_m - mean g||^2 with the 1/(M-1) correction
    esnr = float(_ratio(signal, noise, RATIO_CAP))

    mean_sq = mean.square()
    live = (var > 0) | (mean_sq > 0)  # dead parameters (always-zero gradient) carry no information
    per_param = _ratio(mean_sq[live], var[live], RATIO_CAP)
    esnr_param = float(per_param.mean()) if per_param.numel() else 0.0

    return {
        "esnr": esnr,
        "esnr_db": _db(esnr, eps),
        "esnr_param": esnr_param,
        "esnr_param_db": _db(esnr_param, eps),
        "grad_norm_mean": float(signal.sqrt()),
        "samples": float(m),
    }


class ESNRTracker:
    """Latest value, EMA and sliding-window mean of each logged ESNR metric.

    Single ESNR estimates from a few micro-batches are noisy themselves; the EMA and window mean
    are what is worth plotting against training progress.
    """

    def __init__(self, window: int = 20, ema: float = 0.9) -> None:
        if int(window) != window or window < 1:
            raise ValueError(f"ESNRTracker: window must be an integer >= 1, got {window!r}")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ESNRTracker: ema must be in [0, 1), got {ema!r}")
        self.window = int(window)
        self.ema = float(ema)
        self._latest: dict[str, float] = {}
        self._ema: dict[str, float] = {}
        self._history: dict[str, deque[float]] = {}

    def update(self, values: Mapping[str, float]) -> dict[str, float]:
        """Record one value per key; returns `k`, `k_ema` and `k_window` for each key given."""
        out: dict[str, float] = {}
        for k, v in values.items():
            v = float(v)
            self._latest[k] = v
            self._ema[k] = ema_update(self._ema.get(k), v, self.ema)
            hist = self._history.setdefault(k, deque(maxlen=self.window))
            hist.append(v)
            out[k] = v
            out[f"{k}_ema"] = self._ema[k]
            out[f"{k}_window"] = sum(hist) / len(hist)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "ema": self.ema,
            "latest": dict(self._latest),
            "ema_values": dict(self._ema),
            "history": {k: list(h) for k, h in self._history.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a checkpointed tracker. This tracker's own window/ema settings are kept (a
        resumed run may change them); history beyond the window is dropped."""
        self._latest = {k: float(v) for k, v in state["latest"].items()}
        self._ema = {k: float(v) for k, v in state["ema_values"].items()}
        self._history = {
            k: deque((float(x) for x in h), maxlen=self.window) for k, h in state["history"].items()
        }

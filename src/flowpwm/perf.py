"""Speed knobs (`perf:` in configs/config.yaml), each off or harmless where it does not pay,
none changing what is computed beyond float rounding.

- `device_metrics`: update metrics stay (detached) tensors on the device; the trainer stacks an
  epoch's metrics and moves them to the host once (`host_means`), instead of one host-device sync
  per metric and grad norm.
- `fused_adam`: Adam's fused kernel (CUDA); on the CPU the `foreach` implementation, which gives
  the same bits as the default one.
- `tf32`: TF32 matmuls on CUDA (never touches CPU arithmetic).
- `compile`: `torch.compile` (mode `compile_mode`, static shapes) of the world-model loss, the
  actor's imagined rollout, the critic loss and the TD(λ) targets; `reduce-overhead` captures them
  as CUDA graphs.
  The flow integrator's K steps are a Python loop over constants, so they unroll into one graph.

`auto`: on for CUDA, off on the CPU. On the CPU nothing here measurably shortens an epoch of our
models (benchmarks/bench_epoch.py): it is compute-bound model math (Linear, LayerNorm, Mish and
their backward). A Mish written as exp and a division was tried and dropped: faster than torch's
CPU kernel on mid-sized tensors only, slower on small and large ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
AUTO = ("auto", True, False)


@dataclass(frozen=True)
class Perf:
    """Resolved settings for one device (no `auto` left)."""

    device_metrics: bool = False
    fused_adam: bool = False
    tf32: bool = False
    compile: bool = False
    compile_mode: str = "reduce-overhead"
    compile_backend: str = "inductor"

    @property
    def cudagraphs(self) -> bool:
        return self.compile and self.compile_backend == "inductor" and self.compile_mode in (
            "reduce-overhead", "max-autotune")


LEGACY = Perf()  # what PWM does when given no settings: eager, float metrics, default Adam


def _auto(value: Any, default: bool) -> bool:
    return default if str(value) == "auto" else bool(value)


def resolve(cfg: Any, device: str | torch.device) -> Perf:
    """`perf:` config section (a mapping, or None for LEGACY) → `Perf` for `device`."""
    if cfg is None:
        return LEGACY
    if isinstance(cfg, Perf):
        return cfg
    get = cfg.get
    cuda = torch.device(device).type == "cuda"
    return Perf(
        device_metrics=bool(get("device_metrics", True)),
        fused_adam=_auto(get("fused_adam", "auto"), cuda),
        tf32=_auto(get("tf32", "auto"), cuda) and cuda,
        compile=bool(get("compile", False)),
        compile_mode=str(get("compile_mode", "reduce-overhead")),
        compile_backend=str(get("compile_backend", "inductor")),
    )


def apply_matmul_precision(perf: Perf, device: str | torch.device) -> None:
    """TF32 for float32 matmuls on CUDA (process-wide), or full precision; the CPU is untouched."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = perf.tf32
        torch.backends.cudnn.allow_tf32 = perf.tf32


def adam(params: Iterable[nn.Parameter], perf: Perf, device: str | torch.device, **kwargs) -> torch.optim.Adam:
    """Adam with the fused kernel (CUDA) or the multi-tensor one (CPU: the same bits as the
    default single-tensor loop) when `fused_adam`, else torch's default."""
    if perf.fused_adam:
        if torch.device(device).type == "cuda":
            kwargs["fused"] = True
        else:
            kwargs["foreach"] = True
    return torch.optim.Adam(params, **kwargs)


# -- compile ----------------------------------------------------------------------------------------
def compile_fn(fn: Callable, perf: Perf) -> Callable:
    """`fn` compiled with static shapes (or `fn` itself when compile is off)."""
    if not perf.compile:
        return fn
    # The world-model loss reads its metrics with .item(): captured in the graph, not a graph break
    # whose resumed code would guard on (so recompile for) every new metric value.
    torch._dynamo.config.capture_scalar_outputs = True
    mode = perf.compile_mode if perf.compile_backend == "inductor" else None
    return torch.compile(fn, mode=mode, backend=perf.compile_backend, dynamic=False)


def step_begin(perf: Perf) -> None:
    """Before a compiled forward: tell CUDA-graph trees that earlier outputs are dead (callers
    clone what they keep)."""
    if perf.cudagraphs and torch.cuda.is_available():
        torch.compiler.cudagraph_mark_step_begin()


class NfeCounted:
    """A compiled function of a (flow) world model. Traced code does not count velocity calls
    (`FlowWorldModel` skips its counter while compiling), and an integer attribute whose value
    changes would be a guard failure, so a recompile, on every call: the first call runs eagerly
    and counts the calls; compiled calls see `wm.nfe == 0` and the count is added afterwards
    (and to a returned metrics dict's `nfe`)."""

    def __init__(self, fn: Callable, compiled: Callable, wm: nn.Module):
        self.fn, self.compiled, self.wm, self.calls = fn, compiled, wm, None

    def __call__(self, *args, **kwargs):
        if not hasattr(self.wm, "nfe"):
            return self.compiled(*args, **kwargs)
        if self.calls is None:
            before = self.wm.nfe
            out = self.fn(*args, **kwargs)
            self.calls = self.wm.nfe - before
            return out
        before, self.wm.nfe = self.wm.nfe, 0
        try:
            out = self.compiled(*args, **kwargs)
        finally:
            self.wm.nfe = before + self.calls
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict) and "nfe" in out[1]:
            out[1]["nfe"] = self.calls
        return out


def compiled(fn: Callable, perf: Perf, wm: nn.Module) -> Callable:
    """`fn` compiled per `perf` (velocity calls counted as eager code counts them), or `fn`."""
    if not perf.compile:
        return fn
    return NfeCounted(fn, compile_fn(fn, perf), wm)


# -- metrics ----------------------------------------------------------------------------------------
def metric(x: torch.Tensor, perf: Perf) -> torch.Tensor | float:
    """A scalar metric: a detached tensor (a copy: compiled outputs are reused) with
    `device_metrics`, else a Python float (one host-device sync)."""
    return x.detach().clone() if perf.device_metrics else x.item()


def host_means(updates: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Mean of each metric over several updates' metric dicts (sum over the updates / their
    number), as Python floats. Tensor values (device metrics) are stacked and brought to the host
    in one transfer per device: one sync instead of one per value."""
    sums: dict[str, Any] = {}
    tensors: dict[str, list[torch.Tensor]] = {}
    n = 0
    for metrics in updates:
        n += 1
        for k, v in metrics.items():
            if isinstance(v, torch.Tensor):
                tensors.setdefault(k, []).append(v.detach().reshape(()))
                sums.setdefault(k, 0.0)
            else:
                sums[k] = sums.get(k, 0.0) + v
    by_device: dict[torch.device, list[str]] = {}
    for k, values in tensors.items():
        by_device.setdefault(values[0].device, []).append(k)
    for keys in by_device.values():
        totals = torch.stack([torch.stack(tensors[k]).double().sum() for k in keys]).tolist()  # the one sync
        for k, total in zip(keys, totals):
            sums[k] += total
    return {k: v / n for k, v in sums.items()}

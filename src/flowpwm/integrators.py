"""ODE integrators for the flow world model and the rectified-flow training loss.

A velocity field is any callable `f(z, tau) -> dz/dtau` with `tau` a (..., 1) tensor. Everything
here is plain tensor arithmetic, so gradients flow through every step (the actor needs them).
"""

from __future__ import annotations

from typing import Callable

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _tau_like(z: torch.Tensor, tau: float) -> torch.Tensor:
    return torch.full((*z.shape[:-1], 1), float(tau), device=z.device, dtype=z.dtype)


def euler_step(f: Velocity, z: torch.Tensor, tau: float, h: float) -> torch.Tensor:
    """One explicit Euler step (1st order, 1 velocity call)."""
    return z + h * f(z, _tau_like(z, tau))


def heun_step(f: Velocity, z: torch.Tensor, tau: float, h: float) -> torch.Tensor:
    """One Heun step (explicit trapezoid, RK2; 2nd order, 2 velocity calls)."""
    k1 = f(z, _tau_like(z, tau))
    k2 = f(z + h * k1, _tau_like(z, tau + h))
    return z + 0.5 * h * (k1 + k2)


STEPS = {"euler": euler_step, "heun": heun_step}
CALLS_PER_STEP = {"euler": 1, "heun": 2}


def check_method(method: str) -> None:
    if method not in STEPS:
        raise ValueError(f"integrator {method!r} is unknown: use one of {sorted(STEPS)}")


def nfe(method: str, substeps: int) -> int:
    """Velocity calls (function evaluations) one integration from tau=0 to 1 costs."""
    check_method(method)
    return CALLS_PER_STEP[method] * substeps


def integrate(f: Velocity, z0: torch.Tensor, method: str = "heun", substeps: int = 1,
              t0: float = 0.0, t1: float = 1.0) -> torch.Tensor:
    """Integrate dz/dtau = f(z, tau) from t0 to t1 in `substeps` equal steps."""
    check_method(method)
    if substeps < 1:
        raise ValueError(f"substeps must be >= 1, got {substeps}")
    step, h, z = STEPS[method], (t1 - t0) / substeps, z0
    for k in range(substeps):
        z = step(f, z, t0 + k * h, h)
    return z


TAU_SAMPLING = ("uniform", "midpoint", "logit_normal")


def sample_tau(shape: tuple[int, ...], scheme: str, device=None, dtype=torch.float32) -> torch.Tensor:
    """Flow times in [0, 1]: `uniform`; `midpoint` (every tau = 0.5: no sampling noise, for
    near-straight flows); `logit_normal` (sigmoid of N(0, 1), weights the middle of the path)."""
    if scheme == "uniform":
        return torch.rand(shape, device=device, dtype=dtype)
    if scheme == "midpoint":
        return torch.full(shape, 0.5, device=device, dtype=dtype)
    if scheme == "logit_normal":
        return torch.sigmoid(torch.randn(shape, device=device, dtype=dtype))
    raise ValueError(f"tau_sampling={scheme!r} is unknown: use one of {list(TAU_SAMPLING)}")


def compute_flow_matching_loss(f: Velocity, x0: torch.Tensor, x1: torch.Tensor,
                               tau_sampling: str = "uniform", source_grad: bool = True) -> torch.Tensor:
    """Rectified-flow loss ‖f(x_tau, tau) - (x1 - x0)‖², x_tau = (1 - tau) x0 + tau x1.

    x1 is detached here (the target never trains the encoder through the target side); with
    `source_grad=False` x0 is too, so the loss trains the velocity field only (not whatever
    produced x0: the encoder, or an integrated rollout). Returns the per-sample loss, averaged
    over the last (latent) dimension."""
    x1 = x1.detach()
    if not source_grad:
        x0 = x0.detach()
    tau = sample_tau((*x0.shape[:-1], 1), tau_sampling, x0.device, x0.dtype)
    x_tau = (1 - tau) * x0 + tau * x1
    return (f(x_tau, tau) - (x1 - x0)).pow(2).mean(-1)

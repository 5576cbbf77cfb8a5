"""Flow-matching world model: the MLP dynamics replaced by a velocity field v_θ(x, a, τ)
whose ODE dx/dτ = v_θ is integrated from τ=0 (current latent) to τ=1 (next latent), in the
latent space itself or in the log space of its SimNorm groups (`flow_space`)."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from flowpwm import integrators
from flowpwm.models.layers import mlp, simnorm
from flowpwm.models.world_model import LatentWorldModel

TAU_EMBEDDINGS = ("scalar", "sinusoidal")
FLOW_SPACES = ("latent", "logits")


def tau_features(tau: torch.Tensor, kind: str, n: int) -> torch.Tensor:
    """Parameter-free τ features (..., n): the raw scalar, or sin/cos at n/2 octave frequencies."""
    if kind == "scalar":
        return tau.expand(*tau.shape[:-1], n)
    freqs = math.pi * 2.0 ** torch.arange(n // 2, device=tau.device, dtype=tau.dtype)
    angles = tau * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class FlowWorldModel(LatentWorldModel):
    """Same encoder, reward head and task embedding as `WorldModel`; `next()` integrates a
    velocity network with `integrator` ("euler" | "heun") in `substeps` steps.

    The velocity output is a plain linear layer (no SimNorm/softmax: that pins the
    flow-matching loss at a floor). With `tangent_projection` each SimNorm group of v has
    zero sum, so integrated latents keep their group sums at 1; `simplex_retraction` also
    clips the integrated latent back onto the simplex (no negative entries).

    `flow_space="logits"` integrates x = log z per SimNorm group (entries floored at
    `logit_floor`, each group centred) and returns SimNorm(x1), as the MLP ends in SimNorm: an
    entry the softmax holds near 0 responds to the action through its own small probability,
    where a latent-space flow moves it as freely as any other (docs/results.md, the flow model's
    action response). The velocity network still sees the latent, SimNorm(x)."""

    kind = "flow"

    def __init__(
        self,
        *args,
        velocity_units: Sequence[int],
        integrator: str = "heun",
        substeps: int = 2,
        tau_embedding: str = "sinusoidal",
        tau_features: int = 16,
        tangent_projection: bool = True,
        simplex_retraction: bool = False,
        flow_space: str = "latent",
        logit_floor: float = 1e-3,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        integrators.check_method(integrator)
        if tau_embedding not in TAU_EMBEDDINGS:
            raise ValueError(f"tau_embedding={tau_embedding!r} is unknown: use one of {list(TAU_EMBEDDINGS)}")
        if tau_embedding == "sinusoidal" and (tau_features < 2 or tau_features % 2):
            raise ValueError(f"sinusoidal tau_features must be even and >= 2, got {tau_features}")
        if flow_space not in FLOW_SPACES:
            raise ValueError(f"flow_space={flow_space!r} is unknown: use one of {list(FLOW_SPACES)}")
        if flow_space == "logits" and simplex_retraction:
            raise ValueError("simplex_retraction applies to flow_space=latent: a logits flow always ends on the simplex")
        if not 0 < logit_floor < 1:
            raise ValueError(f"logit_floor must be in (0, 1), got {logit_floor}")
        if substeps < 1:
            raise ValueError(f"substeps must be >= 1, got {substeps}")
        self.integrator, self.substeps = integrator, int(substeps)
        self.tau_embedding, self.tau_dim = tau_embedding, int(tau_features)
        self.tangent_projection, self.simplex_retraction = tangent_projection, simplex_retraction
        self.flow_space, self.logit_floor = flow_space, float(logit_floor)
        self.velocity_units = list(velocity_units)
        self._velocity = mlp(
            self.latent_dim + self.action_dim + self.task_dim + self.tau_dim,
            self.velocity_units,
            self.latent_dim,
        )
        self.nfe = 0  # velocity calls so far; training logs its increments
        self.reset_parameters()

    def _condition(self, a: torch.Tensor, task) -> torch.Tensor:
        """The part of the velocity input that is fixed along one integration: [a, task emb]."""
        return self.task_emb(a, task)

    def _velocity_from(self, z: torch.Tensor, cond: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():  # an int that changes would recompile every call;
            self.nfe += 1                       # compiled callers add the count (perf.NfeCounted)
        tau = tau.expand(*z.shape[:-1], 1)
        if self.flow_space == "logits":
            z = simnorm(z, self.simnorm_dim)
        v = self._velocity(torch.cat([z, cond, tau_features(tau, self.tau_embedding, self.tau_dim)], dim=-1))
        if self.tangent_projection:
            g = v.reshape(*v.shape[:-1], -1, self.simnorm_dim)
            v = (g - g.mean(-1, keepdim=True)).reshape(v.shape)
        return v

    def velocity(self, z: torch.Tensor, a: torch.Tensor, tau, task=None) -> torch.Tensor:
        """v_θ(x, a, τ) at a point x of the flow space (`to_flow`); τ is a float or a tensor
        broadcastable to (..., 1)."""
        tau = torch.as_tensor(tau, device=z.device, dtype=z.dtype)
        if tau.dim() == 0 or tau.shape[-1] != 1:
            tau = tau.unsqueeze(-1)
        return self._velocity_from(z, self._condition(a, task), tau)

    def velocity_fn(self, a: torch.Tensor, task=None):
        """The field f(x, τ) on the flow space for a fixed action, as the integrators and the
        FM loss take it."""
        cond = self._condition(a, task)
        return lambda z, tau: self._velocity_from(z, cond, tau)

    def next(self, z: torch.Tensor, a: torch.Tensor, task=None) -> torch.Tensor:
        x = integrators.integrate(self.velocity_fn(a, task), self.to_flow(z), self.integrator, self.substeps)
        return self.from_flow(x)

    def to_flow(self, z: torch.Tensor) -> torch.Tensor:
        """A latent as a point of the space the flow runs in: itself, or (logits) the log of
        each SimNorm group, floored at `logit_floor` and centred (softmax ignores the centre)."""
        if self.flow_space == "latent":
            return z
        g = z.reshape(*z.shape[:-1], -1, self.simnorm_dim).clamp(min=self.logit_floor).log()
        return (g - g.mean(-1, keepdim=True)).reshape(z.shape)

    def from_flow(self, x: torch.Tensor) -> torch.Tensor:
        """The latent at a point of the flow space: SimNorm(x) (logits), else x itself, retracted
        onto the simplices with `simplex_retraction`."""
        if self.flow_space == "logits":
            return simnorm(x, self.simnorm_dim)
        return self.retract(x) if self.simplex_retraction else x

    def retract(self, z: torch.Tensor) -> torch.Tensor:
        """Back onto the SimNorm simplices: clip negatives, renormalise each group. The exact
        flow between two simplex points never leaves the simplex, so this removes only
        integration/model error, which otherwise compounds over an open-loop rollout."""
        g = z.reshape(*z.shape[:-1], -1, self.simnorm_dim).clamp(min=0)
        return (g / g.sum(-1, keepdim=True).clamp(min=1e-8)).reshape(z.shape)

    @property
    def nfe_per_step(self) -> int:
        return integrators.nfe(self.integrator, self.substeps)

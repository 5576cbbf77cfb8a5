"""PWM's stochastic actor on latent states: Mish + LayerNorm MLP for the mean, a learned
state-independent log-std, tanh-squashed reparameterised samples."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from flowpwm.models.layers import Mish


class Actor(nn.Module):
    def __init__(self, latent_dim: int, action_dim: int, units: Sequence[int] = (400, 200, 100),
                 init_logstd: float = -1.0, min_logstd: float = -1.427, init_gain: float = 1.0):
        super().__init__()
        dims = [latent_dim, *units]
        layers: list[nn.Module] = []
        for i in range(len(units)):
            layers += [nn.Linear(dims[i], dims[i + 1]), Mish(), nn.LayerNorm(dims[i + 1])]
        layers.append(nn.Linear(dims[-1], action_dim))
        self.mu_net = nn.Sequential(*layers)
        self.logstd = nn.Parameter(torch.full((action_dim,), float(init_logstd)))
        self.min_logstd = min_logstd
        with torch.no_grad():
            for p in self.mu_net.parameters():
                p.mul_(init_gain)

    def forward(self, z: torch.Tensor, deterministic: bool = False, logstd_floor: float | None = None) -> torch.Tensor:
        """Action in (-1, 1): tanh of the mean, or of a reparameterised Gaussian sample whose
        log-std is at least `min_logstd` (and `logstd_floor` when given: exploration)."""
        return torch.tanh(self.pre_tanh(z, deterministic, logstd_floor))

    def pre_tanh(self, z: torch.Tensor, deterministic: bool = False, logstd_floor: float | None = None) -> torch.Tensor:
        """The action before tanh: the mean, or a sample (see `forward`)."""
        mu = self.mu_net(z)
        if deterministic:
            return mu
        return mu + self.std(logstd_floor) * torch.randn_like(mu)

    def std(self, logstd_floor: float | None = None) -> torch.Tensor:
        """The std of the sampled pre-tanh actions (action_dim,): the learned log-std, floored."""
        floor = self.min_logstd if logstd_floor is None else max(self.min_logstd, logstd_floor)
        return self.logstd.clamp(min=floor).exp()


def saturation(u: torch.Tensor) -> torch.Tensor:
    """-log(1 - tanh(u)^2) elementwise, in the stable form 2(u + softplus(-2u) - log 2): 0 at u = 0,
    ~2|u| once tanh saturates. It is the tanh term of a squashed Gaussian's log-density (SAC, app. C),
    so penalising it is the part of an entropy bonus that keeps actions off tanh's flat tails,
    where the gradient through tanh vanishes; its own gradient, 2 tanh(u), never does."""
    return 2.0 * (u + nn.functional.softplus(-2.0 * u) - math.log(2.0))

"""Ensemble of value MLPs V(z) (Linear → Mish → LayerNorm, as PWM's critic), computed for
all members at once with batched matmuls; PWM bootstraps with the ensemble minimum."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from flowpwm.models.layers import Mish


class EnsembleLinear(nn.Module):
    """`members` independent Linear layers applied to (members, N, in) in one baddbmm."""

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        bound = 1 / math.sqrt(in_features)  # nn.Linear's default init, per member
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    def __init__(self, members: int, features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, 1, features))
        self.bias = nn.Parameter(torch.zeros(members, 1, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class Critic(nn.Module):
    def __init__(self, latent_dim: int, units: Sequence[int] = (400, 200), num_critics: int = 3):
        super().__init__()
        self.num_critics = num_critics
        dims = [latent_dim, *units]
        layers: list[nn.Module] = []
        for i in range(len(units)):
            layers += [EnsembleLinear(num_critics, dims[i], dims[i + 1]), Mish(),
                       EnsembleLayerNorm(num_critics, dims[i + 1])]
        layers.append(EnsembleLinear(num_critics, dims[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Values of every ensemble member: (num_critics, ..., 1)."""
        x = z.reshape(1, -1, z.shape[-1]).expand(self.num_critics, -1, -1)
        return self.net(x).reshape(self.num_critics, *z.shape[:-1], 1)

    def min_value(self, z: torch.Tensor) -> torch.Tensor:
        return self(z).min(dim=0).values

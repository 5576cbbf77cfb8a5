"""Ensemble of value MLPs V(z); PWM bootstraps with the minimum over the ensemble."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


def _value_mlp(latent_dim: int, units: Sequence[int]) -> nn.Sequential:
    dims = [latent_dim, *units]
    layers: list[nn.Module] = []
    for i in range(len(units)):
        layers += [nn.Linear(dims[i], dims[i + 1]), nn.Mish(), nn.LayerNorm(dims[i + 1])]
    layers.append(nn.Linear(dims[-1], 1))
    return nn.Sequential(*layers)


class Critic(nn.Module):
    def __init__(self, latent_dim: int, units: Sequence[int] = (400, 200), num_critics: int = 3):
        super().__init__()
        self.nets = nn.ModuleList(_value_mlp(latent_dim, units) for _ in range(num_critics))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Values of every ensemble member: (num_critics, ..., 1)."""
        return torch.stack([net(z) for net in self.nets])

    def min_value(self, z: torch.Tensor) -> torch.Tensor:
        return self(z).min(dim=0).values

"""TD-MPC2-style latent world models.

`LatentWorldModel` holds what both world models share (encoder, reward head, termination head
for episodic tasks, task embedding, action masks); `WorldModel` adds the MLP dynamics, `FlowWorldModel` (flow_world_model.py) a
velocity field. Both build the shared parts here, so their shapes are identical by construction.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from flowpwm.models import twohot
from flowpwm.models.layers import SimNorm, mlp, weight_init


class LatentWorldModel(nn.Module):
    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        latent_dim: int,
        encoder_units: Sequence[int],
        units: Sequence[int],
        num_bins: int = 101,
        vmin: float = -10.0,
        vmax: float = 10.0,
        simnorm_dim: int = 8,
        num_tasks: int = 1,
        task_dim: int = 0,
        action_dims: Sequence[int] | None = None,
        dropout: float = 0.0,
        episodic: bool = False,
    ):
        super().__init__()
        if latent_dim % simnorm_dim:
            raise ValueError(f"latent_dim={latent_dim} must be a multiple of simnorm_dim={simnorm_dim}")
        self.obs_dim, self.action_dim, self.latent_dim = obs_dim, action_dim, latent_dim
        self.num_bins, self.vmin, self.vmax = num_bins, float(vmin), float(vmax)
        self.simnorm_dim, self.units = simnorm_dim, list(units)
        self.multitask = num_tasks > 1
        self.task_dim = task_dim if self.multitask else 0
        if self.multitask:
            if task_dim <= 0:
                raise ValueError(f"multi-task world model ({num_tasks} tasks) needs task_dim > 0")
            self._task_emb = nn.Embedding(num_tasks, task_dim, max_norm=1)
            dims = list(action_dims) if action_dims is not None else [action_dim] * num_tasks
            masks = torch.zeros(num_tasks, action_dim)
            for i, d in enumerate(dims):
                masks[i, :d] = 1.0
            self.register_buffer("action_masks", masks)
        self._encoder = mlp(obs_dim + self.task_dim, encoder_units, latent_dim, last_act=SimNorm(simnorm_dim), dropout=dropout)
        self._reward = mlp(latent_dim + action_dim + self.task_dim, units, max(num_bins, 1))
        # Episodic tasks (the episode ends when the robot falls): logits of "this latent is
        # terminal", as TD-MPC2; only built when needed, the same module for both world models.
        self.episodic = bool(episodic)
        if self.episodic:
            self._termination = mlp(latent_dim + self.task_dim, units, 1)

    def reset_parameters(self) -> None:
        """TD-MPC2 init; the reward head's last layer starts at zero (predicts the mean bin)."""
        self.apply(weight_init)
        nn.init.zeros_(self._reward[-1].weight)

    # -- shared interface -------------------------------------------------------------------
    def task_emb(self, x: torch.Tensor, task) -> torch.Tensor:
        """Append the task embedding to `x` (..., D); `task` is an int or a (B,) index tensor."""
        if not self.multitask:
            return x
        if task is None:
            raise ValueError("multi-task world model needs a task index")
        task = torch.as_tensor(task, device=x.device).long()
        emb = self._task_emb(task)
        return torch.cat([x, emb.expand(*x.shape[:-1], emb.shape[-1])], dim=-1)

    def mask_action(self, a: torch.Tensor, task) -> torch.Tensor:
        """Zero the padded action dimensions of tasks with fewer actuators."""
        if not self.multitask:
            return a
        return a * self.action_masks[torch.as_tensor(task, device=a.device).long()]

    def encode(self, obs: torch.Tensor, task=None) -> torch.Tensor:
        return self._encoder(self.task_emb(obs, task))

    def reward(self, z: torch.Tensor, a: torch.Tensor, task=None) -> torch.Tensor:
        """Reward logits (two-hot bins) or the symlog reward when num_bins <= 1."""
        return self._reward(self.task_emb(torch.cat([z, a], dim=-1), task))

    def two_hot_inv(self, logits: torch.Tensor) -> torch.Tensor:
        return twohot.two_hot_inv(logits, self.num_bins, self.vmin, self.vmax)

    def reward_value(self, z: torch.Tensor, a: torch.Tensor, task=None) -> torch.Tensor:
        """Predicted reward as a scalar (..., 1), differentiable w.r.t. z and a."""
        return self.two_hot_inv(self.reward(z, a, task))

    def reward_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return twohot.reward_loss(logits, target, self.num_bins, self.vmin, self.vmax)

    def termination(self, z: torch.Tensor, task=None) -> torch.Tensor:
        """Logits (..., 1) that the state with latent z is terminal (episodic models only)."""
        if not self.episodic:
            raise ValueError("this world model has no termination head: build it with episodic=True")
        return self._termination(self.task_emb(z, task))

    def next(self, z: torch.Tensor, a: torch.Tensor, task=None) -> torch.Tensor:
        raise NotImplementedError

    def step(self, z: torch.Tensor, a: torch.Tensor, task=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(next latent, reward logits) for latent z and action a."""
        return self.next(z, a, task), self.reward(z, a, task)

    def parameter_groups(self) -> dict[str, int]:
        """Parameter count per sub-module (task embedding included: it must be optimised too)."""
        return {name.lstrip("_"): sum(p.numel() for p in mod.parameters()) for name, mod in self.named_children()}


class WorldModel(LatentWorldModel):
    """Baseline: dynamics MLP (z, a) → z' ending in SimNorm, as in TD-MPC2 / PWM."""

    kind = "mlp"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._dynamics = mlp(
            self.latent_dim + self.action_dim + self.task_dim,
            self.units,
            self.latent_dim,
            last_act=SimNorm(self.simnorm_dim),
        )
        self.reset_parameters()

    def next(self, z: torch.Tensor, a: torch.Tensor, task=None) -> torch.Tensor:
        return self._dynamics(self.task_emb(torch.cat([z, a], dim=-1), task))

"""One batched interface over single-instance simulators, returning torch tensors.

Backends only say how to reset and step ONE env (numpy in, numpy out); `BatchedEnv` does
the batching, action clipping/rescaling, same-step autoreset and tensor conversion.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

import numpy as np
import torch


class StepResult(NamedTuple):
    """What one env returns for one agent step, before batching."""

    obs: np.ndarray
    reward: float
    terminated: bool
    truncated: bool


def rescale_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map actions in [-1, 1] (clipped first) affinely onto [low, high]."""
    a = np.clip(actions, -1.0, 1.0)
    return low + (a + 1.0) * 0.5 * (high - low)


class BatchedEnv(ABC):
    """`num_envs` independent copies of one task, stepped together, with same-step autoreset.

    Subclasses set `task`, `obs_dim`, `action_dim`, `max_episode_steps`, `action_low`,
    `action_high` and implement `_reset_one`, `_step_one` and `_close_one`.
    """

    task: str
    obs_dim: int
    action_dim: int
    max_episode_steps: int
    action_low: np.ndarray
    action_high: np.ndarray
    can_terminate: bool = False  # episodes may end before the time limit (a fall): `alg.episodic: auto`

    def __init__(self, num_envs: int, seed: int = 0, device: str | torch.device = "cpu"):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = num_envs
        self.seed = seed
        self.device = torch.device(device)
        self._was_reset = False

    # --- backend hooks -------------------------------------------------------------------

    @abstractmethod
    def _reset_one(self, i: int, seed: int | None) -> np.ndarray:
        """Start a new episode in env i (reseeded to `seed` when given) and return its obs."""

    @abstractmethod
    def _step_one(self, i: int, action: np.ndarray) -> StepResult:
        """Advance env i by one agent step with an action already in the env's own bounds."""

    @abstractmethod
    def _close_one(self, i: int) -> None:
        """Release env i's resources."""

    def _get_state_one(self, i: int) -> np.ndarray:
        """Env i's full simulator state (what `_set_state_one` restores)."""
        raise NotImplementedError(f"{type(self).__name__} cannot save its simulator state")

    def _set_state_one(self, i: int, state: np.ndarray) -> np.ndarray:
        """Put env i into `state` (mid-episode) and return its observation there."""
        raise NotImplementedError(f"{type(self).__name__} cannot restore a simulator state")

    # --- public API ----------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset every env; env i is seeded with `seed + i`. Without a seed the first reset
        uses the constructor's seed and later ones continue each env's own random stream."""
        if seed is None and not self._was_reset:
            seed = self.seed
        self._was_reset = True
        obs = [self._reset_one(i, None if seed is None else seed + i) for i in range(self.num_envs)]
        return self._tensor(np.stack(obs), torch.float32)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One agent step for all envs -> (obs, reward, terminated, truncated, final_obs).

        Envs whose episode ended are reset at once: `obs` is then the next episode's first
        observation and `final_obs` the ended episode's last one (else `final_obs == obs`).
        """
        if not self._was_reset:
            raise RuntimeError("call reset() before step()")
        env_actions = self.prepare_actions(actions)
        results = [self._step_one(i, env_actions[i]) for i in range(self.num_envs)]
        final_obs = np.stack([r.obs for r in results])
        reward = np.array([r.reward for r in results], dtype=np.float32)
        terminated = np.array([r.terminated for r in results], dtype=bool)
        truncated = np.array([r.truncated for r in results], dtype=bool)

        obs = final_obs.copy()
        for i in np.flatnonzero(terminated | truncated):
            obs[i] = self._reset_one(int(i), None)  # continue env i's random stream
        return (
            self._tensor(obs, torch.float32),
            self._tensor(reward, torch.float32),
            self._tensor(terminated, torch.bool),
            self._tensor(truncated, torch.bool),
            self._tensor(final_obs, torch.float32),
        )

    def get_states(self) -> list[np.ndarray]:
        """Every env's simulator state, for `step_from` (diagnostics, not training)."""
        return [self._get_state_one(i) for i in range(self.num_envs)]

    def step_from(self, states: list[np.ndarray], actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Env i put into states[i] and stepped once with actions[i] -> (next obs, reward): the
        real outcome of a chosen action from a saved state, e.g. to compare a world model's
        action sensitivity with the simulator's. No autoreset; episode counters are not used."""
        env_actions = self.prepare_actions(actions)
        obs, rewards = [], []
        for i in range(self.num_envs):
            self._set_state_one(i, states[i])
            r = self._step_one(i, env_actions[i])
            obs.append(r.obs)
            rewards.append(r.reward)
        return self._tensor(np.stack(obs), torch.float32), self._tensor(np.array(rewards), torch.float32)

    def prepare_actions(self, actions: torch.Tensor | np.ndarray) -> np.ndarray:
        """Agent actions (N, action_dim) in [-1, 1] -> float64 numpy in the env's bounds."""
        if isinstance(actions, torch.Tensor):
            actions = actions.detach().to("cpu", torch.float64).numpy()
        a = np.asarray(actions, dtype=np.float64)
        if a.shape != (self.num_envs, self.action_dim):
            raise ValueError(f"{self.task}: actions must have shape {(self.num_envs, self.action_dim)}, got {a.shape}")
        return rescale_actions(a, self.action_low, self.action_high)

    def close(self) -> None:
        for i in range(self.num_envs):
            self._close_one(i)

    def __enter__(self) -> BatchedEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(task={self.task!r}, num_envs={self.num_envs}, obs_dim={self.obs_dim}, "
                f"action_dim={self.action_dim}, max_episode_steps={self.max_episode_steps})")

    def _tensor(self, x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        # One conversion per batch; float64 simulator output is narrowed here.
        return torch.as_tensor(x).to(device=self.device, dtype=dtype)

"""One task of a task set, seen through the set's shared spaces: observations zero-padded to the
set's obs dim, actions of the set's action dim of which only the task's first `task_action_dim`
entries reach the simulator (the rest are masked out), and the task id for the task embedding."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from flowpwm.envs.base import BatchedEnv, StepResult
from flowpwm.envs.registry import make_env
from flowpwm.envs.tasksets import TaskSet, get_task_set


class MultiTaskEnv(BatchedEnv):
    """`env` (a task of `task_set`) with padded obs and masked actions; batching as `BatchedEnv`."""

    def __init__(self, task_set: TaskSet, env: BatchedEnv):
        super().__init__(env.num_envs, env.seed, env.device)
        self.task_set = task_set
        self.task = env.task
        self.task_id = task_set.task_id(env.task)
        self.env = env
        self.task_obs_dim, self.task_action_dim = env.obs_dim, env.action_dim
        self.obs_dim, self.action_dim = task_set.obs_dim, task_set.action_dim
        self.max_episode_steps = env.max_episode_steps
        self.can_terminate = env.can_terminate
        pad = self.action_dim - self.task_action_dim
        # Padded dims get [-1, 1] bounds: `prepare_actions` rescales them harmlessly, `_step_one` drops them.
        self.action_low = np.concatenate([env.action_low, -np.ones(pad)])
        self.action_high = np.concatenate([env.action_high, np.ones(pad)])
        self.action_mask = torch.zeros(self.action_dim, device=self.device)
        self.action_mask[: self.task_action_dim] = 1.0

    def task_ids(self) -> torch.Tensor:
        """(num_envs,) long: this env's task id, for a batch of its observations."""
        return torch.full((self.num_envs,), self.task_id, dtype=torch.long, device=self.device)

    def _pad(self, obs: np.ndarray) -> np.ndarray:
        out = np.zeros(self.obs_dim, dtype=obs.dtype)
        out[: obs.shape[0]] = obs
        return out

    def _reset_one(self, i: int, seed: int | None) -> np.ndarray:
        return self._pad(self.env._reset_one(i, seed))

    def _step_one(self, i: int, action: np.ndarray) -> StepResult:
        r = self.env._step_one(i, action[: self.task_action_dim])
        return r._replace(obs=self._pad(r.obs))

    def _get_state_one(self, i: int) -> np.ndarray:
        return self.env._get_state_one(i)

    def _set_state_one(self, i: int, state: np.ndarray) -> np.ndarray:
        return self._pad(self.env._set_state_one(i, state))

    def _close_one(self, i: int) -> None:
        self.env._close_one(i)


def make_multitask_env(task_set: str | TaskSet, task: str, num_envs: int = 1, seed: int = 0,
                       **kwargs: Any) -> MultiTaskEnv:
    """`make_env(task, ...)` seen through task set `task_set` (a name such as 'mt30' or a TaskSet)."""
    ts = get_task_set(task_set) if isinstance(task_set, str) else task_set
    ts.task_id(task)  # an unknown task fails here, before any simulator is built
    return MultiTaskEnv(ts, make_env(task, num_envs=num_envs, seed=seed, **kwargs))

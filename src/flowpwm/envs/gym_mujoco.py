"""gymnasium MuJoCo locomotion tasks: CPU stand-ins for PWM's dflex tasks.

Each env is a plain `gymnasium.make` instance, so the default TimeLimit (1000 steps) gives
`truncated` and falls (Hopper, Ant, Humanoid health checks) give `terminated`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flowpwm.config import UserError
from flowpwm.envs.base import BatchedEnv, StepResult
from flowpwm.envs.gl import import_without_required_gl

GYM_INSTALL = "pip install 'gymnasium[mujoco]==1.4.0' mujoco==3.17.0"

GYM_TASKS: tuple[str, ...] = ("Ant-v5", "HalfCheetah-v5", "Hopper-v5", "Humanoid-v5", "Walker2d-v5")
# Tasks whose episodes end when the robot falls (a health check); HalfCheetah never terminates.
TERMINATING = frozenset({"Ant-v5", "Hopper-v5", "Humanoid-v5", "Walker2d-v5"})


def _make(task: str, **kwargs: Any) -> Any:
    try:
        # state observations: no GL backend is needed, and one that fails to load is dropped (envs/gl.py)
        import_without_required_gl(lambda: __import__("mujoco"))
        import gymnasium
        import gymnasium.error

        try:
            return gymnasium.make(task, **kwargs)
        except gymnasium.error.DependencyNotInstalled as e:
            raise ImportError(str(e).strip().splitlines()[0]) from e
    except ImportError as e:
        raise UserError(f"gymnasium MuJoCo tasks need gymnasium and mujoco: {GYM_INSTALL} ({e})") from e


class GymMujocoEnv(BatchedEnv):
    def __init__(self, task: str, num_envs: int = 1, seed: int = 0, device: str = "cpu", **make_kwargs: Any):
        super().__init__(num_envs, seed, device)
        if task not in GYM_TASKS:
            raise UserError(f"unknown gymnasium MuJoCo task {task!r}: choose one of {', '.join(GYM_TASKS)}")
        self.task = task
        self.can_terminate = task in TERMINATING
        self._envs = [_make(task, **make_kwargs) for _ in range(num_envs)]

        env = self._envs[0]
        self.action_dim = int(np.prod(env.action_space.shape))
        self.action_low = env.action_space.low.astype(np.float64)
        self.action_high = env.action_space.high.astype(np.float64)
        self.obs_dim = int(np.prod(env.observation_space.shape))
        self.max_episode_steps = int(env.spec.max_episode_steps)

    def _reset_one(self, i: int, seed: int | None) -> np.ndarray:
        obs, _ = self._envs[i].reset(seed=seed)
        return obs

    def _step_one(self, i: int, action: np.ndarray) -> StepResult:
        obs, reward, terminated, truncated, _ = self._envs[i].step(action)
        return StepResult(obs, float(reward), bool(terminated), bool(truncated))

    def _get_state_one(self, i: int) -> np.ndarray:
        data = self._envs[i].unwrapped.data
        return np.concatenate([data.qpos, data.qvel]).copy()

    def _set_state_one(self, i: int, state: np.ndarray) -> np.ndarray:
        env = self._envs[i].unwrapped
        nq = env.model.nq
        env.set_state(state[:nq], state[nq:])
        return env._get_obs()

    def _close_one(self, i: int) -> None:
        self._envs[i].close()

"""Pick the backend from the task name."""

from __future__ import annotations

from typing import Any

from flowpwm.config import UserError
from flowpwm.envs.base import BatchedEnv
# These modules import dm_control / gymnasium only when an env is built, so listing tasks
# and rejecting bad names work without the optional packages.
from flowpwm.envs.dmc import DMC_TASKS, DMCEnv
from flowpwm.envs.gym_mujoco import GYM_TASKS, GymMujocoEnv


def available_tasks() -> list[str]:
    """Every task name `make_env` accepts: dm_control suite tasks, then gymnasium MuJoCo."""
    return [*DMC_TASKS, *GYM_TASKS]


def make_env(task: str, num_envs: int = 1, seed: int = 0, **kwargs: Any) -> BatchedEnv:
    """`num_envs` copies of `task`; env i is seeded with `seed + i`. Extra kwargs go to the
    backend (dm_control: `action_repeat`; gymnasium: `gymnasium.make` options; both: `device`)."""
    if task in DMC_TASKS:
        return DMCEnv(task, num_envs=num_envs, seed=seed, **kwargs)
    if task in GYM_TASKS:
        return GymMujocoEnv(task, num_envs=num_envs, seed=seed, **kwargs)
    raise UserError(f"unknown task {task!r}: choose one of {', '.join(available_tasks())}")

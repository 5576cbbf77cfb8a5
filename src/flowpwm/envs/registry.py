"""Pick the backend from the task name."""

from __future__ import annotations

from typing import Any

from flowpwm.config import UserError
from flowpwm.envs.base import BatchedEnv
# These modules import dm_control / gymnasium only when an env is built, so listing tasks
# and rejecting bad names work without the optional packages.
from flowpwm.envs.dmc import ALL_DMC_TASKS, DMCEnv
from flowpwm.envs.gym_mujoco import GYM_TASKS, GymMujocoEnv
from flowpwm.envs.tasksets import METAWORLD_TASKS

# What we found (metaworld 3.0.0 and 3.1.1, the releases on the package index): 3.1.1 pins
# mujoco==3.3.0, and 3.0.0 fails to build any task on mujoco 3.17 (a mocap weld's eq_data has 11
# values where 3.17 stores 12). Both ship only the v3 tasks; TD-MPC2's MT80 data was made with v2.
METAWORLD_MISSING = ("Meta-World tasks (mw-*) need the `metaworld` package (pip install metaworld), and no release "
                     "runs on mujoco==3.17.0, which dm-control 1.0.50 requires (metaworld 3.1.1 pins mujoco==3.3.0, "
                     "3.0.0 fails on mujoco 3.17): use the mt30 task set, or MT80 data without Meta-World evaluation")


def available_tasks() -> list[str]:
    """Every task name `make_env` accepts: dm_control suite tasks (dm_control's and TD-MPC2's
    spellings), TD-MPC2's custom tasks, then gymnasium MuJoCo."""
    return [*ALL_DMC_TASKS, *GYM_TASKS]


def make_env(task: str, num_envs: int = 1, seed: int = 0, **kwargs: Any) -> BatchedEnv:
    """`num_envs` copies of `task`; env i is seeded with `seed + i`. Extra kwargs go to the
    backend (dm_control: `action_repeat`; gymnasium: `gymnasium.make` options; both: `device`)."""
    if task in ALL_DMC_TASKS:
        return DMCEnv(task, num_envs=num_envs, seed=seed, **kwargs)
    if task in GYM_TASKS:
        return GymMujocoEnv(task, num_envs=num_envs, seed=seed, **kwargs)
    if task in METAWORLD_TASKS:
        raise UserError(f"{task}: {METAWORLD_MISSING}")
    raise UserError(f"unknown task {task!r}: choose one of {', '.join(available_tasks())}")

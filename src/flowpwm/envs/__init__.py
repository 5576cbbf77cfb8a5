"""Batched simulators (dm_control suite, gymnasium MuJoCo) returning torch tensors."""

from flowpwm.envs.base import BatchedEnv
from flowpwm.envs.registry import available_tasks, make_env

__all__ = ["BatchedEnv", "available_tasks", "make_env"]

"""Batched simulators (dm_control suite + TD-MPC2's custom tasks, gymnasium MuJoCo) returning torch
tensors; task sets (MT30, MT80, mt-mini) and the multi-task view of one task."""

from flowpwm.envs.base import BatchedEnv
from flowpwm.envs.multitask import MultiTaskEnv, make_multitask_env
from flowpwm.envs.registry import available_tasks, make_env
from flowpwm.envs.tasksets import MT30, MT80, MT_MINI, TASK_SETS, TaskSet, get_task_set

__all__ = ["BatchedEnv", "MT30", "MT80", "MT_MINI", "MultiTaskEnv", "TASK_SETS", "TaskSet", "available_tasks",
           "get_task_set", "make_env", "make_multitask_env"]

"""dm_control suite tasks with TD-MPC2 conventions: "domain-task" names (`cup` is
`ball_in_cup`), action repeat 2, 500 agent steps per episode, flattened state observations.

Also TD-MPC2's spellings of suite tasks (`cartpole-balance-sparse` for `cartpole-balance_sparse`)
and its 11 custom tasks (envs/dmc_custom.py)."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from flowpwm.config import UserError
from flowpwm.envs.base import BatchedEnv, StepResult
from flowpwm.envs.gl import import_without_required_gl
from flowpwm.envs.tasksets import CUSTOM_TASKS

DMC_INSTALL = "pip install dm-control==1.0.50 mujoco==3.17.0"


class _SettotalmassFilter(logging.Filter):
    """dm_control 1.0.50's cheetah (and other) XMLs use `settotalmass`, which MuJoCo 3.17
    deprecates with a warning on every model compile (one per env): harmless, and it buries
    the training output, so it is dropped; every other absl record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "'settotalmass' is deprecated" not in record.getMessage()


logging.getLogger("absl").addFilter(_SettotalmassFilter())

# TD-MPC2's short domain names -> dm_control's.
DOMAIN_ALIASES = {"cup": "ball_in_cup"}

DMC_TASKS: tuple[str, ...] = (
    "acrobot-swingup",
    "acrobot-swingup_sparse",
    "cartpole-balance",
    "cartpole-balance_sparse",
    "cartpole-swingup",
    "cartpole-swingup_sparse",
    "cheetah-run",
    "cup-catch",
    "dog-run",
    "dog-stand",
    "dog-trot",
    "dog-walk",
    "finger-spin",
    "finger-turn_easy",
    "finger-turn_hard",
    "fish-swim",
    "fish-upright",
    "hopper-hop",
    "hopper-stand",
    "humanoid-run",
    "humanoid-stand",
    "humanoid-walk",
    "pendulum-swingup",
    "point_mass-easy",
    "quadruped-run",
    "quadruped-walk",
    "reacher-easy",
    "reacher-hard",
    "walker-run",
    "walker-stand",
    "walker-walk",
)


# TD-MPC2 writes every name with hyphens: `finger-turn-easy` is dm_control's `finger-turn_easy`.
TDMPC2_NAMES: dict[str, str] = {
    f"{t.split('-', 1)[0]}-{t.split('-', 1)[1].replace('_', '-')}": t for t in DMC_TASKS if "_" in t.split("-", 1)[1]
}
ALL_DMC_TASKS: tuple[str, ...] = (*DMC_TASKS, *TDMPC2_NAMES, *CUSTOM_TASKS)


def suite_name(task: str) -> tuple[str, str]:
    """'cup-catch' -> ('ball_in_cup', 'catch'): the (domain, task) pair dm_control loads."""
    domain, _, name = task.partition("-")
    return DOMAIN_ALIASES.get(domain, domain), name


def _import_suite() -> Any:
    from dm_control import suite

    return suite


def _suite() -> Any:
    try:  # state observations: no GL backend is needed, and one that fails to load is dropped (envs/gl.py)
        suite = import_without_required_gl(_import_suite)
    except ImportError as e:
        raise UserError(f"dm_control tasks need dm-control: {DMC_INSTALL} ({e})") from e
    return suite


def _load(task: str, seed: int) -> Any:
    """A dm_control Environment for a suite task (either spelling) or a custom task."""
    suite = _suite()
    if task in CUSTOM_TASKS:
        from flowpwm.envs import dmc_custom

        return dmc_custom.load(task, random=seed)
    domain, name = suite_name(TDMPC2_NAMES.get(task, task))
    if task not in ALL_DMC_TASKS or (domain, name) not in suite.ALL_TASKS:
        raise UserError(f"unknown dm_control task {task!r}: choose one of {', '.join(ALL_DMC_TASKS)}")
    return suite.load(domain, name, task_kwargs={"random": seed})


def _flatten(observation: dict[str, Any]) -> np.ndarray:
    # dm_control returns an ordered dict; scalars (e.g. 'height') become length-1 pieces.
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in observation.values()])


class DMCEnv(BatchedEnv):
    def __init__(self, task: str, num_envs: int = 1, seed: int = 0, action_repeat: int = 2,
                 device: str = "cpu"):
        super().__init__(num_envs, seed, device)
        self.task = task
        self.action_repeat = action_repeat
        self._envs = [_load(task, seed + i) for i in range(num_envs)]

        spec = self._envs[0].action_spec()
        self.action_dim = int(np.prod(spec.shape))
        self.action_low = np.broadcast_to(np.asarray(spec.minimum, dtype=np.float64), spec.shape).copy()
        self.action_high = np.broadcast_to(np.asarray(spec.maximum, dtype=np.float64), spec.shape).copy()
        self.obs_dim = sum(int(np.prod(s.shape)) for s in self._envs[0].observation_spec().values())
        # dm_control's own limit (1000 control steps in the suite), counted in agent steps.
        step_limit = round(self._envs[0]._step_limit, 6)
        self.max_episode_steps = math.ceil(step_limit / action_repeat)

    def _reset_one(self, i: int, seed: int | None) -> np.ndarray:
        env = self._envs[i]
        if seed is not None:
            # The task draws every episode's initial state from this RandomState, so
            # reseeding it in place matches a fresh `suite.load(..., {'random': seed})`.
            env.task.random.seed(seed)
        return _flatten(env.reset().observation)

    def _step_one(self, i: int, action: np.ndarray) -> StepResult:
        env = self._envs[i]
        reward = 0.0
        for _ in range(self.action_repeat):
            ts = env.step(action)
            reward += ts.reward or 0.0
            if ts.last():
                break
        # Suite episodes only end at the time limit: a truncation, never a termination.
        return StepResult(_flatten(ts.observation), reward, False, ts.last())

    def _get_state_one(self, i: int) -> np.ndarray:
        return self._envs[i].physics.get_state().copy()

    def _set_state_one(self, i: int, state: np.ndarray) -> np.ndarray:
        env = self._envs[i]
        with env.physics.reset_context():
            env.physics.set_state(state)
        env._reset_next_step = False  # stepping must continue from this state, not start an episode
        return _flatten(env.task.get_observation(env.physics))

    def _close_one(self, i: int) -> None:
        self._envs[i].close()

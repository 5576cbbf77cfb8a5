"""Task sets for multi-task runs: TD-MPC2's MT30 and MT80 (the task id is the index, in
TD-MPC2's order) and `mt-mini`, a cheap subset of MT30 for CPU-scale experiments.

Pure data: nothing here imports a simulator, so a task set can be listed, checked and sized
(padded obs/action dims, per-task action masks) on a machine without dm_control or Meta-World.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowpwm.config import UserError

# The 19 dm_control suite tasks, under TD-MPC2's names (hyphens only: `cartpole-balance-sparse`).
DMC_SUITE_19: tuple[str, ...] = (
    "walker-stand", "walker-walk", "walker-run", "cheetah-run", "reacher-easy",
    "reacher-hard", "acrobot-swingup", "pendulum-swingup", "cartpole-balance", "cartpole-balance-sparse",
    "cartpole-swingup", "cartpole-swingup-sparse", "cup-catch", "finger-spin", "finger-turn-easy",
    "finger-turn-hard", "fish-swim", "hopper-stand", "hopper-hop",
)

# TD-MPC2's 11 custom dm_control tasks (MT30 ids 19-29), implemented in envs/dmc_custom.py.
CUSTOM_TASKS: tuple[str, ...] = (
    "walker-walk-backwards", "walker-run-backwards", "cheetah-run-backwards", "cheetah-run-front",
    "cheetah-run-back", "cheetah-jump", "hopper-hop-backwards", "reacher-three-easy", "reacher-three-hard",
    "cup-spin", "pendulum-spin",
)

# Meta-World MT50 in TD-MPC2's order (MT80 ids 30-79).
METAWORLD_TASKS: tuple[str, ...] = (
    "mw-assembly", "mw-basketball", "mw-button-press-topdown", "mw-button-press-topdown-wall", "mw-button-press",
    "mw-button-press-wall", "mw-coffee-button", "mw-coffee-pull", "mw-coffee-push", "mw-dial-turn",
    "mw-disassemble", "mw-door-open", "mw-door-close", "mw-drawer-close", "mw-drawer-open",
    "mw-faucet-open", "mw-faucet-close", "mw-hammer", "mw-handle-press-side", "mw-handle-press",
    "mw-handle-pull-side", "mw-handle-pull", "mw-lever-pull", "mw-peg-insert-side", "mw-peg-unplug-side",
    "mw-pick-out-of-hole", "mw-pick-place", "mw-pick-place-wall", "mw-plate-slide", "mw-plate-slide-side",
    "mw-plate-slide-back", "mw-plate-slide-back-side", "mw-push-back", "mw-push", "mw-push-wall",
    "mw-reach", "mw-reach-wall", "mw-shelf-place", "mw-soccer", "mw-stick-push",
    "mw-stick-pull", "mw-sweep-into", "mw-sweep", "mw-window-open", "mw-window-close",
    "mw-bin-picking", "mw-box-close", "mw-door-lock", "mw-door-unlock", "mw-hand-insert",
)

MT30: tuple[str, ...] = DMC_SUITE_19 + CUSTOM_TASKS
MT80: tuple[str, ...] = MT30 + METAWORLD_TASKS

# mt-mini: six MT30 tasks whose env steps are cheap and which a tiny model learns within 50k env
# steps on a 2-core CPU; three are custom tasks. Its ids are its own order (0..5).
MT_MINI: tuple[str, ...] = (
    "cartpole-balance", "cartpole-swingup", "reacher-easy", "pendulum-spin", "cup-spin", "cheetah-run-backwards",
)

# (obs_dim, action_dim) of one unpadded task, by name prefix; the longest matching prefix wins.
_DIMS: dict[str, tuple[int, int]] = {
    "walker-": (24, 6), "cheetah-": (17, 6), "reacher-": (6, 2), "reacher-three-": (8, 3),
    "acrobot-": (6, 1), "pendulum-": (3, 1), "cartpole-": (5, 1), "cup-": (8, 2),
    "finger-spin": (9, 2), "finger-turn-": (12, 2), "fish-": (24, 5), "hopper-": (15, 4), "mw-": (39, 4),
}

# Agent steps per episode (action repeat 2): dm_control 500, Meta-World 100. TD-MPC2's datasets
# store one more step per episode (the reset observation): 501 (MT30) and 101 (MT80).
def episode_length(task: str) -> int:
    return 100 if task.startswith("mw-") else 500


def task_dims(task: str) -> tuple[int, int]:
    """(obs_dim, action_dim) of `task` as its own env returns them (no padding)."""
    hits = [p for p in _DIMS if task.startswith(p)]
    if not hits or task not in MT80:
        raise UserError(f"no dims known for task {task!r}: task sets cover {', '.join(TASK_SETS)} tasks only")
    return _DIMS[max(hits, key=len)]


@dataclass(frozen=True)
class TaskSet:
    """An ordered set of tasks sharing one padded obs/action space; task id = index in `tasks`."""

    name: str
    tasks: tuple[str, ...]
    obs_dim: int  # every task's obs is zero-padded to this
    action_dim: int  # the agent's action dim; a task uses its first `action_dims[i]` entries

    def __post_init__(self) -> None:
        assert len(set(self.tasks)) == len(self.tasks), f"{self.name}: duplicate tasks"
        assert all(o <= self.obs_dim and a <= self.action_dim for o, a in map(task_dims, self.tasks))

    def __len__(self) -> int:
        return len(self.tasks)

    def __contains__(self, task: object) -> bool:
        return task in self.tasks

    def task_id(self, task: str) -> int:
        if task not in self.tasks:
            raise UserError(f"task {task!r} is not in task set {self.name}: choose one of {', '.join(self.tasks)}")
        return self.tasks.index(task)

    @property
    def obs_dims(self) -> tuple[int, ...]:
        return tuple(task_dims(t)[0] for t in self.tasks)

    @property
    def action_dims(self) -> tuple[int, ...]:
        return tuple(task_dims(t)[1] for t in self.tasks)

    @property
    def episode_lengths(self) -> tuple[int, ...]:
        return tuple(episode_length(t) for t in self.tasks)

    @property
    def mt30_ids(self) -> tuple[int | None, ...]:
        """Each task's id in MT30 (None for Meta-World tasks), e.g. to map MT30 data onto mt-mini."""
        return tuple(MT30.index(t) if t in MT30 else None for t in self.tasks)

    def action_masks(self) -> list[list[float]]:
        """(num_tasks, action_dim): 1 for the dims a task's env uses, 0 for padding."""
        return [[1.0] * a + [0.0] * (self.action_dim - a) for a in self.action_dims]

    def to_dict(self) -> dict:
        """What a dataset or run records about its task set."""
        return {"name": self.name, "tasks": list(self.tasks), "obs_dim": self.obs_dim, "action_dim": self.action_dim,
                "obs_dims": list(self.obs_dims), "action_dims": list(self.action_dims)}


# mt-mini pads to MT30's 24 (not to its own max, 17): its obs layout then equals MT30's, so MT30
# data restricted to these tasks is mt-mini data after a task-id remap, and back.
TASK_SETS: dict[str, TaskSet] = {
    "mt30": TaskSet("mt30", MT30, obs_dim=24, action_dim=6),
    "mt80": TaskSet("mt80", MT80, obs_dim=39, action_dim=6),
    "mt-mini": TaskSet("mt-mini", MT_MINI, obs_dim=24, action_dim=6),
}


def get_task_set(name: str) -> TaskSet:
    if name not in TASK_SETS:
        raise UserError(f"unknown task set {name!r}: choose one of {', '.join(TASK_SETS)}")
    return TASK_SETS[name]

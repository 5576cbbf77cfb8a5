"""Replay buffer of (H+1)-step slices from N autoresetting environments that step together.

Storage is time-major per env, shape (rows, num_envs, ...), one row per vectorised env step,
in a ring that overwrites the oldest row once full. `next_obs` is stored for every row so a
slice that ends exactly where an episode ended still gets the true final observation (the
autoreset env has already replaced it by the next episode's first observation in `obs`).
"""

from __future__ import annotations

from typing import Any

import torch

_FIELDS = ("obs", "action", "reward", "next_obs", "done", "terminated")


class ReplayBuffer:
    def __init__(self, capacity: int, num_envs: int, obs_dim: int, action_dim: int,
                 device: str | torch.device = "cpu"):
        if num_envs < 1 or capacity < num_envs:
            raise ValueError(f"capacity ({capacity}) must hold at least one row of num_envs ({num_envs}) transitions")
        self.num_envs, self.obs_dim, self.action_dim = num_envs, obs_dim, action_dim
        self.rows = capacity // num_envs
        self.capacity = self.rows * num_envs  # rounded down to whole rows
        self.device = torch.device(device)
        R, N, f32 = self.rows, num_envs, dict(dtype=torch.float32, device=self.device)
        self.obs = torch.zeros(R, N, obs_dim, **f32)
        self.action = torch.zeros(R, N, action_dim, **f32)
        self.reward = torch.zeros(R, N, **f32)
        self.next_obs = torch.zeros(R, N, obs_dim, **f32)
        self.done = torch.zeros(R, N, dtype=torch.bool, device=self.device)
        self.terminated = torch.zeros(R, N, dtype=torch.bool, device=self.device)
        self.ptr = 0  # next row to write
        self.filled = 0  # rows holding data
        self._starts: dict[tuple, torch.Tensor] = {}  # (horizon, through_terminal) -> valid flat starts; cleared on write

    def __len__(self) -> int:
        return self.filled * self.num_envs

    # ---- writing -------------------------------------------------------------------------

    def add(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, next_obs: torch.Tensor,
            terminated: torch.Tensor, truncated: torch.Tensor) -> None:
        """Store one step of all N envs. `next_obs` must be the true post-step observation
        (the env's `final_obs`), not the autoreset one."""
        N = self.num_envs
        row = self.ptr
        self.obs[row] = self._check(obs, (N, self.obs_dim), "obs")
        self.action[row] = self._check(action, (N, self.action_dim), "action")
        self.reward[row] = self._flat(reward, "reward")
        self.next_obs[row] = self._check(next_obs, (N, self.obs_dim), "next_obs")
        term = self._flat(terminated, "terminated").bool()
        self.terminated[row] = term
        self.done[row] = term | self._flat(truncated, "truncated").bool()
        self.ptr = (row + 1) % self.rows
        self.filled = min(self.filled + 1, self.rows)
        self._starts.clear()

    def end_episodes(self) -> None:
        """Mark the newest row an episode end for every env: the envs were reset (a resumed
        run), so no slice may join the stored steps to the new episodes."""
        if self.filled:
            self.done[(self.ptr - 1) % self.rows] = True
            self._starts.clear()

    def _check(self, x: torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
        return x.to(self.device, torch.float32)

    def _flat(self, x: torch.Tensor, name: str) -> torch.Tensor:
        # Per-env scalars may come as (N,) or (N, 1).
        if x.numel() != self.num_envs:
            raise ValueError(f"{name} must have {self.num_envs} elements, got shape {tuple(x.shape)}")
        return x.reshape(self.num_envs).to(self.device)

    # ---- sampling ------------------------------------------------------------------------

    @property
    def _oldest(self) -> int:
        # Physical row of the oldest stored step: 0 until the ring wraps, then the write pointer.
        return (self.ptr - self.filled) % self.rows

    def _physical(self, chrono: torch.Tensor) -> torch.Tensor:
        return (chrono + self._oldest) % self.rows

    def _valid_starts(self, horizon: int, through_terminal: bool = False) -> torch.Tensor:
        """Flat indices c * num_envs + env of valid slice starts, c counted from the oldest row.

        In chronological order the write position is the end of the data, so a slice that fits
        before the end cannot straddle it. A slice is cut only by episode ends in its first H-1
        rows; an end in its last row is fine because that row's next_obs is the final obs.
        `through_terminal` also admits slices whose first episode end inside is a termination
        (the steps after it are masked out by `sample`): episodic tasks then see their terminal
        transitions at every position of a slice, not only at its last step."""
        key = (horizon, through_terminal)
        if key in self._starts:
            return self._starts[key]
        n = self.filled - horizon + 1
        if n <= 0:
            starts = torch.zeros(0, dtype=torch.long, device=self.device)
        else:
            chrono = torch.arange(self.filled, device=self.device)
            done = self.done[self._physical(chrono)]
            ends = done.cumsum(0, dtype=torch.int32)
            ends = torch.cat([ends.new_zeros(1, self.num_envs), ends])  # ends[k] = dones in rows < k
            inner = ends[horizon - 1:horizon - 1 + n] - ends[:n]  # dones in rows c..c+H-2
            ok = inner == 0
            if through_terminal:
                # the first episode end at or after each row, and whether it was a termination
                at = torch.where(done, chrono[:, None], torch.full_like(done, self.filled, dtype=torch.long))
                first = at.flip(0).cummin(0).values.flip(0)[:n]
                envs = torch.arange(self.num_envs, device=self.device)[None]
                ok = ok | self.terminated[self._physical(first.clamp(max=self.filled - 1)), envs]
            starts = ok.flatten().nonzero().squeeze(1)
        self._starts[key] = starts
        return starts

    def num_valid_starts(self, horizon: int) -> int:
        """How many (row, env) starts a `sample(..., horizon)` draws from; 0 means it would raise."""
        self._check_horizon(horizon)
        return int(self._valid_starts(horizon).numel())

    @staticmethod
    def _check_horizon(horizon: int) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")

    def sample(self, batch_size: int, horizon: int, generator: torch.Generator | None = None,
               through_terminal: bool = False) -> dict[str, torch.Tensor]:
        """Uniform draw of `batch_size` slices among valid starts, time-major:
        obs (H+1, B, obs_dim), action (H, B, action_dim), reward, terminated and mask (H, B, 1).
        obs[t+1] is the true observation after step t (the stored final obs at an episode's
        end). mask is 1 up to and including a slice's terminal step and 0 after it (only slices
        drawn `through_terminal` have steps after one)."""
        self._check_horizon(horizon)
        starts = self._valid_starts(horizon, through_terminal)
        if starts.numel() == 0:
            raise ValueError(
                f"no valid {horizon}-step slice yet: {self.filled} rows stored, and a slice needs {horizon} "
                f"consecutive rows with no episode end before its last row")
        rng_device = generator.device if generator is not None else self.device
        pick = torch.randint(starts.numel(), (batch_size,), generator=generator, device=rng_device)
        if pick.device != self.device and self.device.type == "cuda":
            # a copy from pageable memory would wait for the GPU's queue: a sync per batch
            pick = pick.pin_memory().to(self.device, non_blocking=True)
        flat = starts[pick.to(self.device)]
        c, env = flat // self.num_envs, flat % self.num_envs
        rows = self._physical(c[None] + torch.arange(horizon, device=self.device)[:, None])  # (H, B)
        obs = torch.cat([self.obs[rows[0], env][None], self.next_obs[rows, env]])
        terminated = self.terminated[rows, env].unsqueeze(-1).float()
        mask = torch.cat([torch.ones_like(terminated[:1]), 1 - terminated[:-1]]).cumprod(0)
        return {
            "obs": obs,
            "action": self.action[rows, env],
            "reward": self.reward[rows, env].unsqueeze(-1),
            "terminated": terminated,
            "mask": mask,
        }

    # ---- checkpointing -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The filled rows only, oldest first (a copy: a checkpoint's size grows with the data,
        not with the preallocated capacity), and the shapes they belong to."""
        order = self._physical(torch.arange(self.filled, device=self.device))
        rows = {k: getattr(self, k)[order].cpu() for k in _FIELDS}
        return {**rows, "filled": self.filled, "num_envs": self.num_envs, "obs_dim": self.obs_dim,
                "action_dim": self.action_dim}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rows from `state_dict()` into this buffer (capacity at least the stored rows)."""
        filled = int(state["filled"])
        dims = (int(state["num_envs"]), int(state["obs_dim"]), int(state["action_dim"]))
        if dims != (self.num_envs, self.obs_dim, self.action_dim):
            raise ValueError(f"buffer (num_envs, obs_dim, action_dim) is {(self.num_envs, self.obs_dim, self.action_dim)}, "
                             f"checkpoint has {dims}")
        if filled > self.rows:
            raise ValueError(f"checkpoint holds {filled} rows of {self.num_envs} transitions; this buffer holds {self.rows}")
        for k in _FIELDS:
            if state[k].shape[0] != filled:
                raise ValueError(f"buffer {k} has {state[k].shape[0]} rows, checkpoint says {filled}")
            getattr(self, k)[:filled] = state[k].to(self.device)
        self.ptr, self.filled = filled % self.rows, filled
        self._starts.clear()

"""Blocks of whole episodes in TD-MPC2's row layout, and flowpwm's own dataset format.

Row layout (TD-MPC2's, shared by both formats): an episode is `L` rows; row 0 holds the reset
observation with a filler action, reward and termination (stored as 0 here); row t ≥ 1 holds the
observation reached by action[t], with reward[t] and terminated[t] of that transition. So the
transition t → t+1 is (obs[t], action[t+1], reward[t+1], terminated[t+1], obs[t+1]). Episodes
shorter than `L` (ended by a termination) fill rows length..L-1 with zeros.

flowpwm's format is one safetensors file per chunk (no pickle): tensors `obs` [N, L, D] float32,
`action` [N, L, A] float32, `reward` [N, L] float32, `terminated` [N, L] bool, `task` [N] int64
(per-episode task ids), `length` [N] int64 (valid rows per episode), and in the header the
metadata (task set, task names, obs/action dims, episode length) as JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from flowpwm.config import UserError
from flowpwm.fileio import atomic_write_bytes

FORMAT = "flowpwm-episodes"
FORMAT_VERSION = "1"
SUFFIX = ".safetensors"


@dataclass(frozen=True)
class DatasetMeta:
    """What a dataset is about; stored in every chunk of our format, given by the config for TD-MPC2's."""

    task_set: str
    tasks: tuple[str, ...]  # task id = index
    obs_dim: int  # padded obs width of every row
    action_dim: int  # padded action width
    episode_length: int  # agent steps of a full episode; arrays hold episode_length + 1 rows
    source: str = ""  # free text: where the data came from
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> str:
        d = asdict(self)
        d["tasks"] = list(self.tasks)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DatasetMeta":
        d = json.loads(text)
        d["tasks"] = tuple(d["tasks"])
        return cls(**d)

    def same_layout(self, other: "DatasetMeta") -> bool:
        return (self.task_set, self.tasks, self.obs_dim, self.action_dim, self.episode_length) == (
            other.task_set, other.tasks, other.obs_dim, other.action_dim, other.episode_length)


@dataclass
class Episodes:
    """N episodes of up to L rows each (see the module docstring for the layout)."""

    obs: torch.Tensor  # [N, L, D] float32
    action: torch.Tensor  # [N, L, A] float32
    reward: torch.Tensor  # [N, L] float32
    terminated: torch.Tensor  # [N, L] bool
    task: torch.Tensor  # [N] int64
    length: torch.Tensor  # [N] int64, valid rows (>= 2)
    meta: DatasetMeta

    def __post_init__(self) -> None:
        n, rows = self.obs.shape[:2]
        m = self.meta
        expect = {"obs": (n, rows, m.obs_dim), "action": (n, rows, m.action_dim), "reward": (n, rows),
                  "terminated": (n, rows), "task": (n,), "length": (n,)}
        for name, shape in expect.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"episodes: {name} has shape {tuple(getattr(self, name).shape)}, expected {shape}")
        if rows != m.episode_length + 1:
            raise ValueError(f"episodes have {rows} rows, metadata says episode_length {m.episode_length} (+1 reset row)")
        if n and (int(self.length.min()) < 2 or int(self.length.max()) > rows):
            raise ValueError(f"episode lengths must be within [2, {rows}] rows")
        if n and (int(self.task.min()) < 0 or int(self.task.max()) >= len(m.tasks)):
            raise ValueError(f"task ids must be within [0, {len(m.tasks)}) for task set {m.task_set}")

    def __len__(self) -> int:
        return self.obs.shape[0]

    @property
    def rows(self) -> int:
        return self.obs.shape[1]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in ("obs", "action", "reward", "terminated", "task", "length")}

    def valid(self) -> torch.Tensor:
        """[N, L] bool: rows that hold a transition (1 <= t < length)."""
        t = torch.arange(self.rows)
        return (t[None] >= 1) & (t[None] < self.length[:, None])

    def returns(self) -> torch.Tensor:
        """[N] float64: each episode's return (rows 1..length-1)."""
        return (self.reward.double() * self.valid()).sum(1)

    @staticmethod
    def cat(blocks: list["Episodes"]) -> "Episodes":
        if not blocks:
            raise ValueError("no episodes to concatenate")
        meta = blocks[0].meta
        for b in blocks[1:]:
            if not b.meta.same_layout(meta):
                raise UserError(f"dataset chunks disagree: {b.meta.task_set}/{b.meta.obs_dim}/{b.meta.action_dim}/"
                                f"{b.meta.episode_length} vs {meta.task_set}/{meta.obs_dim}/{meta.action_dim}/"
                                f"{meta.episode_length} (task set/obs dim/action dim/episode length)")
        if len(blocks) == 1:
            return blocks[0]
        return Episodes(**{k: torch.cat([getattr(b, k) for b in blocks]) for k in blocks[0].tensors()}, meta=meta)

    def select_tasks(self, tasks: tuple[str, ...], task_set: str, obs_dim: int) -> "Episodes":
        """The episodes of `tasks` (by name), renumbered as their index in `tasks`; e.g. MT30 data
        seen as mt-mini data. The obs width must already be `obs_dim`."""
        if obs_dim != self.meta.obs_dim:
            raise UserError(f"dataset obs width {self.meta.obs_dim} (task set {self.meta.task_set}) cannot serve task "
                            f"set {task_set} (obs width {obs_dim})")
        missing = [t for t in tasks if t not in self.meta.tasks]
        if missing:
            raise UserError(f"dataset of task set {self.meta.task_set} has no {', '.join(missing)} for task set {task_set}")
        new_id = torch.full((len(self.meta.tasks),), -1, dtype=torch.long)
        for i, t in enumerate(tasks):
            new_id[self.meta.tasks.index(t)] = i
        keep = new_id[self.task] >= 0
        meta = DatasetMeta(task_set, tuple(tasks), obs_dim, self.meta.action_dim, self.meta.episode_length,
                           source=self.meta.source, extra=self.meta.extra)
        fields = {k: v[keep] for k, v in self.tensors().items()}
        fields["task"] = new_id[fields["task"]]
        return Episodes(**fields, meta=meta)


def write_chunk(path: str | os.PathLike, episodes: Episodes) -> Path:
    """Write `episodes` as one chunk of flowpwm's format, atomically (temp file, then rename)."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in episodes.tensors().items()}
    tensors["terminated"] = tensors["terminated"].bool()
    header = {"format": FORMAT, "version": FORMAT_VERSION, "meta": episodes.meta.to_json()}
    return atomic_write_bytes(path, save(tensors, metadata=header))


def read_chunk_bytes(data: bytes, name: str) -> Episodes:
    """Parse one chunk of flowpwm's format (no pickle involved); `name` is for error messages."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
        header = _header(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as e:
        raise UserError(f"{name}: not a flowpwm dataset chunk ({e})") from e
    if header.get("format") != FORMAT:
        raise UserError(f"{name}: not a flowpwm dataset chunk (header format {header.get('format')!r})")
    if header.get("version") != FORMAT_VERSION:
        raise UserError(f"{name}: dataset format version {header.get('version')} is not supported "
                        f"(this flowpwm reads version {FORMAT_VERSION})")
    try:
        meta = DatasetMeta.from_json(header["meta"])
        return Episodes(**{k: tensors[k] for k in ("obs", "action", "reward", "terminated", "task", "length")},
                        meta=meta)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{name}: malformed flowpwm dataset chunk ({e})") from e


def read_chunk(path: str | os.PathLike) -> Episodes:
    return read_chunk_bytes(Path(path).read_bytes(), str(path))


def _header(data: bytes) -> dict[str, str]:
    # safetensors: 8-byte little-endian header size, then the JSON header; our metadata sits in
    # its "__metadata__" entry (string to string).
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]).get("__metadata__") or {}

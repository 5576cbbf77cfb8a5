"""An offline multi-task dataset: (H+1)-step slices for world-model training and start states for
per-task policies, over TD-MPC2's chunks or flowpwm's own format.

Slices follow TD-MPC2's buffer (`common/buffer.py`, `Buffer._prepare_batch`): of H+1 consecutive
rows, all H+1 observations are kept and the action, reward and termination of rows 1..H, so the
transition t of a slice is (obs[t], action[t+1], reward[t+1], obs[t+1]) and row 0's filler never
enters a batch; the batch's task id is the episode's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from flowpwm.config import UserError
from flowpwm.data.episodes import SUFFIX, DatasetMeta, Episodes, read_chunk_bytes
from flowpwm.envs.tasksets import TaskSet, get_task_set
from flowpwm.fileio import atomic_write_text


class OfflineDataset:
    """Episodes held in memory (on `device`), sampled as time-major slices like `ReplayBuffer.sample`."""

    def __init__(self, episodes: Episodes, files: dict[str, str] | None = None, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.meta: DatasetMeta = episodes.meta
        self.episodes = episodes
        self.obs = episodes.obs.to(self.device)
        self.action = episodes.action.to(self.device)
        self.reward = episodes.reward.to(self.device)
        self.terminated = episodes.terminated.to(self.device)
        self.task = episodes.task.to(self.device)
        self.length = episodes.length.to(self.device)
        self.files = dict(files or {})  # relative path -> sha256 of every file read
        self._index: dict[tuple[int | None, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def num_transitions(self) -> int:
        return int((self.length - 1).sum())

    @property
    def manifest(self) -> dict:
        """The files read, in DatasetVerifier's manifest format: what a run dir records."""
        return {"algorithm": "sha256", "files": dict(sorted(self.files.items()))}

    def save_manifest(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, json.dumps(self.manifest, indent=2) + "\n")

    def task_id(self, task: int | str) -> int:
        if isinstance(task, str):
            if task not in self.meta.tasks:
                raise UserError(f"task {task!r} is not in this dataset's task set {self.meta.task_set}")
            return self.meta.tasks.index(task)
        if not 0 <= int(task) < len(self.meta.tasks):
            raise UserError(f"task id {task} is outside task set {self.meta.task_set} (0..{len(self.meta.tasks) - 1})")
        return int(task)

    # ---- sampling ------------------------------------------------------------------------

    def _starts(self, task: int | None, horizon: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(episodes, counts, cumsum): the episodes of `task` (None: all) and how many slice starts
        with `horizon` transitions each holds (starts 0 .. length-1-horizon); cached."""
        key = (task, horizon)
        if key not in self._index:
            if horizon < 1:
                raise ValueError(f"horizon must be >= 1, got {horizon}")
            episodes = (torch.arange(self.num_episodes, device=self.device) if task is None
                        else (self.task == task).nonzero().squeeze(1))
            counts = (self.length[episodes] - horizon).clamp(min=0)
            self._index[key] = (episodes, counts, counts.cumsum(0))
        return self._index[key]

    def _draw(self, task: int | None, horizon: int, n: int,
              generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """n uniform draws (episode, start) among all slices of `horizon` transitions inside an episode."""
        episodes, counts, cum = self._starts(task, horizon)
        total = int(cum[-1]) if cum.numel() else 0
        if total == 0:
            if not episodes.numel():
                raise UserError(f"dataset has no episode of task {self.meta.tasks[task]!r}")
            longest = int(self.length[episodes].max()) - 1
            raise UserError(f"a {horizon}-step slice needs an episode of {horizon} transitions; these episodes hold "
                            f"at most {longest}")
        flat = torch.randint(total, (n,), generator=generator, device=generator.device if generator else "cpu")
        flat = flat.to(self.device)
        k = torch.searchsorted(cum, flat, right=True)
        start = flat - (cum[k] - counts[k])
        return episodes[k], start

    def sample(self, batch_size: int, horizon: int, generator: torch.Generator | None = None,
               task: int | str | None = None) -> dict[str, torch.Tensor]:
        """Uniform (H+1)-row slices (of one `task`'s episodes, or all), time-major: obs (H+1, B, D),
        action (H, B, A), reward and terminated (H, B, 1), task (B,). Transition t = (obs[t],
        action[t], reward[t], obs[t+1])."""
        ep, start = self._draw(None if task is None else self.task_id(task), horizon, batch_size, generator)
        rows = start[None] + torch.arange(horizon + 1, device=self.device)[:, None]  # (H+1, B)
        ep_t, step = ep[None].expand_as(rows)[1:], rows[1:]  # TD-MPC2: action/reward of rows 1..H
        return {
            "obs": self.obs[ep[None], rows],
            "action": self.action[ep_t, step],
            "reward": self.reward[ep_t, step].unsqueeze(-1),
            "terminated": self.terminated[ep_t, step].unsqueeze(-1).float(),
            "task": self.task[ep],
        }

    def start_states(self, task: int | str, n: int, horizon: int = 16, generator: torch.Generator | None = None,
                     with_actions: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(n, D): obs[0] of uniform (horizon+1)-row slices of `task`'s episodes (PWM's start states);
        with_actions: also (n, A), the action the data took there (row 1's, as in `sample`)."""
        ep, start = self._draw(self.task_id(task), horizon, n, generator)
        return (self.obs[ep, start], self.action[ep, start + 1]) if with_actions else self.obs[ep, start]

    # ---- statistics ----------------------------------------------------------------------

    def task_stats(self) -> list[dict]:
        """Per task id of the task set: episodes, transitions and episode-return statistics."""
        returns = self.episodes.returns()
        out = []
        for tid, name in enumerate(self.meta.tasks):
            sel = self.episodes.task == tid
            r = returns[sel]
            row = {"task_id": tid, "task": name, "episodes": int(sel.sum()),
                   "transitions": int((self.episodes.length[sel] - 1).sum())}
            if r.numel():
                row.update(return_mean=float(r.mean()), return_std=float(r.std(unbiased=False)),
                           return_min=float(r.min()), return_max=float(r.max()))
            out.append(row)
        return out


def dataset_files(path: Path) -> tuple[list[Path], Path]:
    """The chunk files of a dataset (a directory, or one file) and the root they are relative to."""
    if path.is_file():
        return [path], path.parent
    if not path.is_dir():
        raise UserError(f"dataset {path} does not exist")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".pt", SUFFIX))
    if not files:
        raise UserError(f"dataset {path} holds no chunk files (*.pt from TD-MPC2 or *{SUFFIX} from flowpwm)")
    return files, path


def load_episodes(path: str | os.PathLike, task_set: str | TaskSet | None = None,
                  manifest: str | os.PathLike | None = None) -> tuple[Episodes, dict[str, str]]:
    """All chunks under `path` as one Episodes block, and {relative path: sha256} of the files.

    TD-MPC2 chunks (*.pt) are hash-checked before anything is unpickled (see data/tdmpc2.py);
    flowpwm chunks (*.safetensors) carry their metadata. `task_set` (from the config) selects and
    renumbers the tasks; without it the data's own task set is kept.
    """
    ts = task_set if isinstance(task_set, TaskSet) or task_set is None else get_task_set(task_set)
    files, root = dataset_files(Path(path))
    kinds = {f.suffix for f in files}
    if len(kinds) > 1:
        raise UserError(f"dataset {path} mixes TD-MPC2 (*.pt) and flowpwm (*{SUFFIX}) chunks: keep one kind per directory")
    if kinds == {".pt"}:
        from flowpwm.data.tdmpc2 import read_tdmpc2_chunks

        blocks, hashes = read_tdmpc2_chunks(files, root, Path(manifest) if manifest is not None else None)
    else:
        from flowpwm.data.tdmpc2 import Trust, sha256_of

        # No pickle here, so no manifest is needed; one that exists (given, or in the directory) is enforced.
        trust = Trust(root, Path(manifest) if manifest is not None else None)
        blocks, hashes = [], {}
        for f in files:
            with open(f, "rb") as fh:
                digest = sha256_of(fh)
                if trust.manifest_path is not None:
                    trust.check(f, digest, published_ok=False)
                data = fh.read()
            hashes[f.relative_to(root).as_posix()] = digest
            blocks.append(read_chunk_bytes(data, str(f)))
    episodes = Episodes.cat(blocks)
    if ts is not None:
        if ts.tasks != episodes.meta.tasks:
            episodes = episodes.select_tasks(ts.tasks, ts.name, ts.obs_dim)
    return episodes, hashes


def load_dataset(path: str | os.PathLike, task_set: str | TaskSet | None = None,
                 manifest: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> OfflineDataset:
    episodes, hashes = load_episodes(path, task_set, manifest)
    return OfflineDataset(episodes, hashes, device)

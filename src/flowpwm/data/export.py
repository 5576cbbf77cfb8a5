"""`flowpwm data export RUN_DIR... --out DIR`: the replay buffers of online runs as a dataset in
flowpwm's format (data/episodes.py), one chunk per run, with a SHA256 manifest.

Each run's buffer (read through `rundir.RunDir`: the file `checkpoints/latest.pt` names) is
time-major per env, oldest row first, with a `done` flag on the last step of every episode. Its task
id is the run's `env.task` (config.yaml) in the task set; observations are zero-padded to the set's
obs dim and actions to its action dim.

What is kept (whole episodes only, in TD-MPC2's row layout):

- an **episode**: a segment of one env's rows that starts at a reset and ends at the task's time
  limit (or a termination) — always kept;
- a **piece**: a segment whose start or end is not an episode's — the first segment of a ring that
  has wrapped (its beginning was overwritten), a segment ended early because the run was resumed
  (`ReplayBuffer.end_episodes`), and the episode still running at the checkpoint — kept only when
  it holds at least `min_transitions` transitions (default 16 = H: one (H+1)-observation slice, so
  it can be sampled), else dropped. Pieces keep their real start or end; nothing is stitched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from flowpwm.config import UserError
from flowpwm.data.episodes import SUFFIX, DatasetMeta, Episodes, write_chunk
from flowpwm.envs.tasksets import TaskSet, episode_length, get_task_set, task_dims
from flowpwm.rundir import RunDir

DEFAULT_MIN_TRANSITIONS = 16
SUMMARY = "export.json"


@dataclass(frozen=True)
class Segment:
    """Rows start..end (inclusive, chronological) of one env; `reset`: it begins at a reset;
    `complete`: a whole episode (from a reset to the time limit or a termination)."""

    env: int
    start: int
    end: int
    reset: bool
    complete: bool

    @property
    def transitions(self) -> int:
        return self.end - self.start + 1


@dataclass
class RunExport:
    """One run's part of the export."""

    run: Path
    task: str
    task_id: int
    episodes: Episodes
    complete: int = 0
    pieces: int = 0
    dropped: int = 0
    dropped_transitions: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"run": str(self.run), "task": self.task, "task_id": self.task_id, "episodes": self.complete,
                "pieces": self.pieces, "dropped_pieces": self.dropped,
                "dropped_transitions": self.dropped_transitions,
                "transitions": int((self.episodes.length - 1).sum())}


def dataset_task_name(task: str) -> str:
    """A run's env.task under TD-MPC2's spelling, as task sets list it (`cartpole-balance_sparse` ->
    `cartpole-balance-sparse`)."""
    from flowpwm.envs.dmc import TDMPC2_NAMES

    return next((k for k, v in TDMPC2_NAMES.items() if v == task), task)


def segments(done: torch.Tensor, terminated: torch.Tensor, episode_steps: int, wrapped: bool) -> list[Segment]:
    """The segments of a buffer's `done` flags (rows, num_envs), oldest row first. Row 0 starts an
    episode unless the ring has wrapped; a row after a `done` starts one."""
    rows, num_envs = done.shape
    out = []
    for env in range(num_envs):
        ends = torch.nonzero(done[:, env]).flatten().tolist()
        start, reset = 0, not wrapped
        for end in ends + ([rows - 1] if not ends or ends[-1] != rows - 1 else []):
            closed = bool(done[end, env])
            whole = reset and closed and (end - start + 1 == episode_steps or bool(terminated[end, env]))
            out.append(Segment(env, start, end, reset, whole))
            start, reset = end + 1, True
    return [s for s in out if s.transitions > 0]


def segment_rows(buffer: dict, seg: Segment, rows: int, obs_dim: int, action_dim: int) -> dict[str, torch.Tensor]:
    """One segment in TD-MPC2's row layout, padded: row 0 = the first obs (zero action, reward and
    termination), row t = the obs reached by action[t] with reward[t] and terminated[t]."""
    n, sl = seg.transitions, slice(seg.start, seg.end + 1)
    out = {"obs": torch.zeros(rows, obs_dim), "action": torch.zeros(rows, action_dim), "reward": torch.zeros(rows),
           "terminated": torch.zeros(rows, dtype=torch.bool)}
    raw_obs, raw_act = buffer["obs"].shape[-1], buffer["action"].shape[-1]
    out["obs"][0, :raw_obs] = buffer["obs"][seg.start, seg.env]
    out["obs"][1:n + 1, :raw_obs] = buffer["next_obs"][sl, seg.env]
    out["action"][1:n + 1, :raw_act] = buffer["action"][sl, seg.env]
    out["reward"][1:n + 1] = buffer["reward"][sl, seg.env]
    out["terminated"][1:n + 1] = buffer["terminated"][sl, seg.env].bool()
    return out


def read_run(path: Path, ts: TaskSet) -> tuple[RunDir, str, dict, dict]:
    """(run, task in TD-MPC2's spelling, checkpoint, buffer state) of one run dir; every problem is
    one UserError line."""
    from omegaconf import OmegaConf

    run = RunDir(path)
    if not run.config.is_file():
        raise UserError(f"{path} is not a run directory (no config.yaml): pass the directories of `flowpwm train` runs")
    cfg = OmegaConf.load(run.config)
    raw = OmegaConf.select(cfg, "env.task")
    if raw is None:
        raise UserError(f"{run.config} has no env.task: only online runs (`flowpwm train`) can be exported")
    task = dataset_task_name(str(raw))
    if task not in ts:
        raise UserError(f"{path}: task {task!r} is not in task set {ts.name} ({', '.join(ts.tasks)}); export it "
                        f"with --task-set naming a set that has it")
    if not run.has_checkpoint():
        raise UserError(f"{path} has no checkpoint ({run.latest_checkpoint}): the buffer is saved with it; let "
                        f"the run write one (train.checkpoint_every) or leave it out")
    state = run.load_checkpoint()
    buffer = run.load_buffer(state)
    dims = (int(buffer["obs_dim"]), int(buffer["action_dim"]))
    if dims != task_dims(task):
        raise UserError(f"{path}: buffer obs/action dims {dims} differ from {task}'s {task_dims(task)}")
    return run, task, state, buffer


def export_run(path: Path, ts: TaskSet, rows: int, min_transitions: int) -> RunExport:
    run, task, state, buffer = read_run(path, ts)
    num_envs, filled = int(buffer["num_envs"]), int(buffer["filled"])
    written = int(state["env_steps"]) // num_envs  # every collected step went into the buffer
    wrapped = written > filled
    steps = episode_length(task)
    blocks, lengths = [], []
    exp = RunExport(run.path, task, ts.task_id(task), episodes=None)  # type: ignore[arg-type]
    for seg in segments(buffer["done"], buffer["terminated"], steps, wrapped):
        if seg.transitions > rows - 1:
            raise UserError(f"{path}: env {seg.env} has a {seg.transitions}-step episode, longer than {task}'s "
                            f"{steps} (was it run with another action repeat?)")
        if not seg.complete and seg.transitions < min_transitions:
            exp.dropped += 1
            exp.dropped_transitions += seg.transitions
            continue
        exp.complete += seg.complete
        exp.pieces += not seg.complete
        blocks.append(segment_rows(buffer, seg, rows, ts.obs_dim, ts.action_dim))
        lengths.append(seg.transitions + 1)  # valid rows: the first obs, then one per transition
    meta = DatasetMeta(ts.name, ts.tasks, ts.obs_dim, ts.action_dim, rows - 1, source="flowpwm export",
                       extra={"run": str(run.path), "task": task, "env_steps": int(state["env_steps"]),
                              "epoch": int(state["epoch"]), "min_transitions": min_transitions})
    n = len(blocks)
    stacked = {k: torch.stack([b[k] for b in blocks]) if n else torch.zeros(0, *shape, dtype=dtype)
               for k, shape, dtype in (("obs", (rows, ts.obs_dim), torch.float32),
                                       ("action", (rows, ts.action_dim), torch.float32),
                                       ("reward", (rows,), torch.float32), ("terminated", (rows,), torch.bool))}
    exp.episodes = Episodes(**stacked, task=torch.full((n,), exp.task_id, dtype=torch.long),
                            length=torch.tensor(lengths, dtype=torch.long).reshape(n), meta=meta)
    return exp


def export_runs(run_dirs: list[Path | str], out: Path | str, task_set: str = "mt-mini",
                min_transitions: int = DEFAULT_MIN_TRANSITIONS, log=print) -> dict:
    """Export every run (all checked and converted before anything is written) into `out`:
    chunk_NNN.safetensors per run, export.json (what was kept), MANIFEST.sha256.json."""
    from flowpwm.reproducibility import DatasetVerifier
    from flowpwm.fileio import atomic_write_text

    ts, out = get_task_set(task_set), Path(out)
    if not run_dirs:
        raise UserError("no run directories to export: give at least one RUN_DIR")
    if min_transitions < 1:
        raise UserError(f"--min-transitions {min_transitions}: use 1 or more (16 = one 17-step slice)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} already exists and is not an empty directory: export into a new one")
    rows = max(ts.episode_lengths) + 1
    exports = [export_run(Path(d), ts, rows, min_transitions) for d in run_dirs]
    if not any(len(e.episodes) for e in exports):
        raise UserError(f"none of the {len(exports)} run(s) holds an episode or a piece of at least "
                        f"{min_transitions} transitions: nothing to export")
    out.mkdir(parents=True, exist_ok=True)
    for i, e in enumerate(exports):
        if len(e.episodes):
            write_chunk(out / f"chunk_{i:03d}{SUFFIX}", e.episodes)
    summary = {"task_set": ts.name, "min_transitions": min_transitions, "rule": __doc__.split("What is kept")[1].strip(),
               "runs": [e.summary() for e in exports]}
    atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
    DatasetVerifier(out).write_manifest()
    for e in exports:
        s = e.summary()
        log(f"  {e.run}: {e.task} (id {e.task_id}): {s['episodes']} episodes, {s['pieces']} pieces, "
            f"{s['transitions']} transitions; dropped {s['dropped_pieces']} pieces ({s['dropped_transitions']} "
            f"transitions) shorter than {min_transitions}")
    return summary


def main(argv: list[str] | None = None) -> int:
    import argparse

    from flowpwm.envs.tasksets import TASK_SETS

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # one line, exit 2 through the CLI
            raise UserError(f"{message} (usage: flowpwm data export RUN_DIR... --out DIR [--task-set NAME])")

    p = Parser(prog="flowpwm data export", description="Online runs' replay buffers as a multi-task dataset "
               "(flowpwm's safetensors format): task ids from each run's env.task, obs and actions padded to "
               "the task set's dims, whole episodes (and pieces of at least --min-transitions).")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, required=True, help="a new (or empty) dataset directory")
    p.add_argument("--task-set", default="mt-mini", choices=list(TASK_SETS), help="task ids and padding (default mt-mini)")
    p.add_argument("--min-transitions", type=int, default=DEFAULT_MIN_TRANSITIONS,
                   help="keep a piece of an episode (cut by the ring, a resume or the checkpoint) only with at "
                        "least this many transitions (default 16 = H)")
    args = p.parse_args(argv)
    print(f"export {len(args.runs)} run(s) as task set {args.task_set} into {args.out}")
    summary = export_runs(args.runs, args.out, args.task_set, args.min_transitions)
    n = sum(r["episodes"] + r["pieces"] for r in summary["runs"])
    print(f"wrote {args.out}: {n} episodes and pieces, {sum(r['transitions'] for r in summary['runs'])} transitions "
          f"({SUMMARY}, MANIFEST.sha256.json); `flowpwm data info {args.out}` lists them per task")
    return 0

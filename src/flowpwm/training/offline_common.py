"""What `flowpwm pretrain` (training/offline.py) and `flowpwm train-policy` (training/policy.py)
share: loading a dataset for a config, splitting episodes, what a resume may change, progress by
iteration, the W&B run and the header's parity line. The two loops themselves stay whole in
their own modules; the command line that runs them is cli.py's."""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig

from flowpwm.algorithms.pwm import PWM
from flowpwm.config import UserError
from flowpwm.data.dataset import OfflineDataset, load_episodes
from flowpwm.data.episodes import Episodes
from flowpwm.envs.tasksets import TaskSet
from flowpwm.monitoring import TrainingMonitor, WandBLogger, format_duration
from flowpwm.reproducibility import MISSING, ExperimentConfig, _canonical_json, _flatten
from flowpwm.rundir import RunDir
from flowpwm.training.resume import effective_config


# -- data -------------------------------------------------------------------------------------------
def load_data(path, ts: TaskSet, manifest=None, key: str = "data.path") -> tuple[Episodes, dict[str, str]]:
    """The dataset at `path` read as task set `ts` (episodes, {file: sha256}); a missing dataset or one
    whose task set cannot serve `ts` is one UserError line naming the config key."""
    if path is None:
        raise UserError(f"{key}=null: give the dataset directory")
    try:
        return load_episodes(path, ts, manifest)
    except UserError as e:
        raise UserError(f"{key}={path}: {e}") from None


def multitask_agent(alg, ts: TaskSet, device, perf, episodic: bool) -> PWM:
    """A PWM agent sized for task set `ts`: padded obs and actions, one task id per task, masks."""
    return PWM(alg, ts.obs_dim, ts.action_dim, device, num_tasks=len(ts), action_dims=ts.action_dims, perf=perf,
               episodic=episodic)


def subset(episodes: Episodes, index: torch.Tensor) -> Episodes:
    return Episodes(**{k: v[index] for k, v in episodes.tensors().items()}, meta=episodes.meta)


def split_held_out(episodes: Episodes, fraction: float, seed: int) -> tuple[Episodes, Episodes]:
    """(training, held-out) episodes: per task, round(fraction * n) episodes drawn at random (at least
    one when fraction > 0 and the task has two or more), so every task is in both parts. With
    fraction 0 both parts are all episodes."""
    if fraction <= 0:
        return episodes, episodes
    g = torch.Generator().manual_seed(int(seed))
    held = torch.zeros(len(episodes), dtype=torch.bool)
    for task in episodes.task.unique().tolist():
        idx = (episodes.task == task).nonzero().squeeze(1)
        n = min(max(round(fraction * idx.numel()), 1), idx.numel() - 1) if idx.numel() >= 2 else 0
        held[idx[torch.randperm(idx.numel(), generator=g)[:n]]] = True
    if not held.any():
        return episodes, episodes
    return subset(episodes, (~held).nonzero().squeeze(1)), subset(episodes, held.nonzero().squeeze(1))


def check_slices(ds: OfflineDataset, horizon: int, what: str, task: int | None = None) -> None:
    """A UserError now (before the run dir is written) when no `horizon`-step slice exists."""
    episodes, counts, _ = ds._starts(task, horizon)
    if not int(counts.sum()):
        name = f" of task {ds.meta.tasks[task]}" if task is not None else ""
        longest = int(ds.length[episodes].max()) - 1 if episodes.numel() else 0
        raise UserError(f"{what}: no episode{name} holds a {horizon}-step slice (alg.horizon={horizon}; the longest "
                        f"holds {longest} transitions); use more data or a smaller alg.horizon")


def manifest_file(ds_files: dict[str, str]) -> Path:
    """The dataset's manifest in a temporary file (for `write_run_metadata`); the caller deletes it."""
    import json

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"algorithm": "sha256", "files": dict(sorted(ds_files.items()))}, f, indent=2)
        f.write("\n")
    return Path(f.name)


# -- resume -------------------------------------------------------------------------------------------
def resume_changes(run: RunDir, cfg: DictConfig, resumable: tuple[str, ...]) -> dict[str, list]:
    """`training.resume.resume_changes` with this command's own resumable keys: {key: [old, new]}
    of the allowed changes; a change to any other key is one UserError naming them all."""
    if not run.config.is_file():
        raise UserError(f"{run.path} has a checkpoint but no {run.config.name}: it cannot be checked what the run "
                        f"was; start a new run")
    allowed = lambda k: any(k == r or (r.endswith(".") and k.startswith(r)) for r in resumable)  # noqa: E731
    old, new = effective_config(run), _flatten(ExperimentConfig(cfg).to_dict())
    changed = {k: [old.get(k, MISSING), new.get(k, MISSING)] for k in sorted(old.keys() | new.keys())
               if _canonical_json(old.get(k, MISSING)) != _canonical_json(new.get(k, MISSING))}
    frozen = [f"{k} ({_show(a)} -> {_show(b)})" for k, (a, b) in changed.items() if not allowed(k)]
    if frozen:
        raise UserError(f"resume {run.path}: {'; '.join(frozen)} would mix two experiments in one run; keep the "
                        f"run's values, or start a new run (a resume may change only "
                        f"{', '.join(k + '*' if k.endswith('.') else k for k in resumable)})")
    plain = lambda v: None if v is MISSING else copy.deepcopy(v)  # noqa: E731
    return {k: [plain(a), plain(b)] for k, (a, b) in changed.items() if k != "resume"}


def _show(v) -> str:
    return "<absent>" if v is MISSING else repr(v)


# -- progress and W&B -----------------------------------------------------------------------------
class IterationMonitor(TrainingMonitor):
    """`TrainingMonitor` whose progress line counts iterations (offline runs step no env)."""

    def __init__(self, label: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.label = label
        if self._bar is not None:
            self._bar.set_description(label)

    def line(self, iteration: int) -> str:
        pct = 100.0 * self.epoch / max(self.total, 1)
        return (f"[{self.label}] epoch {self.epoch}/{self.total} ({pct:.0f}%)  iteration {iteration}  {self.postfix()}  "
                f"elapsed {format_duration(self.clock() - self._start)}  eta {format_duration(self.eta_s())}")


def open_wandb(run_path: Path, cfg: DictConfig, logged_epochs: int, summaries: dict[str, str]) -> WandBLogger:
    """The run's W&B run; metrics plotted against `iteration` (offline runs have no env steps)."""
    w = cfg.wandb
    logger = WandBLogger(run_path, ExperimentConfig(cfg).to_dict(), mode=w.mode, project=w.project, entity=w.entity,
                         group=w.group, name=w.name, tags=list(w.tags), grad_hist_every=int(w.grad_hist_every))
    logger.skip_to(logged_epochs)
    if logger.enabled:
        logger.run.define_metric("iteration")
        logger.run.define_metric("*", step_metric="iteration")
        for name, summary in summaries.items():
            logger.run.define_metric(name, step_metric="iteration", summary=summary)
    return logger


# -- header -----------------------------------------------------------------------------------------
def parity_line(alg, ts: TaskSet, wm_params: int, episodic: bool) -> str:
    """World-model size against the paired baseline/flow config at this task set's dims."""
    from flowpwm.config import load_alg
    from flowpwm.parity import Dims, count, rel_diff
    from flowpwm.training.header import paired_name

    pair = paired_name(str(alg.name))
    dims = Dims(ts.name, ts.obs_dim, ts.action_dim, len(ts), int(alg.world_model.task_dim), episodic)
    try:
        other = count(load_alg(pair).world_model, dims)["total"]
    except UserError:
        return f"{wm_params:,} params (no paired config {pair})"
    return f"{wm_params:,} params; paired {pair}: {other:,} ({rel_diff(wm_params, other):+.2%})"


def flow_line(wm_cfg) -> str | None:
    from flowpwm.integrators import nfe

    if wm_cfg.type != "flow":
        return None
    return (f"  flow: integrator {wm_cfg.integrator}, K={wm_cfg.substeps} substeps ({nfe(wm_cfg.integrator, int(wm_cfg.substeps))} "
            f"velocity evals per step), source {wm_cfg.flow_source}, tau {wm_cfg.tau_sampling}")


def total_epochs(iterations: int, log_every: int) -> int:
    return math.ceil(int(iterations) / int(log_every))


def crossed(iteration: int, n: int, every: int) -> bool:
    """The last `n` iterations (ending at `iteration`) passed a multiple of `every` (0: never)."""
    return every > 0 and iteration // every > (iteration - n) // every

"""Multi-task aggregation of per-task policy runs (PWM's protocol: one policy per task and seed
through a pretrained world model), for `flowpwm compare`. Torch-free.

`compare.aggregate` already gives each group's mean and IQM of the normalised score over tasks ×
seeds with 95 % percentile-bootstrap CIs stratified by task (runs resampled with replacement within
each task). This module adds, per group:

- a per-task table: mean, sd and n of the final scores per task;
- performance profiles (Agarwal et al., 2021): the fraction of runs whose score exceeds τ, for τ
  on a grid over [0, max(1, best score)], with a 95 % band from the same stratified bootstrap;
- the reference each task's data came from, when the dataset is a `flowpwm data export` of online
  runs: the final eval return / 1000 of those runs (the issue's "80 % of the online run" check).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flowpwm.analysis.runs import load_run
from flowpwm.config import UserError
from flowpwm.rundir import PRETRAINED, RunDir

if TYPE_CHECKING:
    from flowpwm.analysis.compare import Group, Settings

EXPORT_SUMMARY = "export.json"  # written by data/export.py (kept in sync by a test; that module needs torch)
DMC_MAX_RETURN = 1000.0
TAU_POINTS = 101
CONFIDENCE = 0.95


@dataclass
class Profile:
    """Fraction of runs with score > τ at each τ, and its bootstrap band."""

    taus: np.ndarray
    fraction: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int

    def as_dict(self) -> dict:
        return {"taus": self.taus.tolist(), "fraction": self.fraction.tolist(), "low": self.low.tolist(),
                "high": self.high.tolist(), "n": self.n}


@dataclass
class MultiTask:
    tasks: list[str]
    per_task: dict[str, dict[str, dict]]  # task -> group -> {n, mean, sd, finals}
    profiles: dict[str, Profile]  # group -> its performance profile
    reference: dict[str, float] = field(default_factory=dict)  # task -> online data runs' final score
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"tasks": self.tasks, "per_task": self.per_task, "reference": self.reference,
                "profiles": {g: p.as_dict() for g, p in self.profiles.items()}}


# -- statistics -----------------------------------------------------------------------------------
def profile_fraction(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of `scores` (..., n) above each τ: (..., len(taus))."""
    return (np.asarray(scores)[..., :, None] > taus).mean(axis=-2)


def performance_profile(strata: list[np.ndarray], taus: np.ndarray, n_bootstrap: int,
                        rng: np.random.Generator, batch: int = 500) -> Profile:
    """Profile of all runs pooled; the band resamples each stratum's (task's) runs with replacement,
    independently, and takes the 2.5 / 97.5 percentiles per τ (no band without resamples, or
    when no task has two runs)."""
    strata = [np.asarray(s, dtype=float) for s in strata if np.size(s)]
    pooled = np.concatenate(strata)
    point = profile_fraction(pooled, taus)
    nan = np.full_like(point, math.nan)
    if n_bootstrap < 1 or not any(s.size >= 2 for s in strata):
        return Profile(taus, point, nan, nan, pooled.size)
    draws = []
    for start in range(0, n_bootstrap, batch):
        b = min(batch, n_bootstrap - start)
        resampled = np.concatenate([s[rng.integers(s.size, size=(b, s.size))] for s in strata], axis=1)
        draws.append(profile_fraction(resampled, taus))
    draws = np.concatenate(draws)
    alpha = (1 - CONFIDENCE) / 2
    return Profile(taus, point, np.quantile(draws, alpha, axis=0), np.quantile(draws, 1 - alpha, axis=0), pooled.size)


def tau_grid(groups_finals: list[list[float]]) -> np.ndarray:
    top = max([1.0, *[max(f) for f in groups_finals if f]])
    return np.linspace(0.0, top, TAU_POINTS)


# -- where each task's data came from ------------------------------------------------------------
def reference_scores(runs) -> tuple[dict[str, float], list[str]]:
    """{task: final eval return / 1000 of the online runs whose buffers made the data} for policy runs
    whose pretraining dataset is a `flowpwm data export` (read: RUN/pretrained.json -> the pretraining
    run's config.yaml data.path -> DATA/export.json -> each online run's metrics). Anything that
    cannot be followed is left out, with a note."""
    from omegaconf import OmegaConf

    datasets, notes, lost = set(), [], []
    for run in runs:
        link = run.path / PRETRAINED
        try:
            pre = Path(json.loads(link.read_text())["run"])
            datasets.add(Path(str(OmegaConf.load(RunDir(pre).config).data.path)))
        except (OSError, ValueError, KeyError, AttributeError):
            lost.append(run.path.name)
    if lost:
        notes.append(f"note: no data reference for {len(lost)} run(s) (e.g. {lost[0]}): their {PRETRAINED} or its "
                     f"pretraining run's config.yaml cannot be read")
    finals: dict[str, list[float]] = {}
    for data in sorted(datasets):
        summary = data / EXPORT_SUMMARY
        if not summary.is_file():
            continue  # TD-MPC2's data: no online runs to refer to
        for entry in json.loads(summary.read_text())["runs"]:
            try:
                online = load_run(entry["run"])
            except UserError:
                notes.append(f"note: {entry['run']} (the online run behind {entry['task']}'s data) is gone: no reference")
                continue
            if online.evals:
                finals.setdefault(entry["task"], []).append(online.evals[-1][1] / DMC_MAX_RETURN)
    return {t: float(np.mean(v)) for t, v in sorted(finals.items())}, notes


# -- the aggregate -------------------------------------------------------------------------------
def multitask_summary(groups: list["Group"], per_group: dict[str, dict], settings: "Settings") -> MultiTask:
    from flowpwm.analysis.compare import _rng, _strata

    tasks = sorted({t for g in groups for t in g.tasks})
    per_task: dict[str, dict[str, dict]] = {t: {} for t in tasks}
    profiles = {}
    taus = tau_grid([per_group[g.name]["finals"] for g in groups])
    notes = []
    for gi, g in enumerate(groups):
        strata = _strata(per_group[g.name]["finals"], g.tasks)
        for task, x in strata.items():
            per_task[task][g.name] = {"n": int(x.size), "mean": float(x.mean()),
                                      "sd": float(x.std(ddof=1)) if x.size >= 2 else math.nan, "finals": x.tolist()}
        profiles[g.name] = performance_profile(list(strata.values()), taus, settings.n_bootstrap,
                                               _rng(settings.seed, gi, 3))
        missing = [t for t in tasks if t not in strata]
        if missing:
            notes.append(f"warning: group {g.name!r} has no run of {', '.join(missing)}: its aggregate covers fewer "
                         f"tasks than the others")
    counts = {len(v["finals"]) for t in per_task.values() for v in t.values()}
    if len(counts) > 1:
        notes.append("warning: tasks have unequal numbers of seeds: the pooled mean and IQM weight tasks by their runs")
    reference, ref_notes = reference_scores([r for g in groups for r in g.runs])
    return MultiTask(tasks, per_task, profiles, reference, notes + ref_notes)

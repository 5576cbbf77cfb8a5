"""The actor-gradient ESNR of each group per task, at the env steps (iterations for policy runs)
where every run of that task measured it, for `flowpwm compare`. Torch-free.

ESNR answers the users' question (which world model gives PWM the better policy gradient) only
when the groups are measured at the same points of training: a run's ESNR falls as its policy
learns, so one group's early checkpoints against another's late ones says nothing. Per task,
each run's `esnr_db` is averaged over the common steps (and read at the last common one); a
group's figure is the mean over its runs with a 95 % t-interval; each pair of groups gets the
difference with Welch's 95 % interval and p-value.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

KEY = "esnr_db"
CONFIDENCE = 0.95


@dataclass
class TaskESNR:
    task: str
    steps: list[int]  # the x values every run of the task measured ESNR at (all its own if none is common)
    common: bool  # False: no step shared by all runs; each run averaged over its own measurements
    per_group: dict[str, dict] = field(default_factory=dict)  # group -> n, mean_db, mean_db_ci, last_db, last_db_ci, runs
    pairs: list[dict] = field(default_factory=list)  # x, y, diff_db, diff_db_ci, welch_p

    def as_dict(self) -> dict:
        return {"task": self.task, "steps": self.steps, "common": self.common, "per_group": self.per_group,
                "pairs": self.pairs}


def _esnr_series(run, x: str) -> dict[int, float]:
    from flowpwm.analysis.compare import _series  # (compare imports this module)

    s = _series(run, KEY, x)
    return {} if s is None else dict(zip(s[0].tolist(), s[1].tolist()))


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """95 % t-interval of the mean over runs; (nan, nan) below two runs."""
    v = np.asarray(values, float)
    if v.size < 2:
        return (math.nan, math.nan)
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, v.size - 1) * stats.sem(v)
    return (float(v.mean() - half), float(v.mean() + half))


def welch_difference(x: Sequence[float], y: Sequence[float]) -> tuple[float, tuple[float, float], float]:
    """mean(x) - mean(y), Welch's 95 % interval of it and its two-sided p (nan below two runs each)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    diff = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return diff, (math.nan, math.nan), math.nan
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # zero spread in both: nan interval, not a crash
        r = stats.ttest_ind(x, y, equal_var=False)
        ci = r.confidence_interval(CONFIDENCE)
    return diff, (float(ci.low), float(ci.high)), float(r.pvalue)


def esnr_by_task(groups, x: str = "env_steps", x_label: str = "env steps") -> tuple[list[TaskESNR], list[str]]:
    """Per task (the groups' `tasks`), each group's ESNR at the common steps; notes for tasks
    whose runs share no step. Runs without any ESNR measurement are left out of their task."""
    tasks = sorted({t for g in groups for t in g.tasks})
    out, notes = [], []
    for task in tasks:
        series = {g.name: [s for run, t in zip(g.runs, g.tasks) if t == task and (s := _esnr_series(run, x))]
                  for g in groups}
        series = {name: runs for name, runs in series.items() if runs}
        if not series:
            continue
        every = [s for runs in series.values() for s in runs]
        shared = sorted(set.intersection(*(set(s) for s in every)))
        common = bool(shared)
        if not common:
            notes.append(f"warning: the {task} runs share no {x_label} at which all measured ESNR: each run's ESNR is "
                         f"averaged over its own measurements, not over the same points of training")
        te = TaskESNR(task, shared if common else sorted(set().union(*every)), common)
        for name, runs in series.items():
            means = [float(np.mean([s[k] for k in (shared if common else sorted(s))])) for s in runs]
            lasts = [s[shared[-1]] if common else s[max(s)] for s in runs]
            te.per_group[name] = {"n": len(runs), "mean_db": float(np.mean(means)), "mean_db_ci": t_interval(means),
                                  "last_db": float(np.mean(lasts)), "last_db_ci": t_interval(lasts), "runs": means}
        for a, b in itertools.combinations(te.per_group, 2):
            diff, ci, p = welch_difference(te.per_group[a]["runs"], te.per_group[b]["runs"])
            te.pairs.append({"x": a, "y": b, "diff_db": diff, "diff_db_ci": ci, "welch_p": p})
        out.append(te)
    return out, notes

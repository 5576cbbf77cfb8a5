"""Compare groups of training runs over seeds (`flowpwm compare`): load run directories →
`aggregate` (statistics, torch-free) → render (`compare_report`: figures, report.md/.html, CSV).

Per group: eval-return learning curves on a common env-step grid (mean and a 95 % t-interval
over seeds), final performance (mean and IQM with 95 % stratified percentile-bootstrap CIs),
ESNR and world-model loss curves, the ESNR per task at the steps every run measured it
(analysis/esnr_by_task.py), wall time and peak memory. Between each pair of groups:
Welch's t-test, Mann-Whitney U and the probability of improvement with a bootstrap CI.
Writes report.md, a self-contained report.html, summary.csv, tests.csv and PNG figures.

Statistics follow rliable (Agarwal et al., 2021): IQM = mean of the middle 50 % of runs
(scipy.stats.trim_mean(x, 0.25)); the bootstrap resamples runs with replacement
independently within each stratum (here: each env.task) and takes percentile intervals;
P(X > Y) = P(X > Y) + 0.5 P(X = Y) over all pairs of runs, averaged over tasks.

Per-task policy runs (`flowpwm train-policy`, PWM's multi-task protocol) are compared by their
normalised score (`eval_score`) over tasks × seeds instead (`Measure` SCORES): the same mean and
IQM with bootstrap CIs stratified by `task`, curves against iterations, plus a per-task table and
performance profiles (analysis/multitask.py).
"""

from __future__ import annotations

import argparse
import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from flowpwm.analysis.esnr_by_task import esnr_by_task
from flowpwm.analysis.report import fmt_ci, fmt_general
from flowpwm.analysis.runs import Run, load_run, metrics_notes
from flowpwm.analysis.smoothing import parse_smooth, smooth as smooth_values
from flowpwm.config import UserError
from flowpwm.rundir import RunDir

MIN_SEEDS = 5
FEW_SEEDS = "results with n<5 seeds per group are indicative only"
CONFIDENCE = 0.95
MAX_GRID = 400  # points of a learning-curve grid at most
TASK_KEY = "env.task"


@dataclass(frozen=True)
class Measure:
    """What a comparison compares: the final-performance metric, the x of its curves, the config
    key whose value is a run's task (the bootstrap's strata), and the curves drawn."""

    key: str
    x: str
    task_key: str
    label: str
    x_label: str
    curve_keys: tuple[str, ...]


RETURNS = Measure("eval_return", "env_steps", TASK_KEY, "eval return", "env steps", ("eval_return", "esnr_db", "wm_loss"))
SCORES = Measure("eval_score", "iteration", "task", "normalised score", "iterations", ("eval_score", "esnr_db"))
# Online runs with --reference TASK=SCORE: each eval return divided by its task's reference
# score (e.g. TD-MPC2's return at the same budget), so tasks of different scales pool.
NORMALISED = Measure("eval_normalised", "env_steps", TASK_KEY, "normalised return (÷ reference)", "env steps",
                     ("eval_normalised", "esnr_db", "wm_loss"))


def is_policy_run(config: dict) -> bool:
    """A per-task policy trained through a pretrained world model (`flowpwm train-policy`)."""
    return isinstance(config, dict) and "pretrained" in config and "policy" in config


# -- inputs ---------------------------------------------------------------------------------------
def config_value(config: dict, key: str):
    """The value at a dotted key (`alg.world_model.type`) of a run's config; KeyError if absent."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def _config_get(config: dict, key: str, default=None):
    try:
        return config_value(config, key)
    except KeyError:
        return default


def group_by(key: str, run_dirs: Iterable[Path | str]) -> dict[str, list[Path]]:
    """Run directories grouped by the value of a dotted config key, groups sorted by name."""
    groups: dict[str, list[Path]] = {}
    for d in run_dirs:
        run = load_run(d)
        try:
            value = config_value(run.config, key)
        except KeyError:
            raise UserError(f"{run.path}/config.yaml has no key {key!r}: pick a key every run has "
                            f"(e.g. alg.world_model.type, env.task, seed) or use --group NAME RUN_DIR...") from None
        groups.setdefault(str(value), []).append(Path(d))
    if not groups:
        raise UserError(f"--by {key} names no run directory: give KEY then at least one RUN_DIR")
    return dict(sorted(groups.items()))


@dataclass
class Group:
    name: str
    runs: list[Run]
    task_key: str = TASK_KEY

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> list:
        return [_config_get(r.config, "seed") for r in self.runs]

    @property
    def tasks(self) -> list[str]:
        return [str(_config_get(r.config, self.task_key, "?")) for r in self.runs]


def load_groups(groups: dict[str, Sequence[Path | str]], until: int | None = None) -> list[Group]:
    """The groups' runs, each cut at `until` (env steps; iterations for policy runs) when given."""
    if not groups:
        raise UserError("no groups to compare: give --group NAME RUN_DIR... (repeatable) or --by KEY RUN_DIR...")
    out = []
    for name, dirs in groups.items():
        dirs = [Path(d) for d in dirs]
        if not dirs:
            raise UserError(f"group {name!r} has no run directories: give at least one RUN_DIR after its name")
        seen = set()
        for d in dirs:
            if d.resolve() in seen:
                raise UserError(f"group {name!r} lists {d} twice: each run directory counts as one seed, list it once")
            seen.add(d.resolve())
        runs = []
        for d in dirs:
            try:
                runs.append(load_run(d))
            except UserError as e:
                raise UserError(f"group {name!r}: {e}; check the path or leave it out") from None
        for run in runs:
            if not run.evals:
                raise UserError(f"group {name!r}: {run.path}/metrics.jsonl has no eval_return yet: "
                                f"leave the run out until it has evaluated")
        out.append(Group(str(name), runs))
    measure = measure_of(out)
    for g in out:
        g.task_key = measure.task_key
        if until is not None:
            g.runs = [r.until(until, measure.x) for r in g.runs]
            for run in g.runs:
                if not run.evals:
                    raise UserError(f"group {g.name!r}: {run.path} has no eval at or before --until {until} "
                                    f"{measure.x_label}: raise --until or leave the run out")
    return out


def measure_of(groups: list[Group]) -> Measure:
    """SCORES when every run is a per-task policy run, RETURNS when none is; a mix is refused."""
    kinds = {is_policy_run(r.config) for g in groups for r in g.runs}
    if kinds == {True, False}:
        policy = next(r.path for g in groups for r in g.runs if is_policy_run(r.config))
        online = next(r.path for g in groups for r in g.runs if not is_policy_run(r.config))
        raise UserError(f"per-task policy runs (e.g. {policy}) and online runs (e.g. {online}) cannot be compared in "
                        f"one report (normalised score over tasks vs eval return): compare each kind alone")
    return SCORES if kinds == {True} else RETURNS


def parse_references(items: Sequence[str]) -> dict[str, float]:
    """`--reference TASK=SCORE ...` -> {task: score}; one clear error per bad item."""
    refs = {}
    for item in items:
        task, sep, score = item.partition("=")
        try:
            value = float(score)
        except ValueError:
            value = math.nan
        if not sep or not task or not math.isfinite(value) or value <= 0:
            raise UserError(f"--reference {item}: give TASK=SCORE with a positive score, e.g. cheetah-run=519")
        refs[task] = value
    return refs


def normalise(groups: list[Group], references: dict[str, float]) -> Measure:
    """Adds `eval_normalised` = eval_return / the run's task's reference to every eval record
    (in memory; metrics.jsonl is not touched) and returns the measure that compares it."""
    if measure_of(groups) is not RETURNS:
        raise UserError("--reference normalises online runs' eval returns; per-task policy runs are compared by "
                        "their normalised score already: leave --reference out")
    for g in groups:
        for run, task in zip(g.runs, g.tasks):
            if task not in references:
                raise UserError(f"--reference has no score for task {task!r} ({run.path}): add {task}=SCORE")
            for r in run.metrics:
                if isinstance(r.get("eval_return"), (int, float)):
                    r["eval_normalised"] = r["eval_return"] / references[task]
    return NORMALISED


# -- statistics -----------------------------------------------------------------------------------
def iqm(x, axis=None):
    """Interquartile mean: the mean of the middle 50 % (scipy.stats.trim_mean(x, 0.25))."""
    return stats.trim_mean(x, 0.25, axis=axis)


def final_return(run: Run, window: int = 1) -> float:
    """Mean eval return of the run's last `window` evaluations."""
    return float(np.mean([ret for _, ret in run.evals[-window:]]))


def final_value(run: Run, measure: Measure, window: int = 1) -> float:
    """Mean of the measure's metric over the run's last `window` evaluations."""
    values = [r[measure.key] for r in run.metrics if isinstance(r.get(measure.key), (int, float))]
    if not values:
        raise UserError(f"{run.path}/metrics.jsonl has no {measure.key}: leave the run out until it has evaluated")
    return float(np.mean(values[-window:]))


def final_x(run: Run, measure: Measure) -> int:
    """The measure's x (env steps, iterations) at the run's last evaluation."""
    return int(next(r.get(measure.x, 0) for r in reversed(run.metrics) if isinstance(r.get(measure.key), (int, float))))


def _strata(values: Sequence[float], labels: Sequence[str]) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {}
    for v, label in zip(values, labels):
        out.setdefault(label, []).append(float(v))
    return {k: np.asarray(v) for k, v in out.items()}


def bootstrap_ci(samples: Sequence[np.ndarray], statistic: Callable[[list[np.ndarray]], np.ndarray],
                 n_resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """95 % percentile CI of `statistic` with each sample (stratum) resampled with replacement
    independently (scipy.stats.bootstrap). `statistic(parts)` gets the samples in their given
    order, each with the resampled runs on the last axis. A one-run stratum stays fixed; with
    no stratum of two or more runs, or no resamples, the interval is (nan, nan)."""
    samples = [np.asarray(s, dtype=float) for s in samples]
    movable = [i for i, s in enumerate(samples) if s.size >= 2]
    if not movable or n_resamples < 1:
        return (math.nan, math.nan)

    def stat(*resampled, axis=-1):
        lead = np.moveaxis(resampled[0], axis, -1).shape[:-1]
        parts = [np.broadcast_to(s, lead + s.shape) for s in samples]
        for i, r in zip(movable, resampled):
            parts[i] = np.moveaxis(r, axis, -1)
        return statistic(parts)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate (all-equal) samples: the interval is the point
        res = stats.bootstrap(tuple(samples[i] for i in movable), stat, n_resamples=n_resamples, batch=1000,
                              vectorized=True, method="percentile", confidence_level=CONFIDENCE, rng=rng)
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def _pooled(fn):
    return lambda parts: fn(np.concatenate(parts, axis=-1), axis=-1)


def probability_of_improvement(x: Sequence[float], y: Sequence[float]) -> float:
    """P(X > Y) + 0.5 P(X = Y) over all pairs of runs: the Mann-Whitney U of x over m*n."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(stats.mannwhitneyu(x, y, alternative="two-sided").statistic / (x.size * y.size))


def _poi_batched(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + 0.5 P(X = Y) over the last axes of x (..., m) and y (..., n), for resamples."""
    xx, yy = x[..., :, None], y[..., None, :]
    return ((xx > yy) + 0.5 * (xx == yy)).mean(axis=(-2, -1))


def welch_t(x, y) -> tuple[float, float]:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        r = stats.ttest_ind(np.asarray(x, float), np.asarray(y, float), equal_var=False)
    return float(r.statistic), float(r.pvalue)


def mann_whitney(x, y) -> tuple[float, float]:
    r = stats.mannwhitneyu(np.asarray(x, float), np.asarray(y, float), alternative="two-sided")
    return float(r.statistic), float(r.pvalue)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *stream])


# -- curves ---------------------------------------------------------------------------------------
@dataclass
class Curve:
    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int

    def as_dict(self) -> dict:
        return {"steps": self.steps.tolist(), "mean": self.mean.tolist(), "low": self.low.tolist(),
                "high": self.high.tolist(), "n": self.n}


def _series(run: Run, key: str, x: str = "env_steps") -> tuple[np.ndarray, np.ndarray] | None:
    pts = {}
    for r in run.metrics:
        v, s = r.get(key), r.get(x)
        if isinstance(v, (int, float)) and s is not None and math.isfinite(v):
            pts[int(s)] = float(v)  # one value per env-step count: the last logged
    if not pts:
        return None
    steps = np.array(sorted(pts))
    return steps, np.array([pts[s] for s in steps])


def curve(runs: Sequence[Run], key: str, smooth=("ema", 0.6), x: str = "env_steps") -> Curve | None:
    """Metric `key` vs `x` (env steps; iterations for policy runs) over runs: each run
    interpolated onto a common grid (the x values logged, from the latest first point to the
    earliest last point, so no run is extrapolated), smoothed per run, then the mean and a 95 %
    t-interval over runs."""
    method, amount = parse_smooth(smooth)
    series = [s for s in (_series(r, key, x) for r in runs) if s is not None]
    if not series:
        return None
    lo, hi = max(s[0][0] for s in series), min(s[0][-1] for s in series)
    if lo > hi:
        return None
    grid = np.unique(np.concatenate([s[0] for s in series]))
    grid = grid[(grid >= lo) & (grid <= hi)].astype(float)
    if grid.size > MAX_GRID:
        grid = np.linspace(lo, hi, MAX_GRID)
    ys = np.stack([smooth_values(np.interp(grid, steps, values), method, amount) for steps, values in series])
    n, mean = ys.shape[0], ys.mean(axis=0)
    if n >= 2:
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * stats.sem(ys, axis=0)
    else:
        half = np.zeros_like(mean)
    return Curve(grid, mean, mean - half, mean + half, n)


def _last(run: Run, key: str) -> float:
    s = _series(run, key) or _series(run, key, "iteration")
    if s is not None:
        return float(s[1][-1])
    vals = [r[key] for r in run.metrics if isinstance(r.get(key), (int, float))]
    return float(vals[-1]) if vals else math.nan


def _nanmean(values) -> float:
    v = np.asarray([x for x in values if math.isfinite(x)], float)
    return float(v.mean()) if v.size else math.nan


# -- aggregate: every number of the comparison ----------------------------------------------------
@dataclass
class Settings:
    """How runs are summarised: smoothing (method, amount), final-return window, bootstrap."""

    smoothing: tuple[str, float]
    final_window: int = 1
    n_bootstrap: int = 10000
    seed: int = 0
    until: int | None = None  # every run as it stood at this many env steps (iterations for policy runs)

    @classmethod
    def checked(cls, smooth=("ema", 0.6), final_window: int = 1, n_bootstrap: int = 10000, seed: int = 0,
                until: int | None = None):
        if int(final_window) < 1:
            raise UserError(f"--final-window {final_window}: use 1 or more evaluations")
        if int(n_bootstrap) < 0:
            raise UserError(f"--bootstrap {n_bootstrap}: use 0 (no intervals) or more resamples, e.g. 10000")
        if until is not None and int(until) < 1:
            raise UserError(f"--until {until}: give the env steps (iterations for policy runs) to cut the runs at, "
                            f"e.g. 25000")
        return cls(parse_smooth(smooth), int(final_window), int(n_bootstrap), int(seed),
                   None if until is None else int(until))

    @property
    def smooth_text(self) -> str:
        method, amount = self.smoothing
        raw = amount == 0 or (method == "window" and amount <= 1)
        return "no smoothing" if raw else f"smoothed per run ({method} {amount:g})"


@dataclass
class Comparison:
    """What `aggregate` computes and the renderers (compare_report) draw."""

    groups: list[Group]
    per_group: dict[str, dict]
    pairs: list[dict]
    curves: dict[str, dict[str, Curve]]
    notes: list[str]
    settings: Settings
    measure: Measure = RETURNS
    multitask: "object | None" = None  # analysis.multitask.MultiTask for per-task policy runs
    esnr_tasks: list | None = None  # analysis.esnr_by_task.TaskESNR per task: ESNR at the steps all runs share


CURVE_KEYS = RETURNS.curve_keys


def aggregate(loaded: list[Group], settings: Settings, measure: Measure | None = None) -> Comparison:
    measure = measure or measure_of(loaded)
    per_group = {g.name: group_summary(g, gi, settings, measure) for gi, g in enumerate(loaded)}
    notes = metrics_notes([r for g in loaded for r in g.runs])
    notes += [n for g in loaded for n in group_notes(g, per_group[g.name], settings.final_window, measure)]
    notes += budget_notes(per_group, measure)
    pairs = []
    for (ia, a), (ib, b) in itertools.combinations(enumerate(loaded), 2):
        pair, note = pair_tests(a, b, per_group, settings, _rng(settings.seed, ia, ib, 2))
        pairs.append(pair)
        notes += [note] if note else []
    curves = {}
    for key in measure.curve_keys:
        cs = {g.name: c for g in loaded if (c := curve(g.runs, key, settings.smoothing, measure.x)) is not None}
        if cs:
            curves[key] = cs
    esnr_tasks, esnr_notes = esnr_by_task(loaded, measure.x, measure.x_label)
    notes += esnr_notes
    multitask = None
    if measure is SCORES:
        from flowpwm.analysis.multitask import multitask_summary

        multitask = multitask_summary(loaded, per_group, settings)
        notes += multitask.notes
    return Comparison(loaded, per_group, pairs, curves, notes, settings, measure, multitask, esnr_tasks)


def group_summary(g: Group, gi: int, s: Settings, measure: Measure = RETURNS) -> dict:
    """Finals (mean, IQM with stratified bootstrap CIs, sd, median), budgets, compute."""
    finals = np.array([final_value(r, measure, s.final_window) for r in g.runs])
    strata = list(_strata(finals, g.tasks).values())
    walls = np.array([_last(r, "wall_time") for r in g.runs]) / 60.0
    walls = walls[np.isfinite(walls)]
    rss = [r.get("rss_mib") for run in g.runs for r in run.metrics if isinstance(r.get("rss_mib"), (int, float))]
    out = {
        "n": g.n, "seeds": g.seeds, "tasks": sorted(set(g.tasks)), "runs": [str(r.path) for r in g.runs],
        "finals": finals.tolist(), "final_steps": [final_x(r, measure) for r in g.runs],
        "mean": float(finals.mean()),
        "mean_ci": bootstrap_ci(strata, _pooled(np.mean), s.n_bootstrap, _rng(s.seed, gi, 0)),
        "iqm": float(iqm(finals)),
        "iqm_ci": bootstrap_ci(strata, _pooled(iqm), s.n_bootstrap, _rng(s.seed, gi, 1)),
        "sd": float(finals.std(ddof=1)) if g.n >= 2 else math.nan,
        "median": float(np.median(finals)),
        "wall_time_min_mean": float(walls.mean()) if walls.size else math.nan,
        "wall_time_min_sd": float(walls.std(ddof=1)) if walls.size >= 2 else math.nan,
        "peak_rss_mib": float(max(rss)) if rss else math.nan,
        "final_esnr_db": _nanmean([_last(r, "esnr_db") for r in g.runs]),
    }
    if measure.x == "env_steps":
        out["final_env_steps"] = out["final_steps"]  # the name compare_runs has always returned
    return out


def group_notes(g: Group, summary: dict, final_window: int, measure: Measure = RETURNS) -> list[str]:
    """Warnings about one group: few or repeated seeds, mixed tasks, unequal budgets."""
    notes, steps = [], summary["final_steps"]
    if measure is SCORES or len(set(g.tasks)) > 1:  # one run per task and seed: seeds repeat across tasks by design
        per_task = {t: g.tasks.count(t) for t in set(g.tasks)}
        if min(per_task.values()) < MIN_SEEDS:
            notes.append(f"warning: group {g.name!r} has {min(per_task.values())} seed(s) of some task: {FEW_SEEDS} "
                         f"(per task)")
        keys = [(t, str(s)) for t, s in zip(g.tasks, g.seeds) if s is not None]
    else:
        if g.n < MIN_SEEDS:
            notes.append(f"warning: group {g.name!r} has {g.n} seed(s): {FEW_SEEDS}")
        keys = [("", str(s)) for s in g.seeds if s is not None]
    dup = sorted({(f"{t} " if t else "") + s for t, s in keys if keys.count((t, s)) > 1})
    if dup:
        notes.append(f"warning: group {g.name!r} repeats seed(s) {', '.join(dup)}: its runs may not be independent")
    if len(set(g.tasks)) > 1 and measure is RETURNS:  # (NORMALISED pools tasks by design)
        notes.append(f"warning: group {g.name!r} mixes tasks ({', '.join(sorted(set(g.tasks)))}): raw returns "
                     f"are pooled across tasks (bootstrap stratified by task)")
    if min(steps) != max(steps):
        notes.append(f"warning: group {g.name!r}: runs end at different {measure.x_label} ({min(steps)}–{max(steps)}); "
                     f"final returns are taken at unequal budgets")
    short = [r.path.name for r in g.runs if len(r.evals) < final_window]
    if short:
        notes.append(f"warning: group {g.name!r}: {', '.join(short)} have fewer than {final_window} evals; "
                     f"their finals average all they have")
    return notes


def budget_notes(per_group: dict[str, dict], measure: Measure = RETURNS) -> list[str]:
    budgets = {name: min(g["final_steps"]) for name, g in per_group.items()}
    if len(set(budgets.values())) <= 1:
        return []
    return [f"warning: groups end at different {measure.x_label} (" + ", ".join(f"{k}: {v}" for k, v in budgets.items())
            + "): final performance is compared at unequal budgets"]


def pair_tests(a: Group, b: Group, per_group: dict[str, dict], s: Settings,
               rng: np.random.Generator) -> tuple[dict, str | None]:
    """Welch, Mann-Whitney and P(a > b) per task (averaged) with its bootstrap CI; a note when
    the groups cover different tasks (then all runs are pooled)."""
    x, y = np.array(per_group[a.name]["finals"]), np.array(per_group[b.name]["finals"])
    sx, sy = _strata(x, a.tasks), _strata(y, b.tasks)
    note = None
    if set(sx) == set(sy):
        xs, ys = [sx[t] for t in sorted(sx)], [sy[t] for t in sorted(sx)]
    else:
        note = (f"warning: groups {a.name!r} and {b.name!r} cover different tasks: the probability of "
                f"improvement pools all their runs")
        xs, ys = [x], [y]
    k = len(xs)
    poi = float(np.mean([probability_of_improvement(p, q) for p, q in zip(xs, ys)]))
    poi_ci = bootstrap_ci(xs + ys, lambda parts: np.mean([_poi_batched(parts[j], parts[k + j]) for j in range(k)],
                                                         axis=0), s.n_bootstrap, rng)
    t, tp = welch_t(x, y)
    u, up = mann_whitney(x, y)
    return ({"x": a.name, "y": b.name, "n_x": a.n, "n_y": b.n, "welch_t": t, "welch_p": tp, "mannwhitney_u": u,
             "mannwhitney_p": up, "prob_improvement": poi, "prob_improvement_ci": poi_ci}, note)


# -- the pipeline ---------------------------------------------------------------------------------
def compare_runs(groups: dict[str, list[Path]], out_dir: Path | str = "comparison", smooth=("ema", 0.6),
                 final_window: int = 1, n_bootstrap: int = 10000, seed: int = 0, until: int | None = None,
                 extra_sections: Sequence[tuple[str, str]] = ()) -> dict:
    """Load the run directories of each group, aggregate, and write the report into `out_dir`.

    `extra_sections`: (title, markdown) pairs appended to report.md / report.html (the hook
    for e.g. a world-model diagnostics table). Returns the numbers: `groups` (per group: n,
    seeds, finals, mean, mean_ci, iqm, iqm_ci, sd, final_env_steps, wall time, peak memory,
    final ESNR dB), `pairs` (per pair of groups: Welch t/p, Mann-Whitney U/p, probability of
    improvement and its CI), `curves`, `esnr_by_task` (per task: each group's ESNR at the steps
    all runs share, and the pairs' differences), `warnings`, `files`."""
    from flowpwm.analysis.compare_report import write_report

    settings = Settings.checked(smooth, final_window, n_bootstrap, seed, until)
    c = aggregate(load_groups(groups, settings.until), settings)
    files = write_report(c, Path(out_dir), extra_sections)
    return {"groups": c.per_group, "pairs": c.pairs, "measure": c.measure.key,
            "curves": {k: {g: cv.as_dict() for g, cv in cs.items()} for k, cs in c.curves.items()},
            "multitask": c.multitask.as_dict() if c.multitask is not None else None,
            "esnr_by_task": [t.as_dict() for t in c.esnr_tasks or []],
            "warnings": c.notes, "files": files, "out_dir": Path(out_dir)}


# -- command line ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    groups = _groups(args)
    settings = Settings.checked(args.smooth, args.final_window, args.bootstrap, args.seed, args.until)
    references = parse_references(args.reference or [])
    loaded = load_groups(groups, settings.until)  # a run that cannot be compared stops here
    c = aggregate(loaded, settings, normalise(loaded, references) if references else None)
    extra = []
    with_checkpoints = any(RunDir(d).has_checkpoint() for dirs in groups.values() for d in dirs)
    # Diagnostics load models (only then is torch imported); policy runs keep no replay data.
    # They read a run's last checkpoint, which --until would not match.
    wants_diagnostics = args.diagnose_slices > 0 and with_checkpoints and c.measure is not SCORES
    if wants_diagnostics and settings.until is not None:
        c.notes.append(f"note: no world-model diagnostics with --until: they read each run's last checkpoint, "
                       f"not its state at {settings.until} {c.measure.x_label}")
    elif wants_diagnostics:
        from flowpwm.analysis.diagnostics import group_table

        table = group_table(groups, slices=args.diagnose_slices, seed=args.seed)
        if table:
            extra.append(("World-model diagnostics", table))
    from flowpwm.analysis.compare_report import write_report

    files = write_report(c, args.out, extra)
    _print_summary(c)
    more = ", per_task.csv, performance_profile.png" if c.multitask is not None else ""
    more = (", esnr_by_task.csv" if c.esnr_tasks else "") + more
    print(f"report: {files['report.md']} (also report.html, summary.csv, tests.csv{more})")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowpwm compare", description="Compare groups of training runs over seeds: "
                                "learning curves, final performance (mean, IQM, bootstrap CIs), pairwise tests, "
                                "ESNR, world-model loss, wall time, memory.")
    p.add_argument("--group", nargs="+", action="append", metavar=("NAME", "RUN_DIR"),
                   help="a group name then its run directories; repeat per group")
    p.add_argument("--by", nargs="+", metavar=("KEY", "RUN_DIR"),
                   help="group run directories by a dotted config key, e.g. --by alg.world_model.type runs/*")
    p.add_argument("--smooth", default="ema:0.6", help="ema:W (weight on the past, [0, 1)), window:N or none "
                   "(default ema:0.6)")
    p.add_argument("--final-window", type=int, default=1, metavar="K",
                   help="final return = mean of the last K evals (default 1)")
    p.add_argument("--until", type=int, metavar="STEPS",
                   help="compare every run as it stood at STEPS env steps (iterations for policy runs): a screen "
                        "against the same seeds' longer runs, or groups of unequal budgets at the shortest")
    p.add_argument("--bootstrap", type=int, default=10000, metavar="N", help="bootstrap resamples (default 10000)")
    p.add_argument("--reference", nargs="+", metavar="TASK=SCORE",
                   help="compare eval return / SCORE of each run's task (e.g. TD-MPC2's return at the same "
                        "budget: cheetah-run=519 finger-spin=948); every task needs one")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--out", type=Path, default=Path("comparison"), help="output directory (default comparison/)")
    p.add_argument("--diagnose-slices", type=int, default=256, metavar="N",
                   help="world-model diagnostics of runs with checkpoints on N replay slices (0 = skip; torch is "
                        "imported only for these)")
    return p


def _groups(args) -> dict[str, list[Path]]:
    if bool(args.group) == bool(args.by):
        raise UserError("give either --group NAME RUN_DIR... (repeatable) or --by KEY RUN_DIR..., "
                        + ("not both" if args.group else "one of them"))
    if args.by:
        key, *dirs = args.by
        if not dirs:
            raise UserError(f"--by {key} names no run directory: give KEY then the run directories")
        return group_by(key, dirs)
    groups = {}
    for name, *dirs in args.group:
        if name in groups:
            raise UserError(f"--group {name} is given twice: use one --group per name")
        if not dirs:
            raise UserError(f"--group {name} names no run directory: give NAME then its run directories")
        groups[name] = [Path(d) for d in dirs]
    return groups


def _print_summary(c: Comparison) -> None:
    for note in c.notes:
        print(note)
    width = max(len(n) for n in c.per_group)
    what = f"{c.measure.label} over {len({t for g in c.groups for t in g.tasks})} tasks x seeds: " \
        if c.measure in (SCORES, NORMALISED) else ""
    digits = 3 if c.measure in (SCORES, NORMALISED) else 1
    for name, g in c.per_group.items():
        print(f"{name:<{width}}  n={g['n']:<3d} {what}mean {fmt_ci(g['mean'], g['mean_ci'], digits)}  "
              f"IQM {fmt_ci(g['iqm'], g['iqm_ci'], digits)}")
    for pr in c.pairs:
        print(f"{pr['x']} vs {pr['y']}: Welch p={fmt_general(pr['welch_p'])}, Mann-Whitney p={fmt_general(pr['mannwhitney_p'])}, "
              f"P({pr['x']} > {pr['y']})={fmt_ci(pr['prob_improvement'], pr['prob_improvement_ci'], 2)}")

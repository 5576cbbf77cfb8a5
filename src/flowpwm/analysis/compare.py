"""Compare groups of training runs over seeds (`flowpwm compare`).

Per group: eval-return learning curves on a common env-step grid (mean and a 95 % t-interval
over seeds), final performance (mean and IQM with 95 % stratified percentile-bootstrap CIs),
ESNR and world-model loss curves, wall time and peak memory. Between each pair of groups:
Welch's t-test, Mann-Whitney U and the probability of improvement with a bootstrap CI.
Writes report.md, a self-contained report.html, summary.csv, tests.csv and PNG figures.

Statistics follow rliable (Agarwal et al., 2021): IQM = mean of the middle 50 % of runs
(scipy.stats.trim_mean(x, 0.25)); the bootstrap resamples runs with replacement
independently within each stratum (here: each env.task) and takes percentile intervals;
P(X > Y) = P(X > Y) + 0.5 P(X = Y) over all pairs of runs, averaged over tasks.
"""

from __future__ import annotations

import argparse
import io
import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from flowpwm.analysis.report import csv_text, fmt_ci, fmt_general, fmt_number, markdown_to_html, md_table
from flowpwm.analysis.runs import Run, load_run
from flowpwm.analysis.smoothing import parse_smooth, smooth as smooth_values
from flowpwm.config import UserError
from flowpwm.fileio import atomic_open, atomic_write_text

MIN_SEEDS = 5
FEW_SEEDS = "results with n<5 seeds per group are indicative only"
CONFIDENCE = 0.95
MAX_GRID = 400  # points of a learning-curve grid at most
TASK_KEY = "env.task"


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

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> list:
        return [_config_get(r.config, "seed") for r in self.runs]

    @property
    def tasks(self) -> list[str]:
        return [str(_config_get(r.config, TASK_KEY, "?")) for r in self.runs]


def load_groups(groups: dict[str, Sequence[Path | str]]) -> list[Group]:
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
    return out


# -- statistics -----------------------------------------------------------------------------------
def iqm(x, axis=None):
    """Interquartile mean: the mean of the middle 50 % (scipy.stats.trim_mean(x, 0.25))."""
    return stats.trim_mean(x, 0.25, axis=axis)


def final_return(run: Run, window: int = 1) -> float:
    """Mean eval return of the run's last `window` evaluations."""
    return float(np.mean([ret for _, ret in run.evals[-window:]]))


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


def _series(run: Run, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    pts = {}
    for r in run.metrics:
        v, s = r.get(key), r.get("env_steps")
        if isinstance(v, (int, float)) and s is not None and math.isfinite(v):
            pts[int(s)] = float(v)  # one value per env-step count: the last logged
    if not pts:
        return None
    steps = np.array(sorted(pts))
    return steps, np.array([pts[s] for s in steps])


def curve(runs: Sequence[Run], key: str, smooth=("ema", 0.6)) -> Curve | None:
    """Metric `key` vs env steps over runs: each run interpolated onto a common grid (the
    env steps logged, from the latest first point to the earliest last point, so no run is
    extrapolated), smoothed per run, then the mean and a 95 % t-interval over runs."""
    method, amount = parse_smooth(smooth)
    series = [s for s in (_series(r, key) for r in runs) if s is not None]
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
    s = _series(run, key)
    if s is not None:
        return float(s[1][-1])
    vals = [r[key] for r in run.metrics if isinstance(r.get(key), (int, float))]
    return float(vals[-1]) if vals else math.nan


def _nanmean(values) -> float:
    v = np.asarray([x for x in values if math.isfinite(x)], float)
    return float(v.mean()) if v.size else math.nan


# -- figures --------------------------------------------------------------------------------------
def _new_figure(width=7.0, height=4.2):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _curve_figure(curves: dict[str, Curve], ylabel: str, title: str, logy: bool = False) -> bytes:
    fig, ax = _new_figure()
    for i, (name, c) in enumerate(curves.items()):
        color = f"C{i % 10}"
        ax.plot(c.steps, c.mean, color=color, label=f"{name} (n={c.n})")
        if c.n >= 2:
            ax.fill_between(c.steps, c.low, c.high, color=color, alpha=0.2, linewidth=0)
    if logy and all(np.all(c.low > 0) for c in curves.values()):
        ax.set_yscale("log")
    ax.set_xlabel("env steps")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def _finals_figure(stats_by_group: dict[str, dict]) -> bytes:
    names = list(stats_by_group)
    fig, ax = _new_figure(height=1.2 + 0.8 * len(names))
    for i, name in enumerate(names):
        g, color = stats_by_group[name], f"C{i % 10}"
        finals = np.asarray(g["finals"])
        jitter = np.linspace(-0.08, 0.08, finals.size) if finals.size > 1 else np.zeros(1)
        ax.scatter(finals, i + jitter, color=color, alpha=0.6, s=18, label="runs" if i == 0 else None)
        for offset, key, marker, label in ((0.25, "iqm", "D", "IQM"), (-0.25, "mean", "o", "mean")):
            lo, hi = g[f"{key}_ci"]
            err = None if math.isnan(lo) else [[g[key] - lo], [hi - g[key]]]
            ax.errorbar([g[key]], [i + offset], xerr=err, fmt=marker, color=color, capsize=4,
                        mfc="white" if key == "mean" else color, label=f"{label} ± 95 % CI" if i == 0 else None)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlabel("final eval return")
    ax.set_title("Final performance per run, IQM and mean (95 % bootstrap CI)")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(loc="best", fontsize="small")
    return _png(fig)


# -- report rendering -----------------------------------------------------------------------------
# -- the comparison -------------------------------------------------------------------------------
def compare_runs(groups: dict[str, list[Path]], out_dir: Path | str = "comparison", smooth=("ema", 0.6),
                 final_window: int = 1, n_bootstrap: int = 10000, seed: int = 0,
                 extra_sections: Sequence[tuple[str, str]] = ()) -> dict:
    """Compare groups of run directories; write the report into `out_dir`.

    `extra_sections`: (title, markdown) pairs appended to report.md / report.html (the hook
    for e.g. a world-model diagnostics table). Returns the numbers: `groups` (per group: n,
    seeds, finals, mean, mean_ci, iqm, iqm_ci, sd, final_env_steps, wall time, peak memory,
    final ESNR dB), `pairs` (per pair of groups: Welch t/p, Mann-Whitney U/p, probability of
    improvement and its CI), `curves`, `warnings`, `files`."""
    smoothing = parse_smooth(smooth)
    if int(final_window) < 1:
        raise UserError(f"--final-window {final_window}: use 1 or more evaluations")
    if int(n_bootstrap) < 0:
        raise UserError(f"--bootstrap {n_bootstrap}: use 0 (no intervals) or more resamples, e.g. 10000")
    final_window, n_bootstrap = int(final_window), int(n_bootstrap)
    loaded = load_groups(groups)
    out_dir = Path(out_dir)
    notes: list[str] = []

    # Per group: finals and summary numbers.
    per_group: dict[str, dict] = {}
    for gi, g in enumerate(loaded):
        finals = np.array([final_return(r, final_window) for r in g.runs])
        strata = _strata(finals, g.tasks)
        final_steps = [r.evals[-1][0] for r in g.runs]
        walls = np.array([_last(r, "wall_time") for r in g.runs]) / 60.0
        walls = walls[np.isfinite(walls)]
        rss = [r.get("rss_mib") for run in g.runs for r in run.metrics if isinstance(r.get("rss_mib"), (int, float))]
        per_group[g.name] = {
            "n": g.n, "seeds": g.seeds, "tasks": sorted(set(g.tasks)), "runs": [str(r.path) for r in g.runs],
            "finals": finals.tolist(), "final_env_steps": final_steps,
            "mean": float(finals.mean()),
            "mean_ci": bootstrap_ci(list(strata.values()), _pooled(np.mean), n_bootstrap, _rng(seed, gi, 0)),
            "iqm": float(iqm(finals)),
            "iqm_ci": bootstrap_ci(list(strata.values()), _pooled(iqm), n_bootstrap, _rng(seed, gi, 1)),
            "sd": float(finals.std(ddof=1)) if g.n >= 2 else math.nan,
            "median": float(np.median(finals)),
            "wall_time_min_mean": float(walls.mean()) if walls.size else math.nan,
            "wall_time_min_sd": float(walls.std(ddof=1)) if walls.size >= 2 else math.nan,
            "peak_rss_mib": float(max(rss)) if rss else math.nan,
            "final_esnr_db": _nanmean([_last(r, "esnr_db") for r in g.runs]),
        }
        if g.n < MIN_SEEDS:
            notes.append(f"warning: group {g.name!r} has {g.n} seed(s): {FEW_SEEDS}")
        dup = sorted({str(s) for s in g.seeds if s is not None and g.seeds.count(s) > 1})
        if dup:
            notes.append(f"warning: group {g.name!r} repeats seed(s) {', '.join(dup)}: its runs may not be independent")
        if len(set(g.tasks)) > 1:
            notes.append(f"warning: group {g.name!r} mixes tasks ({', '.join(sorted(set(g.tasks)))}): raw returns "
                         f"are pooled across tasks (bootstrap stratified by task)")
        if min(final_steps) != max(final_steps):
            notes.append(f"warning: group {g.name!r}: runs end at different env steps ({min(final_steps)}"
                         f"–{max(final_steps)}); final returns are taken at unequal budgets")
        short = [r.path.name for r in g.runs if len(r.evals) < final_window]
        if short:
            notes.append(f"warning: group {g.name!r}: {', '.join(short)} have fewer than {final_window} evals; "
                         f"their finals average all they have")
    budgets = {g.name: min(per_group[g.name]["final_env_steps"]) for g in loaded}
    if len(set(budgets.values())) > 1:
        notes.append("warning: groups end at different env steps (" + ", ".join(f"{k}: {v}" for k, v in budgets.items())
                     + "): final performance is compared at unequal budgets")

    # Pairwise tests.
    pairs = []
    for (ia, a), (ib, b) in itertools.combinations(enumerate(loaded), 2):
        x, y = np.array(per_group[a.name]["finals"]), np.array(per_group[b.name]["finals"])
        sx, sy = _strata(x, a.tasks), _strata(y, b.tasks)
        if set(sx) == set(sy):
            tasks = sorted(sx)
            xs, ys = [sx[t] for t in tasks], [sy[t] for t in tasks]
        else:
            notes.append(f"warning: groups {a.name!r} and {b.name!r} cover different tasks: the probability "
                         f"of improvement pools all their runs")
            xs, ys = [x], [y]
        k = len(xs)
        poi = float(np.mean([probability_of_improvement(p, q) for p, q in zip(xs, ys)]))
        poi_ci = bootstrap_ci(xs + ys, lambda parts, k=k: np.mean([_poi_batched(parts[j], parts[k + j])
                                                                   for j in range(k)], axis=0),
                              n_bootstrap, _rng(seed, ia, ib, 2))
        t, tp = welch_t(x, y)
        u, up = mann_whitney(x, y)
        pairs.append({"x": a.name, "y": b.name, "n_x": a.n, "n_y": b.n, "welch_t": t, "welch_p": tp,
                      "mannwhitney_u": u, "mannwhitney_p": up, "prob_improvement": poi, "prob_improvement_ci": poi_ci})

    # Curves.
    curves: dict[str, dict[str, Curve]] = {}
    for key in ("eval_return", "esnr_db", "wm_loss"):
        cs = {g.name: c for g in loaded if (c := curve(g.runs, key, smoothing)) is not None}
        if cs:
            curves[key] = cs

    # Figures.
    images: dict[str, bytes] = {"final_returns.png": _finals_figure(per_group)}
    smooth_text = "no smoothing" if smoothing[1] == 0 or (smoothing[0] == "window" and smoothing[1] <= 1) \
        else f"smoothed per run ({smoothing[0]} {smoothing[1]:g})"
    if "eval_return" in curves:
        images["learning_curves.png"] = _curve_figure(curves["eval_return"], "eval return",
                                                      f"Eval return (mean, 95 % t-interval; {smooth_text})")
    if "esnr_db" in curves:
        images["esnr_db.png"] = _curve_figure(curves["esnr_db"], "ESNR (dB)",
                                              f"Actor-gradient ESNR (mean, 95 % t-interval; {smooth_text})")
    if "wm_loss" in curves:
        images["wm_loss.png"] = _curve_figure(curves["wm_loss"], "world-model loss",
                                              f"World-model loss (mean, 95 % t-interval; {smooth_text})", logy=True)

    md = _report_markdown(loaded, per_group, pairs, curves, images, notes, smooth_text, final_window,
                          n_bootstrap, seed, extra_sections)
    summary_csv = csv_text(
        ["group", "n", "seeds", "tasks", "final_env_steps_min", "final_env_steps_max", "mean", "mean_ci_low",
         "mean_ci_high", "iqm", "iqm_ci_low", "iqm_ci_high", "sd", "median", "wall_time_min_mean",
         "wall_time_min_sd", "peak_rss_mib", "final_esnr_db"],
        [[name, g["n"], " ".join(str(s) for s in g["seeds"]), " ".join(g["tasks"]), min(g["final_env_steps"]),
          max(g["final_env_steps"]), g["mean"], *g["mean_ci"], g["iqm"], *g["iqm_ci"], g["sd"], g["median"],
          g["wall_time_min_mean"], g["wall_time_min_sd"], g["peak_rss_mib"], g["final_esnr_db"]]
         for name, g in per_group.items()])
    tests_csv = csv_text(
        ["x", "y", "n_x", "n_y", "welch_t", "welch_p", "mannwhitney_u", "mannwhitney_p", "prob_improvement",
         "prob_improvement_ci_low", "prob_improvement_ci_high"],
        [[p["x"], p["y"], p["n_x"], p["n_y"], p["welch_t"], p["welch_p"], p["mannwhitney_u"], p["mannwhitney_p"],
          p["prob_improvement"], *p["prob_improvement_ci"]] for p in pairs])

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, data in images.items():
        with atomic_open(out_dir / name) as f:
            f.write(data)
        files[name] = out_dir / name
    for name, text in (("summary.csv", summary_csv), ("tests.csv", tests_csv), ("report.md", md),
                       ("report.html", markdown_to_html(md, images))):
        files[name] = atomic_write_text(out_dir / name, text)
    return {"groups": per_group, "pairs": pairs,
            "curves": {k: {g: c.as_dict() for g, c in cs.items()} for k, cs in curves.items()},
            "warnings": notes, "files": files, "out_dir": out_dir}


def _report_markdown(loaded, per_group, pairs, curves, images, notes, smooth_text, final_window, n_bootstrap,
                     seed, extra_sections) -> str:
    names = ", ".join(f"**{g.name}** (n={g.n})" for g in loaded)
    s = ["# Run comparison", "", f"Groups: {names}.", ""]
    s += [f"> {n}" for n in notes]
    s += ["", "## Final performance", "",
          (f"Final return of a run: the mean of its last {final_window} eval returns. " if final_window > 1 else
           "Final return of a run: its last eval return. ") + f"IQM: interquartile mean "
          f"(mean of the middle 50 % of runs, `scipy.stats.trim_mean(x, 0.25)`). Intervals: 95 % percentile "
          f"bootstrap over runs, stratified by `{TASK_KEY}` ({n_bootstrap} resamples, seed {seed}).", ""]
    s.append(md_table(["group", "n", "seeds", "final env steps", "mean [95 % CI]", "IQM [95 % CI]", "sd", "median",
                     "per-run finals"],
                    [[name, g["n"], ", ".join(str(x) for x in g["seeds"]), _steps_text(g["final_env_steps"]),
                      fmt_ci(g["mean"], g["mean_ci"]), fmt_ci(g["iqm"], g["iqm_ci"]), fmt_number(g["sd"]), fmt_number(g["median"]),
                      ", ".join(fmt_number(v) for v in g["finals"])] for name, g in per_group.items()]))
    s += ["", "![Final performance per run with IQM and mean](final_returns.png)", ""]
    s += ["## Pairwise comparisons", ""]
    if pairs:
        s += [("Welch's t-test (unequal variances) and Mann–Whitney U (two-sided) on the final returns; "
               "P(X > Y) = P(X > Y) + 0.5 P(X = Y) over all pairs of runs (per task, then averaged), "
               "with a 95 % percentile bootstrap CI resampling each group's runs independently."), ""]
        s.append(md_table(["X", "Y", "n X / n Y", "Welch t", "Welch p", "Mann–Whitney U", "MW p", "P(X > Y) [95 % CI]"],
                        [[p["x"], p["y"], f"{p['n_x']} / {p['n_y']}", fmt_number(p["welch_t"], 2), fmt_general(p["welch_p"]),
                          fmt_number(p["mannwhitney_u"], 1), fmt_general(p["mannwhitney_p"]),
                          fmt_ci(p["prob_improvement"], p["prob_improvement_ci"], 2)] for p in pairs]))
    else:
        s.append("One group only: no pairwise tests.")
    band = ("Each run is interpolated onto a common env-step grid that ends at the group's shortest run's last "
            f"point, {smooth_text}; line: mean over seeds, band: 95 % t-interval over seeds.")
    for key, title, image in (("eval_return", "Learning curves", "learning_curves.png"),
                              ("esnr_db", "ESNR of the actor gradient", "esnr_db.png"),
                              ("wm_loss", "World-model loss", "wm_loss.png")):
        if key in curves:
            ends = ", ".join(f"{g}: {int(c.steps[-1])} steps (n={c.n})" for g, c in curves[key].items())
            s += ["", f"## {title}", "", f"`{key}` vs env steps. {band} Grid ends: {ends}.", "",
                  f"![{title}]({image})"]
    s += ["", "## Compute", "",
          md_table(["group", "wall time (min), mean ± sd", "peak RSS (MiB)", "final ESNR (dB)"],
                 [[name, f"{fmt_number(g['wall_time_min_mean'], 2)} ± {fmt_number(g['wall_time_min_sd'], 2)}", fmt_number(g["peak_rss_mib"], 0),
                   fmt_number(g["final_esnr_db"], 2)] for name, g in per_group.items()])]
    s += ["", "## Runs", "",
          md_table(["group", "run", "seed", "task", "world model", "final env steps", "final return"],
                 [[g.name, r.path, _config_get(r.config, "seed", "–"), _config_get(r.config, TASK_KEY, "–"),
                   _config_get(r.config, "alg.world_model.type", "–"), r.evals[-1][0],
                   fmt_number(per_group[g.name]["finals"][j])] for g in loaded for j, r in enumerate(g.runs)])]
    for title, body in extra_sections:
        s += ["", f"## {title}", "", body.rstrip()]
    return "\n".join(s) + "\n"


def _steps_text(steps: Sequence[int]) -> str:
    return str(min(steps)) if min(steps) == max(steps) else f"{min(steps)}–{max(steps)}"


# -- command line ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
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
    p.add_argument("--bootstrap", type=int, default=10000, metavar="N", help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--out", type=Path, default=Path("comparison"), help="output directory (default comparison/)")
    p.add_argument("--diagnose-slices", type=int, default=256, metavar="N",
                   help="world-model diagnostics of runs with checkpoints on N replay slices (0 = skip)")
    args = p.parse_args(argv)
    if bool(args.group) == bool(args.by):
        raise UserError("give either --group NAME RUN_DIR... (repeatable) or --by KEY RUN_DIR..., "
                        + ("not both" if args.group else "one of them"))
    if args.by:
        key, *dirs = args.by
        if not dirs:
            raise UserError(f"--by {key} names no run directory: give KEY then the run directories")
        groups = group_by(key, dirs)
    else:
        groups = {}
        for name, *dirs in args.group:
            if name in groups:
                raise UserError(f"--group {name} is given twice: use one --group per name")
            if not dirs:
                raise UserError(f"--group {name} names no run directory: give NAME then its run directories")
            groups[name] = [Path(d) for d in dirs]
    extra = []
    if args.diagnose_slices > 0:
        from flowpwm.analysis.diagnostics import group_table

        table = group_table(groups, slices=args.diagnose_slices, seed=args.seed)
        if table:
            extra.append(("World-model diagnostics", table))
    result = compare_runs(groups, args.out, smooth=args.smooth, final_window=args.final_window,
                          n_bootstrap=args.bootstrap, seed=args.seed, extra_sections=extra)
    for note in result["warnings"]:
        print(note)
    width = max(len(n) for n in result["groups"])
    for name, g in result["groups"].items():
        print(f"{name:<{width}}  n={g['n']:<3d} mean {fmt_ci(g['mean'], g['mean_ci'])}  IQM {fmt_ci(g['iqm'], g['iqm_ci'])}")
    for pr in result["pairs"]:
        print(f"{pr['x']} vs {pr['y']}: Welch p={fmt_general(pr['welch_p'])}, Mann-Whitney p={fmt_general(pr['mannwhitney_p'])}, "
              f"P({pr['x']} > {pr['y']})={fmt_ci(pr['prob_improvement'], pr['prob_improvement_ci'], 2)}")
    print(f"report: {result['files']['report.md']} (also report.html, summary.csv, tests.csv)")
    return 0

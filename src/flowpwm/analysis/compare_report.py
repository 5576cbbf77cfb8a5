"""Rendering of a run comparison (`compare.aggregate`'s result): figures, report.md,
a self-contained report.html, summary.csv, tests.csv, esnr_by_task.csv (for per-task policy
runs also per_task.csv and performance_profile.png). Each section is a short function."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flowpwm.analysis.report import csv_text, fmt_ci, fmt_general, fmt_number, markdown_to_html, md_table
from flowpwm.fileio import atomic_open, atomic_write_text

if TYPE_CHECKING:
    from flowpwm.analysis.compare import Comparison, Curve
    from flowpwm.analysis.multitask import MultiTask, Profile

CURVE_FIGURES = {  # metric: (file, y label, title, log y, report heading)
    "eval_return": ("learning_curves.png", "eval return", "Eval return", False, "Learning curves"),
    "eval_score": ("learning_curves.png", "normalised score", "Normalised score", False, "Learning curves"),
    "eval_normalised": ("learning_curves.png", "eval return / reference", "Normalised return", False,
                        "Learning curves"),
    "esnr_db": ("esnr_db.png", "ESNR (dB)", "Actor-gradient ESNR", False, "ESNR of the actor gradient"),
    "wm_loss": ("wm_loss.png", "world-model loss", "World-model loss", True, "World-model loss"),
}


def write_report(c: "Comparison", out_dir: Path, extra_sections: Sequence[tuple[str, str]] = ()) -> dict:
    """Every output file of the comparison, written atomically; returns name -> path."""
    images = figures(c)
    md = report_markdown(c, extra_sections)
    texts = {"summary.csv": summary_csv(c), "tests.csv": tests_csv(c), "report.md": md,
             "report.html": markdown_to_html(md, images)}
    if c.multitask is not None:
        texts["per_task.csv"] = per_task_csv(c.multitask)
    if c.esnr_tasks:
        texts["esnr_by_task.csv"] = esnr_by_task_csv(c)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, data in images.items():
        with atomic_open(out_dir / name) as f:
            f.write(data)
        files[name] = out_dir / name
    for name, text in texts.items():
        files[name] = atomic_write_text(out_dir / name, text)
    return files


# -- figures --------------------------------------------------------------------------------------
def figures(c: "Comparison") -> dict[str, bytes]:
    images = {"final_returns.png": finals_figure(c.per_group, f"final {c.measure.label}")}
    for key, (name, ylabel, title, logy, _) in CURVE_FIGURES.items():
        if key in c.curves:
            images[name] = curve_figure(c.curves[key], ylabel, f"{title} (mean, 95 % t-interval; "
                                                                 f"{c.settings.smooth_text})", logy, c.measure.x_label)
    if c.multitask is not None:
        images["performance_profile.png"] = profile_figure(c.multitask.profiles)
    return images


def _new_figure(width=7.0, height=4.2):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def curve_figure(curves: dict[str, "Curve"], ylabel: str, title: str, logy: bool = False,
                 xlabel: str = "env steps") -> bytes:
    fig, ax = _new_figure()
    for i, (name, cv) in enumerate(curves.items()):
        color = f"C{i % 10}"
        ax.plot(cv.steps, cv.mean, color=color, label=f"{name} (n={cv.n})")
        if cv.n >= 2:
            ax.fill_between(cv.steps, cv.low, cv.high, color=color, alpha=0.2, linewidth=0)
    if logy and all(np.all(cv.low > 0) for cv in curves.values()):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def finals_figure(per_group: dict[str, dict], xlabel: str = "final eval return") -> bytes:
    names = list(per_group)
    fig, ax = _new_figure(height=1.2 + 0.8 * len(names))
    for i, name in enumerate(names):
        g, color = per_group[name], f"C{i % 10}"
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
    ax.set_xlabel(xlabel)
    ax.set_title("Final performance per run, IQM and mean (95 % bootstrap CI)")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(loc="best", fontsize="small")
    return _png(fig)


def profile_figure(profiles: dict[str, "Profile"]) -> bytes:
    fig, ax = _new_figure()
    for i, (name, p) in enumerate(profiles.items()):
        color = f"C{i % 10}"
        ax.plot(p.taus, p.fraction, color=color, label=f"{name} ({p.n} runs)", drawstyle="steps-post")
        if not np.all(np.isnan(p.low)):
            ax.fill_between(p.taus, p.low, p.high, color=color, alpha=0.2, linewidth=0, step="post")
    ax.set_xlabel("normalised score τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Performance profile (95 % stratified bootstrap band)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


# -- report.md ------------------------------------------------------------------------------------
def report_markdown(c: "Comparison", extra_sections: Sequence[tuple[str, str]] = ()) -> str:
    parts = [md_header(c), md_finals(c), md_multitask(c), md_pairs(c), md_esnr_by_task(c), md_curves(c), md_compute(c),
             md_runs(c)]
    parts += [f"## {title}\n\n{body.rstrip()}" for title, body in extra_sections]
    return "\n\n".join(p for p in parts if p) + "\n"


def md_header(c: "Comparison") -> str:
    names = ", ".join(f"**{g.name}** (n={g.n})" for g in c.groups)
    return "\n".join(["# Run comparison", "", f"Groups: {names}.", *(["", *[f"> {n}" for n in c.notes]]
                                                                      if c.notes else [])])


def md_finals(c: "Comparison") -> str:
    s, m = c.settings, c.measure
    d = _digits(c)
    how = (f"Final {m.label} of a run: the mean of its last {s.final_window} evaluations. " if s.final_window > 1 else
           f"Final {m.label} of a run: its last evaluation. ")
    if s.until is not None:
        how = f"Every run as it stood at {s.until} {m.x_label} (`--until`). " + how
    if c.multitask is not None:
        how += (f"Per-task policy runs: the {m.label} (`{m.key}`: dm_control return / 1000) of every task and seed "
                f"pooled ({len(c.multitask.tasks)} tasks). ")
    how += (f"IQM: interquartile mean (mean of the middle 50 % of runs, `scipy.stats.trim_mean(x, 0.25)`). "
            f"Intervals: 95 % percentile bootstrap over runs, stratified by `{m.task_key}` ({s.n_bootstrap} "
            f"resamples, seed {s.seed}).")
    table = md_table(["group", "n", "seeds", f"final {m.x_label}", "mean [95 % CI]", "IQM [95 % CI]", "sd", "median",
                      "per-run finals"],
                     [[name, g["n"], ", ".join(str(x) for x in sorted(set(g["seeds"]), key=str)),
                       _steps_text(g["final_steps"]), fmt_ci(g["mean"], g["mean_ci"], d), fmt_ci(g["iqm"], g["iqm_ci"], d),
                       fmt_number(g["sd"], d), fmt_number(g["median"], d), ", ".join(fmt_number(v, d) for v in g["finals"])]
                      for name, g in c.per_group.items()])
    return "\n\n".join(["## Final performance", how, table,
                        "![Final performance per run with IQM and mean](final_returns.png)"])


def _digits(c: "Comparison") -> int:
    """Decimals of final values: raw returns (hundreds) 1, normalised ones (around 1) 3."""
    return 1 if c.measure.key == "eval_return" else 3


def md_multitask(c: "Comparison") -> str:
    if c.multitask is None:
        return ""
    mt, names = c.multitask, list(c.per_group)
    ref = bool(mt.reference)
    head = ["task", *[f"{n}: mean ± sd (n)" for n in names]] + (["data (online run)", *[f"{n} / data" for n in names]]
                                                                 if ref else [])
    rows = []
    for task in mt.tasks:
        cells = [_task_cell(mt.per_task[task].get(n)) for n in names]
        if ref:
            r = mt.reference.get(task, math.nan)
            cells += [fmt_number(r, 3)] + [fmt_number(mt.per_task[task][n]["mean"] / r, 2)
                                           if n in mt.per_task[task] and r > 0 else "–" for n in names]
        rows.append([task, *cells])
    how = ("Per task: the mean, sd and number of the runs' final normalised scores." +
           (" Data: the final eval return / 1000 of the online run(s) whose replay buffers made that task's data "
            "(`flowpwm data export`); the ratio is the policies' mean over it." if ref else ""))
    profile = ("Performance profile: the fraction of all runs (tasks × seeds) whose final score exceeds τ; band: "
               "95 % percentile bootstrap, runs resampled within each task.")
    return "\n\n".join(["## Per-task scores", how, md_table(head, rows), "## Performance profile", profile,
                        "![Performance profile](performance_profile.png)"])


def _task_cell(v: dict | None) -> str:
    if v is None:
        return "–"
    return f"{fmt_number(v['mean'], 3)} ± {fmt_number(v['sd'], 3)} ({v['n']})"


def md_pairs(c: "Comparison") -> str:
    if not c.pairs:
        return "## Pairwise comparisons\n\nOne group only: no pairwise tests."
    how = (f"Welch's t-test (unequal variances) and Mann–Whitney U (two-sided) on the final {c.measure.label}s; "
           "P(X > Y) = P(X > Y) + 0.5 P(X = Y) over all pairs of runs (per task, then averaged), "
           "with a 95 % percentile bootstrap CI resampling each group's runs independently.")
    table = md_table(["X", "Y", "n X / n Y", "Welch t", "Welch p", "Mann–Whitney U", "MW p", "P(X > Y) [95 % CI]"],
                     [[p["x"], p["y"], f"{p['n_x']} / {p['n_y']}", fmt_number(p["welch_t"], 2),
                       fmt_general(p["welch_p"]), fmt_number(p["mannwhitney_u"], 1), fmt_general(p["mannwhitney_p"]),
                       fmt_ci(p["prob_improvement"], p["prob_improvement_ci"], 2)] for p in c.pairs])
    return "\n\n".join(["## Pairwise comparisons", how, table])


def md_esnr_by_task(c: "Comparison") -> str:
    if not c.esnr_tasks:
        return ""
    x = c.measure.x_label
    how = (f"Per task, each run's actor-gradient ESNR (`esnr_db`) averaged over the {x} at which every run of "
           f"that task measured it (the same points of training for every group), and read at the last of "
           f"them; mean over runs with a 95 % t-interval. Differences: X − Y of the averages with Welch's "
           f"95 % interval and p.")
    rows = [[t.task, name, g["n"], f"{len(t.steps)} ({t.steps[0]}–{t.steps[-1]})" + ("" if t.common else ", own"),
             fmt_ci(g["mean_db"], g["mean_db_ci"], 2), fmt_ci(g["last_db"], g["last_db_ci"], 2)]
            for t in c.esnr_tasks for name, g in t.per_group.items()]
    parts = ["## Actor-gradient ESNR per task", how,
             md_table(["task", "group", "n", f"{x} measured", "ESNR (dB), mean over them [95 % CI]",
                       "at the last [95 % CI]"], rows)]
    diffs = [[t.task, p["x"], p["y"], fmt_ci(p["diff_db"], p["diff_db_ci"], 2), fmt_general(p["welch_p"])]
             for t in c.esnr_tasks for p in t.pairs]
    if diffs:
        parts.append(md_table(["task", "X", "Y", "ESNR X − Y (dB) [95 % CI]", "Welch p"], diffs))
    return "\n\n".join(parts)


def md_curves(c: "Comparison") -> str:
    x = c.measure.x_label
    band = (f"Each run is interpolated onto a common {x} grid that ends at the group's shortest run's last "
            f"point, {c.settings.smooth_text}; line: mean over runs, band: 95 % t-interval over runs.")
    out = []
    for key, (image, _, _, _, heading) in CURVE_FIGURES.items():
        if key in c.curves:
            ends = ", ".join(f"{g}: {int(cv.steps[-1])} {x} (n={cv.n})" for g, cv in c.curves[key].items())
            out.append(f"## {heading}\n\n`{key}` vs {x}. {band} Grid ends: {ends}.\n\n![{heading}]({image})")
    return "\n\n".join(out)


def md_compute(c: "Comparison") -> str:
    return "## Compute\n\n" + md_table(
        ["group", "wall time (min), mean ± sd", "peak RSS (MiB)", "final ESNR (dB)"],
        [[name, f"{fmt_number(g['wall_time_min_mean'], 2)} ± {fmt_number(g['wall_time_min_sd'], 2)}",
          fmt_number(g["peak_rss_mib"], 0), fmt_number(g["final_esnr_db"], 2)] for name, g in c.per_group.items()])


def md_runs(c: "Comparison") -> str:
    from flowpwm.analysis.compare import _config_get

    m = c.measure
    return "## Runs\n\n" + md_table(
        ["group", "run", "seed", "task", "world model", f"final {m.x_label}", f"final {m.label}"],
        [[g.name, r.path, _config_get(r.config, "seed", "–"), _config_get(r.config, m.task_key, "–"),
          _config_get(r.config, "alg.world_model.type", "–"), c.per_group[g.name]["final_steps"][j],
          fmt_number(c.per_group[g.name]["finals"][j], _digits(c))] for g in c.groups for j, r in enumerate(g.runs)])


def _steps_text(steps: Sequence[int]) -> str:
    return str(min(steps)) if min(steps) == max(steps) else f"{min(steps)}–{max(steps)}"


# -- CSV ------------------------------------------------------------------------------------------
def summary_csv(c: "Comparison") -> str:
    x = c.measure.x
    return csv_text(
        ["group", "n", "seeds", "tasks", f"final_{x}_min", f"final_{x}_max", "mean", "mean_ci_low",
         "mean_ci_high", "iqm", "iqm_ci_low", "iqm_ci_high", "sd", "median", "wall_time_min_mean",
         "wall_time_min_sd", "peak_rss_mib", "final_esnr_db"],
        [[name, g["n"], " ".join(str(s) for s in g["seeds"]), " ".join(g["tasks"]), min(g["final_steps"]),
          max(g["final_steps"]), g["mean"], *g["mean_ci"], g["iqm"], *g["iqm_ci"], g["sd"], g["median"],
          g["wall_time_min_mean"], g["wall_time_min_sd"], g["peak_rss_mib"], g["final_esnr_db"]]
         for name, g in c.per_group.items()])


def tests_csv(c: "Comparison") -> str:
    return csv_text(
        ["x", "y", "n_x", "n_y", "welch_t", "welch_p", "mannwhitney_u", "mannwhitney_p", "prob_improvement",
         "prob_improvement_ci_low", "prob_improvement_ci_high"],
        [[p["x"], p["y"], p["n_x"], p["n_y"], p["welch_t"], p["welch_p"], p["mannwhitney_u"], p["mannwhitney_p"],
          p["prob_improvement"], *p["prob_improvement_ci"]] for p in c.pairs])


def esnr_by_task_csv(c: "Comparison") -> str:
    return csv_text(["task", "group", "n", "steps", "common", "mean_db", "mean_db_ci_low", "mean_db_ci_high",
                     "last_db", "last_db_ci_low", "last_db_ci_high", "runs_mean_db"],
                    [[t.task, name, g["n"], " ".join(map(str, t.steps)), t.common, g["mean_db"], *g["mean_db_ci"],
                      g["last_db"], *g["last_db_ci"], " ".join(f"{v:.6g}" for v in g["runs"])]
                     for t in c.esnr_tasks for name, g in t.per_group.items()])


def per_task_csv(mt: "MultiTask") -> str:
    return csv_text(["task", "group", "n", "mean", "sd", "finals", "data_score"],
                    [[task, name, v["n"], v["mean"], v["sd"], " ".join(f"{x:.6g}" for x in v["finals"]),
                      mt.reference.get(task, math.nan)]
                     for task in mt.tasks for name, v in mt.per_task[task].items()])

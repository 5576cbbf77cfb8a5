"""Plots of one training run, read from its directory (config.yaml + metrics.jsonl).

`TrainingVisualizer(run_dir).generate_all_plots()` writes learning curves, world-model losses,
gradient norms / ESNR and a summary panel as PNG and SVG into `run_dir/plots`. Only
matplotlib's object API on the Agg canvas is used (no pyplot global state), so it is safe to
call at the end of training, inside the training process. `flowpwm plot RUN_DIR` and
`scripts/generate_visualizations.py` are the command line.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flowpwm.analysis.runs import Run, load_run
from flowpwm.analysis.smoothing import parse_smooth, smooth
from flowpwm.config import UserError
from flowpwm.fileio import atomic_open

FIGURES = ("learning_curves", "world_model_losses", "gradient_norms", "summary_statistics")

STEPS = "env steps"
WALL = "wall time (min)"


class EmptyRunError(UserError, ValueError):
    """The run directory holds no epoch record yet (a ValueError; a UserError for the CLI)."""


def curve(run: Run, key: str, x: str = "env_steps", smooth_method: str = "ema",
          smooth_amount: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) over the records that have both `x` and a numeric `key`, y smoothed with
    `flowpwm.analysis.smoothing.smooth` (the defaults, ema with 0, give the raw values)."""
    xs, ys = [], []
    for r in run.metrics:
        xv, yv = r.get(x), r.get(key)
        if _is_number(xv) and _is_number(yv):
            xs.append(float(xv))
            ys.append(float(yv))
    return np.asarray(xs, dtype=float), smooth(ys, smooth_method, smooth_amount)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def smoothing_active(method: str, amount: float) -> bool:
    return (method == "ema" and amount > 0) or (method == "window" and int(amount) > 1)


class TrainingVisualizer:
    """Figures of one run. Every `plot_*` method returns the paths it wrote (one per format);
    a panel whose metrics the run never logged is left out, a figure with no panel at all
    writes nothing and returns []."""

    def __init__(self, run_dir: str | Path | Run, out_dir: str | Path | None = None,
                 smooth_method: str = "ema", smooth_amount: float = 0.0,
                 formats: tuple[str, ...] | list[str] = ("png", "svg")) -> None:
        self.run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
        if not self.run.metrics:
            raise EmptyRunError(f"{self.run.path}/metrics.jsonl has no epoch record yet: "
                                "plot once the run has logged at least its seed phase (epoch 0)")
        smooth([0.0], smooth_method, smooth_amount)  # ValueError on a bad method or amount
        supported = FigureCanvasBase.get_supported_filetypes()
        bad = [f for f in formats if f not in supported]
        if bad or not formats:
            raise ValueError(f"image formats {bad or list(formats)}: choose from {', '.join(sorted(supported))}")
        self.out_dir = Path(out_dir) if out_dir is not None else Path(self.run.path) / "plots"
        self.smooth_method, self.smooth_amount = smooth_method, float(smooth_amount)
        self.formats = tuple(formats)

    # ---- data ---------------------------------------------------------------------------

    def curve(self, key: str, x: str = "env_steps") -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of `key` as plotted: smoothed with this visualizer's settings."""
        return curve(self.run, key, x, self.smooth_method, self.smooth_amount)

    def has(self, key: str) -> bool:
        return any(_is_number(r.get(key)) for r in self.run.metrics)

    @property
    def title(self) -> str:
        cfg = self.run.config or {}
        alg = cfg.get("alg") or {}
        wm = (alg.get("world_model") or {}).get("type", "?")
        task = (cfg.get("env") or {}).get("task", "?")
        return f"{alg.get('name', '?')} ({wm} world model) — {task}, seed {cfg.get('seed', '?')}"

    # ---- drawing helpers ----------------------------------------------------------------

    def _line(self, ax, key: str, x: str = "env_steps", label: str | None = None,
              x_scale: float = 1.0, marker: str | None = None) -> bool:
        """Plot `key` against `x` (smoothed line, the raw curve faint behind it when smoothing
        is on). Returns False (and draws nothing) when the run has no such values."""
        xs, raw = curve(self.run, key, x)
        if xs.size == 0:
            return False
        xs = xs * x_scale
        label = label or key
        if smoothing_active(self.smooth_method, self.smooth_amount):
            _, ys = self.curve(key, x)
            (line,) = ax.plot(xs, ys, label=label, marker=marker, markersize=3, zorder=3)
            ax.plot(xs, raw, color=line.get_color(), alpha=0.25, linewidth=0.8, zorder=2,
                    label="_raw " + label)
        else:
            ax.plot(xs, raw, label=label, marker=marker, markersize=3, zorder=3)
        return True

    @staticmethod
    def _log_if_positive(ax) -> None:
        ys = [y for line in ax.get_lines() for y in np.asarray(line.get_ydata(), dtype=float)]
        finite = [y for y in ys if math.isfinite(y)]
        if finite and min(finite) > 0:
            ax.set_yscale("log")

    @staticmethod
    def _new_figure(n_panels: int, ncols: int, panel_size=(5.0, 3.6)) -> tuple[Figure, list]:
        ncols = max(1, min(ncols, n_panels))
        nrows = math.ceil(n_panels / ncols)
        # at least 9 in wide: the title (alg, world model, task, seed, smoothing) must fit
        fig = Figure(figsize=(max(9.0, panel_size[0] * ncols), panel_size[1] * nrows + 0.5), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
        for ax in axes[n_panels:]:
            ax.set_visible(False)
        return fig, axes[:n_panels]

    def _finish(self, fig: Figure, axes: list) -> Figure:
        suffix = ""
        if smoothing_active(self.smooth_method, self.smooth_amount):
            suffix = f"  [smoothed: {self.smooth_method} {self.smooth_amount:g}]"
        fig.suptitle(self.title + suffix)
        for ax in axes:
            ax.grid(True, alpha=0.3)
            if any(not line.get_label().startswith("_") for line in ax.get_lines()):
                ax.legend(fontsize="small")
        return fig

    # ---- figures ------------------------------------------------------------------------

    def figure(self, name: str) -> Figure | None:
        """The named figure (one of FIGURES), or None when the run has none of its metrics."""
        if name not in FIGURES:
            raise ValueError(f"figure {name!r}: choose one of {', '.join(FIGURES)}")
        return getattr(self, f"_{name}")()

    def _learning_curves(self) -> Figure | None:
        if not self.has("eval_return"):
            return None
        fig, (by_steps, by_time) = self._new_figure(2, 2)
        for ax, x, scale, xlabel in ((by_steps, "env_steps", 1.0, STEPS), (by_time, "wall_time", 1 / 60, WALL)):
            band = [(r[x] * scale, r["eval_return_min"], r["eval_return_max"]) for r in self.run.metrics
                    if all(_is_number(r.get(k)) for k in (x, "eval_return", "eval_return_min", "eval_return_max"))]
            if band:
                bx, lo, hi = map(np.asarray, zip(*band))
                if len(bx) > 1:
                    ax.fill_between(bx, lo, hi, alpha=0.2, label="min–max over episodes")
                else:
                    ax.vlines(bx, lo, hi, alpha=0.5, label="min–max over episodes")
            self._line(ax, "eval_return", x, label="eval return (mean)", x_scale=scale, marker="o")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("eval return")
        by_steps.set_title("eval return vs env steps")
        by_time.set_title("eval return vs wall time")
        return self._finish(fig, [by_steps, by_time])

    def _lines_with_seed_phase(self, ax, keys: list[str], pretrained: list[str]) -> None:
        """A line per key, and an "x" in the same colour for each key's one seed-phase value
        (epoch 0 logs `pretrain_<key>`)."""
        colors = {}
        for k in keys:
            self._line(ax, k)
            colors[k] = ax.get_lines()[-1].get_color()
        for k in pretrained:
            xs, ys = curve(self.run, f"pretrain_{k}")
            ax.plot(xs, ys, linestyle="none", marker="x", markersize=7, color=colors.get(k),
                    label=f"{k} (seed-phase pretraining)")

    def _world_model_losses(self) -> Figure | None:
        keys = ("wm_loss", "dynamics_loss", "reward_loss", "flow_matching_loss", "consistency_loss", "termination_loss")
        losses = [k for k in keys if self.has(k)]
        pretrain = [k for k in keys if self.has(f"pretrain_{k}")]
        panels = (["losses"] if losses or pretrain else []) + (["nfe"] if self.has("nfe") else [])
        if not panels:
            return None
        fig, axes = self._new_figure(len(panels), 2)
        for ax, panel in zip(axes, panels):
            if panel == "losses":
                self._lines_with_seed_phase(ax, losses, pretrain)
                self._log_if_positive(ax)
                ax.set_ylabel("loss")
                ax.set_title("world-model losses")
            else:
                self._line(ax, "nfe", label="nfe")
                ax.set_ylabel("NFE (velocity-field evaluations)")
                ax.set_title("flow integration cost")
            ax.set_xlabel(STEPS)
        return self._finish(fig, axes)

    def _gradient_norms(self) -> Figure | None:
        norms = [k for k in ("actor_grad_norm", "critic_grad_norm", "wm_grad_norm") if self.has(k)]
        pretrain = self.has("pretrain_wm_grad_norm")
        esnr = [k for k in ("esnr_db", "esnr_param_db") if self.has(k)]
        panels = (["norms"] if norms or pretrain else []) + (["esnr"] if esnr else [])
        if not panels:
            return None
        fig, axes = self._new_figure(len(panels), 2)
        for ax, panel in zip(axes, panels):
            if panel == "norms":
                self._lines_with_seed_phase(ax, norms, ["wm_grad_norm"] if pretrain else [])
                self._log_if_positive(ax)
                ax.set_ylabel("gradient L2 norm")
                ax.set_title("gradient norms")
            else:
                for k in esnr:
                    self._line(ax, k, marker="o")
                ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
                ax.set_ylabel("ESNR (dB)")
                ax.set_title("actor policy-gradient ESNR")
            ax.set_xlabel(STEPS)
        return self._finish(fig, axes)

    def _summary_statistics(self) -> Figure | None:
        series = [(k, lbl) for k, lbl in (("eval_return", "eval return"),
                                          ("eval_length", "eval episode length"),
                                          ("imagined_return", "imagined return"),
                                          ("action_std", "action std"),
                                          ("fps", "fps (env steps/s)"),
                                          ("rss_mib", "RSS (MiB)")) if self.has(k)]
        fig, axes = self._new_figure(1 + len(series), 3, panel_size=(4.2, 3.0))
        text_ax, *plot_axes = axes
        text_ax.axis("off")
        text_ax.text(0.02, 0.98, self._summary_text(), va="top", ha="left", family="monospace",
                     fontsize="small", transform=text_ax.transAxes)
        text_ax.set_title("run summary")
        for ax, (k, lbl) in zip(plot_axes, series):
            self._line(ax, k, label=lbl, marker="o" if k in ("eval_return", "eval_length") else None)
            ax.set_xlabel(STEPS)
            ax.set_ylabel(lbl)
            ax.set_title(lbl)
        self._finish(fig, plot_axes)
        for ax in plot_axes:  # one series per panel: the title says it, the legend is clutter
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        return fig

    def _summary_text(self) -> str:
        m = self.run.metrics
        last = m[-1]
        lines = [f"epochs          {last.get('epoch', len(m) - 1)}",
                 f"env steps       {last.get('env_steps', '?')}"]
        if _is_number(last.get("wall_time")):
            lines.append(f"wall time       {last['wall_time'] / 60:.1f} min")
        evals = [r for r in m if _is_number(r.get("eval_return"))]
        if evals:
            final = evals[-1]
            best = max(evals, key=lambda r: r["eval_return"])
            lines += [f"final eval      {final['eval_return']:.1f} @ {final.get('env_steps', '?')} steps",
                      f"best eval       {best['eval_return']:.1f} @ {best.get('env_steps', '?')} steps",
                      f"initial eval    {evals[0]['eval_return']:.1f}"]
        else:
            lines.append("eval return     not evaluated yet")
        for key, name, fmt in (("imagined_return", "imagined ret.", ".2f"), ("action_std", "action std", ".3f"),
                               ("fps", "fps", ".1f"), ("rss_mib", "RSS", ".0f")):
            vals = [r[key] for r in m if _is_number(r.get(key))]
            if vals:
                unit = " MiB" if key == "rss_mib" else ""
                lines.append(f"{name:<15} {vals[-1]:{fmt}}{unit} (last)")
        return "\n".join(lines)

    # ---- writing ------------------------------------------------------------------------

    def _save(self, name: str) -> list[Path]:
        fig = self.figure(name)
        if fig is None:
            return []
        paths = []
        try:
            for fmt in self.formats:
                path = self.out_dir / f"{name}.{fmt}"
                with atomic_open(path) as f:
                    fig.savefig(f, format=fmt, dpi=110)
                paths.append(path)
        finally:
            fig.clear()
        return paths

    def plot_learning_curves(self) -> list[Path]:
        """Eval return (min–max band) vs env steps and vs wall time."""
        return self._save("learning_curves")

    def plot_world_model_losses(self) -> list[Path]:
        """wm / dynamics / reward loss vs env steps (log y), plus NFE for flow models."""
        return self._save("world_model_losses")

    def plot_gradient_norms(self) -> list[Path]:
        """Actor / critic / world-model gradient norms (log y), plus ESNR (dB) when measured."""
        return self._save("gradient_norms")

    def plot_summary_statistics(self) -> list[Path]:
        """Final/best eval return as text, and eval/imagined return, action std, fps, RSS."""
        return self._save("summary_statistics")

    def generate_all_plots(self) -> list[Path]:
        return (self.plot_learning_curves() + self.plot_world_model_losses()
                + self.plot_gradient_norms() + self.plot_summary_statistics())


def plot_run_quietly(run_dir: str | Path, log=print, **kwargs) -> list[Path]:
    """For the end of training: plot, and on any failure log one line instead of raising, so
    a plotting problem never fails a finished run."""
    try:
        return TrainingVisualizer(run_dir, **kwargs).generate_all_plots()
    except Exception as e:  # noqa: BLE001 - plots are a by-product, never worth a failed run
        log(f"plots skipped: {type(e).__name__}: {e}")
        return []


def main(argv: list[str] | None = None, prog: str = "flowpwm plot") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Plot one training run's metrics.jsonl "
                                "(learning curves, world-model losses, gradient norms/ESNR, summary).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (config.yaml + metrics.jsonl)")
    p.add_argument("--out", metavar="DIR", help="where to write the plots (default: RUN_DIR/plots)")
    p.add_argument("--smooth", default="ema:0", metavar="SPEC",
                   help="curve smoothing: ema:AMOUNT (0 <= AMOUNT < 1) or window:N (default: ema:0, raw)")
    p.add_argument("--format", nargs="+", default=["png", "svg"], dest="formats", metavar="FMT",
                   help="image formats (default: png svg)")
    args = p.parse_args(argv)
    method, amount = parse_smooth(args.smooth)
    supported = FigureCanvasBase.get_supported_filetypes()
    bad = [f for f in args.formats if f not in supported]
    if bad:
        raise UserError(f"--format {' '.join(bad)}: unknown image format; choose from {', '.join(sorted(supported))}")
    viz = TrainingVisualizer(args.run_dir, args.out, method, amount, tuple(args.formats))
    paths = viz.generate_all_plots()
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UserError as e:
        print(f"flowpwm plot: error: {e}", file=sys.stderr)
        sys.exit(2)

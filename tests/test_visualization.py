"""TrainingVisualizer and `generate_visualizations.py` / `flowpwm plot` on synthetic run dirs."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from flowpwm.analysis.runs import load_run
from flowpwm.analysis.smoothing import smooth
from flowpwm.config import UserError
from flowpwm.analysis.smoothing import parse_smooth
from flowpwm.visualization import FIGURES, TrainingVisualizer, curve, main

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "generate_visualizations.py"
PLOTS = ("plot_learning_curves", "plot_world_model_losses", "plot_gradient_norms", "plot_summary_statistics")

CONFIG = """\
alg:
  name: pwm_tiny{suffix}
  world_model:
    type: {kind}
env:
  task: cartpole-swingup
seed: 3
"""


def _epoch0(eval_=True):
    r = {"epoch": 0, "env_steps": 1000, "wall_time": 30.0, "pretrain_wm_loss": 0.5,
         "pretrain_dynamics_loss": 0.05, "pretrain_reward_loss": 0.9, "pretrain_wm_grad_norm": 4.0}
    if eval_:
        r.update(eval_return=10.0, eval_return_min=5.0, eval_return_max=15.0, eval_episodes=2)
    return r


def _epoch(i, kind, eval_every, esnr_every):
    r = {"epoch": i, "env_steps": 1000 + 100 * i, "wall_time": 30.0 + 12.0 * i, "rss_mib": 600.0 + i,
         # losses decay with a zig-zag, so smoothing visibly changes them
         "wm_loss": 0.4 * 0.9 ** i * (1.5 if i % 2 else 1.0), "dynamics_loss": 0.04 * 0.9 ** i,
         "reward_loss": 0.8 * 0.95 ** i, "wm_grad_norm": 3.0 + (i % 3),
         "actor_loss": -float(i), "actor_grad_norm": 1.0 + 0.5 * (i % 2), "imagined_return": 2.0 * i,
         "imagined_reward": 0.1 * i, "action_std": 0.5 - 0.01 * i, "critic_loss": 1.0 / i,
         "critic_grad_norm": 10.0 + i, "fps": 50.0 + (i % 4)}
    if kind == "flow":
        r["nfe"] = 8 * (4 + i % 2)
    if eval_every and i % eval_every == 0:
        r.update(eval_return=10.0 + 20.0 * i, eval_return_min=5.0 + 20.0 * i,
                 eval_return_max=15.0 + 22.0 * i, eval_episodes=2)
    if esnr_every and i % esnr_every == 0:
        for k, v in (("esnr", 0.5 + 0.02 * i), ("esnr_param", 0.3)):
            r[k], r[f"{k}_db"] = v, 10 * math.log10(v)
            for suffix in ("_ema", "_window"):
                r[k + suffix], r[f"{k}_db{suffix}"] = v, 10 * math.log10(v)
        r["esnr_time"] = 0.2
    return r


def make_run(root: Path, kind="flow", epochs=20, eval_every=5, esnr_every=4, eval0=True, cut=True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(CONFIG.format(suffix="_flow" if kind == "flow" else "", kind=kind))
    lines = [json.dumps(_epoch0(eval0))] + [json.dumps(_epoch(i, kind, eval_every, esnr_every))
                                            for i in range(1, epochs + 1)]
    text = "\n".join(lines) + "\n"
    if cut:  # a run killed mid-write
        text += f'{{"epoch": {epochs + 1}, "env_steps": 99999, "wall_ti'
    (root / "metrics.jsonl").write_text(text)
    return root


def check_png(path: Path):
    assert path.suffix == ".png" and path.exists() and path.stat().st_size > 0
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert float(np.var(img)) > 0
    rgba = np.round(img[..., :3] * 255).astype(np.uint32)
    packed = (rgba[..., 0] << 16) | (rgba[..., 1] << 8) | rgba[..., 2]
    assert len(np.unique(packed)) > 1  # more than one distinct colour


def check_svg(path: Path):
    assert path.suffix == ".svg" and path.exists() and path.stat().st_size > 0
    assert "<svg" in path.read_text()[:2000]


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "run")


def test_cut_off_last_line_is_skipped(run_dir):
    viz = TrainingVisualizer(run_dir)
    assert [r["epoch"] for r in viz.run.metrics] == list(range(21))
    assert viz.out_dir == run_dir / "plots"
    assert viz.title == "pwm_tiny_flow (flow world model) — cartpole-swingup, seed 3"


@pytest.mark.parametrize("method", PLOTS)
def test_each_plot_writes_png_and_svg(run_dir, tmp_path, method):
    out = tmp_path / "out"
    paths = getattr(TrainingVisualizer(run_dir, out_dir=out, smooth_amount=0.5), method)()
    assert sorted(p.suffix for p in paths) == [".png", ".svg"]
    assert all(p.parent == out for p in paths)
    for p in paths:
        check_png(p) if p.suffix == ".png" else check_svg(p)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no atomic-write temp left


def test_generate_all_plots(run_dir):
    paths = TrainingVisualizer(run_dir).generate_all_plots()
    assert len(paths) == 2 * len(FIGURES)
    assert {p.stem for p in paths} == set(FIGURES)
    for p in paths:
        check_png(p) if p.suffix == ".png" else check_svg(p)


def test_panels_follow_the_logged_metrics(tmp_path):
    flow = TrainingVisualizer(make_run(tmp_path / "flow"))
    mlp = TrainingVisualizer(make_run(tmp_path / "mlp", kind="mlp", esnr_every=0))
    visible = lambda fig: [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible(flow.figure("world_model_losses"))) == 2  # losses + nfe
    assert len(visible(mlp.figure("world_model_losses"))) == 1
    assert len(visible(flow.figure("gradient_norms"))) == 2  # norms + ESNR
    assert len(visible(mlp.figure("gradient_norms"))) == 1
    assert visible(flow.figure("gradient_norms"))[1].get_ylabel() == "ESNR (dB)"
    # every visible data axis is labelled, x with its unit
    for name in FIGURES:
        for ax in visible(flow.figure(name)):
            if ax.axison:
                assert ax.get_xlabel() in ("env steps", "wall time (min)") and ax.get_ylabel()
    _, time_ax = flow.figure("learning_curves").axes
    assert time_ax.get_xlabel() == "wall time (min)"
    x, _ = next(ln.get_data() for ln in time_ax.get_lines() if ln.get_label() == "eval return (mean)")
    assert x[-1] == pytest.approx((30.0 + 12.0 * 20) / 60)
    losses_ax = flow.figure("world_model_losses").axes[0]
    assert losses_ax.get_yscale() == "log"


def test_run_without_esnr_or_nfe_writes_all_plots(tmp_path):
    paths = TrainingVisualizer(make_run(tmp_path / "r", kind="mlp", esnr_every=0), formats=("png",)).generate_all_plots()
    assert {p.stem for p in paths} == set(FIGURES) and len(paths) == 4
    for p in paths:
        check_png(p)


def test_single_evaluated_epoch(tmp_path):
    run = make_run(tmp_path / "r", epochs=3, eval_every=0, esnr_every=0, cut=False)
    viz = TrainingVisualizer(run, smooth_amount=0.9, formats=("png",))
    assert len(load_run(run).evals) == 1
    paths = viz.generate_all_plots()
    assert {p.stem for p in paths} == set(FIGURES)
    for p in paths:
        check_png(p)


def test_seed_phase_only_and_no_eval(tmp_path):
    only0 = TrainingVisualizer(make_run(tmp_path / "a", epochs=0, cut=False), formats=("png",))
    assert {p.stem for p in only0.generate_all_plots()} == set(FIGURES)
    # no evaluation at all: the learning-curve figure is skipped, the rest still written
    never = TrainingVisualizer(make_run(tmp_path / "b", epochs=4, eval_every=0, eval0=False), formats=("png",))
    assert never.plot_learning_curves() == []
    assert {p.stem for p in never.generate_all_plots()} == set(FIGURES) - {"learning_curves"}


def test_no_epoch_record_is_a_clear_value_error(tmp_path):
    run = make_run(tmp_path / "r", epochs=0, cut=False)
    (run / "metrics.jsonl").write_text('{"epoch": 0, "env_st')  # only a cut-off line
    with pytest.raises(ValueError, match="no epoch record"):
        TrainingVisualizer(run)


def test_curve_smoothing(run_dir):
    run = load_run(run_dir)
    x, raw = curve(run, "wm_loss")
    expected = [r["wm_loss"] for r in run.metrics if "wm_loss" in r]
    assert x.tolist() == [1000 + 100 * i for i in range(1, 21)]
    np.testing.assert_array_equal(raw, expected)
    np.testing.assert_array_equal(curve(run, "wm_loss", smooth_method="ema", smooth_amount=0.0)[1], raw)
    _, ema = curve(run, "wm_loss", smooth_method="ema", smooth_amount=0.9)
    np.testing.assert_allclose(ema, smooth(expected, "ema", 0.9))
    assert not np.allclose(ema, raw)
    _, win = curve(run, "wm_loss", smooth_method="window", smooth_amount=5)
    assert win[-1] == pytest.approx(np.mean(expected[-5:]))
    xe, ye = curve(run, "eval_return", x="wall_time")  # only evaluated epochs
    assert xe.tolist() == [30.0, 90.0, 150.0, 210.0, 270.0] and ye[0] == 10.0


def test_smoothing_reaches_the_plotted_line(run_dir, tmp_path):
    raw_viz = TrainingVisualizer(run_dir, out_dir=tmp_path / "raw")
    ema_viz = TrainingVisualizer(run_dir, out_dir=tmp_path / "ema", smooth_method="ema", smooth_amount=0.9)
    plotted = lambda viz: {ln.get_label(): np.asarray(ln.get_ydata(), float)
                           for ln in viz.figure("world_model_losses").axes[0].get_lines()}
    raw_lines, ema_lines = plotted(raw_viz), plotted(ema_viz)
    _, raw = curve(raw_viz.run, "wm_loss")
    np.testing.assert_array_equal(raw_lines["wm_loss"], raw)
    assert "_raw wm_loss" not in raw_lines  # no faint duplicate without smoothing
    np.testing.assert_allclose(ema_lines["wm_loss"], smooth(raw, "ema", 0.9))
    np.testing.assert_array_equal(ema_lines["_raw wm_loss"], raw)  # raw curve kept, faint, behind
    assert not np.allclose(ema_lines["wm_loss"], raw)
    # and the written image differs
    a = mpimg.imread(raw_viz.plot_world_model_losses()[0])
    b = mpimg.imread(ema_viz.plot_world_model_losses()[0])
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_bad_settings(run_dir):
    with pytest.raises(ValueError):
        TrainingVisualizer(run_dir, smooth_method="median", smooth_amount=3)
    with pytest.raises(ValueError):
        TrainingVisualizer(run_dir, smooth_amount=1.0)
    with pytest.raises(ValueError):
        TrainingVisualizer(run_dir, formats=("bmpx",))
    with pytest.raises(UserError, match="not a run directory"):
        TrainingVisualizer(run_dir / "plots")


@pytest.mark.parametrize("spec,expected", [("ema:0.9", ("ema", 0.9)), ("window:5", ("window", 5.0)),
                                           ("ema:0", ("ema", 0.0))])
def test_parse_smooth(spec, expected):
    assert parse_smooth(spec) == expected


@pytest.mark.parametrize("spec", ["foo:1", "ema", "ema:1.5", "ema:x", "window:2.5", ""])
def test_parse_smooth_rejects(spec):
    with pytest.raises(UserError, match="--smooth"):
        parse_smooth(spec)


def test_main_writes_and_prints_paths(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(run_dir), "--out", str(out), "--smooth", "window:3", "--format", "png"]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(printed) == sorted(str(out / f"{name}.png") for name in FIGURES)
    for p in printed:
        check_png(Path(p))
    with pytest.raises(UserError, match="--format"):
        main([str(run_dir), "--format", "nope"])
    with pytest.raises(UserError, match="not a run directory"):
        main([str(tmp_path)])


def _script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], check=False, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"})


def test_script_errors_are_one_line_exit_2(run_dir, tmp_path):
    for args, says in (([tmp_path / "nowhere"], "not a run directory"), ([run_dir, "--smooth", "foo:1"], "'foo'")):
        proc = _script(*args)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("generate_visualizations: error: "), proc.stderr
        assert says in lines[0] and proc.stdout == ""
    assert not (run_dir / "plots").exists()


def test_script_plots_a_run(run_dir, tmp_path):
    proc = _script(run_dir, "--out", tmp_path / "o", "--smooth", "ema:0.9", "--format", "svg")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.split()) == 4 and all(Path(p).exists() for p in proc.stdout.split())

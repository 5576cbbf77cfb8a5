import io
import json
import re

import pytest
import torch

from flowpwm.monitoring import SHOWN, TrainingMonitor, ema_update
from flowpwm.training.online import train
from helpers import wandb_history
from test_training import cfg_for

QUIET = dict(log=lambda *_: None)


def test_eta_and_postfix_from_a_known_clock():
    now = [0.0]
    out = io.StringIO()
    m = TrainingMonitor(10, mode="lines", print_every_s=0, ema=0.5, stream=out, clock=lambda: now[0])
    for epoch, actor in [(1, -2.0), (2, -4.0)]:
        now[0] += 10.0
        m.update(epoch, epoch * 100, {"actor_loss": actor})
    assert m.smoothed["actor_loss"] == -3.0  # 0.5 * -2 + 0.5 * -4
    assert m.eta_s() == pytest.approx(80.0)  # 10 s an epoch, 8 to go
    last = out.getvalue().splitlines()[-1]
    assert "epoch 2/10 (20%)" in last and "actor -3" in last and "eta 1:20" in last and "elapsed 0:20" in last


def test_bar_mode_draws_a_tqdm_bar_with_the_smoothed_metrics():
    out = io.StringIO()
    m = TrainingMonitor(4, mode="bar", stream=out)
    m.update(1, 128, {"eval_return": 12.5, "wm_loss": 0.25})
    m.write("an eval line")
    m.close()
    text = out.getvalue()
    assert "1/4" in text and "eval 12.5" in text and "wm 0.25" in text and "an eval line" in text


def parse_postfix(line: str) -> dict[str, float]:
    labels = {v: k for k, v in SHOWN.items()}
    return {labels[m.group(1)]: float(m.group(2)) for m in re.finditer(r"\b(eval|len|actor|critic|wm|fps) (\S+)", line)}


def test_progress_lines_show_the_smoothed_values_of_the_logged_metrics(tmp_path):
    out = io.StringIO()
    cfg = cfg_for("flow", epochs=4, extra=["train.eval_every=2", "monitor.progress=lines", "monitor.print_every_s=0",
                                           "monitor.ema=0.8"])
    train(cfg, tmp_path, monitor_stream=out, **QUIET)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("[train]")]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()][1:]
    assert len(lines) == len(records) == 4
    smoothed: dict[str, float] = {}
    for line, rec in zip(lines, records):
        for key in SHOWN:
            if key in rec:
                smoothed[key] = ema_update(smoothed.get(key), rec[key], 0.8)
        shown = parse_postfix(line)
        assert set(shown) == set(smoothed)
        for key, value in smoothed.items():
            assert shown[key] == pytest.approx(float(f"{value:.4g}")), key
        assert f"env steps {rec['env_steps']}" in line


def test_header_names_the_world_model_its_size_parity_integrator_and_run_dir(tmp_path):
    printed = []
    train(cfg_for("flow"), tmp_path, log=printed.append)
    header = printed[0]
    assert "world model: flow" in header and "paired pwm_tiny:" in header and "%)" in header
    assert "integrator heun, K=1" in header and "device cpu" in header and str(tmp_path) in header


def test_run_dir_records_config_hash_and_provenance(tmp_path, monkeypatch):
    import subprocess
    from importlib import metadata
    from pathlib import Path

    from flowpwm.reproducibility import ExperimentConfig

    monkeypatch.setenv("WANDB_API_KEY", "secret-key-0123456789abcdef0123456789abcdef")  # must reach no file

    cfg = cfg_for("mlp")
    train(cfg, tmp_path, **QUIET)
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert (tmp_path / "config_hash.txt").read_text().strip() == ExperimentConfig(cfg).hash == prov["config_hash"]
    for key in ("torch", "numpy", "mujoco", "dm_control", "flowpwm"):  # the real versions, not the fallback
        assert prov["versions"][key] == metadata.version(key) != "not installed", key
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert prov["git_commit"] == (head.stdout.strip() if head.returncode == 0 else "unknown")


def test_esnr_is_measured_in_training_and_leaves_training_unchanged(tmp_path):
    ignore = {"wall_time", "rss_mib", "fps", "esnr_time"}

    def run(path, every):
        train(cfg_for("flow", epochs=4, extra=[f"train.esnr_every={every}", "train.esnr_samples=4"]), path, **QUIET)
        return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]

    with_esnr, without = run(tmp_path / "a", 2), run(tmp_path / "b", 0)
    measured = [r for r in with_esnr if "esnr" in r]
    assert [r["epoch"] for r in measured] == [2, 4]
    for r in measured:
        assert r["esnr"] > 0 and r["esnr_db"] == pytest.approx(10 * torch.tensor(r["esnr"]).log10().item(), abs=1e-6)
        assert "esnr_param_db" in r and "esnr_ema" in r
    strip = lambda r: {k: v for k, v in r.items() if k not in ignore and not k.startswith("esnr")}  # noqa: E731
    assert [strip(r) for r in with_esnr] == [strip(r) for r in without]


def test_same_seed_and_deterministic_gives_identical_metrics(tmp_path):
    ignore = {"wall_time", "rss_mib", "fps", "esnr_time"}
    runs = []
    for name in ("a", "b"):
        train(cfg_for("flow", epochs=3, extra=["deterministic=true", "train.esnr_every=1", "train.esnr_samples=3"]),
              tmp_path / name, **QUIET)
        records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs.append([{k: v for k, v in r.items() if k not in ignore} for r in records])
    torch.use_deterministic_algorithms(False)
    assert len(runs[0]) == 4 and runs[0] == runs[1]


def test_wandb_offline_run_holds_the_logged_metrics_and_gradient_histograms(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "secret-key-0123456789abcdef0123456789abcdef")
    cfg = cfg_for("flow", epochs=2, extra=["wandb.mode=offline", "wandb.grad_hist_every=2"])
    train(cfg, tmp_path, **QUIET)
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_id, history = wandb_history(runs[0])
    assert run_id == (tmp_path / "wandb_run_id.txt").read_text().strip()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()][1:]
    assert [h["_step"] for h in history] == [1, 2]
    for h, rec in zip(history, records):
        for key in ("env_steps", "wm_loss", "actor_loss", "critic_loss", "eval_return"):
            assert h[key] == pytest.approx(rec[key]), key
    for module in ("actor", "critic", "world_model"):
        hist = history[1][f"gradients/{module}/values"]
        assert history[1][f"gradients/{module}/_type"] == "histogram" and sum(hist) > 100, module
    assert not any(k.startswith("gradients/") for k in history[0])  # every 2 epochs
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"secret-key-0123456789" not in path.read_bytes(), path


def test_restart_from_checkpoint_continues_the_same_wandb_run_and_metrics_file(tmp_path):
    extra = ["wandb.mode=offline", "resume=auto"]
    first = train(cfg_for("mlp", epochs=2, extra=extra), tmp_path, **QUIET)
    assert first["epochs"] == 2
    # The run was stopped after 2 of 4 epochs: resume it with the full budget.
    printed = []
    second = train(cfg_for("mlp", epochs=4, extra=extra), tmp_path, log=printed.append)
    assert second["epochs"] == 4 and "resumed at epoch 2" in "\n".join(printed)
    ids, steps = set(), []
    for run in sorted((tmp_path / "wandb").glob("offline-run-*")):
        run_id, history = wandb_history(run)
        ids.add(run_id)
        steps += [(h["_step"], h["env_steps"]) for h in history]
    assert len(ids) == 1 and [s for s, _ in steps] == [1, 2, 3, 4]
    assert all(b[1] > a[1] for a, b in zip(steps, steps[1:]))
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2, 3, 4]


def test_a_new_run_refuses_a_directory_that_holds_one(tmp_path):
    from flowpwm.config import UserError

    train(cfg_for("mlp"), tmp_path, **QUIET)
    with pytest.raises(UserError, match="resume=auto"):
        train(cfg_for("mlp"), tmp_path, **QUIET)


def test_resume_cuts_the_metrics_file_back_to_the_checkpoint(tmp_path):
    train(cfg_for("mlp", epochs=2), tmp_path, **QUIET)
    with open(tmp_path / "metrics.jsonl", "a") as f:  # epoch 3 logged, then killed before its checkpoint
        f.write(json.dumps({"epoch": 3, "env_steps": 64}) + "\n" + '{"epoch": 4, "env_st')
    train(cfg_for("mlp", epochs=4, extra=["resume=auto"]), tmp_path, **QUIET)
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2, 3, 4]


def test_a_run_that_died_before_its_first_checkpoint_starts_its_metrics_over(tmp_path):
    tmp_path.joinpath("metrics.jsonl").write_text('{"epoch": 0, "env_steps": 40}\n{"epoch": 1, "env_st')
    train(cfg_for("mlp", epochs=2, extra=["resume=auto"]), tmp_path, **QUIET)
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]


def test_monitor_esnr_and_curve_smoothing_share_one_ema():
    from flowpwm.analysis.smoothing import smooth
    from flowpwm.esnr import ESNRTracker

    values, alpha = [3.0, float("nan"), 1.0, 5.0], 0.7
    expected, acc = [], None
    for v in values:
        acc = acc if v != v else ema_update(acc, v, alpha)
        expected.append(acc)
    assert smooth(values, "ema", alpha).tolist() == pytest.approx(expected)
    tracker, m = ESNRTracker(ema=alpha), TrainingMonitor(4, mode="off", ema=alpha)
    for i, v in enumerate(v for v in values if v == v):
        assert tracker.update({"esnr": v})["esnr_ema"] == pytest.approx(expected[[0, 2, 3][i]])
        m.update(i + 1, 0, {"wm_loss": v})
    assert m.smoothed["wm_loss"] == pytest.approx(expected[-1])

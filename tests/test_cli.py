import os
import signal
import subprocess
import sys
import time

import pytest


def flowpwm(*args):
    return subprocess.run([sys.executable, "-m", "flowpwm.cli", *args], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_fit_wm_trains_both_world_models_and_prints_losses():
    for alg in ("pwm_tiny", "pwm_tiny_flow"):
        r = flowpwm("fit-wm", f"alg={alg}", "fit_wm.iterations=40", "fit_wm.log_every=20", "fit_wm.episodes=8")
        assert r.returncode == 0, r.stderr
        losses = [float(line.split("wm_loss")[1].split()[0]) for line in r.stdout.splitlines() if "wm_loss" in line]
        assert len(losses) == 2 and losses[1] < losses[0]
        assert "open loop on held-out toy episodes" in r.stdout and "effective rank" in r.stdout


def test_fit_wm_on_a_runs_replay_buffer(tmp_path):
    """`fit_wm.buffer=RUN_DIR` fits a fresh world model on a real run's data (its dims, not the
    toy's), and reports the latent spread a collapsed encoder would show."""
    from flowpwm.training.online import train
    from test_training import cfg_for

    run = tmp_path / "run"
    train(cfg_for("mlp", epochs=3), run, log=lambda *_: None)
    for alg in ("pwm_tiny", "pwm_tiny_flow"):
        r = flowpwm("fit-wm", f"alg={alg}", f"fit_wm.buffer={run}", "alg.horizon=4", "fit_wm.batch_size=8",
                    "fit_wm.iterations=30", "fit_wm.log_every=15")
        assert r.returncode == 0, r.stderr
        assert f"open loop on slices of {run}'s buffer" in r.stdout, r.stdout
        rank = float(r.stdout.split("effective rank ")[1].split(";")[0])
        assert 1 <= rank <= 64
    # ... and the fitted model's action Jacobian against the run's simulator, at its policy's states
    r = flowpwm("fit-wm", "alg=pwm_tiny_flow", f"fit_wm.buffer={run}", "fit_wm.simulator=4", "alg.horizon=4",
                "fit_wm.batch_size=8", "fit_wm.iterations=10", "fit_wm.log_every=5")
    assert r.returncode == 0, r.stderr
    sim = r.stdout.split(f"against the simulator, 4 states reached by {run}'s policy: ∂z'/∂a cosine ")[1]
    assert -1 <= float(sim.split()[0]) <= 1
    share = float(sim.split("the entries the encoder holds < 0.05 ")[1].split()[0])  # the model's share there
    assert 0 <= share <= 1
    r = flowpwm("fit-wm", f"fit_wm.buffer={tmp_path / 'missing'}")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "missing" in r.stderr, r.stderr


def test_bad_input_gives_one_clear_line_and_nonzero_exit():
    cases = {
        ("fit-wm", "alg=pwm_3M"): "pwm_tiny_flow",
        ("fit-wm", "alg.world_model.integrator=rk4"): "heun",
        ("fit-wm", "alg.world_model.flow_source=decoder"): "rollout",
        ("fit-wm", "fit_wm.simulator=8"): "fit_wm.buffer=RUN_DIR",
        ("bogus",): "parity",
    }
    for args, hint in cases.items():
        r = flowpwm(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and hint in lines[0], (args, r.stderr)


def test_results_table_reads_run_directories(tmp_path):
    import json

    for name, seed, curve in [("a", 0, [(1000, 10.0), (2000, 50.0)]), ("b", 1, [(1000, 30.0), (2000, 70.0)])]:
        d = tmp_path / name
        d.mkdir()
        (d / "config.yaml").write_text(f"seed: {seed}\n")
        lines = [json.dumps({"epoch": i, "env_steps": s, "eval_return": r}) for i, (s, r) in enumerate(curve)]
        (d / "metrics.jsonl").write_text("\n".join(lines) + '\n{"epoch": 9, "env_st')  # killed mid-write
    r = flowpwm("results", "--group", "flow", str(tmp_path / "a"), str(tmp_path / "b"), "--steps", "1500", "2000")
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("| flow"))
    assert "| 0, 1 |" in row and "20 (10, 30)" in row and "60 (50, 70)" in row
    bad = flowpwm("results", "--group", "x", str(tmp_path))
    assert bad.returncode == 2 and "not a run directory" in bad.stderr


def test_wm_override_picks_the_paired_config_and_nothing_else():
    from flowpwm.cli import translate_wm

    assert translate_wm(["wm=mlp", "seed=3"]) == ["seed=3", "alg=pwm_tiny"]
    assert translate_wm(["alg=pwm_5M", "wm=flow"]) == ["alg=pwm_5M_flow"]
    assert translate_wm(["alg=pwm_48M_flow", "wm=mlp,flow"]) == ["alg=pwm_48M,pwm_48M_flow"]
    assert translate_wm(["seed=1"]) == ["seed=1"]


def test_the_local_launcher_trains_a_sweeps_runs_at_once_with_one_thread_each(tmp_path):
    """`hydra/launcher=local`: the run dirs of a plain sweep, trained side by side (their lifetimes
    overlap; the basic launcher runs one after the other), one torch thread each by default."""
    import torch
    import yaml

    from test_training import FAST

    fast = [a for a in FAST if not a.startswith("train.threads=")]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "FLOWPWM_JOBS": "2"}
    r = subprocess.run([sys.executable, "-m", "flowpwm.cli", "train", "-m", "hydra/launcher=local", "wm=mlp",
                        "seed=0,1", *fast, "train.env_steps=72", f"hydra.sweep.dir={tmp_path}/sweep"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(d for d in (tmp_path / "sweep").iterdir() if d.is_dir())
    assert [d.name for d in runs] == ["0_pwm_tiny_cartpole-swingup_s0", "1_pwm_tiny_cartpole-swingup_s1"]
    for d in runs:
        assert yaml.safe_load((d / "config.yaml").read_text())["train"]["threads"] == 1
        assert r.stdout.count(f"outputs in {d}") == 1
    (a_start, a_end), (b_start, b_end) = [((d / "provenance.json").stat().st_mtime,
                                           (d / "metrics.jsonl").stat().st_mtime) for d in runs]
    assert a_start < b_end and b_start < a_end, "the two runs did not train at the same time"

    # Its jobs run here, so this machine's hardware is checked first (a cluster launcher skips it).
    if not torch.cuda.is_available():
        bad = subprocess.run([sys.executable, "-m", "flowpwm.cli", "train", "-m", "hydra/launcher=local",
                              "device=cuda", "seed=0,1", f"hydra.sweep.dir={tmp_path}/bad"],
                             capture_output=True, text=True, timeout=120, env=env)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "CUDA is not available" in bad.stderr, bad.stderr
        assert not (tmp_path / "bad").exists()


def is_written(run_dir) -> bool:
    """A process holds the run's writer lock (the lock every run writer takes)."""
    from flowpwm.config import UserError
    from flowpwm.rundir import LOCK, RunLock

    try:
        RunLock(run_dir / LOCK).acquire().release()
    except UserError:
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_local_sweep_stopped_by_sigterm_or_ctrl_c_starts_none_of_its_queued_runs(tmp_path, sig):
    """SIGTERM (a scheduler's stop, which scripts/mt_mini.sh relies on) or ^C to a
    `hydra/launcher=local` sweep's process group: the running runs checkpoint and exit for
    requeue, and the run queued behind them is not started. Both went wrong: joblib's workers
    outlive the parent that the signal kills; after SIGTERM one took the queued job and trained
    it, and ^C, which they ignored, could leave both runs training."""
    from test_training import FAST

    fast = [a for a in FAST if not a.startswith(("train.threads=", "train.eval_every="))]
    sweep = tmp_path / "sweep"
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "FLOWPWM_JOBS": "2", "HOME": str(tmp_path)}
    log_path = tmp_path / "sweep.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flowpwm.cli", "train", "-m", "hydra/launcher=local", "wm=mlp",
                                 "seed=0,1,2", *fast, "train.eval_every=1000", "train.env_steps=40000",
                                 f"hydra.sweep.dir={sweep}"], stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(list(sweep.glob("*/checkpoints/latest.pt"))) < 2:  # seeds 0 and 1 are training
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "two runs did not checkpoint within 240 s"
            time.sleep(0.1)
        os.killpg(proc.pid, sig)
        runs = [sweep / f"{i}_pwm_tiny_cartpole-swingup_s{i}" for i in range(3)]
        while any(map(is_written, runs[:2])):  # until both runs have stopped
            assert time.monotonic() < deadline + 120, log_path.read_text()[-3000:]
            time.sleep(0.1)
        if sig == signal.SIGTERM:  # the parent dies at once: a worker takes the queued job and refuses it
            while "was not started" not in log_path.read_text() and not runs[2].exists():
                assert time.monotonic() < deadline + 120, log_path.read_text()[-3000:]
                time.sleep(0.1)
        time.sleep(3)  # a queued run started by mistake would have its run dir by now
        text = log_path.read_text()
        assert not runs[2].exists(), text[-3000:]  # not even Hydra's empty run dir is left
        assert all((r / "checkpoints" / "latest.pt").is_file() for r in runs[:2])
        if sig == signal.SIGTERM:
            assert text.count("stopped on SIGTERM at epoch") == 2, text[-3000:]
            assert f"{runs[2].name} was not started" in text and "resume=auto" in text, text[-3000:]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the idle joblib workers wait for their dead parent
        except ProcessLookupError:
            pass


def test_train_through_hydra_writes_a_run_directory(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "flowpwm.cli", "train", "wm=mlp", "train.env_steps=120", "train.seed_steps=80",
         "train.pretrain_iterations=1", "train.eval_episodes=1", "env.num_envs=2", "train.steps_per_epoch=4",
         "alg.horizon=4", "alg.policy_iterations=1", "alg.wm_iterations=1", "train.threads=1",
         f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert "final eval return" in r.stdout and "world model: mlp" in r.stdout and "untrained policy" in r.stdout
    assert (tmp_path / "run" / "metrics.jsonl").exists() and (tmp_path / "run" / "checkpoints" / "latest.pt").exists()
    bad = subprocess.run([sys.executable, "-m", "flowpwm.cli", "train", "env.task=cartpole-swingupp",
                          f"hydra.run.dir={tmp_path}/bad"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "cartpole-swingup," in bad.stderr
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()

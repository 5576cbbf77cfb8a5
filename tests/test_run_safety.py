"""Run safety (issue 10): settings checked before anything is written, checkpoints that cannot
run code, one writer per run dir, resumes that cannot mix experiments, damaged metrics lines
reported. The CLI cases run the real `flowpwm` in a subprocess."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flowpwm.config import UserError, compose
from flowpwm.reproducibility import code_digest
from flowpwm.rundir import CHECKPOINT_FORMAT, RunDir, RunWriter, read_metrics
from flowpwm.training.online import train
from test_compare import make_run
from test_training import FAST, cfg_for

QUIET = dict(log=lambda *_: None)
ENV = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}


def flowpwm(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "flowpwm.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=ENV)


class Marker:
    """Unpickling this would create `path` (a stand-in for any code a crafted file could run)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-epoch mlp run; tests copy it before changing anything."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train(cfg_for("mlp", epochs=2), run, **QUIET)
    return run


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# -- every setting checked before anything is written ---------------------------------------------
BAD = [
    ("train.eval_every=0", "train.eval_every=0: must be an integer >= 1"),
    ("train.checkpoint_every=0", "train.checkpoint_every=0: must be an integer >= 1"),
    ("alg.horizon=0", "alg.horizon=0: must be an integer >= 1"),
    ("train.env_steps=abc", "train.env_steps=abc: must be an integer"),
    ("env.num_envs=0", "env.num_envs=0: must be an integer >= 1"),
    ("train.env_steps=1000", "must exceed train.seed_steps=2000"),
    ("+alg.horizn=8", "alg.horizn=8: unknown key (did you mean alg.horizon?)"),
    ("alg.horizn=8", "alg.horizn: unknown key (did you mean alg.horizon?)"),
    ("no_such_key=3", "no_such_key: unknown key"),
    ("env.task=cartpole-swingupp", "env.task=cartpole-swingupp: unknown value (did you mean cartpole-swingup?)"),
    ("alg.world_model.integrator=rk4", "alg.world_model.integrator=rk4: unknown value; choose one of euler, heun"),
    ("device=cuda", "device=cuda: CUDA is not available"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_setting_is_one_line_exit_2_and_leaves_no_run_dir(override, message, tmp_path):
    if override == "device=cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    r = flowpwm("train", override, cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("flowpwm train: error: ") and message in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == [], "something was written"


def test_every_violation_is_reported_and_check_config_agrees(tmp_path):
    r = flowpwm("check-config", "train.eval_every=0", "env.num_envs=0", "+alg.horizn=8", cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 3, r.stderr
    assert all(line.startswith("flowpwm check-config: error: ") for line in lines)
    ok = flowpwm("check-config", "-m", "wm=mlp,flow", "seed=0,1", cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.count("config OK") == 4, ok.stderr
    bad = flowpwm("check-config", "-m", "env.task=cartpole-swingup,walker-walkk", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "[env.task=walker-walkk]" in bad.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_schema_knows_every_key_of_every_alg_config():
    from flowpwm.config import alg_names
    from flowpwm.schema import validate

    for name in alg_names():
        assert validate(compose([f"alg={name}"])) == [], name


def test_a_secret_in_the_config_is_refused_without_echoing_it(tmp_path):
    r = flowpwm("train", "+wandb.api_key=sk-DO-NOT-PRINT", cwd=tmp_path)
    assert r.returncode == 2 and "WANDB_API_KEY" in r.stderr and "sk-DO-NOT-PRINT" not in r.stderr + r.stdout
    assert list(tmp_path.iterdir()) == []


# -- checkpoints ----------------------------------------------------------------------------------
def test_a_crafted_checkpoint_is_refused_without_running_anything(trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    marker = tmp_path / "code-ran"
    torch.save({"format": CHECKPOINT_FORMAT, "agent": Marker(marker)}, run / "checkpoints" / "latest.pt")
    cmp_dir = tmp_path / "cmp"
    for args in (["diagnose", run], ["compare", "--group", "g", run, "--out", cmp_dir, "--bootstrap", "10"],
                 ["train", "wm=mlp", *FAST, "train.env_steps=72", f"hydra.run.dir={run}", "resume=auto"]):
        r = flowpwm(*args, cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, (args[0], r.stderr)
        assert f"{run}/checkpoints/latest.pt: refused to load: it would import posix.system" in lines[0], lines[0]
        assert not marker.exists(), f"`flowpwm {args[0]}` ran code from the checkpoint"


def test_a_damaged_checkpoint_is_one_line_naming_the_file(trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    ckpt = run / "checkpoints" / "latest.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # cut short
    r = flowpwm("diagnose", run)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and f"{ckpt}: damaged or cut short" in lines[0], r.stderr
    assert "start a new run" in lines[0]
    buffer = next((trained / "checkpoints").glob("buffer-*.pt"))
    run2 = copy_run(trained, tmp_path / "run2")
    (run2 / "checkpoints" / buffer.name).unlink()
    with pytest.raises(UserError, match=f"{buffer.name} is missing"):
        train(cfg_for("mlp", epochs=3, extra=["resume=auto"]), run2, **QUIET)


def test_checkpoints_load_weights_only_and_hold_only_the_filled_buffer_rows(trained):
    run = RunDir(trained)
    state = torch.load(run.latest_checkpoint, weights_only=True)
    assert state["format"] == CHECKPOINT_FORMAT and set(state) >= {"agent", "rng", "dims", "buffer_file"}
    buffer = run.load_buffer(state)
    rows = buffer["filled"]
    assert rows == (40 + 2 * 8) // 2  # seed steps + 2 epochs, in rows of 2 envs
    assert all(buffer[k].shape[0] == rows for k in ("obs", "action", "reward", "next_obs", "done", "terminated"))
    # The default buffer_size (1M transitions) is preallocated; the file holds ~28 rows of it.
    assert (run.checkpoints / state["buffer_file"]).stat().st_size < 20_000
    assert {p.name for p in run.checkpoints.iterdir()} == {"latest.pt", state["buffer_file"]}  # older buffers gone


def test_analysis_without_the_buffer_file_still_loads_the_agent(trained, tmp_path):
    from flowpwm.analysis.diagnostics import load_agent

    run = copy_run(trained, tmp_path / "run")
    for f in (run / "checkpoints").glob("buffer-*.pt"):
        f.unlink()
    agent, buffer, state = load_agent(run, buffer=False)
    assert buffer is None and state["epoch"] == 2 and agent.act(torch.zeros(1, 5), deterministic=True).shape == (1, 1)


# -- one writer per run dir -----------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "flowpwm.cli", "train", "wm=mlp", *FAST, "train.eval_every=50",
                              "train.checkpoint_every=1000", f"train.env_steps={40 + 40 * 8}", f"hydra.run.dir={run}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while not (run / ".lock").exists() or not (run / ".lock").read_text():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)  # holding the lock, mid-run, while the second one starts
        second = flowpwm("train", "wm=mlp", *FAST, "train.env_steps=56", f"hydra.run.dir={run}")
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert f"{run} is being written by pid {first.pid} on host" in lines[0], lines[0]
    finally:
        first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=240)
    assert first.returncode == 0, err
    epochs = [r["epoch"] for r in read_metrics(run / "metrics.jsonl").records]
    assert epochs == list(range(41)), "a second writer touched the metrics"


def test_the_lock_is_per_directory_and_released_at_the_end(tmp_path):
    with RunWriter(tmp_path / "a"):
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            RunWriter(tmp_path / "a")
        RunWriter(tmp_path / "b").close()
    RunWriter(tmp_path / "a").close()  # free again


def test_default_run_dirs_are_unique_by_construction(tmp_path):
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from flowpwm.config import config_dir

    GlobalHydra.instance().clear()
    dirs = set()
    for _ in range(3):
        with initialize_config_dir(version_base=None, config_dir=str(config_dir())):
            cfg = hydra_compose("config", return_hydra_config=True)
            dirs.add(str(cfg.hydra.run.dir))
            assert str(cfg.hydra.run.dir).endswith("_pwm_tiny_flow_cartpole-swingup_s0")
    assert len(dirs) == 3  # composed within the same second


# -- resume ---------------------------------------------------------------------------------------
def test_resume_into_another_task_is_refused_and_writes_nothing(trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for extra, keys in ((["env.task=cartpole-balance"], "env.task ('cartpole-swingup' -> 'cartpole-balance')"),
                        (["alg.world_model.latent_dim=32"], "alg.world_model.latent_dim (64 -> 32)"),
                        (["seed=3", "alg.horizon=5"], "alg.horizon (4 -> 5); seed (0 -> 3)")):
        with pytest.raises(UserError, match="would mix two experiments") as e:
            train(cfg_for("mlp", epochs=3, extra=["resume=auto", *extra]), run, **QUIET)
        assert keys in str(e.value) and "\n" not in str(e.value)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_resume_that_extends_the_budget_is_allowed_and_recorded(trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    config = (run / "config.yaml").read_bytes()
    printed = []
    summary = train(cfg_for("mlp", epochs=3, extra=["resume=auto", "train.eval_every=2"]), run, log=printed.append)
    assert summary["epochs"] == 3
    assert (run / "config.yaml").read_bytes() == config  # the original config stays
    (entry,) = [json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()]
    assert entry["changes"] == {"train.env_steps": [56, 64], "train.eval_every": [1, 2]}
    assert entry["resumed_at_epoch"] == 2 and entry["time"] and entry["git_commit"]
    assert entry["code_sha256"] == code_digest()  # the code each resume ran, with or without git
    assert any("train.env_steps 56 -> 64" in line for line in printed)
    # A second resume compares with the config as changed, and records only what changes now.
    train(cfg_for("mlp", epochs=4, extra=["resume=auto", "train.eval_every=2"]), run, **QUIET)
    entries = [json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()]
    assert entries[1]["changes"] == {"train.env_steps": [64, 72]}


def test_a_run_made_before_a_key_existed_resumes_when_the_key_keeps_the_old_behaviour(trained, tmp_path):
    """A config key added since the run started (absent from its config.yaml) does not block a
    resume at the value that reproduces the old code; another value mixes two experiments."""
    import yaml
    run = copy_run(trained, tmp_path / "run")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    del cfg["alg"]["wm_loss"]["termination_pos_weight"]  # as written by the code before the key
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(UserError, match=r"termination_pos_weight \(<absent>, i\.e\. "
                                        r"alg\.wm_loss\.termination_pos_weight=1\.0 before the key existed -> 5\)"):
        train(cfg_for("mlp", epochs=3, extra=["resume=auto", "alg.wm_loss.termination_pos_weight=5"]), run, **QUIET)
    extra = ["resume=auto", "alg.wm_loss.termination_pos_weight=1"]  # an int: the same value as 1.0
    assert train(cfg_for("mlp", epochs=3, extra=extra), run, **QUIET)["epochs"] == 3
    (entry,) = [json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()]
    assert entry["changes"]["alg.wm_loss.termination_pos_weight"] == [None, 1]


def test_resume_path_continues_that_run_and_refuses_another_run_dir(trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    extra = [*FAST, "wm=mlp", "train.env_steps=64"]
    r = flowpwm("train", *extra, f"resume={run}", f"hydra.run.dir={tmp_path / 'new'}", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "drop hydra.run.dir=" in r.stderr, r.stderr
    assert not (tmp_path / "new").exists()
    r = flowpwm("train", *extra, f"resume={run}", cwd=tmp_path)  # the default run dir is not used
    assert r.returncode == 0, r.stderr
    assert f"resume={run}: continuing {run} in place" in r.stdout
    assert not (tmp_path / "runs").exists()  # nor the empty runs/ Hydra made for the unused run dir
    assert [rec["epoch"] for rec in read_metrics(run / "metrics.jsonl").records] == [0, 1, 2, 3]


def test_resume_auto_without_a_checkpoint_says_it_starts_fresh(tmp_path):
    printed = []
    train(cfg_for("mlp", extra=["resume=auto"]), tmp_path / "typo", log=printed.append)
    assert printed[0] == f"resume=auto: no checkpoint in {tmp_path / 'typo'}: starting a new run there"


# -- metrics files --------------------------------------------------------------------------------
def test_damaged_metrics_lines_are_counted_warned_or_refused(tmp_path):
    from flowpwm.analysis.compare import main

    runs = [make_run(tmp_path, f"r{i}", 100.0 + i, seed=i) for i in range(2)]
    text = (runs[0] / "metrics.jsonl").read_text().splitlines()
    text[2] = text[2][:25]  # an epoch record without an eval, damaged
    (runs[0] / "metrics.jsonl").write_text("\n".join(text) + "\n")
    m = read_metrics(runs[0] / "metrics.jsonl")
    assert m.damaged == [3] and m.last_eval_damaged() is None
    r = flowpwm("compare", "--group", "g", *runs, "--out", tmp_path / "cmp", "--bootstrap", "10")
    assert r.returncode == 0 and f"{runs[0]}/metrics.jsonl: 1 damaged line(s) skipped (line 3)" in r.stdout, r.stderr
    res = flowpwm("results", "--group", "g", *runs, "--steps", "1000")
    assert res.returncode == 0 and "1 damaged line(s)" in res.stderr
    last = (runs[1] / "metrics.jsonl").read_text()
    (runs[1] / "metrics.jsonl").write_text(last[:last.rindex('"eval_return"') - 2])  # the last line, cut short
    r = flowpwm("compare", "--group", "g", *runs, "--out", tmp_path / "cmp", "--bootstrap", "10")
    assert r.returncode == 0 and "(line 7); the last line is one of them: the run's final eval may be missing" \
        in r.stdout, r.stdout
    (runs[1] / "metrics.jsonl").write_text(last[:-5])  # the last eval's line, damaged
    with pytest.raises(UserError, match="line 7 .*final return cannot be read"):
        main(["--group", "g", *map(str, runs), "--out", str(tmp_path / "cmp2")])
    res = flowpwm("results", "--group", "g", *runs, "--steps", "1000")
    assert res.returncode == 2 and "final return cannot be read" in res.stderr


def test_nan_is_written_as_null_in_metrics_and_empty_in_csv(tmp_path):
    from flowpwm.analysis.report import csv_text

    with RunWriter(tmp_path) as run:
        run.log({"epoch": 0, "eval_return": math.nan, "x": math.inf})
    assert (tmp_path / "metrics.jsonl").read_text() == '{"epoch": 0, "eval_return": null, "x": null}\n'
    assert csv_text(["a", "b"], [[math.nan, 1.5]]) == "a,b\n,1.5\n"


def test_compare_does_not_import_torch_without_diagnostics(tmp_path):
    runs = [make_run(tmp_path, f"r{i}", 100.0 + i, seed=i) for i in range(2)]
    code = ("import sys; from flowpwm.cli import main; "
            f"assert main(['compare', '--group', 'g', {str(runs[0])!r}, {str(runs[1])!r}, '--out', "
            f"{str(tmp_path / 'cmp')!r}, '--bootstrap', '10']) == 0; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cmp" / "report.md").exists()


def test_parity_tolerance_is_a_fraction(tmp_path):
    for value in ("-1", "2", "0"):
        r = flowpwm("parity", "--tolerance", value)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "give a fraction in (0, 1)" in lines[0], r.stderr

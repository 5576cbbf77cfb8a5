"""The offline per-task policies on a real (throw-away, single-node) Slurm: `slurm_multi_gpu.sh
--strategy multi_task --pretrained DIR` (4 `flowpwm train-policy` runs, one GPU each, then the
multi-task comparison) and `flowpwm train-policy -m hydra/launcher=slurm` over tasks × both world
models (a submitit array). Data and the two pretrained world models are made here at a tiny scale.
Slow (a Slurm cluster and tiny online runs); skipped where Slurm cannot be installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flowpwm.config import compose
from flowpwm.data.export import export_runs
from flowpwm.rundir import RunDir
from slurm_cluster import clean_env

REPO = Path(__file__).resolve().parents[1]
MULTI = REPO / "cluster" / "slurm_multi_gpu.sh"
TASKS = ["pendulum-spin", "cartpole-balance", "reacher-easy", "cup-spin"]
QUIET = ["wandb.mode=disabled", "monitor.progress=lines"]
ONLINE = ["alg=pwm_tiny", "env.num_envs=2", "train.seed_steps=40", "train.pretrain_iterations=1",
          "train.steps_per_epoch=4", "train.eval_episodes=1", "train.eval_every=1000", "train.env_steps=56",
          "alg.horizon=4", "alg.wm_batch_size=16", "alg.wm_iterations=1", "alg.actor_batch_size=8",
          "alg.critic_iterations=1", "alg.policy_iterations=1", "train.threads=1", "train.plots=false",
          "train.esnr_every=0", *QUIET]
PRETRAIN = ["pretrain.iterations=4", "pretrain.log_every=2", "pretrain.eval_every=2", "pretrain.checkpoint_every=2",
            "pretrain.batch_size=16", "pretrain.eval_batch_size=16", "pretrain.threads=1", "alg.horizon=4", *QUIET]
POLICY = ["policy.iterations=4", "policy.log_every=2", "policy.eval_every=4", "policy.checkpoint_every=2",
          "policy.esnr_every=0", "policy.eval_episodes=1", "policy.eval_envs=1", "alg.horizon=4",
          "alg.actor_batch_size=8", "alg.critic_iterations=1", "device=cpu", *QUIET]
WAIT = 420


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """4 tiny online runs -> export -> one pretraining run per world model in one directory."""
    from flowpwm.training.offline import pretrain
    from flowpwm.training.online import train

    root = tmp_path_factory.mktemp("offline")
    runs = []
    for task in TASKS:
        runs.append(root / "collect" / task)
        train(compose([*ONLINE, f"env.task={task}"]), runs[-1], log=lambda *_: None)
    export_runs(runs, root / "data", "mt-mini", log=lambda *_: None)
    for i, alg in enumerate(["pwm_tiny", "pwm_tiny_flow"]):
        pretrain(compose([f"alg={alg}", f"data.path={root / 'data'}", *PRETRAIN], config_name="pretrain"),
                 root / "pretrain" / f"{i}_{alg}", log=lambda *_: None)
    return root / "pretrain"


def env_for(cluster) -> dict[str, str]:
    env = {**cluster.env, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:{cluster.env['PATH']}",
           "FLOWPWM_COMPARE_ARGS": "--bootstrap 200"}
    if (Path(sys.prefix) / "bin" / "activate").exists():
        env["FLOWPWM_ACTIVATE"] = sys.prefix
    return env


def test_multi_task_strategy_trains_offline_policies_one_gpu_each_then_aggregates(slurm, pretrained, tmp_path):
    runs = tmp_path / "runs"
    (runs / "slurm-logs").mkdir(parents=True)
    r = slurm.run(["sbatch", "--cpus-per-task=1", "--mem=1G", "--time=10", "--gres=gpu:4",
                   f"--output={runs}/slurm-logs/%x-%j.out", str(MULTI), "--runs", str(runs), "--strategy", "multi_task",
                   "--pretrained", str(pretrained), "--tasks", " ".join(TASKS), "wm=flow", *POLICY],
                  env=env_for(slurm), check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    job = r.stdout.split("Submitted batch job ")[1].split()[0]
    info = slurm.wait(job, timeout=WAIT)
    (log,) = (runs / "slurm-logs").glob(f"*-{job}.out")
    assert info["JobState"] == "COMPLETED", log.read_text()
    group, gpus = runs / f"slurm-{job}", set()
    for task in TASKS:
        run = RunDir(group / task)
        evals = [rec for rec in run.records() if "eval_score" in rec]
        assert [rec["iteration"] for rec in evals] == [0, 4], task
        assert f"task: {task}" in run.config.read_text() and "type: flow" in run.config.read_text()
        first = (group / "logs" / f"{task}.log").read_text().splitlines()[0]
        gpus.add(first.split("CUDA_VISIBLE_DEVICES=")[1].strip())
    assert gpus == {"0", "1", "2", "3"}
    md = (group / "compare" / "report.md").read_text()
    assert "Groups: **flow** (n=4)" in md and "## Per-task scores" in md and "stratified by `task`" in md
    assert (group / "compare" / "performance_profile.png").is_file()


def test_multi_task_pretrained_needs_tasks_and_the_multi_task_strategy():
    env = {**clean_env(), "FLOWPWM_ROOT": str(REPO)}
    r = subprocess.run([str(MULTI), "--strategy", "multi_seed", "--pretrained", "x"], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 2 and "--pretrained is for --strategy multi_task" in r.stderr
    r = subprocess.run([str(MULTI), "--strategy", "multi_task", "--pretrained", "x"], capture_output=True, text=True,
                       env={**env, "TASKS": ""})
    assert r.returncode == 2 and "--pretrained needs --tasks" in r.stderr


def test_hydra_multirun_on_slurm_trains_policies_for_tasks_and_both_world_models(slurm, pretrained, tmp_path):
    sweep = tmp_path / "sweep"
    env = {**env_for(slurm), "FLOWPWM_CPUS_PER_RUN": "1", "FLOWPWM_MEM_GB": "1", "FLOWPWM_TIMEOUT_MIN": "10",
}
    r = subprocess.run([sys.executable, "-m", "flowpwm.cli", "train-policy", "-m", "hydra/launcher=slurm",
                        "wm=mlp,flow", "task=pendulum-spin,cup-spin", f"pretrained={pretrained}", *POLICY,
                        f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=WAIT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    dirs = sorted(d.name for d in sweep.iterdir() if d.is_dir() and not d.name.startswith("."))
    assert sorted(d.split("_", 1)[1] for d in dirs) == ["pwm_tiny_cup-spin_s0", "pwm_tiny_flow_cup-spin_s0",
                                                        "pwm_tiny_flow_pendulum-spin_s0", "pwm_tiny_pendulum-spin_s0"]
    for d in dirs:
        run = RunDir(sweep / d)
        assert [rec["iteration"] for rec in run.records() if "eval_score" in rec] == [0, 4], d
        assert run.has_checkpoint()
    assert len(list((sweep / ".submitit").glob("*_[0-3]"))) == 4  # one Slurm array task per run

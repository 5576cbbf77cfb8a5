"""The cluster scripts (cluster/*.sh) and the Hydra Slurm launcher against a real Slurm.

The first tests need no Slurm: `submit_job.sh` refuses bad arguments before it would call sbatch,
and the launcher config composes. The others start a single-node Slurm cluster on localhost
(tests/slurm_cluster.py: slurmctld, slurmd and munged in the foreground, 4 fake GPUs; Slurm and
munge are installed with apt when missing, and these tests are skipped only when that is not
possible) and submit every script with tiny CPU training runs:

  single                      slurm_single_gpu.sh through submit_job.sh: trains, plots, COMPLETED
  preempted                   slurm_single_gpu.sh with plain sbatch; `scancel --batch --signal=USR1`
                              mid-run: checkpoint, exit 75, requeue, resume; ends with the same
                              epochs and env steps as the uninterrupted `single`, no epoch twice
  cancelled                   `scancel` mid-run: the job is not requeued, it stays CANCELLED
  multi (3 strategies)        slurm_multi_gpu.sh: 4 parallel runs, one GPU each, then compare
  multi with failing runs     the job fails and names the failed runs
  hydra multirun              `flowpwm train -m hydra/launcher=slurm seed=1,2`: a submitit array;
                              one task preempted with USR1 is requeued by submitit and resumes

All jobs are submitted together at the first Slurm test (they share the 4 fake GPUs) and each
test waits for its own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import pytest

from slurm_cluster import clean_env

REPO = Path(__file__).resolve().parents[1]
SUBMIT = REPO / "cluster" / "submit_job.sh"
SINGLE = REPO / "cluster" / "slurm_single_gpu.sh"
MULTI = REPO / "cluster" / "slurm_multi_gpu.sh"

TINY = ["env.num_envs=2", "train.seed_steps=40", "train.pretrain_iterations=2", "train.steps_per_epoch=4",
        "train.eval_episodes=1", "alg.wm_batch_size=16", "alg.wm_iterations=2", "alg.actor_batch_size=8",
        "alg.critic_iterations=1", "alg.policy_iterations=2", "alg.horizon=4", "train.threads=1",
        "wandb.mode=disabled", "monitor.progress=lines", "device=cpu", "train.plots=false"]
EPOCHS = 30  # long enough to be stopped in the middle: 40 seed steps, then 8 env steps an epoch
LONG = [*TINY, "train.eval_every=10", f"train.env_steps={40 + 8 * EPOCHS}"]
SHORT = [*TINY, "train.eval_every=2", "train.env_steps=56"]  # 2 epochs
TASKS = ["cartpole-swingup", "cartpole-balance", "pendulum-swingup", "reacher-easy"]
RESOURCES = ["--cpus", "1", "--mem", "1G", "--time", "10"]
WAIT = 420  # seconds for one job, queueing behind the others included


# -- without Slurm -------------------------------------------------------------------------------
@pytest.fixture
def fake_sbatch(tmp_path):
    """A PATH whose `sbatch` only records that it was called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "sbatch-called"
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\necho \"$@\" > {marker}\necho 'Submitted batch job 1'\n")
    (bin_dir / "sbatch").chmod(0o755)
    env = {**clean_env(), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return env, marker


def submit(*args, env=None, **kw):
    return subprocess.run([str(SUBMIT), *map(str, args)], capture_output=True, text=True, env=env, timeout=60,
                          cwd=REPO, **kw)


@pytest.mark.parametrize("args, message", [
    ([], "missing mode"),
    (["double"], "unknown mode 'double'"),
    (["multi", "--strategy", "multi_everything"], "unknown strategy 'multi_everything'"),
    (["multi", "--gpus", "3"], "bad GPU count"),
    (["single", "--gpus", "4"], "bad GPU count"),
    (["multi", "--gpus", "four"], "bad GPU count"),
    (["single", "--alg", "pwm_9M"], "missing config"),
    (["multi", "alg=pwm_9M_flow"], "missing config"),
    (["single", "--bogus"], "unknown option '--bogus'"),
    (["single", "seed"], "is not a Hydra override"),
    (["multi", "--seeds", "0 1"], "needs 4 seeds"),
    (["multi", "--strategy", "multi_task", "--tasks", "a b c"], "needs 4 tasks"),
    (["multi", "--strategy", "baseline_vs_flow", "wm=flow"], "runs both world models"),
    (["single", "--time", "1 day"], "bad --time"),
    (["single", "--wm", "transformer"], "choose mlp or flow"),
    # composed and checked by `flowpwm check-config` (as --dry-run does too)
    (["single", "--task", "cartpole-swingupp", "--dry-run"], "env.task=cartpole-swingupp: unknown value (did you mean"),
    (["single", "no_such_key=3"], "no_such_key: unknown key"),
    (["multi", "--dry-run", "+alg.horizn=8"], "alg.horizn=8: unknown key (did you mean alg.horizon?)"),
    (["multi", "--strategy", "multi_task", "--tasks", "cartpole-swingup walker-walk cheetah-run finger-spinn"],
     "[env.task=finger-spinn] env.task=finger-spinn: unknown value (did you mean finger-spin?)"),
    (["single", "train.eval_every=0"], "train.eval_every=0: must be an integer >= 1"),
])
def test_submit_job_rejects_bad_arguments_before_sbatch(args, message, fake_sbatch):
    env, marker = fake_sbatch
    r = submit(*args, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith("cluster/submit_job.sh: error: ") and message in lines[0], r.stderr
    assert len(lines) == 2 and lines[1].startswith("usage: cluster/submit_job.sh single|multi"), r.stderr
    assert not marker.exists(), "sbatch was called"


def test_submit_job_help_dry_run_and_submission(fake_sbatch, tmp_path):
    env, marker = fake_sbatch
    r = submit("--help", env=env)
    assert r.returncode == 0 and "Examples:" in r.stdout and "baseline_vs_flow" in r.stdout
    r = submit("multi", "--strategy", "baseline_vs_flow", "--alg", "pwm_5M", "--seeds", "3 4", "--account", "acct",
               "--time", "2-00:00:00", "--dry-run", "train.env_steps=100000", env=env)
    assert r.returncode == 0, r.stderr
    cmd = r.stdout.strip()
    for part in ("sbatch ", "--gres=gpu:4", "--account=acct", "--time=2-00:00:00", "--signal=B:USR1@300",
                 str(MULTI), "--strategy baseline_vs_flow", "--seeds 3\\ 4", "alg=pwm_5M", "train.env_steps=100000"):
        assert part in cmd, (part, cmd)
    assert not marker.exists()
    r = submit("single", "--alg", "pwm_5M_flow", "--seed", "2", "--runs", tmp_path / "runs", env=env)
    assert r.returncode == 0 and "Submitted batch job 1" in r.stdout, r.stderr
    called = marker.read_text()
    assert "--gres=gpu:1" in called and str(SINGLE) in called and "alg=pwm_5M_flow seed=2" in called


def test_job_scripts_are_executable_bash():
    for script in (SUBMIT, SINGLE, MULTI):
        assert os.access(script, os.X_OK), script
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert subprocess.run(["bash", "-n", str(REPO / "cluster" / "common.sh")]).returncode == 0


def test_multi_script_rejects_a_bad_strategy_itself():
    env = {**clean_env(), "FLOWPWM_ROOT": str(REPO)}
    r = subprocess.run([str(MULTI), "--strategy", "multi_everything"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "unknown strategy 'multi_everything'" in r.stderr
    r = subprocess.run([str(MULTI), "--strategy", "multi_task", "--tasks", "a b"], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 2 and "needs 4 tasks" in r.stderr


def launcher_cfg(environ):
    """The hydra config (unresolved) and the resolved launcher config of `hydra/launcher=slurm`."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from flowpwm.config import config_dir

    GlobalHydra.instance().clear()  # another test's in-process Hydra run may have left it set
    with mock.patch.dict(os.environ, environ), initialize_config_dir(version_base=None, config_dir=str(config_dir())):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
        return OmegaConf.to_container(cfg.hydra), OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_hydra_slurm_launcher_config():
    hydra, launcher = launcher_cfg({"FLOWPWM_PARTITION": "gpu-part", "FLOWPWM_TIMEOUT_MIN": "90"})
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "gpu-part" and launcher["timeout_min"] == 90
    assert launcher["account"] is None and launcher["qos"] is None  # unset: the cluster's default
    assert launcher["gpus_per_node"] == 1 and launcher["max_num_timeout"] > 0
    assert launcher["additional_parameters"] == {"signal": "USR1@300", "requeue": True}
    assert "export SUBMITIT_PREEMPT_SIGNAL=USR1" in launcher["setup"]
    assert hydra["job"]["env_set"]["FLOWPWM_RESUME"] == "auto"
    assert hydra["launcher"]["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"


def test_config_resume_follows_the_launchers_flowpwm_resume():
    from flowpwm.config import compose

    with mock.patch.dict(os.environ, {"FLOWPWM_RESUME": "auto"}):
        assert compose([]).resume == "auto"
    with mock.patch.dict(os.environ, {}, clear=False):
        os.environ.pop("FLOWPWM_RESUME", None)
        assert compose([]).resume is None


# -- with Slurm ----------------------------------------------------------------------------------
def job_env(cluster) -> dict[str, str]:
    """The environment jobs are submitted with: this interpreter's environment (its virtualenv
    is what the scripts activate; its bin directory leads PATH), one thread per process."""
    env = {**cluster.env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}:{cluster.env['PATH']}",
           "FLOWPWM_COMPARE_ARGS": "--bootstrap 200 --diagnose-slices 0"}
    if (Path(sys.prefix) / "bin" / "activate").exists():
        env["FLOWPWM_ACTIVATE"] = sys.prefix
    return env


def submitted_id(r) -> str:
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.split("Submitted batch job ")[1].split()[0]


class Jobs:
    """Everything submitted at once; each test waits for its own. The runs that are stopped on
    purpose are watched by threads, which send the signal once the run has logged a few epochs."""

    def __init__(self, cluster, root: Path):
        self.cluster, self.root, self.env = cluster, root, job_env(cluster)
        self.runs = root / "runs"
        self.sweep = root / "sweep"
        self.ids: dict[str, str] = {}
        self.launcher: subprocess.Popen | None = None
        self.watchers: dict[str, threading.Thread] = {}
        self.sent: dict[str, str] = {}  # what each watcher did, or why it could not

    def submit_job(self, name, *args):
        self.ids[name] = submitted_id(submit(*args, "--runs", self.runs, *RESOURCES, env=self.env))

    def sbatch(self, name, script, *args, options=()):
        r = self.cluster.run(["sbatch", "--cpus-per-task=1", "--mem=1G", "--time=10", *options,
                              f"--output={self.runs}/slurm-logs/%x-%j.out", str(script), "--runs", str(self.runs),
                              *args], env=self.env, check=False)
        self.ids[name] = submitted_id(r)

    def start_all(self):
        (self.runs / "slurm-logs").mkdir(parents=True)
        # First the runs that get stopped (they start at once), then the rest queue for the GPUs.
        self.sbatch("preempted", SINGLE, *LONG)
        self.when_at_epoch("preempted", lambda: self.runs / f"slurm-{self.ids['preempted']}", 2,
                           lambda: ["scancel", "--batch", "--signal=USR1", self.ids["preempted"]])
        self.submit_job("cancelled", "single", "--name", "cancel-me", *LONG)
        self.when_at_epoch("cancelled", lambda: self.runs / "cancel-me", 1,
                           lambda: ["scancel", self.ids["cancelled"]])
        self.submit_job("single", "single", *LONG)
        self.start_multirun()
        # scancel without --batch signals the job steps: submitit runs Python as one (srun).
        self.when_at_epoch("multirun", lambda: self.sweep / "0_pwm_tiny_flow_cartpole-swingup_s1", 2,
                           lambda: ["scancel", "--signal=USR1", self.multirun_task()])
        self.submit_job("multi_seed", "multi", "--strategy", "multi_seed", "--seeds", "0 1 2 3", *SHORT)
        self.submit_job("multi_task", "multi", "--strategy", "multi_task", "--tasks", " ".join(TASKS), *SHORT)
        self.submit_job("baseline_vs_flow", "multi", "--strategy", "baseline_vs_flow", "--alg", "pwm_tiny",
                        *SHORT)
        # Runs that fail on the node: plain sbatch, since submit_job.sh refuses unknown tasks before
        # they reach the queue (test_submit_job_rejects_bad_arguments_before_sbatch).
        self.sbatch("multi_failing", MULTI, "--strategy", "multi_task",
                    "--tasks", "cartpole-swingup no-such-task cartpole-balance another-bad-task",
                    *TINY, "train.env_steps=48", options=["--gres=gpu:4", "--job-name=flowpwm-multi_task"])

    def start_multirun(self):
        env = {**self.env, "FLOWPWM_CPUS_PER_RUN": "1", "FLOWPWM_MEM_GB": "1", "FLOWPWM_TIMEOUT_MIN": "10"}
        # No resume=auto: the launcher's FLOWPWM_RESUME=auto must make the requeued task resume.
        args = [sys.executable, "-m", "flowpwm.cli", "train", "-m", "hydra/launcher=slurm", "seed=1,2", *LONG,
                f"hydra.sweep.dir={self.sweep}"]
        with open(self.root / "multirun.log", "w") as out:
            self.launcher = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.root)

    def multirun_task(self) -> str:
        """The Slurm id of the sweep's first run, an array task: <array job>_0."""
        (task,) = [p.name for p in (self.sweep / ".submitit").glob("*_0")]
        return task

    def when_at_epoch(self, name, run_dir, epoch, command):
        def watch():
            try:
                wait_for_epoch(run_dir(), epoch)
                cmd = command()
                self.cluster.run(cmd)
                self.sent[name] = " ".join(cmd)
            except Exception as e:  # reported by the test that needs it
                self.sent[name] = f"failed: {e!r}"

        self.watchers[name] = threading.Thread(target=watch, daemon=True)
        self.watchers[name].start()

    def interrupted(self, name) -> str:
        self.watchers[name].join(timeout=WAIT)
        sent = self.sent.get(name, "still waiting")
        assert sent.startswith("scancel"), f"{name}: {sent}"
        return sent

    def log(self, name) -> str:
        (path,) = (self.runs / "slurm-logs").glob(f"*-{self.ids[name]}.out")
        return path.read_text()

    def wait(self, name, state="COMPLETED") -> dict:
        info = self.cluster.wait(self.ids[name], timeout=WAIT)
        assert info["JobState"] == state, f"{name}: {info.get('JobState')} {info.get('ExitCode')}\n{self.log(name)}"
        return info

    def stop_all(self):
        if self.launcher and self.launcher.poll() is None:
            self.launcher.terminate()
            self.launcher.wait(timeout=30)


@pytest.fixture(scope="module")
def jobs(slurm, tmp_path_factory):
    jobs = Jobs(slurm, tmp_path_factory.mktemp("jobs"))
    jobs.start_all()
    yield jobs
    jobs.stop_all()


def epochs(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def wait_for_epoch(run_dir: Path, epoch: int, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = run_dir / "metrics.jsonl"
        if path.exists() and sum(1 for line in path.read_text().splitlines() if line.endswith("}")) > epoch:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{run_dir} did not reach epoch {epoch}")


def assert_complete(run_dir: Path, n_epochs: int) -> list[dict]:
    records = epochs(run_dir)
    assert [r["epoch"] for r in records] == list(range(n_epochs + 1)), run_dir  # each epoch once
    assert (run_dir / "checkpoints" / "latest.pt").exists()
    return records


def test_preempted_job_is_requeued_and_resumes_to_the_same_end(jobs):
    run_dir = jobs.runs / f"slurm-{jobs.ids['preempted']}"
    jobs.interrupted("preempted")  # scancel --batch --signal=USR1 at epoch 2
    info = jobs.wait("preempted")
    log = jobs.log("preempted")
    assert info["Restarts"] == "1" and info["ExitCode"] == "0:0", log
    assert "got SIGUSR1" in log and "flowpwm train: stopped on SIGUSR1" in log and "requeueing job" in log, log
    assert "resumed at epoch" in log and "restart 1" in log, log
    states = [c["JobState"] for c in jobs.cluster.completions() if c["JobId"] == jobs.ids["preempted"]]
    assert states == ["PENDING", "COMPLETED"], states  # requeued once, then done
    resumed = assert_complete(run_dir, EPOCHS)

    jobs.wait("single")
    uninterrupted = assert_complete(jobs.runs / f"slurm-{jobs.ids['single']}", EPOCHS)
    assert resumed[-1]["env_steps"] == uninterrupted[-1]["env_steps"] == 40 + 8 * EPOCHS


def test_cancelled_job_is_not_requeued(jobs):
    jobs.interrupted("cancelled")  # scancel (SIGTERM) at epoch 1
    info = jobs.wait("cancelled", state="CANCELLED")
    assert info["Restarts"] == "0"
    deadline = time.monotonic() + 60  # the script outlives the job's end by a moment
    while "not requeueing" not in jobs.log("cancelled") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "got SIGTERM" in jobs.log("cancelled") and "not requeueing" in jobs.log("cancelled")
    assert (jobs.runs / "cancel-me" / "checkpoints" / "latest.pt").exists()  # it stopped cleanly


def test_single_gpu_job_trains_and_plots(jobs):
    info = jobs.wait("single")
    assert info["ExitCode"] == "0:0"
    run_dir = jobs.runs / f"slurm-{jobs.ids['single']}"
    assert_complete(run_dir, EPOCHS)
    log = jobs.log("single")
    assert re.search(r"restart 0, GPU [0-3]\n", log) and f"run dir {run_dir}" in log, log  # one of the 4
    assert list((run_dir / "plots").glob("*.png")), log


STRATEGY_RUNS = {
    "multi_seed": {f"s{s}": {"seed": s} for s in range(4)},
    "multi_task": {t: {"task": t} for t in TASKS},
    "baseline_vs_flow": {f"{wm}_s{s}": {"seed": s, "alg": "pwm_tiny" if wm == "mlp" else "pwm_tiny_flow"}
                         for s in (0, 1) for wm in ("mlp", "flow")},
}


@pytest.mark.parametrize("strategy", list(STRATEGY_RUNS))
def test_multi_gpu_job_runs_four_in_parallel_one_gpu_each_then_compares(jobs, strategy):
    jobs.wait(strategy)
    group = jobs.runs / f"slurm-{jobs.ids[strategy]}"
    gpus = set()
    for label, expect in STRATEGY_RUNS[strategy].items():
        assert_complete(group / label, 2)
        cfg = (group / label / "config.yaml").read_text()
        if "seed" in expect:
            assert f"\nseed: {expect['seed']}\n" in cfg, label
        if "task" in expect:
            assert f"task: {expect['task']}" in cfg, label
        if "alg" in expect:
            assert f"name: {expect['alg']}\n" in cfg, label
        first = (group / "logs" / f"{label}.log").read_text().splitlines()[0]
        assert "CUDA_VISIBLE_DEVICES=" in first, first
        visible = first.split("CUDA_VISIBLE_DEVICES=")[1].strip()
        assert "," not in visible, first  # one GPU per run
        gpus.add(visible)
    assert gpus == {"0", "1", "2", "3"}
    log = jobs.log(strategy)
    assert (group / "compare" / "report.md").exists(), log


def test_multi_gpu_job_fails_and_names_the_failed_runs(jobs):
    info = jobs.wait("multi_failing", state="FAILED")
    assert info["ExitCode"] == "1:0"
    log = jobs.log("multi_failing")
    assert "failed: no-such-task another-bad-task" in log, log
    assert "run no-such-task FAILED" in log and "unknown" in log and "no comparison" in log, log
    group = jobs.runs / f"slurm-{jobs.ids['multi_failing']}"
    assert_complete(group / "cartpole-swingup", 1)


def test_hydra_multirun_on_slurm_requeues_a_preempted_run(jobs):
    jobs.interrupted("multirun")  # scancel --signal=USR1 <array>_0 at epoch 2
    task = jobs.multirun_task()
    rc = jobs.launcher.wait(timeout=WAIT)
    out = (jobs.root / "multirun.log").read_text()
    assert rc == 0, out
    submitit_log = next((jobs.sweep / ".submitit" / task).glob("*_log.out")).read_text()
    assert "Requeued job" in submitit_log and "resumed at epoch" in submitit_log, submitit_log
    for seed in (1, 2):
        records = assert_complete(jobs.sweep / f"{seed - 1}_pwm_tiny_flow_cartpole-swingup_s{seed}", EPOCHS)
        assert records[-1]["env_steps"] == 40 + 8 * EPOCHS
    array, deadline = task.split("_")[0], time.monotonic() + 60
    while True:  # the launcher returns on the results; Slurm may still be ending a task
        ends = sorted(c["JobState"] for c in jobs.cluster.completions() if c.get("ArrayJobId") == array)
        if ends == ["COMPLETED", "COMPLETED", "PENDING"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert ends == ["COMPLETED", "COMPLETED", "PENDING"], ends  # one requeue, both done

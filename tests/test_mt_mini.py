"""scripts/mt_mini.sh end to end at a tiny budget: online runs collect → export → pretrain (both
world models) → per-task policies (tasks × world models) → compare over tasks × seeds."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mt_mini.sh"
TINY = {
    "TASKS": "pendulum-spin,cartpole-balance", "SEEDS": "0", "ONLINE_STEPS": "56", "PRETRAIN_ITERATIONS": "4",
    "POLICY_ITERATIONS": "4", "EVAL_EVERY": "4", "EVAL_EPISODES": "1", "WANDB": "disabled",
    "COLLECT_ARGS": "env.num_envs=2 train.seed_steps=40 train.pretrain_iterations=1 train.steps_per_epoch=4 "
                    "train.eval_episodes=1 train.eval_every=1000 alg.horizon=4 alg.wm_batch_size=16 "
                    "alg.wm_iterations=1 alg.actor_batch_size=8 alg.critic_iterations=1 alg.policy_iterations=1",
    "PRETRAIN_ARGS": "pretrain.log_every=2 pretrain.eval_every=2 pretrain.checkpoint_every=2 pretrain.batch_size=16 "
                     "pretrain.eval_batch_size=16 alg.horizon=4",
    "POLICY_ARGS": "policy.log_every=2 policy.checkpoint_every=2 policy.esnr_every=0 policy.eval_envs=1 "
                   "alg.horizon=4 alg.actor_batch_size=8 alg.critic_iterations=1",
    "COMPARE_ARGS": "--bootstrap 200",
}


def stages(out: Path) -> list[list[str]]:
    return [line.split("\t") for line in (out / "stage_times.tsv").read_text().splitlines()[1:]]


def test_mt_mini_pipeline_runs_end_to_end_and_continues_after_an_interruption(tmp_path):
    out = tmp_path / "mt-mini"
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PY": sys.executable, "FLOWPWM": str(Path(sys.executable).parent / "flowpwm"), **TINY}
    script = ["bash", str(SCRIPT), str(out)]

    # A scheduler stops the whole job (SIGTERM to its process group) while the policies train.
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(script, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                 start_new_session=True)
        deadline = time.monotonic() + 300
        while not list(out.glob("policy/*/checkpoints/*")):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no policy checkpoint within 300 s"
            time.sleep(0.1)
        os.killpg(first.pid, signal.SIGTERM)
        assert first.wait(timeout=120) == 143, (tmp_path / "first.log").read_text()[-3000:]
    assert [(name, status) for name, _, status in stages(out)] == [
        ("collect", "done"), ("export", "done"), ("pretrain", "done"), ("policies", "interrupted")]

    # Other settings on the same OUT_DIR: one line, exit 2, nothing run or written.
    r = subprocess.run(script, capture_output=True, text=True, env={**env, "ONLINE_STEPS": "64"}, timeout=60,
                       cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "ONLINE_STEPS=64" in r.stderr, r.stderr
    assert len(stages(out)) == 4

    # The same command continues: finished stages skipped, the interrupted one resumed.
    r = subprocess.run(script, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "collect: done before, skipped" in r.stdout and "pretrain: done before, skipped" in r.stdout
    assert [name for name, _, status in stages(out) if status == "done"] == [
        "collect", "export", "pretrain", "policies", "compare"]
    # Each stage's wall time is the sum of its segments (policies: interrupted, then continued).
    totals, segments = {}, {}
    for name, seconds, _ in stages(out):
        totals[name] = totals.get(name, 0) + int(seconds)
        segments[name] = segments.get(name, 0) + 1
    printed = r.stdout.split("wall time per stage (s, segments):")[1].split()
    assert [printed[i:i + 3] for i in range(0, len(printed), 3)] == [
        [name, str(totals[name]), str(segments[name])] for name in totals]
    assert segments["policies"] == 2
    export = json.loads((out / "data" / "export.json").read_text())
    assert sorted(run["task"] for run in export["runs"]) == ["cartpole-balance", "pendulum-spin"]
    assert len([d for d in (out / "pretrain").iterdir() if d.is_dir()]) == 2
    policies = [d for d in (out / "policy").iterdir() if d.is_dir()]
    assert len(policies) == 4  # 2 tasks x 1 seed x 2 world models
    resumed = [d for d in policies if (d / "config_history.jsonl").is_file()]
    assert resumed, "the interrupted policy run did not continue from its checkpoint"
    for d in policies:  # each ran to the end, once
        iterations = [json.loads(line)["iteration"] for line in (d / "metrics.jsonl").read_text().splitlines()
                      if "iteration" in line]
        assert iterations[-1] == 4 and len(iterations) == len(set(iterations)), (d, iterations)
    summary = (out / "compare" / "summary.csv").read_text()
    assert summary.splitlines()[1].startswith("flow,2,") and summary.splitlines()[2].startswith("mlp,2,")
    md = (out / "compare" / "report.md").read_text()
    assert "## Per-task scores" in md and "data (online run)" in md
    assert (out / "compare" / "performance_profile.png").is_file()

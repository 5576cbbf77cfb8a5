"""Multi-task offline PWM: action masks in the world model, `flowpwm data export` (exact round trip
from a real run's buffer), `flowpwm pretrain` (preemption and resume), `flowpwm train-policy`
(never steps a training env, evaluates in the real one, logs the normalised score),
scripts/imagined_vs_real.py on a policy run, scripts/task_errors.py on a pretraining run, and
one-line refusals of bad input before anything is written."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flowpwm.algorithms.pwm import PWM
from flowpwm.config import compose
from flowpwm.data.dataset import load_dataset
from flowpwm.data.episodes import read_chunk
from flowpwm.data.export import export_runs, segments
from flowpwm.envs.tasksets import get_task_set
from flowpwm.losses import compute_wm_loss
from flowpwm.rundir import RunDir
from flowpwm.training.online import train
from flowpwm.training.preemption import EXIT_REQUEUE

KINDS = ["mlp", "flow"]
QUIET = ["wandb.mode=disabled", "monitor.progress=off"]
# Online runs: 2 envs, H=4; the seed phase fills 550 rows per env (one whole 500-step episode each).
ONLINE = ["env.num_envs=2", "train.seed_steps=1100", "train.pretrain_iterations=2", "train.steps_per_epoch=4",
          "train.eval_episodes=1", "train.eval_every=1000", "train.checkpoint_every=1", "alg.wm_batch_size=16",
          "alg.wm_iterations=1", "alg.actor_batch_size=8", "alg.critic_iterations=1", "alg.policy_iterations=1",
          "alg.horizon=4", "train.threads=1", "train.plots=false", "train.esnr_every=0", *QUIET]
SMALL = ["alg.horizon=4", "alg.actor_batch_size=8", "alg.critic_iterations=1", "alg.wm_batch_size=16"]
PRETRAIN = ["pretrain.iterations=6", "pretrain.log_every=2", "pretrain.eval_every=2", "pretrain.checkpoint_every=2",
            "pretrain.batch_size=16", "pretrain.eval_batch_size=16", "pretrain.threads=1", *SMALL, *QUIET]
POLICY = ["policy.iterations=4", "policy.log_every=2", "policy.eval_every=2", "policy.checkpoint_every=2",
          "policy.esnr_every=2", "policy.esnr_samples=2", "policy.eval_episodes=1", "policy.eval_envs=1",
          "policy.threads=1", *SMALL, *QUIET]


def alg_name(kind: str) -> str:
    return "pwm_tiny_flow" if kind == "flow" else "pwm_tiny"


def flowpwm(*args, cwd, timeout=240):
    return subprocess.run([sys.executable, "-m", "flowpwm.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(cwd)})


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# -- the world model: masked action dims ------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_masked_action_dims_have_zero_gradient_into_the_dynamics(kind):
    """Slices of tasks with 1 and 2 actuators (of 3): after `mask_action` neither the actions' padded
    dims nor the dynamics' (velocity's) input weights of those dims get any gradient."""
    alg = compose([f"alg={alg_name(kind)}", "alg.world_model.task_dim=8"]).alg
    agent = PWM(alg, obs_dim=6, action_dim=3, num_tasks=2, action_dims=[1, 2])
    wm, H, B = agent.wm, 4, 8
    task = torch.tensor([0, 1] * (B // 2))
    obs, reward = torch.randn(H + 1, B, 6), torch.rand(H, B, 1)
    action = (torch.rand(H, B, 3) * 2 - 1).requires_grad_()
    loss, _ = compute_wm_loss(wm, obs, wm.mask_action(action, task), reward, task, **agent.loss_kwargs)
    loss.backward()
    grad = action.grad
    assert grad[:, task == 0, 1:].abs().max() == 0 and grad[:, task == 1, 2:].abs().max() == 0
    assert grad[:, task == 0, 0].abs().max() > 0 and grad[:, task == 1, :2].abs().max() > 0
    first = (wm._dynamics if kind == "mlp" else wm._velocity)[0]  # input: [z, a, task emb, (tau features)]
    L = wm.latent_dim
    assert first.weight.grad[:, L + 2].abs().max() == 0  # no task uses action dim 2
    assert first.weight.grad[:, L + 1].abs().max() > 0 and first.weight.grad[:, L].abs().max() > 0


# -- export -----------------------------------------------------------------------------------------
def test_segments_keep_whole_episodes_and_pieces_by_rule():
    done = torch.zeros(12, 2, dtype=torch.bool)
    done[4, 0] = done[9, 0] = True  # env 0: episodes end at rows 4 and 9 (5 steps each); rows 10-11 running
    done[2, 1] = True  # env 1: a resume cut at row 2 (3 steps), then rows 3-11 running
    term = torch.zeros_like(done)
    segs = segments(done, term, episode_steps=5, wrapped=False)
    assert [(s.env, s.start, s.end, s.reset, s.complete) for s in segs] == [
        (0, 0, 4, True, True), (0, 5, 9, True, True), (0, 10, 11, True, False),
        (1, 0, 2, True, False), (1, 3, 11, True, False)]
    wrapped = segments(done, term, episode_steps=5, wrapped=True)  # row 0 is not a reset: the first is a piece
    assert [(s.start, s.complete) for s in wrapped if s.env == 0][:2] == [(0, False), (5, True)]


@pytest.fixture(scope="module")
def online_run(tmp_path_factory):
    """A real tiny online run on pendulum-spin, resumed once: per env one whole episode (rows 0-499),
    a piece cut by the resume (rows 500-553) and the running episode (rows 554-557)."""
    d = tmp_path_factory.mktemp("online") / "run"
    train(compose(["alg=pwm_tiny", "env.task=pendulum-spin", "train.env_steps=1108", *ONLINE]), d,
          log=lambda *_: None)
    train(compose(["alg=pwm_tiny", "env.task=pendulum-spin", "train.env_steps=1116", "resume=auto", *ONLINE]), d,
          log=lambda *_: None)
    return d


def test_export_read_round_trip_is_exact(online_run, tmp_path):
    run = RunDir(online_run)
    state = run.load_checkpoint()
    buf = run.load_buffer(state)
    summary = export_runs([online_run], tmp_path / "data", "mt-mini", min_transitions=16, log=lambda *_: None)
    (r,) = summary["runs"]
    assert (r["task"], r["task_id"], r["episodes"], r["pieces"], r["dropped_pieces"]) == ("pendulum-spin", 3, 2, 2, 2)
    episodes = read_chunk(tmp_path / "data" / "chunk_000.safetensors")
    ts = get_task_set("mt-mini")
    assert (episodes.meta.task_set, episodes.meta.obs_dim, episodes.meta.action_dim) == ("mt-mini", 24, 6)
    assert episodes.task.tolist() == [3] * 4 and episodes.length.tolist() == [501, 55, 501, 55]
    for i, (env, start, n) in enumerate([(0, 0, 500), (0, 500, 54), (1, 0, 500), (1, 500, 54)]):
        rows = slice(start, start + n)
        assert torch.equal(episodes.obs[i, 0, :3], buf["obs"][start, env])
        assert torch.equal(episodes.obs[i, 1:n + 1, :3], buf["next_obs"][rows, env])
        assert torch.equal(episodes.action[i, 1:n + 1, :1], buf["action"][rows, env])
        assert torch.equal(episodes.reward[i, 1:n + 1], buf["reward"][rows, env])
        assert torch.equal(episodes.terminated[i, 1:n + 1], buf["terminated"][rows, env])
        # padding: obs past the task's 3 dims, actions past its 1, rows past the episode, row 0's filler
        assert episodes.obs[i, :, 3:].abs().max() == 0 and episodes.action[i, :, 1:].abs().max() == 0
        assert episodes.obs[i, n + 1:].abs().sum() == 0 and episodes.reward[i, 0] == 0
    ds = load_dataset(tmp_path / "data", "mt-mini")  # through the manifest the export wrote
    assert ds.num_transitions == 2 * 554 and ds.files.keys() == {"chunk_000.safetensors"}
    assert ds.task_stats()[ts.task_id("pendulum-spin")]["episodes"] == 4


def test_start_states_with_actions_pair_each_start_obs_with_the_action_the_data_took_there(dataset):
    """`policy.bc_coef` pulls the policy toward these actions: each must be the one taken at its
    start obs (row t+1's action, as in `sample`), and asking for them must not change the draw."""
    ds = load_dataset(dataset, "mt-mini")
    obs0, action0 = ds.start_states("pendulum-spin", 64, 4, torch.Generator().manual_seed(3), with_actions=True)
    assert torch.equal(obs0, ds.start_states("pendulum-spin", 64, 4, torch.Generator().manual_seed(3)))
    for o, a in zip(obs0, action0):
        ep, t = (ds.obs == o).all(-1).nonzero()[0].tolist()
        assert t + 1 < ds.length[ep] and torch.equal(a, ds.action[ep, t + 1])


def test_export_command_pads_to_the_task_set_and_refuses_a_used_directory(online_run, tmp_path):
    ok = flowpwm("data", "export", str(online_run), "--out", str(tmp_path / "d"), "--task-set", "mt80", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    episodes = read_chunk(tmp_path / "d" / "chunk_000.safetensors")
    assert episodes.obs.shape[-1] == 39 and set(episodes.task.tolist()) == {get_task_set("mt80").task_id("pendulum-spin")}
    again = flowpwm("data", "export", str(online_run), "--out", str(tmp_path / "d"), cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "not an empty directory" in again.stderr
    none = flowpwm("data", "export", str(tmp_path), "--out", str(tmp_path / "e"), cwd=tmp_path)
    assert none.returncode == 2 and "not a run directory" in none.stderr and not (tmp_path / "e").exists()


# -- pretraining ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(online_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "mt-mini"
    export_runs([online_run], out, "mt-mini", log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def pretrained(dataset, tmp_path_factory):
    """One pretraining run per world model, in one directory (as a sweep leaves them)."""
    from flowpwm.training.offline import pretrain

    root = tmp_path_factory.mktemp("pretrain")
    for i, kind in enumerate(KINDS):
        pretrain(compose([f"alg={alg_name(kind)}", f"data.path={dataset}", *PRETRAIN], config_name="pretrain"),
                 root / f"{i}_{alg_name(kind)}", log=lambda *_: None)
    return root


def test_pretraining_run_dir_records_the_dataset_and_held_out_errors(pretrained, dataset):
    for i, kind in enumerate(KINDS):
        run = RunDir(pretrained / f"{i}_{alg_name(kind)}")
        records = run.records()
        assert [r["epoch"] for r in records] == [1, 2, 3] and [r["iteration"] for r in records] == [2, 4, 6]
        assert all("heldout_latent_mse_h4" in r and "heldout_reward_err_h1" in r for r in records)
        # One task in the data: its own held-out reward error is the whole batch's.
        assert all(r["heldout_reward_err_h4_pendulum-spin"] == pytest.approx(r["heldout_reward_err_h4"], rel=1e-5)
                   for r in records)
        manifest = json.loads((run.path / "dataset_manifest.json").read_text())
        assert manifest["files"].keys() == {"chunk_000.safetensors"}
        assert "dataset_manifest_sha256" in json.loads(run.provenance.read_text())
        state = run.load_checkpoint()
        assert state["dims"]["kind"] == "pretrain" and state["dims"]["num_tasks"] == 6 and state["iteration"] == 6


def test_task_errors_reports_each_task_of_the_data_and_refuses_other_runs(pretrained, dataset, tmp_path):
    """scripts/task_errors.py: a row per task that has episodes, its real sums the data's own."""
    from flowpwm.analysis.task_errors import load_pretrain_run, task_errors

    agent, _ = load_pretrain_run(pretrained / "1_pwm_tiny_flow")
    ds = load_dataset(dataset, "mt-mini")
    (row,) = task_errors(agent, ds, slices=32, seed=5)
    b = ds.sample(32, agent.horizon, torch.Generator().manual_seed(5), task="pendulum-spin")
    assert (b["task"] == 3).all() and row["task"] == "pendulum-spin"
    assert row["real"] == pytest.approx(b["reward"].sum(0).mean().item())
    assert row["abs_error"] > 0 and row["low_slices"] <= 32

    script = Path(__file__).resolve().parents[1] / "scripts" / "task_errors.py"
    r = subprocess.run([sys.executable, str(script), str(dataset)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no checkpoint" in r.stderr and not r.stdout


def test_pretraining_reads_tdmpc2_chunks_as_the_configs_task_set(tmp_path):
    """MT30 data in TD-MPC2's pickled format (hash-checked first), read as mt-mini: task ids remapped
    to mt-mini's, other tasks left out; the manifest of the files read goes into the run dir."""
    from test_datasets import tdmpc2_chunk

    from flowpwm.envs.tasksets import MT30
    from flowpwm.reproducibility import DatasetVerifier
    from flowpwm.training.offline import pretrain

    mini = get_task_set("mt-mini")
    ids = [MT30.index(t) for t in mini.tasks] * 2 + [MT30.index("walker-walk")]
    tdmpc2_chunk(tmp_path / "mt30" / "chunk_0.pt", ids, rows=11)
    DatasetVerifier(tmp_path / "mt30").write_manifest()  # a trusted download
    summary = pretrain(compose(["alg=pwm_tiny", f"data.path={tmp_path / 'mt30'}", "data.task_set=mt-mini", *PRETRAIN],
                               config_name="pretrain"), tmp_path / "run", log=lambda *_: None)
    assert summary["iterations"] == 6
    manifest = json.loads((tmp_path / "run" / "dataset_manifest.json").read_text())
    assert list(manifest["files"]) == ["chunk_0.pt"]
    assert RunDir(tmp_path / "run").load_checkpoint()["dims"]["num_tasks"] == 6


def pretrain_cmd(run_dir: Path, dataset: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "flowpwm.cli", "pretrain", "wm=flow", f"data.path={dataset}", *PRETRAIN,
            "pretrain.iterations=40", "pretrain.checkpoint_every=40", f"hydra.run.dir={run_dir}", *extra]


def test_pretraining_preempted_and_resumed_ends_like_an_uninterrupted_run(dataset, tmp_path):
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    whole = subprocess.run(pretrain_cmd(tmp_path / "whole", dataset), capture_output=True, text=True, env=env,
                           timeout=240)
    assert whole.returncode == 0, whole.stderr
    run_dir = tmp_path / "stopped"
    proc = subprocess.Popen(pretrain_cmd(run_dir, dataset), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    deadline = time.monotonic() + 240
    while len(RunDir(run_dir).records()) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGUSR1)  # through the real handler: finish the epoch, checkpoint, exit 75
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == EXIT_REQUEUE, err
    assert "stopped on SIGUSR1" in err and "resume=auto" in err
    stopped_at = RunDir(run_dir).load_checkpoint()["iteration"]
    assert 4 <= stopped_at < 40
    resumed = subprocess.run(pretrain_cmd(run_dir, dataset, "resume=auto"), capture_output=True, text=True, env=env,
                             timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at iteration {stopped_at}" in resumed.stdout
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    a, b = RunDir(tmp_path / "whole").records(), [json.loads(line) for line in lines]
    assert [r["iteration"] for r in b] == list(range(2, 42, 2)) == [r["iteration"] for r in a]  # none twice
    drop = ("wall_time", "rss_mib")
    assert [{k: v for k, v in r.items() if k not in drop} for r in a] == \
        [{k: v for k, v in r.items() if k not in drop} for r in b]  # the same updates, bit for bit


# -- per-task policies ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_train_policy_never_steps_a_training_env_evaluates_in_the_real_env_and_logs_the_score(
        kind, pretrained, monkeypatch, tmp_path):
    from flowpwm.envs.base import BatchedEnv
    from flowpwm.training.policy import train_policy

    steps, evaluating = [], []
    real_step, real_eval = BatchedEnv.step, PWM.eval

    def step(env, actions):
        steps.append((type(env).__name__, bool(evaluating)))
        return real_step(env, actions)

    def evaluate(agent, env, episodes, seed, task=None):
        evaluating.append(True)
        try:
            return real_eval(agent, env, episodes, seed, task)
        finally:
            evaluating.pop()

    monkeypatch.setattr(BatchedEnv, "step", step)
    monkeypatch.setattr(PWM, "eval", evaluate)
    cfg = compose([f"alg={alg_name(kind)}", f"pretrained={pretrained}", "task=pendulum-spin", *POLICY],
                  config_name="policy")
    summary = train_policy(cfg, tmp_path / "run", log=lambda *_: None)
    assert steps and all(inside for _, inside in steps)  # every env step is an evaluation step
    assert {name for name, _ in steps} == {"MultiTaskEnv"}  # the real env, padded and masked
    records = RunDir(tmp_path / "run").records()
    evals = [r for r in records if "eval_return" in r]
    assert [r["iteration"] for r in evals] == [0, 2, 4]
    assert all(r["eval_score"] == pytest.approx(r["eval_return"] / 1000) for r in evals)
    assert summary["eval_score"] == evals[-1]["eval_score"] and "esnr_db" in records[-1]
    assert json.loads((tmp_path / "run" / "pretrained.json").read_text())["iteration"] == 6
    assert all(r["env_steps"] == 0 for r in records)  # never a training env step


def test_policy_run_resumed_with_a_larger_budget_ends_like_an_uninterrupted_one(pretrained, tmp_path):
    from flowpwm.training.policy import train_policy

    def run(d, iterations, *extra):
        cfg = compose(["alg=pwm_tiny_flow", f"pretrained={pretrained}", "task=pendulum-spin", *POLICY,
                       f"policy.iterations={iterations}", *extra], config_name="policy")
        return train_policy(cfg, d, log=lambda *_: None)

    run(tmp_path / "whole", 8)
    run(tmp_path / "split", 4)
    run(tmp_path / "split", 8, "resume=auto")
    drop = ("wall_time", "rss_mib")
    a, b = RunDir(tmp_path / "whole").records(), RunDir(tmp_path / "split").records()
    assert [r["iteration"] for r in b] == [0, 2, 4, 6, 8]
    assert [{k: v for k, v in r.items() if k not in drop} for r in a] == \
        [{k: v for k, v in r.items() if k not in drop} for r in b]
    history = (tmp_path / "split" / "config_history.jsonl").read_text()
    assert '"policy.iterations": [4, 8]' in history


def test_world_model_is_frozen_unless_fine_tuned(pretrained, tmp_path):
    from flowpwm.training.policy import train_policy

    cfg = compose(["alg=pwm_tiny", f"pretrained={pretrained}", "task=pendulum-spin", *POLICY], config_name="policy")
    train_policy(cfg, tmp_path / "run", log=lambda *_: None)
    before = RunDir(pretrained / "0_pwm_tiny").load_checkpoint()["agent"]["world_model"]
    after = RunDir(tmp_path / "run").load_checkpoint()["agent"]["world_model"]
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert "wm_loss" not in RunDir(tmp_path / "run").records()[-1]

    cfg = compose(["alg=pwm_tiny_flow", f"pretrained={pretrained}", "task=pendulum-spin", "policy.fine_tune=true",
                   *POLICY], config_name="policy")
    train_policy(cfg, tmp_path / "tuned", log=lambda *_: None)
    before = RunDir(pretrained / "1_pwm_tiny_flow").load_checkpoint()["agent"]["world_model"]
    after = RunDir(tmp_path / "tuned").load_checkpoint()["agent"]["world_model"]
    assert not torch.equal(before["_velocity.0.weight"], after["_velocity.0.weight"])  # fine-tuned
    assert "wm_loss" in RunDir(tmp_path / "tuned").records()[-1]


@pytest.mark.parametrize("kind", KINDS)
def test_behaviour_term_pulls_the_mean_action_toward_the_datas_on_the_tasks_own_action_dims(kind):
    """`policy.bc_coef`: with the term the policy's mean action moves to the data's action on the
    task's dims (the padded one stays masked); without it nothing pulls it there."""
    alg = compose([f"alg={alg_name(kind)}", "alg.world_model.task_dim=8", "alg.horizon=4"]).alg
    obs0, action0 = torch.randn(32, 6), torch.tensor([[0.6, -0.4, 0.9]]).expand(32, 3)
    gaps = {}
    for coef in (0.0, 10.0):
        torch.manual_seed(0)
        agent = PWM(alg, obs_dim=6, action_dim=3, num_tasks=2, action_dims=[1, 2])
        for _ in range(60):
            metrics = agent.update_policy(obs0, 1, action0, bc_coef=coef)
        assert ("bc_loss" in metrics) == (coef > 0)
        mean = agent.act(obs0, deterministic=True, task=1)
        assert mean[:, 2].abs().max() == 0  # task 1 has 2 actuators of 3
        gaps[coef] = (mean[:, :2] - action0[:, :2]).abs().mean().item()
    assert gaps[10.0] < 0.15 < gaps[0.0]


def test_train_policy_with_a_behaviour_term_logs_it(pretrained, tmp_path):
    from flowpwm.training.policy import train_policy

    cfg = compose(["alg=pwm_tiny", f"pretrained={pretrained}", "task=pendulum-spin", "policy.bc_coef=2.5", *POLICY],
                  config_name="policy")
    lines = []
    train_policy(cfg, tmp_path / "run", log=lines.append)
    records = [r for r in RunDir(tmp_path / "run").records() if "actor_loss" in r]
    assert records and all(r["bc_loss"] > 0 for r in records)
    assert "behaviour term, bc_coef 2.5" in lines[0]


def test_imagined_vs_real_reads_the_eval_policys_real_episodes_and_refuses_other_runs(pretrained, tmp_path):
    """scripts/imagined_vs_real.py: its real trajectories are the eval policy's episodes (same
    returns), and with stride H its real windows tile each episode."""
    from flowpwm.analysis.imagined_vs_real import imagined_vs_real, load_policy_run
    from flowpwm.envs.multitask import make_multitask_env
    from flowpwm.training.policy import train_policy

    cfg = compose(["alg=pwm_tiny", f"pretrained={pretrained}", "task=pendulum-spin", *POLICY], config_name="policy")
    train_policy(cfg, tmp_path / "run", log=lambda *_: None)
    agent, dims, iteration = policy = load_policy_run(tmp_path / "run")
    d = imagined_vs_real(*policy, episodes=2, stride=4, seed=7)
    assert (d["task"], iteration, d["horizon"], d["steps"]) == ("pendulum-spin", 4, 4, 500)
    env = make_multitask_env(get_task_set("mt-mini"), "pendulum-spin", num_envs=2, seed=7)
    returns, _ = agent.episode_returns(env, 2, 7, dims["task_id"])
    env.close()
    assert d["returns"].tolist() == pytest.approx(returns, rel=1e-5)  # float32 sums, another order
    assert d["real"].view(-1, 2).sum(0).tolist() == pytest.approx(d["returns"].tolist(), rel=1e-5)
    assert d["model_real_actions"].shape == d["model_policy"].shape == d["real"].shape == (250,)
    # A rollout's first reward is the reward head on the real state: with 1-step windows the two agree.
    one = imagined_vs_real(*policy, episodes=2, stride=4, seed=7, horizon=1)
    assert one["model_real_states"].tolist() == pytest.approx(one["model_real_actions"].tolist(), abs=1e-6)
    assert d["model_real_states"].shape == (250,) and not torch.equal(d["model_real_states"], d["model_real_actions"])

    script = Path(__file__).resolve().parents[1] / "scripts" / "imagined_vs_real.py"
    r = subprocess.run([sys.executable, str(script), str(pretrained / "0_pwm_tiny")], capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not a train-policy run" in r.stderr and not r.stdout


# -- bad input: one line, exit 2, nothing written ------------------------------------------------
@pytest.mark.parametrize("case", ["missing dataset", "task set mismatch", "other world model", "unknown task",
                                  "task outside the set"])
def test_bad_input_is_one_line_and_exit_2_before_anything_is_written(case, dataset, pretrained, tmp_path):
    args = {
        "missing dataset": ["pretrain", f"data.path={tmp_path / 'nothing'}"],
        "task set mismatch": ["pretrain", f"data.path={dataset}", "data.task_set=mt30"],
        "other world model": ["train-policy", "wm=flow", f"pretrained={pretrained / '0_pwm_tiny'}", "task=pendulum-spin"],
        "unknown task": ["train-policy", f"pretrained={pretrained}", "task=pendulum-spinn"],
        "task outside the set": ["train-policy", f"pretrained={pretrained}", "task=walker-walk"],
    }[case]
    work = tmp_path / "work"
    work.mkdir()
    r = flowpwm(*args, *QUIET, cwd=work)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith(f"flowpwm {args[0]}: error: ")
    expected = {"missing dataset": "does not exist", "task set mismatch": "for task set mt30",
                "other world model": "holds a mlp world model", "unknown task": "unknown value (did you mean",
                "task outside the set": "not in the pretrained world model's task set mt-mini"}[case]
    assert expected in r.stderr, r.stderr
    assert tree(work) == [] and r.stdout == ""

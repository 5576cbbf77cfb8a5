import json
import math

import pytest
import torch

from flowpwm.config import compose
from flowpwm.envs import make_env
from flowpwm.rundir import CHECKPOINT_FORMAT
from flowpwm.training.online import OnlineTrainer, train

FAST = ["env.num_envs=2", "train.seed_steps=40", "train.pretrain_iterations=2", "train.steps_per_epoch=4",
        "train.eval_episodes=1", "train.eval_every=1", "train.checkpoint_every=1",
        "alg.wm_batch_size=16", "alg.wm_iterations=2", "alg.actor_batch_size=8", "alg.critic_iterations=1",
        "alg.policy_iterations=2",
        "alg.horizon=4", "train.threads=1", "wandb.mode=disabled", "monitor.progress=off",
        "train.plots=false"]


def cfg_for(kind, task="cartpole-swingup", epochs=1, extra=()):
    alg = "pwm_tiny_flow" if kind == "flow" else "pwm_tiny"
    steps = 40 + epochs * 4 * 2
    return compose([f"alg={alg}", f"env.task={task}", f"train.env_steps={steps}", *FAST, *extra])


@pytest.mark.parametrize("kind", ["mlp", "flow"])
@pytest.mark.parametrize("task", ["cartpole-swingup", "Hopper-v5"])
def test_one_epoch_of_online_training_runs_and_writes_the_run_dir(kind, task, tmp_path):
    summary = train(cfg_for(kind, task), tmp_path, log=lambda *_: None)
    assert summary["epochs"] == 1 and summary["env_steps"] == 48
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = records[-1]
    for key in ("env_steps", "wall_time", "eval_return", "wm_loss", "dynamics_loss", "reward_loss",
                "actor_loss", "critic_loss", "collect_reward"):
        assert isinstance(last[key], (int, float)) and math.isfinite(last[key]), key
    assert "collect_reward" in records[0]  # the seed phase's random-action data too
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "checkpoints" / "latest.pt").exists()
    assert f"type: {kind}" in (tmp_path / "config.yaml").read_text()


def test_update_ratio_settings_give_the_update_counts_they_name(tmp_path):
    """Part of the update-to-data ratio: each epoch runs alg.wm_iterations world-model updates,
    alg.policy_iterations actor updates and policy x critic_iterations x critic_batches critic
    minibatches (counted by the optimisers' own step counters), after the pretraining updates."""
    epochs, lines = 3, []
    extra = ["alg.wm_iterations=3", "alg.policy_iterations=2", "alg.critic_iterations=2", "alg.critic_batches=3"]
    t = OnlineTrainer(cfg_for("mlp", epochs=epochs, extra=extra), tmp_path, log=lines.append)
    t.train()
    steps = {name: max(int(st["step"]) for st in opt.state.values())
             for name, opt in (("wm", t.agent.wm_opt), ("actor", t.agent.actor_opt), ("critic", t.agent.critic_opt))}
    assert steps == {"wm": 2 + 3 * epochs, "actor": 2 * epochs, "critic": 2 * 2 * 3 * epochs}
    header = "\n".join(str(x) for x in lines)
    assert "updates per epoch of 8 env steps: world model 3, actor 2, critic minibatches 12" in header
    assert "(per 100 env steps: 37.5 / 25 / 150)" in header


def test_eval_reports_the_environment_reward_not_the_model_reward(tmp_path):
    t = OnlineTrainer(cfg_for("flow"), tmp_path, log=lambda *_: None)
    # An untrained reward head predicts exactly 0 (zero last layer): the model's return is 0.
    z = t.agent.wm.encode(torch.randn(3, t.env.obs_dim))
    assert t.agent.wm.reward_value(z, torch.zeros(3, 1)).abs().max() < 1e-6
    result = t.agent.eval(t.eval_env, 1, seed=123)
    # The same deterministic policy stepped by hand in a fresh env with the same seed.
    env = make_env("cartpole-swingup", 1, seed=123)
    obs, total, done = env.reset(seed=123), 0.0, False
    while not done:
        obs, r, term, trunc, _ = env.step(t.agent.act(obs, deterministic=True))
        total += r.item()
        done = bool(term | trunc)
    assert result["eval_return"] == pytest.approx(total, rel=1e-5) and total > 1.0


def test_checkpoint_round_trip_gives_identical_actions(tmp_path):
    cfg = cfg_for("flow")
    t = OnlineTrainer(cfg, tmp_path / "a", log=lambda *_: None)
    t.train()
    state = torch.load(t.run.latest_checkpoint, weights_only=True)  # tensors and plain values only
    fresh = OnlineTrainer(cfg, tmp_path / "b", log=lambda *_: None)
    fresh.agent.load_state_dict(state["agent"])
    fresh.buffer.load_state_dict(t.run.load_buffer(state))
    assert len(fresh.buffer) == len(t.buffer) and state["format"] == CHECKPOINT_FORMAT
    obs = torch.randn(5, t.env.obs_dim)
    assert torch.equal(t.agent.act(obs, deterministic=True), fresh.agent.act(obs, deterministic=True))
    torch.manual_seed(7)
    a = t.agent.act(obs)
    torch.manual_seed(7)
    assert torch.equal(a, fresh.agent.act(obs))
    assert state["env_steps"] == t.env_steps and state["epoch"] == 1


@pytest.mark.parametrize("kind", ["mlp", "flow"])
def test_no_nan_or_inf_in_any_logged_loss_over_a_short_run(kind, tmp_path):
    train(cfg_for(kind, epochs=6, extra=["train.eval_every=3"]), tmp_path, log=lambda *_: None)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 7  # pretraining record + 6 epochs
    for rec in records:
        for k, v in rec.items():
            assert isinstance(v, (int, float)) and math.isfinite(v), (k, v)


def test_diagnose_reports_open_loop_errors_from_a_checkpoint(tmp_path, capsys):
    from flowpwm.analysis.diagnostics import load_agent, main, open_loop_errors

    train(cfg_for("flow"), tmp_path, log=lambda *_: None)
    assert main([str(tmp_path), "--slices", "16"]) == 0
    out = capsys.readouterr().out
    assert "| 1 |" in out and "| 4 |" in out and "critic value" in out
    agent, buffer, _ = load_agent(tmp_path)
    b = buffer.sample(16, agent.horizon, generator=torch.Generator().manual_seed(0))
    r = open_loop_errors(agent.wm, b["obs"], b["action"], b["reward"])
    assert len(r["latent_mse"]) == agent.horizon and all(math.isfinite(x) for x in r["latent_mse"])


def test_online_training_shortens_the_imagined_horizon_at_its_env_steps_and_diagnose_sees_it(tmp_path):
    """horizon 4, imagined 2 from 48 env steps: the first epoch (from 40) imagines 4 steps, the second
    (from 48) 2; the header says so, and an agent loaded from the checkpoint is where the run was."""
    from flowpwm.analysis.diagnostics import load_agent

    lines = []
    extra = ["alg.imagine_horizon=2", "alg.imagine_horizon_from=48", "alg.actor.min_logstd_final=-1.0",
             "alg.actor.min_logstd_steps=64"]
    t = OnlineTrainer(cfg_for("flow", epochs=2, extra=extra), tmp_path, log=lines.append)
    seen = []
    imagine = t.agent._imagine
    t.agent._imagine = lambda z, task=None: seen.append(t.agent.imagine_horizon) or imagine(z, task)
    t.train()
    assert seen[0] == 4 and seen[-1] == 2 and seen.count(4) == seen.count(2)
    assert "horizon 4, imagined 2 from 48 env steps" in "\n".join(str(x) for x in lines)
    agent, _, state = load_agent(tmp_path, buffer=False)
    assert state["env_steps"] == 56
    assert agent.imagine_horizon == 2 and agent.actor.min_logstd == pytest.approx(-56 / 64)


def test_online_training_moves_the_log_std_floor_with_its_env_steps(tmp_path):
    # 2 epochs of 8 env steps after 40 seed steps: the second epoch starts at 48 env steps.
    extra = ["alg.actor.min_logstd_final=-1.0", "alg.actor.min_logstd_steps=64"]
    t = OnlineTrainer(cfg_for("mlp", epochs=2, extra=extra), tmp_path, log=lambda *_: None)
    t.train()
    assert t.agent.actor.min_logstd == pytest.approx(0.0 - 1.0 * 48 / 64)

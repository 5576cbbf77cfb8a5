"""Episodic tasks: the termination head, the actor's continuation, TD(λ) through terminal
steps and unbiased evaluation."""

import numpy as np
import pytest
import torch

from flowpwm.algorithms.pwm import PWM
from flowpwm.config import compose
from flowpwm.data.toy import ToyOscillator, sample_windows
from flowpwm.envs.base import BatchedEnv, StepResult
from flowpwm.losses import compute_wm_loss, wm_loss_kwargs
from flowpwm.models.factory import build_world_model

from helpers import tiny_cfg


def agent(kind="mlp", obs_dim=6, action_dim=2, episodic=True, **over):
    alg = compose([f"alg={'pwm_tiny_flow' if kind == 'flow' else 'pwm_tiny'}"]
                  + [f"alg.{k}={v}" for k, v in over.items()]).alg
    return PWM(alg, obs_dim, action_dim, episodic=episodic)


@pytest.mark.parametrize("kind", ["mlp", "flow"])
def test_termination_head_learns_a_toy_systems_known_terminations(kind):
    torch.manual_seed(0)
    system = ToyOscillator(obs_dim=8, action_dim=2, seed=3)
    train, held_out = system.rollout(64, 60), system.rollout(32, 60)
    wm = build_world_model(tiny_cfg(kind), 8, 2, episodic=True)
    opt = torch.optim.Adam(wm.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        obs, act, rew, term = sample_windows(train, 128, 4, g, terminated=True)
        loss, m = compute_wm_loss(wm, obs, act, rew, terminated=term, flow_source="rollout")
        opt.zero_grad()
        loss.backward()
        opt.step()
    obs, act, rew, term = sample_windows(held_out, 1024, 1, g, terminated=True)
    with torch.no_grad():
        z1 = wm.next(wm.encode(obs[0]), act[0])
        predicted = (torch.sigmoid(wm.termination(z1)) > 0.5).float()
    assert 0.2 < term.mean() < 0.8  # both classes are common
    assert (predicted == term[0]).float().mean() > 0.95


def test_termination_pos_weight_weighs_the_terminal_steps():
    """alg.wm_loss.termination_pos_weight w: a terminal step's cross-entropy counts w times, a
    non-terminal step's once (the head's optimum moves its odds of terminating by a factor w)."""
    torch.manual_seed(0)
    wm = build_world_model(tiny_cfg("mlp"), 6, 2, episodic=True)
    obs, act, rew = torch.randn(4, 8, 6), torch.rand(3, 8, 2) * 2 - 1, torch.randn(3, 8, 1)
    term = {flag: torch.full((3, 8, 1), float(flag)) for flag in (0, 1)}
    loss = {(flag, w): float(compute_wm_loss(wm, obs, act, rew, terminated=term[flag],
                                             termination_pos_weight=w)[1]["termination_loss"])
            for flag in (0, 1) for w in (1.0, 3.0)}
    assert loss[1, 3.0] == pytest.approx(3 * loss[1, 1.0], rel=1e-5)
    assert loss[0, 3.0] == pytest.approx(loss[0, 1.0], rel=1e-6)
    alg = compose(["alg=pwm_tiny", "alg.wm_loss.termination_pos_weight=10"]).alg
    assert wm_loss_kwargs(alg)["termination_pos_weight"] == 10.0
    assert compose(["alg=pwm_tiny_flow"]).alg.wm_loss.termination_pos_weight == 1.0  # TD-MPC2's plain BCE


@pytest.mark.parametrize("mask", ["hard", "soft"])
def test_imagined_rollout_gives_nothing_after_a_predicted_termination(mask):
    a = agent(horizon=6, gamma=0.9, termination_mask=mask, ret_rms=False)
    k = 3  # z_3, reached by step t=2, is terminal: rewards of steps 0..2 count, nothing after
    calls = []

    def termination(z, task=None):
        calls.append(1)
        logit = 30.0 if len(calls) == k else -30.0
        return torch.full((*z.shape[:-1], 1), logit)

    a.wm.termination = termination
    loss, data, ret = a.compute_actor_loss(torch.randn(8, 6))
    r = data["rewards"]
    expected = sum(0.9 ** t * r[t] for t in range(k))
    assert torch.allclose(ret, expected, atol=1e-5)
    # The bootstrap after the terminal step carries no weight either (the values are non-zero).
    assert data["values"].abs().min() > 0
    assert data["cont"][k - 1].max() < 1e-6 and data["cont"][0].min() > 1 - 1e-6


def test_td_lambda_targets_stop_at_a_terminal_step():
    a = agent(horizon=4, gamma=0.9, lam=0.5)
    r = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    v = torch.tensor([[10.0], [20.0], [30.0], [40.0]])  # v[t] = V(z_{t+1})
    cont = torch.tensor([[1.0], [0.0], [1.0], [1.0]])  # z_2 is terminal
    g = a.td_lambda_targets(r, v, cont)
    # By hand: G_1 = r_1 (terminal next state), G_0 = r_0 + γ((1-λ)V(z_1) + λ G_1); steps after
    # the terminal state are a new (imagined) continuation and keep their ordinary targets.
    G3 = 4 + 0.9 * 40
    G2 = 3 + 0.9 * (0.5 * 30 + 0.5 * G3)
    G1 = 2.0
    G0 = 1 + 0.9 * (0.5 * 10 + 0.5 * G1)
    assert torch.allclose(g.flatten(), torch.tensor([G0, G1, G2, G3]))


class FixedLengthEnv(BatchedEnv):
    """Env i's episodes last 3·(i+1) steps with reward 1 per step: short and long episodes."""

    task, obs_dim, action_dim, max_episode_steps = "fixed-length", 2, 1, 100
    action_low, action_high = -np.ones(1), np.ones(1)

    def __init__(self, num_envs):
        super().__init__(num_envs)
        self.t = [0] * num_envs

    def _reset_one(self, i, seed):
        self.t[i] = 0
        return np.zeros(2)

    def _step_one(self, i, action):
        self.t[i] += 1
        return StepResult(np.zeros(2), 1.0, self.t[i] == 3 * (i + 1), False)

    def _close_one(self, i):
        pass


def test_eval_counts_every_env_equally_whatever_its_episode_length():
    a = agent(obs_dim=2, action_dim=1, episodic=False)
    out = a.eval(FixedLengthEnv(2), episodes=4, seed=0)
    # Two whole episodes per env: (3 + 3 + 6 + 6) / 4; keeping the first four to finish would
    # give (3 + 3 + 6 + 3) / 4 = 3.75.
    assert out["eval_return"] == pytest.approx(4.5) and out["eval_length"] == pytest.approx(4.5)
    assert out["eval_episodes"] == 4


def test_non_episodic_world_model_has_no_termination_head():
    wm = build_world_model(tiny_cfg("mlp"), 6, 2)
    with pytest.raises(ValueError, match="episodic"):
        wm.termination(torch.zeros(1, 64))
    assert "termination" in build_world_model(tiny_cfg("flow"), 6, 2, episodic=True).parameter_groups()


@pytest.mark.parametrize("kind", ["mlp", "flow"])
def test_hopper_trains_episodic_and_diagnose_reports_the_termination_head(kind, tmp_path, capsys):
    import json
    import subprocess
    import sys

    from flowpwm.analysis.diagnostics import main as diagnose_main
    from flowpwm.training.online import train
    from test_training import cfg_for

    run = tmp_path / "run"
    train(cfg_for(kind, "Hopper-v5", epochs=2, extra=["train.seed_steps=200", "train.env_steps=216"]), run,
          log=lambda *_: None)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["termination_loss"] > 0 for r in records[1:])  # alg.episodic=auto: Hopper can fall
    assert records[-1]["eval_length"] >= 1 and "imagined_length" in records[-1]
    assert diagnose_main([str(run), "--slices", "16", "--json", str(tmp_path / "d.json")]) == 0
    term = json.loads((tmp_path / "d.json").read_text())["termination"]
    assert term["transitions"] == 128 and 0 <= term["accuracy"] <= 1
    if term["terminal"]:  # the probability the soft continuation uses, and the head's ranking
        assert 0 <= term["p_terminal"] <= 1 and 0 <= term["p_other"] <= 1 and 0 <= term["precision_at_k"] <= 1
    assert "termination head on 128 one-step transitions" in capsys.readouterr().out

    # The same data with alg.episodic=false ends the run with one line naming the setting.
    args = [f"alg={'pwm_tiny_flow' if kind == 'flow' else 'pwm_tiny'}", "env.task=Hopper-v5", "alg.episodic=false",
            "train.env_steps=600", "train.seed_steps=400", "env.num_envs=2", "train.threads=1",
            "wandb.mode=disabled", "monitor.progress=off", f"hydra.run.dir={tmp_path / 'refused'}"]
    p = subprocess.run([sys.executable, "-m", "flowpwm.cli", "train", *args], capture_output=True, text=True,
                       cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "alg.episodic=false" in lines[0] and "terminat" in lines[0]


@pytest.mark.parametrize("kind", ["mlp", "flow"])
def test_steps_after_a_slices_terminal_step_do_not_touch_the_world_model_loss(kind):
    """Slices drawn through a termination carry the next episode's steps after it: masked out,
    they change neither the loss nor its gradient."""
    torch.manual_seed(0)
    H, B = 5, 8
    obs, action = torch.randn(H + 1, B, 6), torch.rand(H, B, 2) * 2 - 1
    reward, terminated = torch.rand(H, B, 1), torch.zeros(H, B, 1)
    terminated[2, :4] = 1  # half the slices terminate at step 2
    mask = torch.cat([torch.ones_like(terminated[:1]), 1 - terminated[:-1]]).cumprod(0)
    wm = build_world_model(tiny_cfg(kind), 6, 2, episodic=True)
    results = []
    for garbage in (0.0, 5.0):
        o, a, r = obs.clone(), action.clone(), reward.clone()
        o[4:, :4] += garbage  # obs after the terminal step's next obs (obs[3])
        a[3:, :4] += garbage
        r[3:, :4] += garbage
        torch.manual_seed(1)
        loss, _ = compute_wm_loss(wm, o, a, r, terminated=terminated, mask=mask, flow_source="rollout")
        wm.zero_grad()
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in wm.parameters() if p.grad is not None]))
    (l0, g0), (l1, g1) = results
    assert l0 == pytest.approx(l1, rel=1e-6)
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(g0, g1))

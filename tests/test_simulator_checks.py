"""World model vs simulator checks (`flowpwm diagnose --simulator`)."""

import torch

from flowpwm.algorithms.pwm import PWM
from flowpwm.analysis.simulator import action_sensitivity, format_simulator_report, imagined_vs_real, sample_states
from flowpwm.config import load_alg
from flowpwm.envs import make_env


def _agent_and_env(alg="pwm_tiny"):
    env = make_env("cartpole-swingup", 4, seed=3)
    torch.manual_seed(0)
    return PWM(load_alg(alg), env.obs_dim, env.action_dim), env


def test_real_return_is_the_policy_run_forward_in_the_simulator():
    agent, env = _agent_and_env()
    states, obs = sample_states(agent, env, seed=1, min_steps=3, max_steps=12)
    out = imagined_vs_real(agent, env, states, obs, horizon=5)
    # The same 5 steps by the ordinary env.step from the restored states.
    o, total = obs, torch.zeros(4)
    for i, s in enumerate(states):
        env._set_state_one(i, s)
    for t in range(5):
        o, r, *_ = env.step(agent.act(o, deterministic=True))
        total += agent.gamma ** t * r
        if t == 1:
            two_steps = total.mean().item()
    assert abs(out["real_return"] - total.mean().item()) < 1e-5
    assert all(torch.isfinite(torch.tensor(v)) for k, v in out.items() if k != "by_horizon")
    # The returns cut at h = 1, 2, 4 and H; the last is the whole H-step return. At h = 1 the policy
    # takes the same action in the model as in the simulator, so closed and open loop agree.
    cuts = out["by_horizon"]
    assert [b["h"] for b in cuts] == [1, 2, 4, 5]
    assert abs(cuts[1]["real"] - two_steps) < 1e-5 and abs(cuts[-1]["real"] - total.mean().item()) < 1e-5
    assert abs(cuts[0]["imagined"] - cuts[0]["open_loop"]) < 1e-5
    report = format_simulator_report({"states": 4, "delta": 0.1, "returns": out,
                                      "action_sensitivity": action_sensitivity(agent, env, states, obs)})
    rows = [line for line in report.splitlines() if line.startswith("| h = ") or "first h steps" in line]
    assert len(rows) == 5 and {line.count("|") for line in rows} == {6}  # one column per figure, the header's too


def test_a_model_that_ignores_the_action_has_zero_sensitivity_against_a_nonzero_simulator():
    agent, env = _agent_and_env("pwm_tiny_flow")
    states, obs = sample_states(agent, env, seed=2, min_steps=3, max_steps=12)
    agent.wm.next = lambda z, a, task=None: z  # a latent map blind to the action
    s = action_sensitivity(agent, env, states, obs)
    assert s["latent_norm_model"] == 0 and s["latent_cosine"] == 0
    assert s["latent_norm_true"] > 0  # cartpole's cart responds to the force


def test_another_world_model_is_checked_at_the_run_policys_actions():
    """`fit-wm fit_wm.simulator`: a model fitted afresh is checked where the run's policy acts, so
    the simulator's side (the real reward's response) is the run's and only the model's differs."""
    agent, env = _agent_and_env("pwm_tiny_flow")
    states, obs = sample_states(agent, env, seed=2, min_steps=3, max_steps=12)
    own = action_sensitivity(agent, env, states, obs)
    assert action_sensitivity(agent, env, states, obs, wm=agent.wm) == own
    torch.manual_seed(1)
    other = action_sensitivity(agent, env, states, obs, wm=PWM(load_alg("pwm_tiny"), env.obs_dim, env.action_dim).wm)
    assert other["reward_norm_true"] == own["reward_norm_true"] and other["reward_states"] == own["reward_states"]
    assert other["latent_cosine"] != own["latent_cosine"] and other["latent_norm_model"] != own["latent_norm_model"]


def test_the_jacobian_is_split_between_the_entries_simnorm_pins_and_the_others():
    """A model whose next latent is the encoder of the simulator's next obs has the simulator's
    Jacobian: the same share on the pinned entries, cosine 1 on the rest. A model that moves only
    the pinned entries puts all its response there, and none where the simulator's lies."""
    agent, env = _agent_and_env("pwm_tiny")
    states, obs = sample_states(agent, env, seed=2, min_steps=3, max_steps=12)
    wm = agent.wm
    agent.wm.next = lambda z, a, task=None: wm.encode(env.step_from(states, a)[0])  # noqa: E731
    s = action_sensitivity(agent, env, states, obs)
    assert abs(s["latent_cosine"] - 1) < 1e-5 and abs(s["latent_cosine_free"] - 1) < 1e-5
    assert s["latent_pinned_share_model"] == s["latent_pinned_share_true"]
    a0 = agent.actor(wm.encode(obs), deterministic=True)
    held = (wm.encode(env.step_from(states, a0)[0]) < 0.05).float()
    assert 0 < held.mean() < 1 and s["pinned_entries"] == held.mean().item()
    agent.wm.next = lambda z, a, task=None: z + held * a.sum(-1, keepdim=True)  # noqa: E731
    s = action_sensitivity(agent, env, states, obs)
    assert abs(s["latent_pinned_share_model"] - 1) < 1e-6 and s["latent_cosine_free"] == 0
    assert "the encoder holds < 0.05" in format_simulator_report(
        {"states": 4, "delta": 0.1, "action_sensitivity": s, "returns": imagined_vs_real(agent, env, states, obs, horizon=2)})

import pytest
import torch

from flowpwm.algorithms.pwm import PWM
from flowpwm.config import compose
from flowpwm.models.actor import saturation


def agent(kind="flow", obs_dim=6, action_dim=2, **over):
    alg = compose([f"alg={'pwm_tiny_flow' if kind == 'flow' else 'pwm_tiny'}"]
                  + [f"alg.{k}={v}" for k, v in over.items()]).alg
    return PWM(alg, obs_dim, action_dim)


def test_td_lambda_targets_match_the_lambda_return_definition():
    a = agent(horizon=5, gamma=0.9, lam=0.7)
    H, g, lam = 5, 0.9, 0.7
    r, v = torch.randn(H, 3), torch.randn(H, 3)  # v[t] = V(z_{t+1})

    def n_step(t, n):
        return sum(g ** k * r[t + k] for k in range(n)) + g ** n * v[t + n - 1]

    for t in range(H):
        N = H - t
        expected = (1 - lam) * sum(lam ** (n - 1) * n_step(t, n) for n in range(1, N)) + lam ** (N - 1) * n_step(t, N)
        assert torch.allclose(a.td_lambda_targets(r, v)[t], expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["mlp", "flow"])
def test_actor_loss_trains_only_the_actor_through_the_world_model(kind):
    a = agent(kind, horizon=4)
    obs0 = torch.randn(16, 6)
    wm_before = [p.clone() for p in a.wm.parameters()]
    critic_before = [p.clone() for p in a.critic.parameters()]
    loss, data, ret = a.compute_actor_loss(obs0)
    zs, rews, values = data["zs"], data["rewards"], data["values"]
    loss.backward()
    assert all(p.grad is None for p in a.wm.parameters())
    assert all(p.grad is None for p in a.critic.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in a.actor.mu_net.parameters())
    assert zs.shape == (4, 16, 64) and rews.shape == values.shape == (4, 16)
    m = a.update_policy(obs0)
    assert all(torch.equal(p, q) for p, q in zip(a.wm.parameters(), wm_before))
    assert not all(torch.equal(p, q) for p, q in zip(a.critic.parameters(), critic_before))
    assert all(v == v for v in m.values())


def test_flow_settings_reach_next_in_the_actor_rollout():
    a = agent("flow", horizon=3, **{"world_model.integrator": "euler", "world_model.substeps": 3})
    n0 = a.wm.nfe
    a.compute_actor_loss(torch.randn(4, 6))
    assert a.wm.nfe - n0 == 3 * 3  # H steps x K euler calls


def test_saturation_is_minus_log_tanh_derivative_with_a_gradient_that_never_vanishes():
    u = torch.tensor([-30.0, -3.0, 0.0, 0.5, 3.0, 30.0], dtype=torch.float64, requires_grad=True)
    s = saturation(u)
    exact = -torch.log1p(-torch.tanh(u[1:-1]) ** 2)  # where 1 - tanh^2 is representable
    assert torch.allclose(s[1:-1], exact, rtol=1e-9) and s[2] == 0
    assert torch.allclose(s[[0, -1]], 2 * 30.0 - 2 * torch.log(torch.tensor(2.0, dtype=torch.float64)))
    s.sum().backward()
    assert torch.allclose(u.grad, 2 * torch.tanh(u.detach()))  # 2 at u = 30, where tanh's own gradient is 0


@pytest.mark.parametrize("kind", ["mlp", "flow"])
def test_saturation_coef_pushes_saturated_actions_back_and_zero_leaves_pwms_loss(kind):
    """Actions pinned at tanh's tails (pre-tanh mean +-12) get no gradient from the return; with
    saturation_coef = c the actor's output bias gets 2c / (action dims) pulling each mean back
    toward 0, and the loss and the imagined rollout are otherwise unchanged."""
    obs0 = torch.randn(32, 6)
    grads, losses = {}, {}
    for c in (0.0, 0.05):
        torch.manual_seed(0)
        a = agent(kind, horizon=4, **{"actor.saturation_coef": c})
        with torch.no_grad():
            a.actor.mu_net[-1].bias.copy_(torch.tensor([12.0, -12.0]))
        torch.manual_seed(1)
        loss, data, ret = a.compute_actor_loss(obs0, update_stats=False)
        loss.backward()
        grads[c], losses[c] = a.actor.mu_net[-1].bias.grad.clone(), (loss.item(), data["saturation"], ret)
    assert grads[0.0].abs().max() < 1e-5
    assert torch.allclose(grads[0.05], torch.tensor([2 * 0.05 / 2, -2 * 0.05 / 2]), rtol=0.02)
    (l0, sat0, ret0), (l1, sat1, ret1) = losses[0.0], losses[0.05]
    assert torch.equal(ret0, ret1) and torch.equal(sat0, sat1) and not sat0.requires_grad
    assert l1 == pytest.approx(l0 + 0.05 * sat0.mean().item(), rel=1e-5)
    assert sat0.mean() > 20  # ~2|u| - 2 log 2 at |u| ~ 12
    assert a.update_policy(obs0)["action_saturation"] > 20


def test_linear_lr_decay_reaches_min_lr_and_constant_stays():
    const = agent()  # the tiny configs keep the LR constant
    const.set_progress(1.0)
    assert const.actor_opt.param_groups[0]["lr"] == pytest.approx(const.cfg.actor_lr)
    a = agent(lr_schedule="linear")
    a.set_progress(0.0)
    assert a.actor_opt.param_groups[0]["lr"] == pytest.approx(a.cfg.actor_lr)
    a.set_progress(1.0)
    for opt in (a.wm_opt, a.actor_opt, a.critic_opt):
        assert opt.param_groups[0]["lr"] == pytest.approx(a.cfg.min_lr)


def test_explore_logstd_widens_collected_actions_only():
    """Collection samples with std >= exp(explore_logstd); imagination keeps the actor's std."""
    torch.manual_seed(0)
    obs = torch.randn(1, 6).expand(4000, 6)
    pwm_noise = {"actor.init_logstd": -1.0, "actor.min_logstd": -1.427}  # an actor std below the floor
    pwm, wide = agent("mlp", **pwm_noise), agent("mlp", **pwm_noise, **{"actor.explore_logstd": 0.0})
    wide.wm.load_state_dict(pwm.wm.state_dict())
    wide.actor.load_state_dict(pwm.actor.state_dict())
    own_std = pwm.actor.logstd.clamp(min=pwm.actor.min_logstd).exp()
    mean = torch.atanh(pwm.act(obs[:1], deterministic=True).clamp(-0.999, 0.999))
    for a, std in ((pwm, own_std), (wide, torch.ones(2))):
        pre_tanh = torch.atanh(a.act(obs).clamp(-0.999999, 0.999999))
        assert torch.allclose(pre_tanh.std(0), std, rtol=0.06)
        assert torch.allclose(pre_tanh.mean(0), mean[0], atol=0.1)
    assert pwm.cfg.actor.explore_logstd is None and torch.equal(wide.actor.logstd, pwm.actor.logstd)
    z = wide.wm.encode(obs)  # the actor itself, as the imagined rollout calls it, keeps its own std
    assert torch.allclose(torch.atanh(wide.actor(z).clamp(-0.999999, 0.999999)).std(0), own_std, rtol=0.06)


def test_target_critic_bootstraps_the_rollout_and_trails_the_critic_by_alpha():
    """alpha = 0 (PWM): the critic being trained bootstraps; alpha > 0: a copy moved by (1 - alpha)
    toward the critic after each actor update, and only it gives the rollout's values."""
    torch.manual_seed(0)
    pwm = agent("mlp", target_critic_alpha=0.0)
    assert pwm.critic_target is None and pwm.value_critic is pwm.critic
    a = agent("mlp", horizon=3, target_critic_alpha=0.75)
    obs0 = torch.randn(8, 6)
    start = [p.clone() for p in a.critic.parameters()]
    a.update_policy(obs0)
    for t, p, p0 in zip(a.critic_target.parameters(), a.critic.parameters(), start):
        assert not t.requires_grad
        assert torch.allclose(t, 0.75 * p0 + 0.25 * p, atol=1e-6)
    with torch.no_grad():
        for p in a.critic.parameters():  # a critic gone wrong does not reach the targets
            p.add_(100.0)
    torch.manual_seed(1)
    _, data, _ = a.compute_actor_loss(obs0)
    # values[t] = V(z_{t+1}) and zs[t + 1] = z_{t+1}
    assert torch.allclose(data["values"][0], a.critic_target.min_value(data["zs"][1]).squeeze(-1), atol=1e-5)
    assert not torch.allclose(data["values"][0], a.critic.min_value(data["zs"][1]).squeeze(-1), atol=1.0)


def test_target_critic_is_saved_and_restored():
    a, b = agent("mlp", target_critic_alpha=0.5), agent("mlp", target_critic_alpha=0.5)
    a.update_policy(torch.randn(8, 6))
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(p, q) for p, q in zip(a.critic_target.parameters(), b.critic_target.parameters()))
    pwm_ckpt = agent("mlp", target_critic_alpha=0.0).state_dict()  # written with alpha 0: the target starts at the critic
    b.load_state_dict(pwm_ckpt)
    assert all(torch.equal(p, q) for p, q in zip(b.critic_target.parameters(), b.critic.parameters()))


def test_the_log_std_floor_schedule_goes_linearly_to_its_final_value_then_stays():
    """alg.actor.min_logstd_final: the floor moves with the env steps; the sampled actions' std
    follows it wherever the learned log-std is below it; without it the floor never moves."""
    a = agent("mlp", **{"actor.min_logstd": 0.0, "actor.min_logstd_final": -1.5, "actor.min_logstd_steps": 1000})
    for steps, floor in ((0, 0.0), (500, -0.75), (1000, -1.5), (50000, -1.5)):
        a.set_env_steps(steps)
        assert a.actor.min_logstd == pytest.approx(floor)
    with torch.no_grad():
        a.actor.logstd.fill_(-3.0)  # the actor would like less noise than the floor allows
    a.set_env_steps(500)
    z = torch.randn(1, 64).expand(20000, 64)
    noise = a.actor.pre_tanh(z) - a.actor.pre_tanh(z, deterministic=True)
    assert noise.std().item() == pytest.approx(torch.exp(torch.tensor(-0.75)).item(), rel=0.03)
    assert a.update_policy(torch.randn(8, 6))["action_std"] == pytest.approx(torch.exp(torch.tensor(-0.75)).item())
    fixed = agent("mlp", **{"actor.min_logstd": 0.0})
    fixed.set_env_steps(10 ** 6)
    assert fixed.actor.min_logstd == 0.0


@pytest.mark.parametrize("kind", ["mlp", "flow"])
def test_imagine_horizon_sets_the_actors_rollout_apart_from_the_world_models_slices(kind):
    """alg.imagine_horizon=3 with horizon=8: the actor and its TD(λ) targets see 3 imagined steps,
    exactly what an agent with horizon=3 and the same weights sees; the world model keeps
    horizon-step slices. null (the default) is the horizon."""
    assert agent(kind, horizon=5).imagine_horizon == 5
    torch.manual_seed(0)
    short = agent(kind, horizon=8, imagine_horizon=3)
    torch.manual_seed(0)
    same = agent(kind, horizon=3)
    assert (short.horizon, short.imagine_horizon) == (8, 3)
    obs0 = torch.randn(16, 6)
    torch.manual_seed(1)
    loss, data, ret = short.compute_actor_loss(obs0)
    torch.manual_seed(1)
    loss3, data3, ret3 = same.compute_actor_loss(obs0)
    assert data["zs"].shape == (3, 16, 64) and torch.equal(ret, ret3) and torch.equal(loss, loss3)
    assert short.td_lambda_targets(data["rewards"], data["values"]).shape == (3, 16)
    obs, act, rew = torch.randn(9, 32, 6), torch.rand(8, 32, 2) * 2 - 1, torch.randn(8, 32, 1)
    assert short.compute_wm_loss(obs, act, rew)[0].isfinite()  # 8-step slices train the world model


@pytest.mark.parametrize("kind", ["mlp", "flow"])
def test_imagine_horizon_from_gives_the_actor_the_long_rollout_until_its_env_steps(kind):
    """alg.imagine_horizon_from=1000: the actor imagines `horizon` steps before 1000 env steps and
    `imagine_horizon` from then on; without it, `imagine_horizon` whatever the env steps."""
    a = agent(kind, horizon=8, imagine_horizon=3, imagine_horizon_from=1000)
    obs0 = torch.randn(16, 6)
    for steps, h in ((0, 8), (999, 8), (1000, 3), (50000, 3)):
        a.set_env_steps(steps)
        assert a.compute_actor_loss(obs0)[1]["zs"].shape == (h, 16, 64), steps
    fixed = agent(kind, horizon=8, imagine_horizon=3)
    fixed.set_env_steps(0)
    assert fixed.imagine_horizon == 3

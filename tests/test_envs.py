"""Batched envs against the real dm_control and gymnasium simulators (no mocks)."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from flowpwm.config import UserError
from flowpwm.envs import BatchedEnv, available_tasks, make_env
from flowpwm.envs.base import rescale_actions
from flowpwm.envs.dmc import DMC_TASKS, suite_name


def _raw_dmc_obs(ts) -> np.ndarray:
    return np.concatenate([np.asarray(v).ravel() for v in ts.observation.values()])


def test_dmc_task_list_matches_suite():
    from dm_control import suite

    required = {
        "acrobot-swingup", "cartpole-balance", "cartpole-balance_sparse", "cartpole-swingup",
        "cartpole-swingup_sparse", "cheetah-run", "cup-catch", "finger-spin", "finger-turn_easy",
        "finger-turn_hard", "fish-swim", "hopper-hop", "hopper-stand", "pendulum-swingup",
        "reacher-easy", "reacher-hard", "walker-run", "walker-stand", "walker-walk",
        "quadruped-walk", "quadruped-run", "humanoid-walk",
    }
    assert required <= set(DMC_TASKS) <= set(available_tasks())
    assert suite_name("cup-catch") == ("ball_in_cup", "catch")
    for task in DMC_TASKS:
        assert suite_name(task) in suite.ALL_TASKS, task


def test_cartpole_episode_shapes_truncation_and_autoreset():
    env = make_env("cartpole-swingup", num_envs=3, seed=0)
    assert isinstance(env, BatchedEnv)
    assert (env.obs_dim, env.action_dim, env.max_episode_steps) == (5, 1, 500)
    obs = env.reset()
    assert obs.shape == (3, 5) and obs.dtype == torch.float32

    g = torch.Generator().manual_seed(0)
    rewards = []
    for t in range(500):
        obs, reward, terminated, truncated, final_obs = env.step(2 * torch.rand(3, 1, generator=g) - 1)
        rewards.append(reward)
        assert not terminated.any()  # dm_control never terminates
        if t < 499:
            assert not truncated.any()
            assert torch.equal(final_obs, obs)
    assert obs.shape == final_obs.shape == (3, 5)
    assert obs.dtype == final_obs.dtype == reward.dtype == torch.float32
    assert reward.shape == terminated.shape == truncated.shape == (3,)
    assert terminated.dtype == truncated.dtype == torch.bool
    assert truncated.all()
    assert not torch.isclose(final_obs, obs).all(dim=1).any()  # every env was reset
    # A fresh cartpole-swingup episode starts hanging down near the centre: cos(pole) ~ -1.
    assert torch.allclose(obs[:, 1], torch.full((3,), -1.0), atol=1e-2)
    r = torch.stack(rewards)
    assert r.min() >= 0.0 and r.max() <= 2.0
    env.close()


def test_action_repeat_sums_two_physics_steps():
    from dm_control import suite

    seed = 7
    env = make_env("cartpole-swingup", num_envs=1, seed=seed)
    raw = suite.load("cartpole", "swingup", task_kwargs={"random": seed})
    obs = env.reset()
    np.testing.assert_allclose(obs[0].numpy(), _raw_dmc_obs(raw.reset()), rtol=1e-6, atol=1e-6)

    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        a = 2 * torch.rand(1, 1, generator=g) - 1
        obs, reward, *_ = env.step(a)
        ts1 = raw.step(a[0].double().numpy())
        ts2 = raw.step(a[0].double().numpy())
        assert reward.item() == pytest.approx(ts1.reward + ts2.reward, rel=1e-6, abs=1e-6)
        np.testing.assert_allclose(obs[0].numpy(), _raw_dmc_obs(ts2), rtol=1e-5, atol=1e-6)


def _rollout(env: BatchedEnv, seed: int, steps: int = 10) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    out = [env.reset(seed=seed)]
    for _ in range(steps):
        out.append(env.step(2 * torch.rand(env.num_envs, env.action_dim, generator=g) - 1)[0])
    return out


@pytest.mark.parametrize("task", ["walker-walk", "Hopper-v5"])
def test_seeding_is_reproducible(task: str):
    a = make_env(task, num_envs=2, seed=0)
    b = make_env(task, num_envs=2, seed=0)
    run_a, run_b = _rollout(a, seed=3), _rollout(b, seed=3)
    for x, y in zip(run_a, run_b):
        assert torch.equal(x, y)
    assert not torch.equal(run_a[0][0], run_a[0][1])  # env i gets seed + i
    # Reseeding an env that has already run replays the same trajectory.
    for x, y in zip(_rollout(a, seed=3), run_a):
        assert torch.equal(x, y)
    assert not torch.equal(_rollout(b, seed=4)[0], run_a[0])
    # env i of seed s equals env 0 of seed s + i.
    assert torch.equal(_rollout(make_env(task, num_envs=1), seed=4)[0][0], run_a[0][1])


def test_hopper_falls_and_autoresets_like_gymnasium():
    seed = 5
    env = make_env("Hopper-v5", num_envs=2, seed=seed)
    assert (env.num_envs, env.obs_dim, env.action_dim, env.max_episode_steps) == (2, 11, 3, 1000)
    obs = env.reset()
    assert obs.shape == (2, 11) and obs.dtype == torch.float32
    # Raw gymnasium envs with the same seeds replay what the batched env should do.
    raws = [gym.make("Hopper-v5") for _ in range(2)]
    for i, raw in enumerate(raws):
        np.testing.assert_allclose(obs[i].numpy(), raw.reset(seed=seed + i)[0], rtol=1e-6, atol=1e-6)

    g = torch.Generator().manual_seed(0)
    ended = torch.zeros(2, dtype=torch.bool)
    for _ in range(1000):
        actions = torch.sign(torch.randn(2, 3, generator=g))  # strong bang-bang actions
        obs, reward, terminated, truncated, final_obs = env.step(actions)
        for i, raw in enumerate(raws):
            raw_obs, raw_r, raw_term, raw_trunc, _ = raw.step(actions[i].numpy())
            assert reward[i].item() == pytest.approx(raw_r, rel=1e-5, abs=1e-5)
            assert (terminated[i].item(), truncated[i].item()) == (raw_term, raw_trunc)
            np.testing.assert_allclose(final_obs[i].numpy(), raw_obs, rtol=1e-5, atol=1e-5)
            if raw_term or raw_trunc:
                np.testing.assert_allclose(obs[i].numpy(), raw.reset()[0], rtol=1e-5, atol=1e-5)
            else:
                assert torch.equal(obs[i], final_obs[i])
        ended |= terminated
        if ended.all():
            break
    assert ended.all(), "random bang-bang actions should make every hopper fall"
    assert not truncated.any()
    # The fresh episode starts upright and near rest (reset noise is 5e-3).
    i = int(terminated.nonzero()[0])
    assert obs[i, 0].item() == pytest.approx(1.25, abs=0.02) and obs[i, 5:].abs().max() < 0.05
    assert not torch.allclose(final_obs[i], obs[i])
    env.close()


def test_actions_are_clipped_and_rescaled_to_bounds():
    low, high = np.array([-0.4, 0.0]), np.array([0.4, 2.0])
    a = np.array([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], [-5.0, 7.0]])
    np.testing.assert_allclose(rescale_actions(a, low, high), [[-0.4, 0.0], [0.4, 2.0], [0.0, 1.0], [-0.4, 2.0]])

    env = make_env("Humanoid-v5", num_envs=1, seed=0)  # gymnasium bounds are [-0.4, 0.4]
    env.reset()
    actions = torch.linspace(-3.0, 3.0, env.action_dim).unsqueeze(0)
    env.step(actions)
    ctrl = env._envs[0].unwrapped.data.ctrl
    space = env._envs[0].action_space  # float32 bounds: 0.4 is stored as 0.40000001
    expected = np.float32(0.4) * actions.clamp(-1, 1)[0].double().numpy()
    np.testing.assert_allclose(ctrl, expected, rtol=1e-7)
    assert np.all(ctrl >= space.low) and np.all(ctrl <= space.high)
    assert ctrl[0] == space.low[0] and ctrl[-1] == space.high[-1]
    env.close()


def test_step_before_reset_and_wrong_action_shape_raise():
    env = make_env("cartpole-balance", num_envs=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros(2, 1))
    env.reset()
    with pytest.raises(ValueError, match="shape"):
        env.step(torch.zeros(3, 1))


def test_unknown_task_is_one_line_user_error():
    with pytest.raises(UserError) as info:
        make_env("cartpole-swingupp", num_envs=2)
    msg = str(info.value)
    assert "\n" not in msg
    assert "cartpole-swingupp" in msg
    assert all(t in msg for t in ("cartpole-swingup", "cup-catch", "Hopper-v5", "Humanoid-v5"))


def test_missing_dm_control_names_install_command(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "dm_control", None)  # makes `import dm_control` fail
    with pytest.raises(UserError, match="pip install dm-control==1.0.50") as info:
        make_env("cartpole-swingup")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("build", [lambda: make_env("cartpole-swingup", 3, seed=5),
                                   lambda: make_env("Hopper-v5", 3, seed=5),
                                   lambda: __import__("flowpwm.envs.multitask", fromlist=["x"]).make_multitask_env(
                                       "mt30", "pendulum-spin", 3, seed=5)],
                         ids=["dm_control", "gymnasium", "multitask-custom"])
def test_step_from_a_saved_state_replays_the_simulator_exactly(build):
    """Diagnostics step a saved state with chosen actions: the same state and action must give
    the same next obs and reward as the env did, and another action a different outcome."""
    env = build()
    gen = torch.Generator().manual_seed(0)
    env.reset(seed=5)
    for _ in range(7):
        env.step(torch.rand(env.num_envs, env.action_dim, generator=gen) * 2 - 1)
    states = env.get_states()
    action = torch.rand(env.num_envs, env.action_dim, generator=gen) * 2 - 1
    obs, reward, *_ = env.step(action)
    env.step(-action)  # move on, so the replay really restores the saved state
    replay_obs, replay_reward = env.step_from(states, action)
    assert torch.allclose(replay_obs, obs, atol=1e-6) and torch.allclose(replay_reward, reward, atol=1e-6)
    other_obs, _ = env.step_from(states, -action)
    assert not torch.allclose(other_obs, obs)
    env.close()


def test_walker2d_is_a_terminating_gymnasium_task_and_halfcheetah_is_not():
    """`alg.episodic: auto` reads `can_terminate`: true for the tasks with a health check."""
    walker, cheetah, cart = make_env("Walker2d-v5", 1), make_env("HalfCheetah-v5", 1), make_env("cartpole-swingup", 1)
    assert (walker.obs_dim, walker.action_dim) == (17, 6)
    assert walker.can_terminate and make_env("Hopper-v5", 1).can_terminate
    assert not cheetah.can_terminate and not cart.can_terminate
    walker.reset(seed=0)
    falls = 0
    for _ in range(200):  # a random walker falls long before the 1000-step limit
        falls += int(walker.step(torch.ones(1, 6))[2].item())
    assert falls > 0

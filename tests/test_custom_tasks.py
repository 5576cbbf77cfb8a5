"""TD-MPC2's 11 custom tasks: each builds and steps with the listed dims, and its reward matches the
definition on hand-made physics states. Expected values are computed here from the definitions,
with the tolerance shapes written out (no call to dm_control's `tolerance`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowpwm.envs import make_env
from flowpwm.envs import dmc_custom
from flowpwm.envs.tasksets import CUSTOM_TASKS, task_dims

INF = math.inf


def lin(x: float, lo: float, hi: float, margin: float, at_margin: float) -> float:
    """tolerance(x, (lo, hi), margin, sigmoid='linear', value_at_margin) written out."""
    if lo <= x <= hi:
        return 1.0
    d = (lo - x if x < lo else x - hi) / margin
    return max(0.0, 1.0 - d * (1.0 - at_margin))


def gauss(x: float, lo: float, hi: float, margin: float) -> float:
    """tolerance(x, (lo, hi), margin) with dm_control's default gaussian, 0.1 at the margin."""
    if lo <= x <= hi:
        return 1.0
    d = (lo - x if x < lo else x - hi) / margin
    return 0.1 ** (d * d)


def reward_at(task: str, qpos: dict[str, float] = {}, qvel: dict[str, float] = {}, seed: int = 0):
    """(reward, physics) of `task` after a reset, at rest with all joints 0 but the named ones."""
    env = dmc_custom.load(task, random=seed)
    env.reset()
    p = env.physics
    zero(p)
    for name, v in qpos.items():
        p.named.data.qpos[name] = v
    for name, v in qvel.items():
        p.named.data.qvel[name] = v
    p.forward()
    return env.task.get_reward(p), p


def zero(physics) -> None:
    physics.data.qpos[:] = 0.0
    physics.data.qvel[:] = 0.0


@pytest.mark.parametrize("task", CUSTOM_TASKS)
def test_custom_task_builds_and_steps_with_listed_dims(task: str):
    env = make_env(task, num_envs=2, seed=1)
    assert (env.obs_dim, env.action_dim) == task_dims(task)
    assert env.max_episode_steps == 500
    obs = env.reset()
    assert obs.shape == (2, env.obs_dim) and torch.isfinite(obs).all()
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        obs, reward, terminated, truncated, _ = env.step(2 * torch.rand(2, env.action_dim, generator=g) - 1)
        assert torch.isfinite(obs).all() and ((reward >= 0) & (reward <= 2)).all()  # 2 physics steps of [0, 1]
        assert not terminated.any() and not truncated.any()
    env.close()


def _walker(task: str, speed: float, rootz: float, rooty: float, vx: float) -> None:
    # Rigid motion of the whole walker: torso height 1.3 + rootz, upright cos(rooty), COM velocity vx.
    env = dmc_custom.load(task, random=0)
    env.reset()
    p = env.physics
    zero(p)
    p.named.data.qpos["rootz"], p.named.data.qpos["rooty"], p.named.data.qvel["rootx"] = rootz, rooty, vx
    p.forward()
    standing = gauss(1.3 + rootz, 1.2, INF, 0.6)
    upright = (1 + math.cos(rooty)) / 2
    move = lin(vx, -INF, -speed, speed / 2, 0.5)
    expected = (3 * standing + upright) / 4 * (5 * move + 1) / 6
    assert env.task.get_reward(p) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("task,speed", [("walker-walk-backwards", 1.0), ("walker-run-backwards", 8.0)])
def test_walker_backwards_reward(task: str, speed: float):
    for rootz, rooty, vx in [(0.0, 0.0, -0.75 * speed), (-0.4, math.pi / 3, -2 * speed), (0.0, 0.0, speed),
                             (-0.3, 0.2, -speed)]:
        _walker(task, speed, rootz, rooty, vx)
    r_back, _ = reward_at(task, {"rootz": 0.0}, {"rootx": -speed})
    r_fwd, _ = reward_at(task, {"rootz": 0.0}, {"rootx": speed})
    assert r_back > 0.9 and r_fwd < 0.2


def test_cheetah_run_backwards_reward():
    for vx, expected in [(-9.0, 1.0), (-8.0, 1.0), (-4.0, 0.5), (-2.0, 0.25), (0.0, 0.0), (3.0, 0.0)]:
        r, p = reward_at("cheetah-run-backwards", qvel={"rootx": vx})
        assert p.speed() == pytest.approx(vx, abs=1e-9)  # with only rootx moving, the COM moves at vx
        assert r == pytest.approx(expected, abs=1e-9), vx


@pytest.mark.parametrize("rootz,rooty,vx", [(0.6, 0.0, 6.0), (0.3, -0.5, 3.0), (0.8, 0.7, 7.0), (0.0, 0.0, 0.2)])
def test_cheetah_one_foot_and_jump_rewards(rootz: float, rooty: float, vx: float):
    rewards = {}
    for task in ("cheetah-run-front", "cheetah-run-back", "cheetah-jump"):
        env = dmc_custom.load(task, random=0)
        env.reset()
        p = env.physics
        zero(p)
        p.named.data.qpos["rootz"], p.named.data.qpos["rooty"], p.named.data.qvel["rootx"] = rootz, rooty, vx
        p.forward()
        torso, bfoot, ffoot = (float(p.named.data.xpos[b, "z"]) for b in ("torso", "bfoot", "ffoot"))
        assert torso == pytest.approx(0.7 + rootz)  # the torso origin sits on the root joints

        def run(foot_z):  # (3·foot_up + 2·torso_up)/5 × (5·tol(v ≥ 6, linear 6, 0) + 1)/6
            up = (3 * gauss(foot_z, 1.2, INF, 0.6) + 2 * gauss(torso, 1.2, INF, 0.6)) / 5
            return up * (5 * lin(vx, 6.0, INF, 6.0, 0.0) + 1) / 6

        def stand(foot_z):  # (5·tol((torso + foot)/2 ≥ 1.2, margin 0.6) + tol(|v| ≤ 0.5, linear 0.5, 0))/6
            return (5 * gauss((torso + foot_z) / 2, 1.2, INF, 0.6) + lin(vx, -0.5, 0.5, 0.5, 0.0)) / 6

        expected = {"cheetah-run-front": run(bfoot), "cheetah-run-back": run(ffoot),
                    "cheetah-jump": (stand(bfoot) + stand(ffoot)) / 2}[task]
        rewards[task] = env.task.get_reward(p)
        assert rewards[task] == pytest.approx(expected, rel=1e-6), task
    if rooty != 0.0:  # pitching the body raises one foot over the other: front and back differ
        assert rewards["cheetah-run-front"] != pytest.approx(rewards["cheetah-run-back"])


def test_hopper_hop_backwards_reward():
    standings = set()
    for rooty, vx in [(0.0, -1.5), (0.0, -0.75), (0.0, -0.25), (0.0, 1.0), (1.4, -2.0), (-0.3, -2.0)]:
        env = dmc_custom.load("hopper-hop-backwards", random=0)
        env.reset()
        p = env.physics
        zero(p)
        p.named.data.qpos["rooty"], p.named.data.qvel["rootx"] = rooty, vx
        p.forward()
        height = float(p.named.data.xipos["torso", "z"] - p.named.data.xipos["foot", "z"])  # torso over foot
        standing = 1.0 if 0.6 <= height <= 2.0 else 0.0
        standings.add(standing)
        expected = standing * lin(vx, -INF, -1.0, 0.5, 0.5)
        assert env.task.get_reward(p) == pytest.approx(expected, abs=1e-9), (rooty, vx)
    assert standings == {0.0, 1.0}  # a hopper tipped over (rooty 1.4) is not standing
    # An upright hopper is tall enough; moving backwards at 0.75 m/s is 3/4 of the hop reward.
    r, _ = reward_at("hopper-hop-backwards", qvel={"rootx": -0.75})
    assert r == pytest.approx(0.75)


@pytest.mark.parametrize("task,target_size", [("reacher-three-easy", 0.05), ("reacher-three-hard", 0.015)])
def test_reacher_three_reward_and_observation(task: str, target_size: float):
    env = dmc_custom.load(task, random=0)
    env.reset()
    p = env.physics
    assert p.named.model.geom_size["target", 0] == pytest.approx(target_size)
    angles = np.array([0.3, -0.5, 0.9])
    tip = 0.09 * sum(np.array([math.cos(a), math.sin(a)]) for a in np.cumsum(angles))  # 3 links of 9 cm
    for offset, reached in [(0.0, True), (target_size + 0.01 - 1e-4, True), (target_size + 0.01 + 1e-3, False)]:
        p.named.model.geom_pos["target", ["x", "y"]] = tip + np.array([offset, 0.0])
        p.data.qpos[:] = angles
        p.data.qvel[:] = [0.1, -0.2, 0.3]
        p.forward()
        assert env.task.get_reward(p) == (1.0 if reached else 0.0)
        obs = env.task.get_observation(p)
        assert list(obs) == ["position", "to_target", "velocity"]
        np.testing.assert_allclose(obs["position"], angles)
        np.testing.assert_allclose(obs["to_target"], [offset, 0.0], atol=1e-12)
        np.testing.assert_allclose(obs["velocity"], [0.1, -0.2, 0.3])


def test_cup_spin_reward():
    env = dmc_custom.load("cup-spin", random=0)
    env.reset()
    p = env.physics
    ball_r = float(p.named.model.geom_size["ball", 0])
    half = p.named.model.site_size["target", [0, 2]]
    # World positions: ball (ball_x, 0.2 + ball_z); cup target site (cup_x, 0.55 + cup_z).
    for cup_x, cup_z, ball_x, ball_z, vx, vz in [(0.0, 0.0, 0.0, 0.35, 3.0, 0.0),  # ball in the cup
                                                 (0.0, 0.0, 0.3, -0.2, 2.7, 3.6),
                                                 (0.1, -0.1, -0.3, 0.5, -6.0, 1.0),
                                                 (0.0, 0.0, 0.2, 0.2, 0.0, 0.0),
                                                 (0.0, 0.0, -0.6, -0.3, 0.5, -9.0)]:
        zero(p)
        p.named.data.qpos[["cup_x", "cup_z", "ball_x", "ball_z"]] = [cup_x, cup_z, ball_x, ball_z]
        p.named.data.qvel[["ball_x", "ball_z"]] = [vx, vz]
        p.forward()
        dx, dz = cup_x - ball_x, 0.55 + cup_z - (0.2 + ball_z)
        inside = abs(dx) < half[0] - ball_r and abs(dz) < half[1] - ball_r
        dist, speed = math.hypot(dx, dz), math.hypot(vx, vz)
        expected = (0.0 if inside else 1.0) * (lin(dist, 0.5, INF, 0.25, 0.5) + 2 * lin(speed, 6.0, INF, 3.0, 0.5)) / 3
        assert env.task.get_reward(p) == pytest.approx(expected, abs=1e-9), (ball_x, ball_z)
    # The ball starts inside the cup in about 90 % of episodes (else anywhere collision-free).
    inside = 0
    for _ in range(200):
        env.reset()
        inside += p.in_target()
    assert 0.82 <= inside / 200 <= 0.99


def test_pendulum_spin_reward():
    for w, expected in [(9.0, 1.0), (-12.0, 1.0), (6.75, 0.75), (-4.5, 0.5), (2.25, 0.25), (0.0, 0.0)]:
        r, _ = reward_at("pendulum-spin", {"hinge": 1.0}, {"hinge": w})
        assert r == pytest.approx(expected, abs=1e-9), w

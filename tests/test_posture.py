"""`scripts/posture.py`: whether a cheetah-run policy flips the body over."""

import math

import pytest
import torch

from flowpwm.algorithms.pwm import PWM
from flowpwm.analysis.posture import buffer_posture, flip_prediction, flipped, policy_posture
from flowpwm.config import load_alg
from flowpwm.data.buffer import ReplayBuffer
from flowpwm.envs import make_env


@pytest.fixture(scope="module")
def cheetah():
    env = make_env("cheetah-run", 1, seed=0)
    yield env
    env.close()


def test_flipped_reads_the_cheetahs_torso_pitch(cheetah):
    upright = cheetah.reset(seed=0)
    state = cheetah._get_state_one(0)
    state[2] = math.pi  # qpos = (rootx, rootz, rooty, ...): the torso rotated half a turn
    upside_down = torch.as_tensor(cheetah._set_state_one(0, state)).float()
    assert not flipped(upright, "cheetah-run").any()
    assert flipped(upside_down, "cheetah-run").all()


def test_buffer_posture_splits_reward_and_value_by_posture(cheetah):
    torch.manual_seed(0)
    agent = PWM(load_alg("pwm_tiny"), cheetah.obs_dim, cheetah.action_dim)
    buf = ReplayBuffer(40, 2, cheetah.obs_dim, cheetah.action_dim)
    for t in range(20):
        obs = torch.randn(2, cheetah.obs_dim)
        obs[:, 1] = torch.tensor([math.pi, 0.0]) if t % 2 else torch.tensor([0.1, 0.2])  # env 0 flipped on odd rows
        reward = (~flipped(obs, "cheetah-run")).float()  # 1 upright, 0 flipped
        buf.add(obs, torch.zeros(2, cheetah.action_dim), reward, obs, torch.zeros(2, dtype=torch.bool),
                torch.zeros(2, dtype=torch.bool))
    out = buffer_posture(agent, buf, "cheetah-run", rows=10)
    assert out["steps"] == 20 and out["flipped_fraction"] == pytest.approx(5 / 20)
    assert out["flipped"]["steps"] == 5 and out["flipped"]["reward"] == 0.0
    assert out["upright"]["steps"] == 15 and out["upright"]["reward"] == 1.0


def test_policy_posture_runs_whole_episodes_from_reset():
    torch.manual_seed(0)
    env = make_env("cheetah-run", 2, seed=0)
    agent = PWM(load_alg("pwm_tiny"), env.obs_dim, env.action_dim)
    try:
        out = policy_posture(agent, env, "cheetah-run", seed=5)
    finally:
        env.close()
    assert len(out["returns"]) == 2 and all(0 <= f <= 1 for f in out["flipped_fraction"])
    assert all(0 <= r <= 500 for r in out["returns"])  # 500 agent steps, reward in [0, 1]


def test_flip_prediction_reads_only_slices_that_go_from_upright_to_upside_down(cheetah):
    torch.manual_seed(0)
    alg = load_alg("pwm_tiny")
    alg.horizon = 4
    agent = PWM(alg, cheetah.obs_dim, cheetah.action_dim)
    buf = ReplayBuffer(60, 2, cheetah.obs_dim, cheetah.action_dim)
    pitch = [torch.tensor([min(t * 0.4, math.pi), 0.0]) for t in range(30)]  # env 0 rolls over, env 1 stays up
    for t in range(30):
        obs = torch.randn(2, cheetah.obs_dim)
        obs[:, 1] = pitch[t]
        buf.add(obs, torch.randn(2, cheetah.action_dim).clamp(-1, 1), torch.zeros(2), obs,
                torch.zeros(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool))
    # env 0: cos(0.4 t) > 0.5 for t <= 2, cos(0.4 (t + 4)) < -0.5 for t + 4 >= 6: starts t = 2 only
    out = flip_prediction(agent, buf, "cheetah-run")
    assert out["slices"] == 1 and out["h"] == [0, 1, 2, 3, 4]
    assert out["value_encoded"][0] == pytest.approx(out["value_predicted"][0])  # the same start latent
    buf_up = ReplayBuffer(60, 2, cheetah.obs_dim, cheetah.action_dim)
    for t in range(30):
        buf_up.add(torch.zeros(2, cheetah.obs_dim), torch.zeros(2, cheetah.action_dim), torch.zeros(2),
                   torch.zeros(2, cheetah.obs_dim), torch.zeros(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool))
    assert flip_prediction(agent, buf_up, "cheetah-run") is None

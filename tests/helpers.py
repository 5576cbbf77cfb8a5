"""Small world models and batches shared by the tests."""

import torch
from omegaconf import OmegaConf

from flowpwm.config import load_alg
from flowpwm.models.factory import build_world_model


def tiny_cfg(kind: str, **overrides):
    cfg = load_alg("pwm_tiny_flow" if kind == "flow" else "pwm_tiny").world_model
    return OmegaConf.merge(cfg, overrides)


def tiny_wm(kind: str, obs_dim=6, action_dim=2, **overrides):
    return build_world_model(tiny_cfg(kind, **overrides), obs_dim, action_dim)


def batch(H=4, B=32, obs_dim=6, action_dim=2, reward_scale=1.0):
    obs = torch.randn(H + 1, B, obs_dim)
    action = torch.rand(H, B, action_dim) * 2 - 1
    reward = reward_scale * (obs[:-1, :, :1].tanh() + 0.5)
    return obs, action, reward

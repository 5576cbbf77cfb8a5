"""How much reward open-loop random actions find on a task: the fraction of rewarded agent
steps and the return per episode under several action distributions.

On a sparse task the distribution of the exploration noise decides whether any reward reaches
the buffer at all (finger-spin: uniform actions 0.05 % of steps, saturated ±1 actions 1.7 %,
docs/results.md), and PWM learns nothing from a buffer without reward.

    python scripts/reward_density.py finger-spin --steps 6000
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from flowpwm.config import UserError
from flowpwm.envs import make_env


def _uniform(rng, shape):
    return rng.uniform(-1.0, 1.0, shape)


def _normal2(rng, shape):
    return np.clip(rng.normal(0.0, 2.0, shape), -1.0, 1.0)


def _bang_bang(rng, shape):
    return rng.choice([-1.0, 1.0], shape)


# name -> (draw, steps each action is held)
SCHEMES = {
    "uniform": (_uniform, 1),                # the seed phase's actions (ours and TD-MPC2's)
    "normal2-clipped": (_normal2, 1),        # TD-MPC2's MPPI sampling starts at std 2
    "bang-bang": (_bang_bang, 1),
    "uniform-hold10": (_uniform, 10),
    "bang-bang-hold10": (_bang_bang, 10),
}


def reward_density(task: str, scheme: str, steps: int, seed: int = 0) -> dict[str, float]:
    """Step one env of `task` `steps` agent steps with `scheme`'s random actions (episodes
    restart as they end). Returns the fraction of steps with reward > 0, the mean reward per
    step and that mean times the episode length."""
    if scheme not in SCHEMES:
        raise UserError(f"unknown action scheme {scheme!r}: use one of {', '.join(SCHEMES)}")
    if steps < 1:
        raise UserError(f"--steps {steps}: must be >= 1")
    draw, hold = SCHEMES[scheme]
    env, rng = make_env(task, 1, seed=seed), np.random.default_rng(seed)
    try:
        env.reset(seed=seed)
        rewards, action = np.empty(steps), None
        for t in range(steps):
            if t % hold == 0:
                action = torch.as_tensor(draw(rng, (1, env.action_dim)), dtype=torch.float32)
            rewards[t] = float(env.step(action)[1][0])
        length = env.max_episode_steps
    finally:
        env.close()
    return {"rewarded_fraction": float((rewards > 0).mean()), "mean_reward": float(rewards.mean()),
            "return_per_episode": float(rewards.mean() * length), "episode_length": length}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task")
    p.add_argument("--steps", type=int, default=6000, help="agent steps per scheme")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    args = p.parse_args(argv)
    print(f"{args.task}: open-loop random actions, {args.steps} agent steps each, seed {args.seed}\n")
    print("| actions | rewarded steps | mean reward per step | return per episode |")
    print("|---|---:|---:|---:|")
    for scheme in args.schemes:
        r = reward_density(args.task, scheme, args.steps, args.seed)
        print(f"| {scheme} | {100 * r['rewarded_fraction']:.2f} % | {r['mean_reward']:.4f} | "
              f"{r['return_per_episode']:.1f} |")
    return 0

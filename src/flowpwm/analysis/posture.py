"""Does a run's policy flip the body over? For tasks whose body can end up upside down and stay
there (cheetah-run: the torso pitch), the fraction of steps spent flipped, in the data the run
collected and under its final deterministic policy, with the reward and critic value on each
side of the flip, and whether the world model sees a flip coming (`flip_prediction`).

A flipped half-cheetah earns ~0.07 reward per step against 0.3-0.5 upright, and it seldom
rights itself: a policy that flips it is stuck at ~0.1-0.3 of TD-MPC2's return. This is how
the flow model's cheetah-run runs at std-2 exploration fail (docs/results.md, issue 15).

    python scripts/posture.py RUN_DIR [RUN_DIR ...] [--episodes-back 2] [--rollout-envs 4]
"""

from __future__ import annotations

import argparse

import torch

from flowpwm.analysis.diagnostics import load_agent
from flowpwm.analysis.runs import load_run
from flowpwm.config import UserError
from flowpwm.envs import make_env
from flowpwm.models.rollout import open_loop_from_latents

# task -> index of the body's pitch angle in the observation (cheetah-run: the torso's rooty)
PITCH = {"cheetah-run": 1}


def flipped(obs: torch.Tensor, task: str) -> torch.Tensor:
    """True where the body is upside down: its pitch more than 90° from upright."""
    return obs[..., PITCH[task]].cos() < 0


@torch.no_grad()
def buffer_posture(agent, buffer, task: str, rows: int) -> dict:
    """The last `rows` rows of the replay buffer (all envs): the flipped fraction, and the real
    reward, predicted reward (real actions) and critic value at flipped and upright states."""
    lo = max(buffer.filled - rows, 0)
    obs = buffer.obs[lo:buffer.filled].reshape(-1, buffer.obs.shape[-1])
    act = buffer.action[lo:buffer.filled].reshape(-1, buffer.action.shape[-1])
    rew = buffer.reward[lo:buffer.filled].reshape(-1)
    z = agent.wm.encode(obs)
    pred, value = agent.wm.reward_value(z, act).squeeze(-1), agent.critic.min_value(z).squeeze(-1)
    flip = flipped(obs, task)
    out = {"steps": len(obs), "flipped_fraction": flip.float().mean().item()}
    for side, m in (("flipped", flip), ("upright", ~flip)):
        n = int(m.sum())
        out[side] = {"steps": n, **({"reward": rew[m].mean().item(), "predicted_reward": pred[m].mean().item(),
                                     "value": value[m].mean().item()} if n else {})}
    return out


@torch.no_grad()
def policy_posture(agent, env, task: str, seed: int) -> dict:
    """One episode per env of `env` from reset under the deterministic policy: return and flipped
    fraction."""
    envs = env.num_envs
    obs = env.reset(seed=seed)
    ret, flips, steps, alive = torch.zeros(envs), torch.zeros(envs), 0, torch.ones(envs, dtype=torch.bool)
    while alive.any():
        flips += flipped(obs, task).float() * alive
        obs, reward, terminated, truncated, _ = env.step(agent.act(obs, deterministic=True).cpu())
        ret += reward * alive
        steps += 1
        alive &= ~(terminated | truncated)
    return {"returns": ret.tolist(), "flipped_fraction": (flips / steps).tolist()}


@torch.no_grad()
def flip_prediction(agent, buffer, task: str, slices: int = 256, seed: int = 0) -> dict | None:
    """Does the world model see a flip coming? On real H-step slices that start upright
    (cos(pitch) > 0.5) and end upside down (< -0.5), the critic's value at the encoded real
    latents and at the model's open-loop prediction from the same start and actions, at
    h = 0, H/4, ..., H. None when the buffer holds no such slice."""
    H, R = agent.horizon, buffer.filled
    c = buffer.obs[:R, :, PITCH[task]].cos()
    ends = torch.cat([torch.zeros(1, c.shape[1]), buffer.done[:R].float().cumsum(0)])  # episode ends before row t
    ok = (c[:R - H] > 0.5) & (c[H:] < -0.5) & (ends[H:R] == ends[:R - H])  # no end among rows t..t+H-1
    starts = ok.nonzero()
    if len(starts) == 0:
        return None
    pick = torch.randperm(len(starts), generator=torch.Generator().manual_seed(seed))[:slices]
    t0, e0 = starts[pick, 0], starts[pick, 1]
    obs = torch.stack([buffer.obs[t0 + h, e0] for h in range(H + 1)])
    act = torch.stack([buffer.action[t0 + h, e0] for h in range(H)])
    encoded = agent.wm.encode(obs)
    roll = open_loop_from_latents(agent.wm, encoded, act)
    value = lambda zs: agent.critic.min_value(zs).squeeze(-1).mean().item()  # noqa: E731
    hs = sorted({round(H * k / 4) for k in range(5)})
    return {"slices": len(pick), "h": hs, "value_encoded": [value(encoded[h]) for h in hs],
            "value_predicted": [value(roll["predicted"][h]) for h in hs]}


def posture(run_dir: str, episodes_back: int = 2, rollout_envs: int = 4, seed: int = 123) -> dict:
    run = load_run(run_dir)
    task = run.config["env"]["task"]
    if task not in PITCH:
        raise UserError(f"{run_dir}: task {task!r} has no pitch observation known here; known: {', '.join(PITCH)}")
    agent, buffer, state = load_agent(run_dir)
    env = make_env(task, max(rollout_envs, 1), seed=seed)  # its episode length sets the rows read
    try:
        out = {"run": str(run_dir), "task": task, "env_steps": state.get("env_steps"),
               "buffer": buffer_posture(agent, buffer, task, episodes_back * env.max_episode_steps),
               "flip_prediction": flip_prediction(agent, buffer, task)}
        if rollout_envs > 0:
            out["policy"] = policy_posture(agent, env, task, seed)
    finally:
        env.close()
    return out


def format_row(d: dict) -> str:
    b, f, u = d["buffer"], d["buffer"]["flipped"], d["buffer"]["upright"]
    side = lambda s: f"{s['reward']:.3f} ({s['predicted_reward']:.3f}) / {s['value']:.1f}" if s["steps"] else "–"
    pol = d.get("policy")
    pol_txt = (f"{sum(pol['returns']) / len(pol['returns']):.1f} | "
               f"{100 * sum(pol['flipped_fraction']) / len(pol['flipped_fraction']):.0f} %") if pol else "– | –"
    return f"| {d['run']} | {d['env_steps']} | {100 * b['flipped_fraction']:.0f} % | {side(f)} | {side(u)} | {pol_txt} |"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--episodes-back", type=int, default=2,
                   help="episodes (per env) at the end of the buffer to read")
    p.add_argument("--rollout-envs", type=int, default=4, help="deterministic-policy episodes; 0: skip")
    p.add_argument("--seed", type=int, default=123)
    args = p.parse_args(argv)
    if args.episodes_back < 1 or args.rollout_envs < 0:
        raise UserError("--episodes-back must be >= 1 and --rollout-envs >= 0")
    print("| run | env steps | flipped (collected) | reward (predicted) / value, flipped | same, upright "
          "| policy return | policy flipped |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    flips = []
    for run in args.runs:
        d = posture(run, args.episodes_back, args.rollout_envs, args.seed)
        print(format_row(d), flush=True)
        flips.append((run, d["flip_prediction"]))
    print("\nCritic value along real slices that flip (upright at h=0, upside down at h=H): at the encoded "
          "real latents / at the model's open-loop prediction (real actions)\n")
    for run, f in flips:
        print(f"{run}: " + ("no such slice" if f is None else f"{f['slices']} slices; " + ", ".join(
            f"h={h} {e:.1f} / {p:.1f}" for h, e, p in zip(f["h"], f["value_encoded"], f["value_predicted"]))))
    return 0

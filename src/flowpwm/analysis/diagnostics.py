"""World-model diagnostics from a run's checkpoint: open-loop prediction error vs horizon on
held-out replay slices, for either world model (`flowpwm diagnose RUN_DIR`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from flowpwm.algorithms.pwm import PWM
from flowpwm.config import UserError
from flowpwm.data.buffer import ReplayBuffer


@torch.no_grad()
def open_loop_errors(wm, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor) -> dict:
    """Roll a world model open-loop from encoder(obs[0]) along the recorded actions.

    Per step h = 1..H: latent MSE against encoder(obs[h]), |predicted - true reward| of the
    step's transition, and the smallest latent entry (below 0 = off the SimNorm simplex);
    plus the encoded and the predicted last latents."""
    target = wm.encode(obs)
    z, latent, rew, lowest = target[0], [], [], []
    for t in range(action.shape[0]):
        rew.append((wm.reward_value(z, action[t]) - reward[t]).abs().mean().item())
        z = wm.next(z, action[t])
        latent.append((z - target[t + 1]).pow(2).mean().item())
        lowest.append(z.min().item())
    return {"latent_mse": latent, "reward_abs_err": rew, "min_latent": lowest,
            "last_encoded": target[-1], "last_predicted": z}


def load_agent(run_dir: Path) -> tuple[PWM, ReplayBuffer, dict]:
    ckpt = run_dir / "checkpoints" / "latest.pt"
    if not ckpt.exists():
        raise UserError(f"no checkpoint at {ckpt}: diagnose needs a run directory that saved one")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    buf = state["buffer"]
    num_envs, obs_dim = buf["obs"].shape[1:]
    action_dim = buf["action"].shape[-1]
    agent = PWM(cfg.alg, obs_dim, action_dim)
    agent.load_state_dict(state["agent"])
    buffer = ReplayBuffer(buf["obs"].shape[0] * num_envs, num_envs, obs_dim, action_dim)
    buffer.load_state_dict(buf)
    return agent, buffer, state


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="flowpwm diagnose", description=__doc__)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--slices", type=int, default=512, help="replay slices to evaluate on")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    agent, buffer, state = load_agent(args.run_dir)
    batch = buffer.sample(args.slices, agent.horizon, generator=torch.Generator().manual_seed(args.seed))
    r = open_loop_errors(agent.wm, batch["obs"], batch["action"], batch["reward"])
    with torch.no_grad():
        v_enc, v_pred = (agent.critic.min_value(r[k]).mean().item() for k in ("last_encoded", "last_predicted"))
    H = agent.horizon
    print(f"{args.run_dir}: {agent.cfg.name} ({agent.wm.kind}) at epoch {state['epoch']}, "
          f"{state['env_steps']} env steps; {args.slices} replay slices")
    print("| horizon | latent MSE | reward abs err | min latent entry |\n|---:|---:|---:|---:|")
    for h in sorted(h for h in {1, 2, 4, 8, H} if h <= H):
        print(f"| {h} | {r['latent_mse'][h - 1]:.2e} | {r['reward_abs_err'][h - 1]:.4f} | {r['min_latent'][h - 1]:+.3f} |")
    print(f"critic value at encoded vs predicted latent after {H} steps: "
          f"{v_enc:.2f} vs {v_pred:.2f}")
    return 0

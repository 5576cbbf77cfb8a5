"""The few lines a run prints at start: what is being trained, how big it is next to its
paired baseline/flow config, how the flow is integrated, and where everything goes."""

from __future__ import annotations

from flowpwm.config import UserError, load_alg
from flowpwm.integrators import nfe
from flowpwm.parity import Dims, count, rel_diff


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def paired_name(name: str) -> str:
    return name.removesuffix("_flow") if name.endswith("_flow") else f"{name}_flow"


def parity_line(alg, obs_dim: int, action_dim: int, wm_params: int, episodic: bool = False) -> str:
    """Parameter count against the paired config (pwm_5M <-> pwm_5M_flow) at this run's dims."""
    pair = paired_name(str(alg.name))
    try:
        other = count(load_alg(pair).world_model, Dims(pair, obs_dim, action_dim, episodic=episodic))["total"]
    except UserError:
        return f"{wm_params:,} params (no paired config {pair})"
    return f"{wm_params:,} params; paired {pair}: {other:,} ({rel_diff(wm_params, other):+.2%})"


def update_to_data(cfg, num_envs: int) -> str:
    """The update-to-data ratio: updates per epoch against the env steps it collects (PWM's
    settings assume thousands of parallel envs; halving env.num_envs or train.steps_per_epoch
    doubles every ratio)."""
    a, steps = cfg.alg, int(cfg.train.steps_per_epoch) * num_envs
    counts = {"world model": int(a.wm_iterations), "actor": int(a.policy_iterations),
              "critic minibatches": int(a.policy_iterations) * int(a.critic_iterations) * int(a.critic_batches)}
    return (f"updates per epoch of {steps} env steps: " + ", ".join(f"{k} {n}" for k, n in counts.items())
            + " (per 100 env steps: " + " / ".join(f"{100 * n / steps:.3g}" for n in counts.values()) + ")")


def run_header(trainer, wandb_line: str) -> str:
    cfg, agent, env = trainer.cfg, trainer.agent, trainer.env
    wm_cfg = cfg.alg.world_model
    lines = [
        f"train: {cfg.alg.name} on {cfg.env.task} (obs {env.obs_dim}, act {env.action_dim}), seed {cfg.seed}, "
        f"device {cfg.device}; {trainer.total_epochs} epochs after {cfg.train.seed_steps} seed steps "
        f"({cfg.train.env_steps} env steps)",
        f"  world model: {agent.wm.kind}, "
        f"{parity_line(cfg.alg, env.obs_dim, env.action_dim, n_params(agent.wm), agent.episodic)}",
    ]
    if agent.episodic:
        lines.append(f"  episodic: termination head, {agent.termination_mask} continuation in the actor and "
                     f"critic (alg.episodic={cfg.alg.episodic})")
    if agent.wm.kind == "flow":
        per_step = nfe(wm_cfg.integrator, int(wm_cfg.substeps))
        lines.append(f"  flow: integrator {wm_cfg.integrator}, K={wm_cfg.substeps} substeps ({per_step} velocity "
                     f"evals per step), source {wm_cfg.flow_source}, tau {wm_cfg.tau_sampling}")
    switch, short = agent.horizon_switch
    imagined = f", imagined {short}" if short != agent.horizon else ""
    if imagined and switch is not None:
        imagined += f" from {switch} env steps"
    lines.append(f"  actor {n_params(agent.actor):,} params, critic {n_params(agent.critic):,} params; horizon "
                 f"{agent.horizon}{imagined}")
    lines.append("  " + update_to_data(cfg, env.num_envs))
    where = f"  run dir {trainer.run.path}; {wandb_line}"
    if trainer.resumed:
        where += f"; resumed at epoch {trainer.epoch} ({trainer.env_steps} env steps)"
    lines.append(where)
    return "\n".join(lines)

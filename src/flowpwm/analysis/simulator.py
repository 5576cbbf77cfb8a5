"""A world model checked against the real simulator from the same states
(`flowpwm diagnose RUN --simulator`).

Replay slices only show the actions that were taken; the simulator can be put back into a
saved state and stepped with any action, which answers what the actor's gradient depends on:
- action sensitivity: ∂z'/∂a of the model's one-step map against the simulator's
  ∂encoder(obs')/∂a (central differences, every action dimension), as the cosine between
  the two (D × A) Jacobians and their norm ratio; the same for the reward. Split by latent
  entry: SimNorm's softmax holds most entries of an encoded latent near 0 and damps their
  response to anything, so the share of ‖∂z'/∂a‖² a model puts on the entries the encoder pins
  (below `pinned` at the real next state) shows response where the simulator's has almost none;
  the cosine over the other entries is the direction where both can move;
- imagined vs real return: from the same states, H steps of the deterministic policy in the
  simulator (discounted real rewards) against the model closed-loop (the policy acting on the
  model's latents, what the actor maximises) and open-loop (the model fed the real actions),
  and the critic's value after H steps at each end.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from flowpwm.algorithms.pwm import PWM
from flowpwm.envs.base import BatchedEnv


def sample_states(agent: PWM, env: BatchedEnv, seed: int = 0, min_steps: int = 20,
                  max_steps: int = 400) -> tuple[list[np.ndarray], torch.Tensor]:
    """One saved state per env, each after its own random number of steps of the stochastic
    policy from reset (so the states are spread over an episode): (states, observations)."""
    rng = np.random.default_rng(seed)
    stop = rng.integers(min_steps, max_steps, size=env.num_envs)
    states: list = [None] * env.num_envs
    obs_at = torch.zeros(env.num_envs, env.obs_dim)
    obs = env.reset(seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for t in range(int(stop.max()) + 1):
            if (stop == t).any():
                current = env.get_states()
                for i in np.flatnonzero(stop == t):
                    states[i], obs_at[i] = current[i], obs[i]
            obs = env.step(agent.act(obs).cpu())[0]
    return states, obs_at


def _cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(x.flatten(1), y.flatten(1), dim=1, eps=1e-12)


def _share(j: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per state, the share of the Jacobian's squared norm on the masked entries."""
    sq = j.pow(2)  # (N, D, A); the mask is (N, D, 1)
    return (sq * mask).flatten(1).sum(1) / sq.flatten(1).sum(1).clamp(min=1e-24)


@torch.no_grad()
def action_sensitivity(agent: PWM, env: BatchedEnv, states, obs: torch.Tensor, delta: float = 0.1,
                       wm=None, pinned: float = 0.05) -> dict:
    """Model vs simulator Jacobians w.r.t. the action at the policy's own action, by central
    differences of ±`delta` per action dimension. Latents: the model's next(z, a) against the
    encoder of the simulator's next obs; rewards: reward_value(z, a) against the real reward.
    `wm`: check another world model (its own encoder) at the actions of `agent`'s policy, e.g.
    one fitted afresh on the run's data (`flowpwm fit-wm fit_wm.simulator=STATES`). `pinned`:
    the encoded-latent value below which an entry counts as held near 0 by SimNorm."""
    z = agent.wm.encode(obs)
    a = agent.actor(z, deterministic=True)
    if wm is None:
        wm = agent.wm
    else:
        z = wm.encode(obs)
    held = (wm.encode(env.step_from(states, a)[0]) < pinned).unsqueeze(-1)  # (N, D, 1) at the policy's action
    true_z, model_z, true_r, model_r = [], [], [], []
    for j in range(env.action_dim):
        e = torch.zeros(env.action_dim)
        e[j] = delta
        (op, rp), (om, rm) = env.step_from(states, a + e), env.step_from(states, a - e)
        true_z.append((wm.encode(op) - wm.encode(om)) / (2 * delta))
        true_r.append((rp - rm) / (2 * delta))
        model_z.append((wm.next(z, a + e) - wm.next(z, a - e)) / (2 * delta))
        model_r.append((wm.reward_value(z, a + e) - wm.reward_value(z, a - e)).squeeze(-1) / (2 * delta))
    tz, mz = torch.stack(true_z, -1), torch.stack(model_z, -1)  # (N, D, A)
    tr, mr = torch.stack(true_r, -1), torch.stack(model_r, -1)  # (N, A)
    moving = tr.norm(dim=1) > 1e-6  # states where the real reward responds to the action at all
    return {
        "latent_cosine": _cosine(tz, mz).median().item(),
        "latent_norm_true": tz.flatten(1).norm(dim=1).median().item(),
        "latent_norm_model": mz.flatten(1).norm(dim=1).median().item(),
        "pinned": pinned, "pinned_entries": held.float().mean().item(),
        "latent_pinned_share_true": _share(tz, held).median().item(),
        "latent_pinned_share_model": _share(mz, held).median().item(),
        "latent_cosine_free": _cosine(tz * ~held, mz * ~held).median().item(),
        "reward_cosine": _cosine(tr[moving], mr[moving]).median().item() if moving.any() else float("nan"),
        "reward_norm_true": tr.norm(dim=1).median().item(),
        "reward_norm_model": mr.norm(dim=1).median().item(),
        "reward_states": int(moving.sum()),
    }


@torch.no_grad()
def imagined_vs_real(agent: PWM, env: BatchedEnv, states, obs: torch.Tensor, horizon: int | None = None) -> dict:
    """Discounted H-step returns of the deterministic policy from the same states: real
    (simulator), imagined closed-loop (the policy acting on the model's latents) and open-loop
    (the model along the real actions); the critic's value after H steps at each end. Also the
    three returns cut at h = 1, 2, 4, … and H (`by_horizon`): where closed-loop imagination
    parts from the simulator while open-loop stays with it, the policy is exploiting the model,
    and from which step on."""
    wm, gamma, H = agent.wm, agent.gamma, horizon or agent.imagine_horizon
    z0 = wm.encode(obs)
    real, actions, o, current = torch.zeros(H, len(states)), [], obs, states
    for t in range(H):
        a = agent.act(o, deterministic=True).cpu()
        o, r = env.step_from(current, a)
        current = env.get_states()
        actions.append(a)
        real[t] = gamma ** t * r
    imagined, z = torch.zeros_like(real), z0
    for t in range(H):
        a = agent.actor(z, deterministic=True)
        imagined[t] = gamma ** t * wm.reward_value(z, a).squeeze(-1)
        z = wm.next(z, a)
    open_loop, zo = torch.zeros_like(real), z0
    for t in range(H):
        open_loop[t] = gamma ** t * wm.reward_value(zo, actions[t]).squeeze(-1)
        zo = wm.next(zo, actions[t])
    cut = sorted({2 ** k for k in range(H.bit_length())} | {H})  # 1, 2, 4, ... <= H, and H
    # mean over states of the return up to each step, (3, H): real, imagined, open loop
    running = torch.stack([real, imagined, open_loop]).cumsum(1).mean(2)
    by_horizon = [dict(zip(("h", "real", "imagined", "open_loop"), (h, *running[:, h - 1].tolist()))) for h in cut]
    value = lambda x: agent.critic.min_value(x).squeeze(-1).mean().item()  # noqa: E731
    return {"horizon": int(H), "real_return": by_horizon[-1]["real"], "imagined_return": by_horizon[-1]["imagined"],
            "open_loop_return": by_horizon[-1]["open_loop"], "value_real": value(wm.encode(o)),
            "value_imagined": value(z), "value_open_loop": value(zo), "by_horizon": by_horizon}


def simulator_checks(agent: PWM, env: BatchedEnv, seed: int = 0, delta: float = 0.1) -> dict:
    """Both checks from one set of saved states (one per env of `env`)."""
    states, obs = sample_states(agent, env, seed)
    return {"states": len(states), "delta": delta,
            "action_sensitivity": action_sensitivity(agent, env, states, obs, delta),
            "returns": imagined_vs_real(agent, env, states, obs)}


def format_simulator_report(d: dict) -> str:
    s, r = d["action_sensitivity"], d["returns"]
    return "\n".join([
        f"against the simulator, {d['states']} saved states (central differences ±{d['delta']}):",
        "", "| quantity | model | simulator | cosine (median) |", "|---|---:|---:|---:|",
        f"| ‖∂z'/∂a‖ (median) | {s['latent_norm_model']:.4g} | {s['latent_norm_true']:.4g} | {s['latent_cosine']:+.3f} |",
        f"| ‖∂r/∂a‖ (median) | {s['reward_norm_model']:.4g} | {s['reward_norm_true']:.4g} | {s['reward_cosine']:+.3f} |",
        f"| share of ‖∂z'/∂a‖² on the {s['pinned_entries']:.0%} of entries the encoder holds < {s['pinned']:g}; "
        f"cosine: the other entries | {s['latent_pinned_share_model']:.3f} | {s['latent_pinned_share_true']:.3f} "
        f"| {s['latent_cosine_free']:+.3f} |",
        "", f"| {r['horizon']}-step discounted return | real | imagined (closed loop) | model on real actions |",
        "|---|---:|---:|---:|",
        f"| return | {r['real_return']:.3f} | {r['imagined_return']:.3f} | {r['open_loop_return']:.3f} |",
        f"| critic value after it | {r['value_real']:.3f} | {r['value_imagined']:.3f} | {r['value_open_loop']:.3f} |",
        "", "| discounted return over the first h steps | real | imagined (closed loop) | model on real actions "
            "| imagined / real |",
        "|---:|---:|---:|---:|---:|",
        *(f"| h = {b['h']} | {b['real']:.3f} | {b['imagined']:.3f} | {b['open_loop']:.3f} | "
          f"{b['imagined'] / b['real'] if b['real'] else float('nan'):.2f} |" for b in r["by_horizon"]),
    ])

"""Open-loop rollouts of a world model along recorded actions, compared with the encoded true
latents: the error-vs-horizon measurement used by `flowpwm diagnose` and `flowpwm fit-wm`; and
the spread of encoded latents, without which small latent errors mean nothing (a collapsed
encoder makes every latent close to every other)."""

from __future__ import annotations

import torch


@torch.no_grad()
def open_loop_from_latents(wm, target: torch.Tensor, action: torch.Tensor,
                           reward: torch.Tensor | None = None, task=None) -> dict:
    """Roll `wm.next` open-loop from target[0] along `action` (H, B, A) and compare with the
    true latents `target` (H+1, B, D).

    Per step h = 1..H: latent MSE (mean over batch and latent entries) of the h-step
    prediction; the relative error, the batch median of ‖ẑ_h − z_h‖² / ‖z_h − z_0‖² (the
    error against how far the true latent moved: scale-free, 1 = no better than standing
    still); |predicted - true reward| of the step's transition (when `reward` (H, B, 1) is
    given); the smallest predicted latent entry (below 0 = off the SimNorm simplex); plus the
    true and the predicted last latents, and every predicted latent ẑ_0..ẑ_H (H+1, B, D)."""
    z, latent, rel, rew, lowest, predicted = target[0], [], [], [], [], [target[0]]
    for t in range(action.shape[0]):
        if reward is not None:
            rew.append((wm.reward_value(z, action[t], task) - reward[t]).abs().mean().item())
        z = wm.next(z, action[t], task)
        predicted.append(z)
        err = (z - target[t + 1]).pow(2)
        latent.append(err.mean().item())
        moved = (target[t + 1] - target[0]).pow(2).sum(-1).clamp(min=1e-12)
        rel.append((err.sum(-1) / moved).median().item())
        lowest.append(z.min().item())
    return {"latent_mse": latent, "latent_rel_err": rel, "reward_abs_err": rew, "min_latent": lowest,
            "last_encoded": target[-1], "last_predicted": z, "predicted": torch.stack(predicted)}


@torch.no_grad()
def reward_sums(wm, z: torch.Tensor, task, actions: torch.Tensor | None = None, actor=None,
                horizon: int | None = None) -> torch.Tensor:
    """Predicted reward sums (N,) from latents z (N, L): open loop along `actions` (H, N, A), or with
    `actor`'s mean action at each predicted latent for `horizon` steps (the rollout an actor trains on)."""
    total = torch.zeros(z.shape[0], device=z.device)
    for t in range(actions.shape[0] if actions is not None else horizon):
        a = wm.mask_action(actor(z, True) if actions is None else actions[t], task)
        total += wm.reward_value(z, a, task).squeeze(-1)
        z = wm.next(z, a, task)
    return total


@torch.no_grad()
def open_loop_errors(wm, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, task=None) -> dict:
    """Roll a world model open-loop from encoder(obs[0]) along the recorded actions; the true
    latents are encoder(obs[h]). Returns what `open_loop_from_latents` does."""
    return open_loop_from_latents(wm, wm.encode(obs, task), action, reward, task)


@torch.no_grad()
def latent_spread(z: torch.Tensor) -> dict:
    """Spread of encoded latents (..., D): total variance (trace of the covariance) and
    effective rank (exp of the entropy of the covariance spectrum: 1 = one direction, D = all
    directions alike). A collapsed encoder has both near their floor."""
    z = z.reshape(-1, z.shape[-1]).double()
    ev = torch.linalg.eigvalsh(torch.cov(z.T)).clamp(min=0)
    total = ev.sum()
    if total <= 0:
        return {"total_variance": 0.0, "effective_rank": 0.0}
    p = ev / total
    return {"total_variance": total.item(), "effective_rank": torch.exp(-(p * torch.log(p.clamp(min=1e-300))).sum()).item()}

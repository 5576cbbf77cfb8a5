"""Open-loop rollouts of a world model along recorded actions, compared with the encoded true
latents: the error-vs-horizon measurement used by `flowpwm diagnose` and `flowpwm fit-wm`."""

from __future__ import annotations

import torch


@torch.no_grad()
def open_loop_from_latents(wm, target: torch.Tensor, action: torch.Tensor,
                           reward: torch.Tensor | None = None, task=None) -> dict:
    """Roll `wm.next` open-loop from target[0] along `action` (H, B, A) and compare with the
    true latents `target` (H+1, B, D).

    Per step h = 1..H: latent MSE (mean over batch and latent entries) of the h-step
    prediction, |predicted - true reward| of the step's transition (when `reward` (H, B, 1) is
    given), and the smallest predicted latent entry (below 0 = off the SimNorm simplex); plus
    the true and the predicted last latents."""
    z, latent, rew, lowest = target[0], [], [], []
    for t in range(action.shape[0]):
        if reward is not None:
            rew.append((wm.reward_value(z, action[t], task) - reward[t]).abs().mean().item())
        z = wm.next(z, action[t], task)
        latent.append((z - target[t + 1]).pow(2).mean().item())
        lowest.append(z.min().item())
    return {"latent_mse": latent, "reward_abs_err": rew, "min_latent": lowest,
            "last_encoded": target[-1], "last_predicted": z}


@torch.no_grad()
def open_loop_errors(wm, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, task=None) -> dict:
    """Roll a world model open-loop from encoder(obs[0]) along the recorded actions; the true
    latents are encoder(obs[h]). Returns what `open_loop_from_latents` does."""
    return open_loop_from_latents(wm, wm.encode(obs, task), action, reward, task)

"""Fit a world model alone on the toy oscillator and report its losses (`flowpwm fit-wm`):
a quick check that a config trains, and of what each update costs."""

from __future__ import annotations

import time

import torch
from omegaconf import DictConfig

from flowpwm.models.rollout import open_loop_errors
from flowpwm.data.toy import ToyOscillator, sample_windows
from flowpwm.losses import compute_wm_loss, wm_loss_kwargs
from flowpwm.models.factory import build_world_model


def fit_world_model(cfg: DictConfig, log=print) -> dict[str, float]:
    torch.manual_seed(cfg.seed)
    fit, alg = cfg.fit_wm, cfg.alg
    system = ToyOscillator(obs_dim=fit.obs_dim, action_dim=fit.action_dim, seed=cfg.seed)
    train = system.rollout(fit.episodes, fit.episode_length)
    held_out = system.rollout(max(fit.episodes // 4, 1), fit.episode_length)
    wm = build_world_model(alg.world_model, fit.obs_dim, fit.action_dim).to(cfg.device)
    opt = torch.optim.Adam(wm.parameters(), lr=alg.model_lr)
    H, kwargs = int(alg.horizon), wm_loss_kwargs(alg)
    g = torch.Generator().manual_seed(cfg.seed)
    n_params = sum(p.numel() for p in wm.parameters())
    extra = (f", {wm.integrator} K={wm.substeps}, source={kwargs['flow_source']}" if wm.kind == "flow" else "")
    log(f"fit-wm: {alg.name} ({wm.kind}{extra}), {n_params:,} parameters, batch {fit.batch_size}x{H + 1}")

    start, metrics = time.perf_counter(), {}
    for it in range(1, fit.iterations + 1):
        obs, act, rew = (x.to(cfg.device) for x in sample_windows(train, fit.batch_size, H, g))
        loss, metrics = compute_wm_loss(wm, obs, act, rew, **kwargs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(wm.parameters(), alg.wm_grad_norm)
        opt.step()
        if it % fit.log_every == 0 or it == fit.iterations:
            log(f"  iter {it:5d}  wm_loss {metrics['wm_loss']:.4f}  dynamics {metrics['dynamics_loss']:.5f}"
                f"  reward {metrics['reward_loss']:.4f}  ({time.perf_counter() - start:.1f}s)")
    obs, act, rew = (x.to(cfg.device) for x in sample_windows(held_out, 512, H, g))
    err = open_loop_errors(wm, obs, act, rew)["reward_abs_err"]
    metrics.update(reward_err_h1=err[0], reward_err_hmax=err[-1], seconds=time.perf_counter() - start)
    log(f"held-out open-loop |reward error|: step 1 {err[0]:.4f}, step {H} {err[-1]:.4f} "
        f"(reward std {rew.std():.4f}); {metrics['seconds']:.1f}s")
    return metrics

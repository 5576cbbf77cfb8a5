"""Fit a world model alone and report its losses and open-loop quality (`flowpwm fit-wm`): a
quick check that a config trains and of what each update costs, on the toy oscillator; or, with
`fit_wm.buffer=RUN_DIR`, on a real run's replay buffer, which isolates the world model's
objective from the policy that collected the data (how the flow model's latent collapse was
found: docs/results.md). With `fit_wm.simulator=STATES` as well, the fitted model's action
Jacobian ∂z'/∂a is then checked against that run's simulator at STATES states its policy
reaches (`analysis/simulator.py`): whether a model class gets the action's effect right on the
same data, apart from the policy it would train."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from omegaconf import DictConfig

from flowpwm.data.toy import ToyOscillator, sample_windows
from flowpwm.losses import compute_wm_loss, wm_loss_kwargs
from flowpwm.models.factory import build_world_model
from flowpwm.models.rollout import latent_spread, open_loop_errors

Draw = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _toy_data(cfg: DictConfig, H: int) -> tuple[int, int, Draw, Draw, str]:
    fit = cfg.fit_wm
    system = ToyOscillator(obs_dim=fit.obs_dim, action_dim=fit.action_dim, seed=cfg.seed)
    train = system.rollout(fit.episodes, fit.episode_length)
    held_out = system.rollout(max(fit.episodes // 4, 1), fit.episode_length)
    return (fit.obs_dim, fit.action_dim, lambda n, g: sample_windows(train, n, H, g),
            lambda n, g: sample_windows(held_out, n, H, g), "held-out toy episodes")


def _buffer_data(path: str, H: int) -> tuple[int, int, Draw, Draw, str]:
    from flowpwm.analysis.diagnostics import load_agent  # the one loader of a run's checkpoint and buffer

    _, replay, _ = load_agent(path)  # weights only; the buffer file verified before it is read

    def draw(n: int, g: torch.Generator):
        b = replay.sample(n, H, generator=g)
        return b["obs"], b["action"], b["reward"]

    return replay.obs_dim, replay.action_dim, draw, draw, f"slices of {path}'s buffer (in-sample)"


def fit_world_model(cfg: DictConfig, log=print) -> dict[str, float]:
    torch.manual_seed(cfg.seed)
    fit, alg = cfg.fit_wm, cfg.alg
    H, kwargs = int(alg.horizon), wm_loss_kwargs(alg)
    obs_dim, action_dim, draw, draw_eval, eval_on = (
        _buffer_data(str(fit.buffer), H) if fit.get("buffer") else _toy_data(cfg, H))
    wm = build_world_model(alg.world_model, obs_dim, action_dim).to(cfg.device)
    opt = torch.optim.Adam(wm.parameters(), lr=alg.model_lr)
    g = torch.Generator().manual_seed(cfg.seed)
    n_params = sum(p.numel() for p in wm.parameters())
    extra = (f", {wm.integrator} K={wm.substeps}, source={kwargs['flow_source']}" if wm.kind == "flow" else "")
    log(f"fit-wm: {alg.name} ({wm.kind}{extra}), {n_params:,} parameters, batch {fit.batch_size}x{H + 1}")

    start, metrics = time.perf_counter(), {}
    for it in range(1, fit.iterations + 1):
        obs, act, rew = (x.to(cfg.device) for x in draw(fit.batch_size, g))
        loss, metrics = compute_wm_loss(wm, obs, act, rew, **kwargs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(wm.parameters(), alg.wm_grad_norm)
        opt.step()
        metrics = {k: float(v) for k, v in metrics.items()}  # one sync per update: fit-wm is a CPU check
        if it % fit.log_every == 0 or it == fit.iterations:
            log(f"  iter {it:5d}  wm_loss {metrics['wm_loss']:.4f}  dynamics {metrics['dynamics_loss']:.5f}"
                f"  reward {metrics['reward_loss']:.4f}  ({time.perf_counter() - start:.1f}s)")
    obs, act, rew = (x.to(cfg.device) for x in draw_eval(512, torch.Generator().manual_seed(cfg.seed + 1)))
    r = open_loop_errors(wm, obs, act, rew)
    with torch.no_grad():
        spread = latent_spread(wm.encode(obs[0]))
    metrics.update(reward_err_h1=r["reward_abs_err"][0], reward_err_hmax=r["reward_abs_err"][-1],
                   latent_rel_err_hmax=r["latent_rel_err"][-1], latent_variance=spread["total_variance"],
                   latent_effective_rank=spread["effective_rank"], seconds=time.perf_counter() - start)
    log(f"open loop on {eval_on}: |reward error| step 1 {r['reward_abs_err'][0]:.4f}, step {H} "
        f"{r['reward_abs_err'][-1]:.4f} (reward std {rew.std():.4f}); relative latent error step {H} "
        f"{r['latent_rel_err'][-1]:.3f}; encoded latents: total variance {spread['total_variance']:.4f}, "
        f"effective rank {spread['effective_rank']:.1f}; {metrics['seconds']:.1f}s")
    if fit.simulator:
        from flowpwm.analysis.diagnostics import run_action_sensitivity

        s = run_action_sensitivity(str(fit.buffer), int(fit.simulator), wm.cpu().eval())  # diagnose's states
        metrics.update({f"sim_{k}": v for k, v in s.items()})
        log(f"against the simulator, {fit.simulator} states reached by {fit.buffer}'s policy: ∂z'/∂a cosine "
            f"{s['latent_cosine']:+.3f} (median), norm {s['latent_norm_model']:.4g} vs {s['latent_norm_true']:.4g}; "
            f"∂r/∂a cosine {s['reward_cosine']:+.3f}, norm {s['reward_norm_model']:.4g} vs {s['reward_norm_true']:.4g}; "
            f"share of ‖∂z'/∂a‖² on the entries the encoder holds < {s['pinned']:g} {s['latent_pinned_share_model']:.3f} "
            f"vs {s['latent_pinned_share_true']:.3f}, cosine on the others {s['latent_cosine_free']:+.3f}")
    return metrics

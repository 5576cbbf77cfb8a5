"""World-model diagnostics from a run's checkpoint (`flowpwm diagnose RUN_DIR|CHECKPOINT`).

On replay slices drawn from the run's own buffer, for either world model:
- open-loop latent MSE and reward error vs horizon 1..H, critic value at encoded vs predicted
  latents after H steps;
- smoothness: spectral norm of the one-step Jacobian ∂z'/∂(z, a), by block power iteration;
- cost: dynamics evaluations per `next()` and per H-step rollout (velocity calls, NFE, for flow);
- latent spread: total variance and effective rank of the encoded latents (a collapsed
  encoder, the flow model's failure mode in docs/results.md, shows as both near their floor);
- flow models only: straightness of the learned flow and the gap between the configured
  integrator and a fine-grid reference;
- with `--simulator`: the model against the real simulator from saved states (simulator.py).

`diagnose()` returns every number as plain JSON-able values, `format_report()` renders them as
markdown; `--json PATH` writes them atomically."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf

from flowpwm import integrators
from flowpwm.algorithms.pwm import PWM
from flowpwm.analysis.simulator import action_sensitivity, format_simulator_report, sample_states, simulator_checks
from flowpwm.config import UserError
from flowpwm.data.buffer import ReplayBuffer
from flowpwm.fileio import atomic_write_text, json_text
from flowpwm.models.rollout import latent_spread, open_loop_errors, open_loop_from_latents  # noqa: F401 (re-exported)
from flowpwm.rundir import RunDir

FINE_SUBSTEPS = 32  # the fewest reference steps; more when the τ features need them
MAX_FINE_SUBSTEPS = 4096
REFERENCE_TOLERANCE = 0.05  # reference_gap median above this: the report warns
SPECTRAL_ITERS = 20
SATURATED = 3.0  # |pre-tanh mean| beyond this: tanh' < 0.01, the return's gradient barely reaches the actor

# ---------------------------------------------------------------------------------------------
# smoothness: spectral norm of the one-step Jacobian


SPECTRAL_BLOCK = 4


def spectral_norm_power_iteration(f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                                  z: torch.Tensor, a: torch.Tensor, iters: int = SPECTRAL_ITERS,
                                  seed: int = 0, block: int = SPECTRAL_BLOCK) -> torch.Tensor:
    """Largest singular value σ1 of J_i = ∂f(z, a)_i / ∂(z_i, a_i) for every row i, (B,).

    `f` maps (B, D) latents and (B, A) actions to (B, D') and must treat rows independently
    (no batch statistics: call modules in eval mode), so the batched Jacobian is block
    diagonal and one batched product serves all rows at once; J is never formed.

    Block power (subspace) iteration on J_iᵀJ_i: from a seeded random orthonormal basis U_i
    of k = min(`block`, D + A) directions over the concatenated (z, a) input, `iters` times
    U_i ← orth(J_iᵀ(J_i U_i)) (QR); then Rayleigh–Ritz: the estimate is the exact largest
    singular value of the small matrix J_i U_i. It never exceeds σ1 and its relative error
    shrinks like (σ_{k+1}/σ1)^(4·iters); `block=1` is plain power iteration, whose rate
    (σ2/σ1)^(4·iters) is slow when the top two singular values are close.

    Jᵀv products are vjps of f; Ju products are vjps of the map c ↦ Jᵀc (linear in c, so its
    transpose is J): reverse mode only, one graph of f reused for every product."""
    if iters < 1 or block < 1:
        raise ValueError(f"iters and block must be >= 1, got iters={iters}, block={block}")
    z, a = z.detach(), a.detach()
    B, D = z.shape
    n = D + a.shape[-1]
    k = min(int(block), n)
    g = torch.Generator(device=z.device).manual_seed(seed)
    U = torch.linalg.qr(torch.randn(B, n, k, generator=g, device=z.device, dtype=z.dtype)).Q

    def grad(outs, ins, v, create_graph=False):
        return torch.autograd.grad(outs, ins, v, retain_graph=True, create_graph=create_graph,
                                   allow_unused=True, materialize_grads=True)

    with torch.enable_grad():
        zg, ag = z.clone().requires_grad_(True), a.clone().requires_grad_(True)
        out = f(zg, ag)
        if not out.requires_grad:  # f ignores its inputs
            return torch.zeros(B, device=z.device, dtype=z.dtype)
        c = torch.zeros_like(out, requires_grad=True)
        jt_c = torch.cat(grad(out, (zg, ag), c, create_graph=True), dim=-1)  # Jᵀc

        def j_times(U):  # (B, n, k) -> J U (B, D', k), one batched product per direction
            return torch.stack([grad(jt_c, c, U[..., i])[0] for i in range(k)], dim=-1).detach()

        def jt_times(V):  # (B, D', k) -> Jᵀ V (B, n, k)
            return torch.stack([torch.cat(grad(out, (zg, ag), V[..., i]), dim=-1) for i in range(k)],
                               dim=-1).detach()

        for _ in range(iters):
            U = torch.linalg.qr(jt_times(j_times(U))).Q
        JU = j_times(U)
    return torch.linalg.matrix_norm(JU, ord=2)


def jacobian_spectral_norm(wm_or_f, z: torch.Tensor, a: torch.Tensor, iters: int = SPECTRAL_ITERS,
                           seed: int = 0, task=None, block: int = SPECTRAL_BLOCK) -> torch.Tensor:
    """Spectral norm of the one-step Jacobian ∂z'/∂(z, a), z' = wm.next(z, a), per row (B,).

    `wm_or_f` is a world model (its `next` is used; put it in eval mode) or any callable
    f(z, a) -> z'; see `spectral_norm_power_iteration` for the method."""
    f = wm_or_f
    if hasattr(wm_or_f, "next") and hasattr(wm_or_f, "encode"):
        def f(z, a):
            return wm_or_f.next(z, a, task)
    return spectral_norm_power_iteration(f, z, a, iters, seed, block)


# ---------------------------------------------------------------------------------------------
# cost and flow geometry


@torch.no_grad()
def count_nfe(wm, z: torch.Tensor, a: torch.Tensor, horizon: int = 1, task=None) -> dict:
    """Dynamics evaluations per `next()` call and per `horizon`-step open-loop rollout, counted
    on the model (`wm.nfe` velocity calls for a flow model; the MLP's next() is one call).

    `expected_per_next` is what the configured integrator should cost
    (`integrators.nfe(method, substeps)` for flow, 1 for the MLP)."""
    if wm.kind != "flow":
        return {"per_next": 1, "per_rollout": int(horizon), "expected_per_next": 1}
    n0 = wm.nfe
    wm.next(z, a, task)
    per_next = wm.nfe - n0
    n0 = wm.nfe
    for _ in range(horizon):
        z = wm.next(z, a, task)
    return {"per_next": per_next, "per_rollout": wm.nfe - n0,
            "expected_per_next": integrators.nfe(wm.integrator, wm.substeps)}


def default_fine_substeps(wm) -> int:
    """Reference steps that resolve the velocity's τ features: with sinusoidal features the
    fastest one is sin(ω τ), ω = π·2^(F/2−1) (F = tau_features; ω ≈ 402 for F=16), and a
    step of 1/N resolves it when ωh ≲ 1, so N = the power of two ≥ ω, at least
    FINE_SUBSTEPS and at most MAX_FINE_SUBSTEPS (check `reference_gap` then)."""
    if getattr(wm, "tau_embedding", None) != "sinusoidal":
        return FINE_SUBSTEPS
    omega = math.pi * 2.0 ** (wm.tau_dim // 2 - 1)
    return int(min(max(FINE_SUBSTEPS, 2 ** math.ceil(math.log2(omega))), MAX_FINE_SUBSTEPS))


@torch.no_grad()
def flow_straightness(wm, z0: torch.Tensor, a: torch.Tensor, fine_substeps: int | None = None,
                      task=None, eps: float = 1e-12) -> dict[str, torch.Tensor]:
    """How straight the learned flow from each latent z0 (B, D) under action a (B, A) is, in
    the space the flow runs in (`wm.to_flow(z0)`; z below is a point of that space).

    Reference path: Heun with N = `fine_substeps` (default: `default_fine_substeps(wm)`)
    equal steps from τ=0 to 1 (no simplex retraction), states z(τ_k) at τ_k = k/N, endpoint
    z1 = z(1). Recorded velocities:
    v_k = v_θ(z(τ_k), a, τ_k) for k = 0..N (N+1 values, the endpoint included).

    straightness S = (1/(N+1)) Σ_k ‖v_k − (z1 − z0)‖² / ‖z1 − z0‖² per transition: 0 when
    the velocity is the same along the whole path (the path is a straight line traversed at
    constant speed, so one Euler step is exact); larger when the direction or speed changes.
    Note a field constant in τ but varying with z generally still curves the path.

    integrator_gap = ‖z_cfg − z1‖ / ‖z1 − z0‖ per transition, z_cfg the configured
    integrator and substeps' result from the same z0 (no retraction either): the integration
    error of `next()` relative to the step it takes.

    reference_gap = ‖z1' − z1‖ / ‖z1 − z0‖, z1' from Heun with N/2 steps: how far the
    reference itself is from converged. The velocity sees τ through its features (sinusoidal
    ones up to frequency π·2^(F/2−1)); a field that oscillates faster in τ than the grid
    resolves makes both numbers above unreliable, which a large reference_gap shows — raise
    `fine_substeps` then.

    Denominators are clamped at `eps`. Returns per-transition (B,) tensors."""
    N = default_fine_substeps(wm) if fine_substeps is None else int(fine_substeps)
    if N < 1:
        raise ValueError(f"fine_substeps must be >= 1, got {fine_substeps}")
    f, h = wm.velocity_fn(a, task), 1.0 / N
    z0 = wm.to_flow(z0)  # the path runs in the flow space (logits flows: the groups' log space)

    def tau(t: float) -> torch.Tensor:
        return torch.full((*z0.shape[:-1], 1), t, device=z0.device, dtype=z0.dtype)

    z, vs = z0, []
    for k in range(N):
        k1 = f(z, tau(k * h))
        k2 = f(z + h * k1, tau((k + 1) * h))
        vs.append(k1)
        z = z + 0.5 * h * (k1 + k2)
    vs.append(f(z, tau(1.0)))
    z1 = z
    delta = z1 - z0
    d2 = delta.pow(2).sum(-1).clamp(min=eps)
    v = torch.stack(vs)  # (N+1, B, D)
    straightness = (v - delta).pow(2).sum(-1).mean(0) / d2
    z_cfg = integrators.integrate(f, z0, wm.integrator, wm.substeps)
    z_half = integrators.integrate(f, z0, "heun", max(N // 2, 1))
    return {"straightness": straightness, "integrator_gap": (z_cfg - z1).norm(dim=-1) / d2.sqrt(),
            "reference_gap": (z_half - z1).norm(dim=-1) / d2.sqrt()}


def _stats(x: torch.Tensor) -> dict[str, float]:
    x = x.detach().float()
    return {"mean": x.mean().item(), "median": x.median().item(), "max": x.max().item()}


# ---------------------------------------------------------------------------------------------
# loading a run


def resolve_run(path: str | Path) -> tuple[Path, Path]:
    """(run directory, checkpoint file) from a run directory or a checkpoint path inside one
    (RUN_DIR/checkpoints/NAME.pt, RUN_DIR holding config.yaml)."""
    path = Path(path)
    if path.is_dir():
        run_dir, ckpt = path, RunDir(path).latest_checkpoint
        if not ckpt.is_file():
            raise UserError(f"no checkpoint at {ckpt}: pass a run directory that saved one, or a checkpoint file")
    elif path.is_file():
        run_dir, ckpt = path.parent.parent, path
        if path.parent != RunDir(run_dir).checkpoints or not RunDir(run_dir).config.is_file():
            raise UserError(f"checkpoint {path} is not inside a run directory: expected "
                            f"RUN_DIR/checkpoints/{path.name} with RUN_DIR/config.yaml")
    else:
        raise UserError(f"{path} does not exist: pass a run directory or its checkpoints/latest.pt")
    if not RunDir(run_dir).config.is_file():
        raise UserError(f"no config.yaml in run directory {run_dir}: "
                        f"the run's resolved config is needed to rebuild its agent")
    return run_dir, ckpt


def load_agent(run_dir_or_ckpt: str | Path, buffer: bool = True) -> tuple[PWM, ReplayBuffer | None, dict]:
    """The agent (eval mode, CPU), its replay buffer (None with buffer=False: the buffer file
    is not read) and the checkpoint state. Loads weights only: nothing in the files runs."""
    run_dir, ckpt = resolve_run(run_dir_or_ckpt)
    run = RunDir(run_dir)
    cfg = OmegaConf.load(run.config)
    state = run.load_checkpoint(ckpt)
    dims = state["dims"]
    try:
        episodic = any(k.startswith("_termination.") for k in state["agent"]["world_model"])
        agent = PWM(cfg.alg, int(dims["obs_dim"]), int(dims["action_dim"]), episodic=episodic)
        agent.load_state_dict(state["agent"])
        if "env_steps" in state:  # an online run's schedules (log-std floor, imagined horizon) where they were
            agent.set_env_steps(int(state["env_steps"]))
    except (RuntimeError, ValueError, KeyError) as e:
        raise UserError(f"{ckpt} does not match {run.config} ({str(e).splitlines()[0][:160]}): "
                        f"the checkpoint and the config are from different runs") from None
    agent.wm.eval()
    agent.critic.eval()
    if not buffer:
        return agent, None, state
    buf = run.load_buffer(state, ckpt)
    replay = ReplayBuffer(max(int(buf["filled"]), 1) * int(dims["num_envs"]), int(dims["num_envs"]),
                          int(dims["obs_dim"]), int(dims["action_dim"]))
    replay.load_state_dict(buf)
    return agent, replay, state


@torch.no_grad()
def termination_accuracy(wm, buffer: ReplayBuffer, transitions: int, seed: int = 0) -> dict:
    """The termination head on one-step transitions from the buffer: σ(logit) > 0.5 at the
    latent next() reaches, against the recorded `terminated` flags. Terminal steps are rare
    (one per fallen episode), so recall and the false-alarm rate are reported beside accuracy;
    and, since the actor's soft continuation uses the probability itself, its mean on terminal
    and on other steps, and precision@k (of the k most likely steps, k = the terminal count,
    the share that are terminal: the ranking, whatever the calibration)."""
    b = buffer.sample(transitions, 1, generator=torch.Generator().manual_seed(seed + 1))
    z1 = wm.next(wm.encode(b["obs"][0]), b["action"][0])
    p = torch.sigmoid(wm.termination(z1)).flatten()
    predicted, true = p > 0.5, b["terminated"].flatten() > 0.5
    n_true = int(true.sum())
    nan = float("nan")
    return {"transitions": int(transitions), "terminal": n_true,
            "accuracy": (predicted == true).float().mean().item(),
            "recall": (predicted & true).sum().item() / n_true if n_true else nan,
            "false_alarm": (predicted & ~true).sum().item() / max(int((~true).sum()), 1),
            "p_terminal": p[true].mean().item() if n_true else nan,
            "p_other": p[~true].mean().item() if n_true < len(p) else nan,
            "precision_at_k": true[p.argsort(descending=True)[:n_true]].float().mean().item() if n_true else nan}


# ---------------------------------------------------------------------------------------------
# the report


def checkpoint_esnr(agent: PWM, buffer: ReplayBuffer, samples: int = 16, seed: int = 0) -> dict:
    """ESNR of the actor gradient at the checkpoint's parameters, as training measures it:
    `samples` micro-batches of `actor_batch_size` start states from the buffer."""
    gen = torch.Generator().manual_seed(seed)
    batch = int(agent.cfg.actor_batch_size)
    return agent.actor_esnr((buffer.sample(batch, agent.horizon, generator=gen)["obs"][0] for _ in range(samples)),
                            seed=seed)


@torch.no_grad()
def actor_saturation(actor, z: torch.Tensor) -> dict[str, float]:
    """How deep the actor's pre-tanh means μ(z) sit in tanh's flat tails: mean and 90th percentile
    of |μ|, the share of action entries with |μ| > SATURATED, and the mean tanh′(μ), the factor
    by which the return's gradient reaches μ through the squashing."""
    mu = actor.pre_tanh(z, deterministic=True)
    size = mu.abs()
    return {"abs_mean": size.mean().item(), "abs_p90": size.flatten().quantile(0.9).item(),
            "saturated": (size > SATURATED).float().mean().item(),
            "tanh_grad": (1 - torch.tanh(mu) ** 2).mean().item()}


def diagnose(run_dir_or_ckpt: str | Path, slices: int = 512, seed: int = 0,
             fine_substeps: int | None = None, spectral_iters: int = SPECTRAL_ITERS) -> dict:
    """Every diagnostic of one run's checkpoint as plain JSON-able values.

    `slices` (H+1)-step slices are drawn from the run's replay buffer with `seed`. Open-loop
    errors use all of them; the Jacobian, NFE and flow-geometry numbers use each slice's first
    transition (encoder(obs_0), action_0)."""
    if slices < 1:
        raise UserError(f"--slices must be >= 1, got {slices}")
    if fine_substeps is not None and fine_substeps < 1:
        raise UserError(f"--fine-substeps must be >= 1, got {fine_substeps}")
    run_dir, ckpt = resolve_run(run_dir_or_ckpt)
    agent, buffer, state = load_agent(ckpt)
    wm, H = agent.wm, agent.horizon
    try:
        batch = buffer.sample(slices, H, generator=torch.Generator().manual_seed(seed))
    except ValueError as e:
        raise UserError(f"{ckpt}: {e}") from e
    r = open_loop_errors(wm, batch["obs"], batch["action"], batch["reward"])
    with torch.no_grad():
        v_enc, v_pred = (agent.critic.min_value(r[k]).mean().item() for k in ("last_encoded", "last_predicted"))
        z0, z1 = wm.encode(batch["obs"][0]), wm.encode(batch["obs"][1])
    a0 = batch["action"][0]
    sigma = jacobian_spectral_norm(wm, z0, a0, iters=spectral_iters, seed=seed)
    esnr = checkpoint_esnr(agent, buffer, seed=seed)
    out = {
        "run_dir": str(run_dir), "checkpoint": str(ckpt), "alg": str(agent.cfg.name), "kind": wm.kind,
        "epoch": int(state.get("epoch", -1)), "env_steps": int(state.get("env_steps", -1)),
        "slices": int(slices), "seed": int(seed), "horizon": int(H), "latent_dim": int(z0.shape[-1]),
        "open_loop": {k: r[k] for k in ("latent_mse", "latent_rel_err", "reward_abs_err", "min_latent")},
        "critic_value": {"encoded": v_enc, "predicted": v_pred},
        "jacobian_spectral_norm": {**_stats(sigma), "iters": int(spectral_iters)},
        "nfe": count_nfe(wm, z0, a0, H),
        "esnr": esnr,
        "actor": actor_saturation(agent.actor, z0),
        "latent": {**latent_spread(z0), "step_median": (z1 - z0).norm(dim=-1).median().item()},
        "flow": None,
        "termination": termination_accuracy(wm, buffer, 8 * slices, seed) if agent.episodic else None,
    }
    if wm.kind == "flow":
        N = default_fine_substeps(wm) if fine_substeps is None else int(fine_substeps)
        geo = flow_straightness(wm, z0, a0, N)
        out["flow"] = {"integrator": wm.integrator, "substeps": int(wm.substeps), "fine_substeps": N,
                       "straightness": _stats(geo["straightness"]),
                       "integrator_gap": _stats(geo["integrator_gap"]),
                       "reference_gap": _stats(geo["reference_gap"])}
    return out


def format_report(d: dict) -> str:
    """Markdown rendering of a `diagnose()` result."""
    H = d["horizon"]
    ol = d["open_loop"]
    lines = [(f"{d['run_dir']}: {d['alg']} ({d['kind']}) at epoch {d['epoch']}, {d['env_steps']} env steps; "
              f"{d['slices']} replay slices (seed {d['seed']})"), "",
             "| horizon | latent MSE | relative latent error | reward abs err | min latent entry |",
             "|---:|---:|---:|---:|---:|"]
    for h in sorted(h for h in {1, 2, 4, 8, 16, H} if h <= H):
        lines.append(f"| {h} | {ol['latent_mse'][h - 1]:.2e} | {ol['latent_rel_err'][h - 1]:.3f} "
                     f"| {ol['reward_abs_err'][h - 1]:.4f} "
                     f"| {ol['min_latent'][h - 1]:+.3f} |")
    cv, js, nfe, lat = d["critic_value"], d["jacobian_spectral_norm"], d["nfe"], d["latent"]
    lines += ["", (f"encoded latents: total variance {lat['total_variance']:.4f}, effective rank "
                   f"{lat['effective_rank']:.1f} of {d['latent_dim']}, median one-step distance "
                   f"‖z1 − z0‖ {lat['step_median']:.4f}"),
              "", (f"critic value at encoded vs predicted latent after {H} steps: "
                   f"{cv['encoded']:.2f} vs {cv['predicted']:.2f}"), "",
              "| diagnostic | mean | median | max |", "|---|---:|---:|---:|",
              (f"| one-step Jacobian spectral norm ‖∂z'/∂(z,a)‖₂ | {js['mean']:.4g} | {js['median']:.4g} "
               f"| {js['max']:.4g} |")]
    fl = d.get("flow")
    if fl:
        for key, label in (("straightness", f"flow straightness (Heun, {fl['fine_substeps']} steps; 0 = straight)"),
                           ("integrator_gap", f"{fl['integrator']} K={fl['substeps']} vs fine grid, relative"),
                           ("reference_gap", f"fine grid vs {max(fl['fine_substeps'] // 2, 1)} steps, relative")):
            s = fl[key]
            lines.append(f"| {label} | {s['mean']:.3e} | {s['median']:.3e} | {s['max']:.3e} |")
        if fl["reference_gap"]["median"] > REFERENCE_TOLERANCE:
            lines.append(f"\nwarning: the {fl['fine_substeps']}-step reference path is not converged (it moves by "
                         f"{fl['reference_gap']['median']:.1%} of a step when halved): straightness and integrator "
                         f"gap are unreliable; raise --fine-substeps")
    term = d.get("termination")
    if term:
        lines += ["", (f"termination head on {term['transitions']} one-step transitions ({term['terminal']} terminal): "
                       f"accuracy {term['accuracy']:.3f}, recall {term['recall']:.3f}, "
                       f"false alarms {term['false_alarm']:.4f}; mean p(terminal) {term['p_terminal']:.3f} on terminal "
                       f"steps vs {term['p_other']:.4f} on others, precision@k {term['precision_at_k']:.3f}")]
    unit = "velocity calls (NFE)" if d["kind"] == "flow" else "dynamics-network calls"
    lines += ["", (f"{unit}: {nfe['per_next']} per next() (configured: {nfe['expected_per_next']}), "
                   f"{nfe['per_rollout']} per {H}-step rollout"),
              "", (f"actor-gradient ESNR at this checkpoint ({int(d['esnr']['samples'])} micro-batches): "
                   f"{d['esnr']['esnr_db']:.2f} dB (norm form), {d['esnr']['esnr_param_db']:.2f} dB (per parameter)")]
    act = d.get("actor")  # absent in reports written before it existed
    if act:
        lines += ["", (f"actor's pre-tanh means μ at the slices' first latents: |μ| mean {act['abs_mean']:.2f}, "
                       f"90th percentile {act['abs_p90']:.2f}; {act['saturated']:.0%} of the action entries beyond "
                       f"|μ| > {SATURATED:g} (tanh′ < 0.01); mean tanh′(μ) {act['tanh_grad']:.3f}")]
    return "\n".join(lines)


def group_table(groups: dict[str, list[Path]], slices: int = 256, seed: int = 0) -> str | None:
    """Markdown: per group, the mean over its runs' checkpoints of the headline diagnostics;
    None when no run has a checkpoint. For the comparison report."""
    rows = []
    for name, dirs in groups.items():
        results = [diagnose(d, slices=slices, seed=seed) for d in dirs if RunDir(d).has_checkpoint()]
        if not results:
            continue
        mean = lambda f: sum(f(r) for r in results) / len(results)  # noqa: E731
        flows = [r["flow"] for r in results if r["flow"]]
        straight = f"{sum(f['straightness']['median'] for f in flows) / len(flows):.3g}" if flows else "–"
        H = results[0]["horizon"]
        rows.append(f"| {name} | {len(results)} | {mean(lambda r: r['open_loop']['latent_mse'][0]):.2e} "
                    f"| {mean(lambda r: r['open_loop']['latent_mse'][-1]):.2e} "
                    f"| {mean(lambda r: r['open_loop']['latent_rel_err'][-1]):.3f} "
                    f"| {mean(lambda r: r['latent']['effective_rank']):.1f} "
                    f"| {mean(lambda r: r['open_loop']['reward_abs_err'][0]):.4f} / "
                    f"{mean(lambda r: r['open_loop']['reward_abs_err'][-1]):.4f} "
                    f"| {mean(lambda r: r['jacobian_spectral_norm']['mean']):.3g} "
                    f"| {mean(lambda r: r['esnr']['esnr_db']):.2f} | {straight} "
                    f"| {mean(lambda r: r['nfe']['per_next']):.0f} |")
    if not rows:
        return None
    head = (f"| group | checkpoints | latent MSE h=1 | latent MSE h={H} | relative latent error h={H} "
            f"| latent effective rank | reward abs err h=1 / {H} "
            f"| Jacobian spectral norm | actor-gradient ESNR (dB) | flow straightness (median) | NFE per step |")
    note = (f"\n\nMeans over each group's final checkpoints, {slices} replay slices each "
            f"(`flowpwm diagnose` per run for the full tables).")
    return "\n".join([head, "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|", *rows]) + note


def _agent_and_simulator(run_dir_or_ckpt: str | Path, states: int, seed: int):
    """A run's agent and a fresh env of its task with one env per saved state to come."""
    from flowpwm.envs import make_env  # imports the simulators: only when asked for

    agent, _, _ = load_agent(run_dir_or_ckpt, buffer=False)
    cfg = OmegaConf.load(RunDir(resolve_run(run_dir_or_ckpt)[0]).config)
    torch.manual_seed(seed)  # the stochastic policy that reaches the saved states
    return agent, make_env(cfg.env.task, states, seed=int(cfg.seed) + 20_000 + seed)


def run_simulator_checks(run_dir_or_ckpt: str | Path, states: int, seed: int = 0) -> dict:
    """`simulator_checks` for a run: its agent against a fresh env of its task, `states` saved states."""
    return simulator_checks(*_agent_and_simulator(run_dir_or_ckpt, states, seed), seed)


def run_action_sensitivity(run_dir_or_ckpt: str | Path, states: int, wm, seed: int = 0) -> dict:
    """`action_sensitivity` of another world model (`fit-wm`'s, fitted on the run's data) at the
    run's policy's actions, from the same saved states as `run_simulator_checks`."""
    agent, env = _agent_and_simulator(run_dir_or_ckpt, states, seed)
    saved, obs = sample_states(agent, env, seed)
    return action_sensitivity(agent, env, saved, obs, wm=wm)


def checkpoint_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The parser of a command that reads one checkpoint: its RUN_DIR|CHECKPOINT argument (see
    `resolve_run`)."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, metavar="RUN_DIR|CHECKPOINT",
                   help="a run directory (its latest checkpoint), or a checkpoint file RUN_DIR/checkpoints/NAME.pt")
    return p


def main(argv: list[str] | None = None) -> int:
    p = checkpoint_parser("flowpwm diagnose", __doc__)
    p.add_argument("--slices", type=int, default=512, help="replay slices to evaluate on")
    p.add_argument("--seed", type=int, default=0, help="seed for drawing the slices")
    p.add_argument("--fine-substeps", type=int, default=None,
                   help="Heun steps of the reference flow path (flow straightness, integrator gap); "
                        "default: enough to resolve the model's τ features")
    p.add_argument("--simulator", type=int, default=0, metavar="STATES",
                   help="also check the model against the real simulator from STATES saved states "
                        "(action sensitivity ∂z'/∂a, imagined vs real return); 0: skip")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write every number as JSON")
    args = p.parse_args(argv)
    if args.simulator < 0:
        raise UserError(f"--simulator must be >= 0 (saved states to check), got {args.simulator}")
    d = diagnose(args.run, slices=args.slices, seed=args.seed, fine_substeps=args.fine_substeps)
    print(format_report(d))
    if args.simulator:
        d["simulator"] = run_simulator_checks(args.run, args.simulator, args.seed)
        print("\n" + format_simulator_report(d["simulator"]))
    if args.json is not None:
        atomic_write_text(args.json, json_text(d, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0

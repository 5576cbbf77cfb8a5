"""What a per-task policy's world model promises against what the real env pays, along the
policy's own real trajectories (a `flowpwm train-policy` run's checkpoint).

The deterministic (eval) policy runs whole episodes in the real env. From every `stride`-th real
state, four H-step reward sums (H = the actor's imagination horizon, undiscounted) are compared:
- real: what the env paid over the next H steps;
- model, real states: the reward head alone, on each real state encoded and the action taken there
  (is the model's reward right where the policy goes, before any rollout?);
- model, real actions: the world model rolled out open loop from the encoded state with the
  actions the policy took (is the model right about what the policy does?);
- model, policy: the rollout the actor is trained on, the policy acting on the model's latents.
A policy that exploits its model shows "model, policy" well above "real" while "model, real
actions" stays nearer to it; a model that is simply wrong shows both off, and where "model, real
states" is off too, the error is the reward head's on the policy's states, not the rollout's."""

from __future__ import annotations

import argparse

import torch
from omegaconf import OmegaConf
from scipy import stats

from flowpwm.algorithms.pwm import PWM
from flowpwm.config import UserError
from flowpwm.envs.multitask import make_multitask_env
from flowpwm.envs.tasksets import get_task_set
from flowpwm.models.rollout import reward_sums
from flowpwm.rundir import RunDir
from flowpwm.training.offline_common import multitask_agent
from flowpwm.training.policy import KIND as POLICY_KIND


def load_policy_run(path) -> tuple[PWM, dict, int]:
    """The agent of a train-policy run's latest checkpoint, its dims and its iteration."""
    run = RunDir(path)
    if not run.has_checkpoint():
        raise UserError(f"{path}: no checkpoint ({run.latest_checkpoint}): give a `flowpwm train-policy` run dir")
    state = run.load_checkpoint()
    dims = state["dims"]
    if dims.get("kind") != POLICY_KIND:
        raise UserError(f"{path}: not a train-policy run (checkpoint kind {dims.get('kind')!r}): give a "
                        f"`flowpwm train-policy` run dir")
    cfg = OmegaConf.load(run.config)
    ts = get_task_set(dims["task_set"])
    agent = multitask_agent(cfg.alg, ts, "cpu", cfg.perf, dims["episodic"])
    agent.load_state_dict(state["agent"])
    return agent, dims, int(state["iteration"])


@torch.no_grad()
def real_episodes(agent: PWM, env, task_id: int, seed: int):
    """One deterministic-policy episode per env: obs (T, E, D), actions (T, E, A), rewards (T, E),
    cut where the first episode ends (dm_control's all have one length)."""
    obs, steps = env.reset(seed=seed), []
    while True:
        a = agent.act(obs, deterministic=True, task=task_id).cpu()
        nxt, reward, terminated, truncated, _ = env.step(a)
        steps.append((obs, a, reward))
        if bool((terminated | truncated).any()):
            break
        obs = nxt
    o, a, r = zip(*steps)
    return torch.stack(o), torch.stack(a), torch.stack(r)


def imagined_vs_real(agent: PWM, dims: dict, iteration: int, episodes: int = 4, stride: int = 10,
                     seed: int = 0, horizon: int | None = None) -> dict:
    """For a `load_policy_run` result: the four H-step reward sums (one per start step and
    episode; H = `horizon`, default the actor's) and the real episodes' returns."""
    ts, task, task_id = get_task_set(dims["task_set"]), dims["task"], dims["task_id"]
    H = horizon or agent.imagine_horizon
    env = make_multitask_env(ts, task, num_envs=episodes, seed=seed)
    try:
        obs, actions, rewards = real_episodes(agent, env, task_id, seed)
    finally:
        env.close()
    starts = range(0, obs.shape[0] - H + 1, stride)
    with torch.no_grad():
        encoded = agent.wm.encode(obs, task_id)  # (T, E, L): every real state, encoded once
        one_step = agent.wm.reward_value(encoded, agent.wm.mask_action(actions, task_id), task_id).squeeze(-1)
        z = torch.cat([encoded[t] for t in starts])
        acts = torch.cat([actions[t:t + H] for t in starts], dim=1)  # (H, windows, A)
        return {"task": task, "iteration": iteration, "horizon": H, "steps": obs.shape[0],
                "returns": rewards.sum(0), "real": torch.cat([rewards[t:t + H].sum(0) for t in starts]),
                "model_real_states": torch.cat([one_step[t:t + H].sum(0) for t in starts]),
                "model_real_actions": reward_sums(agent.wm, z, task_id, acts),
                "model_policy": reward_sums(agent.wm, z, task_id, actor=agent.actor, horizon=H)}


def format_report(path, d: dict) -> str:
    real = d["real"]
    rows = [f"| real | {real.mean():.2f} | – | – |"]
    for name, key in (("model, real states", "model_real_states"), ("model, real actions", "model_real_actions"),
                      ("model, policy", "model_policy")):
        x = d[key]
        corr = f"{stats.pearsonr(x, real)[0]:.2f}" if real.std() > 0 and x.std() > 0 else "–"  # constant: undefined
        rows.append(f"| {name} | {x.mean():.2f} | {(x - real).mean():+.2f} | {corr} |")
    return "\n".join([
        f"{path}: {d['task']}, iteration {d['iteration']}; {len(d['returns'])} real episodes of {d['steps']} steps, "
        f"return {d['returns'].mean():.1f}; {real.numel()} windows of H = {d['horizon']} steps", "",
        "| H-step reward sum | mean | mean - real | corr. with real |", "|---|---:|---:|---:|", *rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="`flowpwm train-policy` run dirs")
    p.add_argument("--episodes", type=int, default=4, help="real episodes (one env each)")
    p.add_argument("--stride", type=int, default=10, help="compare from every STRIDE-th real step")
    p.add_argument("--seed", type=int, default=20_000, help="the real episodes' env seed")
    p.add_argument("--horizon", type=int, default=None, help="window length (default: the actor's horizon)")
    args = p.parse_args(argv)
    if args.episodes < 1 or args.stride < 1 or (args.horizon is not None and args.horizon < 1):
        raise UserError("--episodes, --stride and --horizon must be >= 1")
    torch.set_num_threads(1)
    loaded = [load_policy_run(run) for run in args.runs]  # every bad path refused before any rollout
    for i, (run, policy) in enumerate(zip(args.runs, loaded)):
        print(("\n" if i else "") + format_report(run, imagined_vs_real(*policy, args.episodes, args.stride,
                                                                        args.seed, args.horizon)), flush=True)
    return 0

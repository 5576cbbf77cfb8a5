"""`flowpwm evaluate RUN_DIR|CHECKPOINT`: one checkpoint's policy in the real environment over
many episodes, with a 95 % confidence interval.

Training evaluates a few episodes (`train.eval_episodes`, 4 in the tiny configs) every few
thousand env steps, which is enough for a curve but not for one checkpoint: on cheetah-run a
flipped body earns ~0.15 per step against ~0.9 upright, and four episodes put the mean anywhere
in a ±100 band. This command measures the final (or any) checkpoint of an online run
well, and, with `--policy sample`, the noisy collection policy too. It reads the checkpoint's
weights only and writes nothing into the run.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from scipy import stats

from flowpwm.analysis.report import fmt_ci
from flowpwm.config import UserError
from flowpwm.fileio import atomic_write_text, json_text
from flowpwm.rundir import RunDir

POLICIES = {"mean": True, "sample": False}  # name -> deterministic


def summarize(returns: list[float], lengths: list[int]) -> dict:
    """Mean return with its 95 % Student-t interval over episodes, spread and mean length."""
    n, mean = len(returns), float(np.mean(returns))
    sd = float(np.std(returns, ddof=1)) if n > 1 else math.nan
    ci = stats.t.interval(0.95, n - 1, loc=mean, scale=stats.sem(returns)) if n > 1 else (math.nan, math.nan)
    return {"episodes": n, "return_mean": mean, "ci95": [float(c) for c in ci], "return_sd": sd,
            "return_min": min(returns), "return_max": max(returns),
            "length_mean": sum(lengths) / n, "returns": returns, "lengths": lengths}


def evaluate(run: str | Path, episodes: int = 32, envs: int = 8, seed: int = 0,
             policies: tuple[str, ...] = ("mean",)) -> dict:
    from flowpwm.analysis.diagnostics import load_agent, resolve_run
    from flowpwm.envs import make_env

    if episodes < 1 or envs < 1:
        raise UserError(f"--episodes and --envs must be >= 1 (got {episodes} and {envs})")
    run_dir, ckpt = resolve_run(run)
    cfg = OmegaConf.load(RunDir(run_dir).config)
    task = OmegaConf.select(cfg, "env.task")
    if not task:
        raise UserError(f"{run_dir} has no env.task in its config.yaml: evaluate reads online "
                        f"`flowpwm train` runs (train-policy runs evaluate their tasks while training)")
    agent, _, state = load_agent(ckpt, buffer=False)
    env = make_env(str(task), min(envs, episodes), seed=seed)
    out = {"run": str(run_dir), "checkpoint": str(ckpt), "task": str(task), "alg": str(cfg.alg.name),
           "env_steps": int(state.get("env_steps", 0)), "seed": seed, "envs": env.num_envs}
    try:
        for name in policies:
            torch.manual_seed(seed)  # the sampled policy's noise, reproducible per seed
            out[name] = summarize(*agent.episode_returns(env, episodes, seed, deterministic=POLICIES[name]))
    finally:
        env.close()
    return out


def format_report(r: dict) -> str:
    lines = [f"{r['run']}: {r['alg']}, {r['task']}, checkpoint {Path(r['checkpoint']).name} at "
             f"{r['env_steps']} env steps; episodes from reset seed {r['seed']} on {r['envs']} envs"]
    for name in POLICIES:
        if name in r:
            s = r[name]
            lines.append(f"  {name + ' action' if name == 'mean' else 'sampled actions'}: return "
                         f"{fmt_ci(s['return_mean'], s['ci95'])} (95 % CI) over {s['episodes']} episodes; "
                         f"sd {s['return_sd']:.1f}, min {s['return_min']:.1f}, max {s['return_max']:.1f}; "
                         f"mean episode length {s['length_mean']:.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from flowpwm.analysis.diagnostics import checkpoint_parser

    p = checkpoint_parser("flowpwm evaluate", __doc__)
    p.add_argument("--episodes", type=int, default=32, help="whole episodes per policy")
    p.add_argument("--envs", type=int, default=8, help="parallel envs; each runs an equal share of the episodes")
    p.add_argument("--seed", type=int, default=0, help="reset seed of the episodes (and the sampled policy's noise)")
    p.add_argument("--policy", choices=("mean", "sample", "both"), default="mean",
                   help="the mean action (the policy training evaluates), sampled actions (the "
                        "collection policy, with its exploration floor), or both")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write every number as JSON")
    args = p.parse_args(argv)
    policies = tuple(POLICIES) if args.policy == "both" else (args.policy,)
    r = evaluate(args.run, args.episodes, args.envs, args.seed, policies)
    print(format_report(r))
    if args.json is not None:
        atomic_write_text(args.json, json_text(r, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0

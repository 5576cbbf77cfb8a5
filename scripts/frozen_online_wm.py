"""PWM's per-task offline protocol on an online run's own world model: a fresh actor and critic
trained through the run's frozen single-task world model, start states drawn uniformly from its
replay buffer, the deterministic policy evaluated in the real env every 200 iterations.

It separates "the pretrained multi-task world model is the problem" from "training a policy through
a frozen world model is": `flowpwm train-policy` does the same through a pretrained one.

    python scripts/frozen_online_wm.py RUN_DIR [--seed 0] [--iterations 2000]
"""

import argparse

import torch
from omegaconf import OmegaConf

from flowpwm.algorithms.pwm import PWM
from flowpwm.envs.registry import make_env
from flowpwm.rundir import RunDir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="an online `flowpwm train` run dir with a checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-episodes", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(1)
    run = RunDir(args.run)
    cfg = OmegaConf.load(run.config)
    state = run.load_checkpoint()
    buffer = run.load_buffer(state)
    torch.manual_seed(args.seed)
    dims = state["dims"]
    agent = PWM(cfg.alg, dims["obs_dim"], dims["action_dim"], "cpu", perf=cfg.perf)
    agent.wm.load_state_dict(state["agent"]["world_model"])
    agent.wm.requires_grad_(False)
    obs = buffer["obs"][: buffer["filled"]].reshape(-1, dims["obs_dim"])
    env = make_env(cfg.env.task, min(args.eval_episodes, 8), seed=10_000 + args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    curve = []
    for it in range(args.iterations + 1):
        if it % args.eval_every == 0 or it == args.iterations:
            curve.append(f"{it}:{agent.eval(env, args.eval_episodes, seed=10_000 + it)['eval_return']:.0f}")
            print("eval return by iteration", " ".join(curve), flush=True)
        if it < args.iterations:
            agent.set_progress(it / args.iterations)
            agent.update_policy(obs[torch.randint(len(obs), (int(cfg.alg.actor_batch_size),), generator=gen)])
    env.close()


if __name__ == "__main__":
    main()

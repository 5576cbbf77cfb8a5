#!/usr/bin/env python
"""The multi-task offline updates at PWM's 48M size against 5M, on this machine: one pretraining
update (`flowpwm pretrain`: masked multi-task (H+1)-step slices, world-model loss, Adam) and one
policy update (`flowpwm train-policy`: an actor step through the frozen world model plus the
critic's minibatches), for both world models, at MT30's dims (obs 24, act 6, 30 tasks, task_dim 64).

All variants are built in one process and timed in interleaved rounds (machine drift hits them
alike); each time is the median over `--reps` updates after a warm-up. Reported as 48M/5M ratios
per world model and update, plus flow/mlp ratios per size.

    python benchmarks/bench_offline_scale.py                  # 1 thread, pretrain batch 256, 5 reps
    python benchmarks/bench_offline_scale.py --device cuda --batch 1024 --threads 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

SIZES = ("5M", "48M")
WMS = ("mlp", "flow")


def build(size: str, wm: str, device: str, horizon: int):
    import torch

    from flowpwm.algorithms.pwm import PWM
    from flowpwm.config import compose
    from flowpwm.envs.tasksets import get_task_set

    ts = get_task_set("mt30")
    alg = compose([f"alg=pwm_{size}{'_flow' if wm == 'flow' else ''}", "alg.world_model.task_dim=64",
                   f"alg.horizon={horizon}"]).alg
    agent = PWM(alg, ts.obs_dim, ts.action_dim, device, num_tasks=len(ts), action_dims=ts.action_dims)
    policy = PWM(alg, ts.obs_dim, ts.action_dim, device, num_tasks=len(ts), action_dims=ts.action_dims)
    policy.wm.load_state_dict(agent.wm.state_dict())
    policy.wm.requires_grad_(False)  # train-policy's frozen world model
    n_params = sum(p.numel() for p in agent.wm.parameters())
    return agent, policy, ts, n_params, int(alg.actor_batch_size), torch.device(device)


def updates(size: str, wm: str, args):
    """(pretraining update, policy update) closures for one variant, on fixed random data."""
    import torch

    agent, policy, ts, n_params, actor_batch, dev = build(size, wm, args.device, args.horizon)
    H, B = args.horizon, args.batch
    g = torch.Generator().manual_seed(0)
    task = torch.randint(len(ts), (B,), generator=g).to(dev)
    obs = torch.randn(H + 1, B, ts.obs_dim, generator=g).to(dev)
    action = agent.wm.mask_action((torch.rand(H, B, ts.action_dim, generator=g) * 2 - 1).to(dev), task)
    reward = torch.rand(H, B, 1, generator=g).to(dev)
    obs0 = torch.randn(actor_batch, ts.obs_dim, generator=g).to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def pretrain_update():
        agent.update_world_model(obs, action, reward, task)
        sync()

    def policy_update():
        policy.update_policy(obs0, 3)
        sync()

    return {"pretrain": pretrain_update, "policy": policy_update}, n_params


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256, help="pretraining slices per update (PWM/TD-MPC2: 1024)")
    p.add_argument("--horizon", type=int, default=16)
    p.add_argument("--reps", type=int, default=5, help="timed updates per variant (median)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    variants, params = {}, {}
    for size in SIZES:
        for wm in WMS:
            fns, params[(size, wm)] = updates(size, wm, args)
            for kind, fn in fns.items():
                variants[(size, wm, kind)] = fn
    for fn in variants.values():  # warm-up: optimiser state, allocator
        fn()
    times = {k: [] for k in variants}
    for _ in range(args.reps):
        for k, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}

    print(f"device {args.device}, {args.threads} thread(s), torch {torch.__version__}; MT30 dims; pretraining batch "
          f"{args.batch} x {args.horizon + 1} steps; policy update = 1 actor step (PWM's actor batch) + critic "
          f"minibatches; median of {args.reps} after a warm-up")
    print(f"{'size':>4} {'wm':>4} {'wm params':>11} {'pretrain update':>16} {'policy update':>14}")
    for size in SIZES:
        for wm in WMS:
            print(f"{size:>4} {wm:>4} {params[(size, wm)]:>11,} {med[(size, wm, 'pretrain')] * 1e3:>13.1f} ms "
                  f"{med[(size, wm, 'policy')] * 1e3:>11.1f} ms")
    ratios = {f"48M/5M {wm} {kind}": med[("48M", wm, kind)] / med[("5M", wm, kind)]
              for wm in WMS for kind in ("pretrain", "policy")}
    ratios.update({f"flow/mlp {size} {kind}": med[(size, "flow", kind)] / med[(size, "mlp", kind)]
                   for size in SIZES for kind in ("pretrain", "policy")})
    for name, r in ratios.items():
        print(f"  {name:<24} {r:6.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "median_s": {" ".join(k): v for k, v in med.items()},
                       "params": {" ".join(k): v for k, v in params.items()}, "ratios": ratios}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""One world-model update (forward + backward + Adam step) for the baseline and the flow
world model at a given size: median time and peak extra memory, and flow/baseline ratios.

Each variant runs in its own process (clean memory high-water mark); rounds interleave the
variants so machine drift hits all of them alike. Goal: teacher-forced flow ≤ 1.2× baseline.

    python benchmarks/bench_world_model.py                 # 5M pair, batch 256 x 17, Heun K=2
    python benchmarks/bench_world_model.py --size 48M --device cuda
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time

VARIANTS = {"mlp": ("", None), "flow/encoder": ("_flow", "encoder"), "flow/rollout": ("_flow", "rollout")}


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def measure(args) -> dict:
    import torch

    from flowpwm.config import compose
    from flowpwm.losses import compute_wm_loss, wm_loss_kwargs
    from flowpwm.models.factory import build_world_model

    torch.set_num_threads(args.threads)
    suffix, source = VARIANTS[args.variant]
    over = [f"alg=pwm_{args.size}{suffix}", f"alg.horizon={args.horizon}"]
    if source:
        over += [f"alg.world_model.flow_source={source}", f"alg.world_model.integrator={args.integrator}",
                 f"alg.world_model.substeps={args.substeps}"]
    alg = compose(over).alg
    dev = torch.device(args.device)
    wm = build_world_model(alg.world_model, args.obs_dim, args.action_dim).to(dev)
    opt = torch.optim.Adam(wm.parameters(), lr=alg.model_lr)
    kwargs = wm_loss_kwargs(alg)
    H, B = args.horizon, args.batch
    obs = torch.randn(H + 1, B, args.obs_dim, device=dev)
    act = torch.rand(H, B, args.action_dim, device=dev) * 2 - 1
    rew = torch.randn(H, B, 1, device=dev)

    def update():
        loss, _ = compute_wm_loss(wm, obs, act, rew, **kwargs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(wm.parameters(), alg.wm_grad_norm)
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):  # warm-up, creates the optimiser state
        update()
    # Peak extra memory of one update over the steady state (params, grads, Adam state).
    if dev.type == "cuda":
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        update()
        peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the RSS high-water mark
        base = rss_kib("VmRSS")
        update()
        peak_mib = (rss_kib("VmHWM") - base) / 1024
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        update()
        times.append(time.perf_counter() - t)
    return {"times": times, "peak_mib": peak_mib, "params": sum(p.numel() for p in wm.parameters())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="5M", help="alg pair pwm_<size> / pwm_<size>_flow (default 5M)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--horizon", type=int, default=16, help="H: slices of H+1 steps (default 16 → 17)")
    p.add_argument("--integrator", default="heun")
    p.add_argument("--substeps", type=int, default=2)
    p.add_argument("--obs-dim", type=int, default=24)
    p.add_argument("--action-dim", type=int, default=6)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=5, help="timed updates per round")
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # child process
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    if args.variant:
        print(json.dumps(measure(args)))
        return 0

    results = {v: {"times": [], "peak": []} for v in VARIANTS}
    child = [a for a in sys.argv[1:] if not a.startswith("--json")]
    for _ in range(args.rounds):
        for v in VARIANTS:
            out = subprocess.run([sys.executable, __file__, *child, "--variant", v],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[v]["times"] += r["times"]
            results[v]["peak"].append(r["peak_mib"])
            results[v]["params"] = r["params"]
    base_t = statistics.median(results["mlp"]["times"])
    base_m = statistics.median(results["mlp"]["peak"])
    print(f"world-model update, pwm_{args.size} pair, batch {args.batch} x {args.horizon + 1}, "
          f"{args.integrator} K={args.substeps}, {args.device}, {args.threads} threads, "
          f"median of {args.rounds * args.reps} updates / {args.rounds} processes\n")
    print("| variant | params | time (ms) | time ratio | peak extra memory (MiB) | memory ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    summary = {}
    for v, r in results.items():
        t, m = statistics.median(r["times"]), statistics.median(r["peak"])
        summary[v] = {"params": r["params"], "time_ms": 1e3 * t, "time_ratio": t / base_t,
                      "peak_mib": m, "memory_ratio": m / base_m}
        print(f"| {v} | {r['params']:,} | {1e3 * t:.1f} | {t / base_t:.2f}x | {m:.1f} | {m / base_m:.2f}x |")
    enc = summary["flow/encoder"]
    ok = enc["time_ratio"] <= 1.2 and enc["memory_ratio"] <= 1.2
    print(f"\ngoal (teacher-forced flow <= 1.2x baseline time and memory): {'met' if ok else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": summary}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

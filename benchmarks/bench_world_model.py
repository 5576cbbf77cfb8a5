#!/usr/bin/env python
"""One world-model update (`PWM.update_world_model`: forward + backward + clip + Adam step) for
the baseline and the flow world model at a given size: median time and peak extra memory, and
flow/baseline ratios.

Each variant runs in its own process (clean memory high-water mark); rounds interleave the
variants so machine drift hits all of them alike. Variants: `mlp`; `flow` (the flow config's own
defaults); `flow/encoder` and `flow/rollout` (that source, with --integrator/--substeps when
given); on request, issue 15's flow candidates whose update differs: `flow/logits`
(`flow_space=logits`), `flow/retraction` (`simplex_retraction`), `flow/scalar-tau`
(`tau_embedding=scalar`) and `flow/k2` (Heun K = 2; --substeps overrides it). `--perf` picks
the `perf:` knobs: `defaults` (configs/config.yaml), `eager` (all off) or `all` (all on:
compile, fused Adam, TF32 on CUDA, device metrics).

    python benchmarks/bench_world_model.py                 # 5M pair, batch 256 x 17
    python benchmarks/bench_world_model.py --size 48M --device cuda --perf all --json out.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time

WM = "alg.world_model."
VARIANTS = {"mlp": ("", []), "flow": ("_flow", []), "flow/encoder": ("_flow", [WM + "flow_source=encoder"]),
            "flow/rollout": ("_flow", [WM + "flow_source=rollout"]),
            "flow/logits": ("_flow", [WM + "flow_space=logits"]),
            "flow/retraction": ("_flow", [WM + "simplex_retraction=true"]),
            "flow/scalar-tau": ("_flow", [WM + "tau_embedding=scalar"]), "flow/k2": ("_flow", [WM + "substeps=2"])}
DEFAULT_VARIANTS = ["mlp", "flow", "flow/encoder", "flow/rollout"]
PERF = {"defaults": [],
        "eager": ["perf.device_metrics=false", "perf.fused_adam=false", "perf.tf32=false", "perf.compile=false"],
        "all": ["perf.device_metrics=true", "perf.fused_adam=true", "perf.tf32=true", "perf.compile=true"]}


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def measure(args) -> dict:
    import torch

    from flowpwm.algorithms.pwm import PWM
    from flowpwm.config import compose

    torch.set_num_threads(args.threads)
    suffix, extra = VARIANTS[args.variant]
    over = [f"alg=pwm_{args.size}{suffix}", f"alg.horizon={args.horizon}", f"device={args.device}", *PERF[args.perf],
            *extra]
    if suffix and args.integrator:
        over.append(f"alg.world_model.integrator={args.integrator}")
    if suffix and args.substeps:
        over.append(f"alg.world_model.substeps={args.substeps}")
    cfg = compose(over)
    dev = torch.device(args.device)
    agent = PWM(cfg.alg, args.obs_dim, args.action_dim, dev, perf=cfg.perf)
    wm = agent.wm
    H, B = args.horizon, args.batch
    obs = torch.randn(H + 1, B, args.obs_dim, device=dev)
    act = torch.rand(H, B, args.action_dim, device=dev) * 2 - 1
    rew = torch.randn(H, B, 1, device=dev)

    def update():
        agent.update_world_model(obs, act, rew)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):  # creates the optimiser state; compiles (perf.compile)
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
        t = time.perf_counter() if args.clock == "wall" else time.process_time()
        update()
        times.append((time.perf_counter() if args.clock == "wall" else time.process_time()) - t)
    return {"times": times, "peak_mib": peak_mib, "params": sum(p.numel() for p in wm.parameters())}


def child_args(args: argparse.Namespace) -> list[str]:
    """A child process's arguments: the parsed settings, never sys.argv (`--json PATH`, with a
    space, used to leave PATH behind as a stray argument)."""
    return [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
            if k not in ("json", "variant", "variants") and v is not None]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="5M", help="alg pair pwm_<size> / pwm_<size>_flow (default 5M)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--horizon", type=int, default=16, help="H: slices of H+1 steps (default 16 → 17)")
    p.add_argument("--integrator", help="flow variants: this integrator (default: the config's)")
    p.add_argument("--substeps", type=int, help="flow variants: this K (default: the config's)")
    p.add_argument("--obs-dim", type=int, default=24)
    p.add_argument("--action-dim", type=int, default=6)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (1: stable timings on a shared machine)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=5, help="timed updates per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed updates per process first")
    p.add_argument("--perf", choices=PERF, default="defaults", help="perf: knobs (default: configs/config.yaml)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=DEFAULT_VARIANTS)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall time, or the process's CPU time (a loaded shared CPU, --threads 1)")
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # child process
    p.add_argument("--json", help="also write the results here")
    return p


def main() -> int:
    p = parser()
    args = p.parse_args()
    if args.variant:
        print(json.dumps(measure(args)))
        return 0

    if "mlp" not in args.variants:
        p.error("--variants: ratios are against mlp; include it")
    results = {v: {"times": [], "peak": []} for v in args.variants}
    child = child_args(args)
    for _ in range(args.rounds):
        for v in args.variants:
            out = subprocess.run([sys.executable, __file__, *child, "--variant", v],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[v]["times"] += r["times"]
            results[v]["peak"].append(r["peak_mib"])
            results[v]["params"] = r["params"]
    base_t = statistics.median(results["mlp"]["times"])
    base_m = statistics.median(results["mlp"]["peak"])
    flow = f"{args.integrator or 'config integrator'} K={args.substeps or 'config'}"
    print(f"world-model update, pwm_{args.size} pair, batch {args.batch} x {args.horizon + 1}, {flow}, "
          f"{args.device}, {args.threads} threads, perf {args.perf}, {args.clock} clock, "
          f"median of {args.rounds * args.reps} updates / {args.rounds} processes\n")
    print("| variant | params | time (ms) | time ratio | peak extra memory (MiB) | memory ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    summary = {}
    for v, r in results.items():
        t, m = statistics.median(r["times"]), statistics.median(r["peak"])
        summary[v] = {"params": r["params"], "time_ms": 1e3 * t, "time_ratio": t / base_t,
                      "peak_mib": m, "memory_ratio": m / base_m}
        print(f"| {v} | {r['params']:,} | {1e3 * t:.1f} | {t / base_t:.2f}x | {m:.1f} | {m / base_m:.2f}x |")
    if "flow" in summary:
        ok = summary["flow"]["time_ratio"] <= 1.5
        which = "default" if args.integrator is None and args.substeps is None else "this"
        print(f"\ngoal (the flow model's {which} update <= 1.5x the MLP's time): {'met' if ok else 'NOT met'}")
    if args.perf == "all" and args.device.startswith("cuda"):
        # CUDA graphs keep their activations in a pool allocated at capture (during warm-up), so
        # the steady-state peak above the resident memory reads ~0: compare memory with --perf eager.
        print("memory: with CUDA graphs (perf all) the activations are resident in the graph pool; "
              "the peak extra memory is meaningful with --perf eager")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": summary}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

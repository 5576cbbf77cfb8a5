#!/usr/bin/env python
"""Our `PWM.update()` against the upstream PWM's (imgeorgiev/PWM) on the same 5M single-task
setting: obs 17, act 6, H = 16, batch 256 (one world-model step on the batch, one actor step from
its first states, critic_iterations x critic_batches critic steps). Also the world-model step
alone. One run interleaves both codes (each round: one process of each), times are medians.

Upstream is imported from a work tree of its repository (PWM_ROOT, or --pwm-root) and run by a
Python that has its dependencies (--upstream-python: torch, hydra-core, omegaconf, tensordict,
torchrl's Python modules, gym==0.26.2, wandb); nothing of it is copied here. Its `pwm.yaml` has a
scalar reward head (num_bins empty), so ours runs with alg.world_model.num_bins=1 as well
(`--our-bins 101`: our pwm_5M as configured).

    PWM_ROOT=/tmp/PWM python benchmarks/bench_upstream_pwm.py --upstream-python /tmp/pwm_venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

OBS, ACT, H = 17, 6, 16

# The timing loop both child scripts end with (each runs in its own interpreter, so it is text):
# FNS (name, call) pairs, `warmup` untimed calls, then `reps` timed ones; JSON on stdout.
TIMED = r"""
out = {"params": sum(p.numel() for p in agent.wm.parameters())}
for name, fn in FNS:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t = clock(); fn(); ts.append(clock() - t)
    out[name] = ts
print(json.dumps(out))
"""

# Runs in the upstream interpreter: builds upstream's agent exactly as its own configs do.
UPSTREAM = r"""
import json, os, sys, time
root, batch, reps, warmup, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
clock = time.process_time if sys.argv[6] == "cpu" else time.perf_counter
sys.path.insert(0, os.path.join(root, "src"))
import torch
torch.set_num_threads(threads)
from omegaconf import OmegaConf
from hydra.utils import instantiate
cfg = OmegaConf.load(os.path.join(root, "scripts/cfg/alg/pwm.yaml"))
cfg.horizon, cfg.device = %(H)d, "cpu"
torch.manual_seed(0)
agent = instantiate(cfg, env=None, obs_dim=%(OBS)d, act_dim=%(ACT)d, logdir=os.path.join(os.environ.get("TMPDIR", "/tmp"), "pwm_upstream_bench"), max_epochs=1000)
obs, act, rew = torch.randn(%(H)d + 1, batch, %(OBS)d), torch.rand(%(H)d, batch, %(ACT)d) * 2 - 1, torch.randn(%(H)d, batch, 1)
def wm():
    agent.wm_optimizer.zero_grad()
    loss = agent.compute_wm_loss(obs, act, rew, None)[0]
    loss.backward()
    torch.nn.utils.clip_grad_norm_(agent.wm.parameters(), agent.wm_grad_norm)
    agent.wm_optimizer.step()
def full():
    agent.update(obs, act, rew, None, finetune_wm=True)
FNS = (("wm_update", wm), ("update", full))
""" % {"H": H, "OBS": OBS, "ACT": ACT} + TIMED

OURS = r"""
import json, sys, time
batch, reps, warmup, threads, clock_name, bins = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
clock = time.process_time if clock_name == "cpu" else time.perf_counter
overrides = sys.argv[7:]
import torch
torch.set_num_threads(threads)
from flowpwm.algorithms.pwm import PWM
from flowpwm.config import compose
cfg = compose(["alg=pwm_5M", "alg.horizon=%(H)d", f"alg.world_model.num_bins={bins}", *overrides])
torch.manual_seed(0)
agent = PWM(cfg.alg, %(OBS)d, %(ACT)d, perf=cfg.perf)
obs, act, rew = torch.randn(%(H)d + 1, batch, %(OBS)d), torch.rand(%(H)d, batch, %(ACT)d) * 2 - 1, torch.randn(%(H)d, batch, 1)
FNS = (("wm_update", lambda: agent.update_world_model(obs, act, rew)), ("update", lambda: agent.update(obs, act, rew)))
""" % {"H": H, "OBS": OBS, "ACT": ACT} + TIMED


def run(cmd: list[str], what: str) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-6:])
        raise SystemExit(f"bench_upstream_pwm: the {what} process failed:\n{tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pwm-root", default=os.environ.get("PWM_ROOT"), help="work tree of imgeorgiev/PWM (or PWM_ROOT)")
    p.add_argument("--upstream-python", default=sys.executable, help="a Python with upstream's dependencies")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=5, help="timed calls per process")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--our-bins", type=int, default=1, help="our reward bins (upstream's pwm.yaml: scalar, so 1)")
    p.add_argument("--perf", nargs="*", default=[], help="our perf overrides, e.g. perf.fused_adam=true")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall time, or each process's CPU time (a loaded shared CPU, --threads 1)")
    p.add_argument("--json", help="write all numbers here")
    args = p.parse_args()
    if not args.pwm_root or not os.path.isfile(os.path.join(args.pwm_root, "scripts/cfg/alg/pwm.yaml")):
        p.error("--pwm-root / PWM_ROOT must be a work tree of github.com/imgeorgiev/PWM")
    common = [str(args.batch), str(args.reps), str(args.warmup), str(args.threads), args.clock]
    times = {code: {"wm_update": [], "update": []} for code in ("upstream", "ours")}
    params = {}
    for r in range(args.rounds):
        for code in ("upstream", "ours"):
            if code == "upstream":
                res = run([args.upstream_python, "-c", UPSTREAM, args.pwm_root, *common], "upstream")
            else:
                res = run([sys.executable, "-c", OURS, *common, str(args.our_bins), *args.perf], "flowpwm")
            params[code] = res["params"]
            for k in ("wm_update", "update"):
                times[code][k] += res[k]
            print(f"  round {r + 1}/{args.rounds} {code:8s} update {1e3 * statistics.median(times[code]['update']):.0f} ms",
                  file=sys.stderr, flush=True)
    med = {c: {k: statistics.median(v) for k, v in t.items()} for c, t in times.items()}
    print(f"\nPWM update(), 5M single-task (obs {OBS}, act {ACT}, H={H}, batch {args.batch}), CPU, {args.threads} "
          f"thread(s), {args.clock} clock; median of {args.rounds} processes x {args.reps} calls each; ours: num_bins={args.our_bins} "
          f"{' '.join(args.perf)}\n")
    print("| | world-model params | wm step (ms) | update() (ms) |")
    print("|---|---:|---:|---:|")
    for c in ("upstream", "ours"):
        print(f"| {c} | {params[c]:,} | {1e3 * med[c]['wm_update']:.0f} | {1e3 * med[c]['update']:.0f} |")
    ratio = {k: med["ours"][k] / med["upstream"][k] for k in ("wm_update", "update")}
    print(f"\nours / upstream: update() {ratio['update']:.2f}x, world-model step {ratio['wm_update']:.2f}x "
          f"(goal: update() <= 0.7x: {'met' if ratio['update'] <= 0.7 else 'NOT met'})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "params": params, "median_s": med, "ratio": ratio, "times": times}, f,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Process memory (RSS) over a long tiny training run, for both world models: it must stay
flat (≤ 5 % growth between epoch 50 and epoch 500). Growth would mean something keeps
autograd graphs or tensors alive across epochs (e.g. logging un-detached losses).

    python benchmarks/bench_training_memory.py                   # 500 epochs, mlp and flow
    python benchmarks/bench_training_memory.py --epochs 100 --from-epoch 20
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def run(alg: str, epochs: int, out: Path, threads: int) -> list[dict]:
    n_envs, steps_per_epoch, seed_steps = 8, 16, 4000
    overrides = [f"alg={alg}", f"env.num_envs={n_envs}", f"train.steps_per_epoch={steps_per_epoch}",
                 f"train.seed_steps={seed_steps}", f"train.env_steps={seed_steps + epochs * steps_per_epoch * n_envs}",
                 "train.eval_every=100", "train.checkpoint_every=100", f"train.threads={threads}"]
    code = ("import sys; from flowpwm.config import compose; from flowpwm.training.online import train; "
            "train(compose(sys.argv[2:]), sys.argv[1], log=lambda *a: None)")
    subprocess.run([sys.executable, "-c", code, str(out), *overrides], check=True)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--from-epoch", type=int, default=50)
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (runs go in parallel)")
    p.add_argument("--json", help="also write the RSS series here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        algs = {"mlp": "pwm_tiny", "flow": "pwm_tiny_flow"}
        # Side by side: both runs at once, one thread each.
        with cf.ThreadPoolExecutor(len(algs)) as pool:
            procs = {k: pool.submit(run, a, args.epochs, Path(tmp) / k, args.threads) for k, a in algs.items()}
            series = {k: f.result() for k, f in procs.items()}
    print(f"RSS over a tiny cartpole-swingup run, epoch {args.from_epoch} vs {args.epochs}\n")
    print("| world model | RSS at epoch %d (MiB) | RSS at epoch %d (MiB) | growth | max over the run (MiB) |"
          % (args.from_epoch, args.epochs))
    print("|---|---:|---:|---:|---:|")
    ok = True
    for k, recs in series.items():
        rss = {r["epoch"]: r["rss_mib"] for r in recs if "rss_mib" in r}
        a, b = rss[args.from_epoch], rss[args.epochs]
        growth = (b - a) / a
        ok &= growth <= 0.05
        print(f"| {k} | {a:.1f} | {b:.1f} | {growth:+.2%} | {max(rss.values()):.1f} |")
    print(f"\ngoal (≤ 5 % growth): {'met' if ok else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps({k: [(r["epoch"], r.get("rss_mib")) for r in v] for k, v in series.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

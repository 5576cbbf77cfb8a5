#!/usr/bin/env python
"""Training-epoch time (collect + world-model updates + actor/critic updates, as `flowpwm train`
runs them) for both world models at the tiny / 5M / 48M sizes, with each `perf:` knob on and off,
reported as ratios in one run.

Every variant runs in its own process (fresh compile caches, no cross-talk); rounds interleave
the variants, so drift on a shared machine hits all of them alike; times are medians over all
timed epochs of all rounds. Ratios are against `eager` (every knob off: float metrics, default
Adam, no compile, no TF32) of the same world model and size.

    python benchmarks/bench_epoch.py                                  # tiny, both world models, CPU
    python benchmarks/bench_epoch.py --sizes 5M 48M --device cuda --task Hopper-v5 --num-envs 64
    python benchmarks/bench_epoch.py --knobs all --baseline-src /tmp/old/src   # + old code as `before`
    python benchmarks/bench_epoch.py --profile 15 --task cheetah-run            # where a default epoch goes

`--baseline-src DIR` adds a variant `before`: the same epoch run by the flowpwm package in DIR
(e.g. the `src` of a `git worktree` of an older commit; its own configs, no perf knobs), and the
ratio of each variant to it. Variants: `eager`, `+knob` for each of --knobs (not with
--no-singles), `all` (every knob of --knobs that applies to the device: TF32 only on CUDA),
`defaults` (configs/config.yaml).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

KNOBS = {  # name -> the overrides that turn it on (on top of `eager`)
    "device_metrics": ["perf.device_metrics=true"],
    "fused_adam": ["perf.fused_adam=true"],
    "tf32": ["perf.tf32=true"],
    "compile": ["perf.compile=true"],
}
EAGER = ["perf.device_metrics=false", "perf.fused_adam=false", "perf.tf32=false", "perf.compile=false"]


def child(spec: dict) -> dict:
    """One process: build the trainer, fill the buffer with random steps, time epochs."""
    import torch

    from flowpwm.config import compose
    from flowpwm.monitoring import TrainingMonitor
    from flowpwm.training.online import OnlineTrainer

    torch.set_num_threads(spec["threads"])
    alg = f"pwm_{spec['size']}" + ("_flow" if spec["wm"] == "flow" else "")
    over = [f"alg={alg}", f"env.task={spec['task']}", f"env.num_envs={spec['num_envs']}", f"device={spec['device']}",
            "wandb.mode=disabled", "monitor.progress=off", "train.plots=false", "train.esnr_every=0",
            "train.eval_every=1000000", "train.checkpoint_every=1000000", "train.env_steps=1000000000",
            "train.seed_steps=0", "train.pretrain_iterations=0", f"train.threads={spec['threads']}",
            *spec["overrides"]]
    trainer = OnlineTrainer(compose(over), tempfile.mkdtemp(prefix="bench_epoch_"), log=lambda *a: None)

    class NoWandb:
        def wants_grad_histograms(self, epoch):
            return False

        def log(self, *args, **kwargs):
            pass

    try:
        trainer.collect(max(trainer.agent.horizon + 2, spec["random_steps"] // trainer.env.num_envs),
                        random_actions=True)
        monitor = TrainingMonitor(trainer.total_epochs, 0, mode="off")
        times, cpu, warm, start = [], [], [], time.perf_counter()
        profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        for i in range(spec["warmup"] + spec["epochs"]):
            if i == spec["warmup"] and spec.get("profile"):
                profiler.start()
            t, c = time.perf_counter(), time.process_time()
            trainer.train_epoch(start, monitor, NoWandb())
            if spec["device"].startswith("cuda"):
                torch.cuda.synchronize()
            if i >= spec["warmup"]:
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            else:
                warm.append(time.perf_counter() - t)
        if spec.get("profile"):
            profiler.stop()
            ops = sorted(((e.key, e.self_cpu_time_total) for e in profiler.key_averages()), key=lambda o: -o[1])
            return {"times": times, "cpu_times": cpu, "warmup_s": sum(warm), "ops": ops}
        return {"times": times, "cpu_times": cpu, "warmup_s": sum(warm)}
    finally:
        trainer.close()


def variants(knobs: list[str], device: str, baseline_src: str | None,
             singles: bool = True) -> dict[str, tuple[str | None, list[str]]]:
    """label -> (source dir or None for this checkout, overrides)."""
    out: dict[str, tuple[str | None, list[str]]] = {}
    if baseline_src:
        out["before"] = (baseline_src, [])
    out["eager"] = (None, EAGER)
    knobs = [k for k in knobs if k != "tf32" or device.startswith("cuda")]  # TF32 never touches the CPU
    if singles:
        for k in knobs:
            out[f"+{k}"] = (None, [*EAGER, *KNOBS[k]])
    if len(knobs) > 1 or not singles:
        out["all"] = (None, [*EAGER, *(o for k in knobs for o in KNOBS[k])])
    out["defaults"] = (None, [])  # configs/config.yaml's perf section as it is
    return out


MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear"}


def print_profile(wm: str, size: str, res: dict, top: int) -> None:
    """The operators' share of the profiled epochs' self CPU time, the matrix products summed."""
    total = sum(t for _, t in res["ops"])
    matmul = sum(t for name, t in res["ops"] if name in MATMUL)
    print(f"\n{wm} {size}, defaults: {statistics.median(res['times']):.3f} s / epoch; operators' self CPU time "
          f"{total / 1e6:.2f} s over {len(res['times'])} epochs, matrix products {matmul / total:.0%}\n")
    print("| operator | self CPU (s) | share |\n|---|---:|---:|")
    for name, t in res["ops"][:top]:
        print(f"| `{name}` | {t / 1e6:.3f} | {t / total:.1%} |")


def child_command(args, wm: str, size: str, src: str | None, overrides: list[str], profile: bool = False,
                  epochs: int | None = None) -> tuple[list[str], dict]:
    spec = {"wm": wm, "size": size, "task": args.task, "num_envs": args.num_envs, "device": args.device,
            "threads": args.threads, "overrides": overrides, "epochs": args.epochs if epochs is None else epochs,
            "warmup": args.warmup, "random_steps": args.random_steps, "profile": profile}
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return [sys.executable, __file__, "--child", json.dumps(spec)], env


def child_result(what: str, returncode: int, stdout: str, stderr: str) -> dict:
    if returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        raise SystemExit(f"bench_epoch: {what} failed:\n{tail}")
    return json.loads(stdout.strip().splitlines()[-1])


def run_child(args, wm: str, size: str, src: str | None, overrides: list[str], profile: bool = False) -> dict:
    cmd, env = child_command(args, wm, size, src, overrides, profile)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return child_result(f"{wm} {size} {overrides or src}", out.returncode, out.stdout, out.stderr)


def prewarm(args, table: dict) -> None:
    """Compile every compiled variant once, all at the same time, untimed: torch.compile's caches
    (TORCHINDUCTOR_CACHE_DIR) then serve the timed processes, whose warm-up shrinks from minutes of
    compilation to loading. Compilation is CPU work, so on a many-core GPU machine this is the
    difference between a benchmark that fits one short call and one that does not."""
    jobs = []
    for wm in args.wms:
        for size in args.sizes:
            for v, (src, overrides) in table.items():
                if "perf.compile=true" in overrides:
                    cmd, env = child_command(args, wm, size, src, overrides, epochs=0)
                    jobs.append((f"prewarm {wm} {size} {v}", subprocess.Popen(
                        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for what, proc in jobs:
        out, err = proc.communicate()
        res = child_result(what, proc.returncode, out, err)
        print(f"  {what}: compiled in {res['warmup_s']:.0f} s", file=sys.stderr, flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["tiny"], choices=["tiny", "5M", "48M"])
    p.add_argument("--wms", nargs="+", default=["mlp", "flow"], choices=["mlp", "flow"])
    p.add_argument("--knobs", nargs="+", default=["all"], help=f"all, none or some of {', '.join(KNOBS)}")
    p.add_argument("--device", default="cpu")
    p.add_argument("--task", default="cartpole-swingup")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per process")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs per process (compilation happens here)")
    p.add_argument("--random-steps", type=int, default=2000, help="random-action steps in the buffer first")
    p.add_argument("--no-singles", action="store_true", help="no +knob variants: eager, all, defaults only")
    p.add_argument("--prewarm", action="store_true",
                   help="compile the compiled variants first, in parallel and untimed, to fill torch.compile's "
                        "caches (a machine with cores to spare)")
    p.add_argument("--baseline-src", help="also run the flowpwm package in this directory as `before`")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall time, or this process's CPU time (on a loaded shared CPU: the work done, not the "
                        "waiting; with --threads 1 only)")
    p.add_argument("--profile", type=int, metavar="N",
                   help="instead of timing variants: profile the timed epochs of `defaults` (torch.profiler, one "
                        "process per world model and size) and print the N operators with the most CPU time")
    p.add_argument("--json", help="write all numbers here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    knobs = list(KNOBS) if args.knobs == ["all"] else [] if args.knobs == ["none"] else args.knobs
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        p.error(f"--knobs: unknown {', '.join(unknown)}; choose from all, none, {', '.join(KNOBS)}")
    if args.profile:
        for wm in args.wms:
            for size in args.sizes:
                print_profile(wm, size, run_child(args, wm, size, None, [], profile=True), args.profile)
        return 0
    table = variants(knobs, args.device, args.baseline_src, singles=not args.no_singles)
    if args.prewarm:
        prewarm(args, table)
    times = {(wm, size, v): [] for wm in args.wms for size in args.sizes for v in table}
    for r in range(args.rounds):
        for (wm, size, v) in times:
            src, overrides = table[v]
            res = run_child(args, wm, size, src, overrides)
            times[(wm, size, v)] += res["cpu_times" if args.clock == "cpu" else "times"]
            print(f"  round {r + 1}/{args.rounds}  {wm:4s} {size:4s} {v:16s} "
                  f"{statistics.median(times[(wm, size, v)]):.3f} s/epoch (warm-up {res['warmup_s']:.0f} s)",
                  file=sys.stderr, flush=True)
    med = {k: statistics.median(t) for k, t in times.items()}
    print(f"\nepoch {args.clock} time: {args.task}, {args.num_envs} envs x steps_per_epoch, {args.device}, "
          f"{args.threads} thread(s); median of {args.rounds} processes x {args.epochs} epochs (after {args.warmup} "
          f"warm-up)\n")
    ref = "before" if args.baseline_src else "eager"
    print(f"| world model | size | variant | s / epoch | vs eager | vs {ref} |" if ref != "eager" else
          "| world model | size | variant | s / epoch | vs eager |")
    print("|---|---|---|---:|---:|" + ("---:|" if ref != "eager" else ""))
    summary = []
    for (wm, size, v), m in med.items():
        row = {"wm": wm, "size": size, "variant": v, "s_per_epoch": m, "vs_eager": m / med[(wm, size, "eager")]}
        line = f"| {wm} | {size} | {v} | {m:.3f} | {row['vs_eager']:.2f}x |"
        if ref != "eager":
            row[f"vs_{ref}"] = m / med[(wm, size, ref)]
            line += f" {row[f'vs_{ref}']:.2f}x |"
        print(line)
        summary.append(row)
    if "mlp" in args.wms and "flow" in args.wms:
        print()
        for size in args.sizes:
            for v in ("defaults", "eager") + (("before",) if args.baseline_src else ()):
                print(f"flow/mlp epoch time, {size}, {v}: {med[('flow', size, v)] / med[('mlp', size, v)]:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "child"}, "results": summary,
                       "times": [{"wm": wm, "size": s, "variant": v, "times": t} for (wm, s, v), t in times.items()]},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

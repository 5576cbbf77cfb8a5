#!/usr/bin/env python
"""Same seed, same weights, same batches: do a few PWM updates on the GPU compute what they
compute on the CPU, and does the fast GPU path (perf: compile with CUDA graphs, fused Adam,
device metrics) compute what the eager GPU path computes? Prints the largest relative
difference of every metric and PASS/FAIL per comparison; exit status 1 on a FAIL.

1. CPU eager vs `--device` eager (TF32 off). CPU and CUDA draw different random numbers for
   the same seed, so here every random draw (τ, actor noise, critic minibatches) comes from one
   CPU generator, reseeded per update, and is moved to the device.
2. `--device` eager vs `--device` with every perf knob on but TF32 (inductor told to call
   torch's random functions: the same numbers as eager).
3. For information: TF32 on vs off (expected ~1e-3).

    python benchmarks/gpu_parity.py                  # both world models, pwm_5M sizes, cuda
    python benchmarks/gpu_parity.py --device cpu --size tiny   # the plumbing, here
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys

import torch

OBS, ACT = 17, 6
EAGER = dict(device_metrics=False, fused_adam=False, tf32=False, compile=False)


@contextlib.contextmanager
def cpu_random_numbers(seed: int):
    """torch.rand / randn / randn_like / randperm draw from one CPU generator, then move."""
    gen = torch.Generator().manual_seed(seed)
    saved = torch.rand, torch.randn, torch.randn_like, torch.randperm

    def rand(*size, device=None, dtype=None, **kw):
        return saved[0](*size, generator=gen, dtype=dtype).to(device or "cpu")

    def randn(*size, device=None, dtype=None, **kw):
        return saved[1](*size, generator=gen, dtype=dtype).to(device or "cpu")

    def randn_like(t, **kw):
        return saved[1](t.shape, generator=gen, dtype=t.dtype).to(t.device)

    def randperm(n, device=None, **kw):
        return saved[3](n, generator=gen).to(device or "cpu")

    torch.rand, torch.randn, torch.randn_like, torch.randperm = rand, randn, randn_like, randperm
    try:
        yield
    finally:
        torch.rand, torch.randn, torch.randn_like, torch.randperm = saved


def build(alg, device, perf_kw, template=None):
    from flowpwm.algorithms.pwm import PWM
    from flowpwm.perf import Perf

    torch.manual_seed(0)
    agent = PWM(alg, OBS, ACT, device, perf=Perf(**perf_kw))
    if template is not None:  # the same weights and optimiser states
        agent.load_state_dict(copy.deepcopy({k: v for k, v in template.state_dict().items()}))
    return agent


def updates(agent, batches, seed_rng: bool, steps: int) -> list[dict[str, float]]:
    out = []
    for step, (obs, act, rew) in enumerate(batches[:steps]):
        dev = agent.device
        obs, act, rew = obs.to(dev), act.to(dev), rew.to(dev)
        torch.manual_seed(step)
        ctx = cpu_random_numbers(1000 + step) if seed_rng else contextlib.nullcontext()
        with ctx:
            m = agent.update(obs, act, rew)
        out.append({k: float(v) for k, v in m.items()})
    return out


FLOOR = 1e-2


def compare(name: str, a: list[dict], b: list[dict], tol: float | None) -> bool:
    worst: dict[str, float] = {}
    for ra, rb in zip(a, b):
        for k, va in ra.items():
            # relative, but absolute below FLOOR: a mean of near-cancelling terms (the imagined
            # reward of an untrained model, ~1e-3) differs relatively by float summation order alone
            d = abs(rb[k] - va) / max(abs(va), FLOOR)
            worst[k] = max(worst.get(k, 0.0), d)
    ok = tol is None or all(d <= tol for d in worst.values())
    verdict = "info" if tol is None else ("PASS" if ok else "FAIL")
    top = sorted(worst.items(), key=lambda kv: -kv[1])[:6]
    print(f"  {verdict}  {name}: largest relative differences (absolute below {FLOOR:g}) over {len(a)} updates: "
          + ", ".join(f"{k} {d:.1e}" for k, d in top) + (f" (tolerance {tol:.0e})" if tol else ""))
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", default="5M", choices=["tiny", "5M", "48M"])
    p.add_argument("--wms", nargs="+", default=["mlp", "flow"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--horizon", type=int, default=16)
    p.add_argument("--tol", type=float, default=2e-3)
    p.add_argument("--compile-steps", type=int, default=4, help="updates in comparison 2 (the first is eager)")
    p.add_argument("--compile-horizon", type=int, help="H in comparison 2 (compile time grows with H; default --horizon)")
    p.add_argument("--skip-compile", action="store_true")
    args = p.parse_args()
    import torch._inductor.config as inductor

    from flowpwm.config import compose

    torch.set_num_threads(4)
    ok = True
    for wm in args.wms:
        alg = compose([f"alg=pwm_{args.size}" + ("_flow" if wm == "flow" else ""), f"alg.horizon={args.horizon}"]).alg
        alg.critic_iterations = 2  # fewer critic steps: the comparison, not the schedule, matters here
        g = torch.Generator().manual_seed(7)
        H, B = args.horizon, args.batch
        batches = [(torch.randn(H + 1, B, OBS, generator=g), torch.rand(H, B, ACT, generator=g) * 2 - 1,
                    torch.randn(H, B, 1, generator=g)) for _ in range(max(args.steps, args.compile_steps))]
        print(f"{wm} (pwm_{args.size}{'_flow' if wm == 'flow' else ''}, H={H}, batch {B}):", flush=True)
        cpu = build(alg, "cpu", EAGER)
        dev_eager = build(alg, args.device, EAGER, template=cpu)
        ok &= compare(f"cpu vs {args.device}, eager", updates(cpu, batches, True, args.steps),
                      updates(dev_eager, batches, True, args.steps), args.tol)
        if not args.skip_compile:
            Hc = args.compile_horizon or H
            alg_c = copy.deepcopy(alg)
            alg_c.horizon = Hc
            short = [(o[:Hc + 1], a[:Hc], r[:Hc]) for o, a, r in batches]
            with inductor.patch(fallback_random=True):
                eager = build(alg_c, args.device, EAGER, template=cpu)
                fast = build(alg_c, args.device, dict(device_metrics=True, fused_adam=True, tf32=False, compile=True),
                             template=cpu)
                ok &= compare(f"{args.device} eager vs compiled (+fused Adam, device metrics), H={Hc}",
                              updates(eager, short, False, args.compile_steps),
                              updates(fast, short, False, args.compile_steps), args.tol)
        if args.device.startswith("cuda"):  # TF32 is process-wide: each agent runs before the next is built
            off = updates(build(alg, args.device, EAGER, template=cpu), batches, True, args.steps)
            on = updates(build(alg, args.device, dict(EAGER, tf32=True), template=cpu), batches, True, args.steps)
            compare(f"{args.device} TF32 on vs off", off, on, None)
            torch.backends.cuda.matmul.allow_tf32 = False
    print("parity:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

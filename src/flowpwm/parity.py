"""Parameter parity between a baseline (MLP dynamics) and a flow world-model config.

Counts come from real modules built on the meta device (no memory), per sub-module, for
single-task dims and the MT30 / MT80 multi-task dims. Only the velocity network's width
differs between the pair; `suggest_velocity_units` finds the width closest to the dynamics.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from flowpwm.config import UserError, load_alg
from flowpwm.models.factory import build_world_model
from flowpwm.models.world_model import LatentWorldModel


@dataclass(frozen=True)
class Dims:
    label: str
    obs_dim: int
    action_dim: int
    num_tasks: int = 1
    task_dim: int = 0
    episodic: bool = False  # with the termination head (episodic tasks)


# cartpole-swingup (dm_control) for single task; TD-MPC2's padded MT30 / MT80 dims.
PRESETS = {
    "single": Dims("single-task (obs 5, act 1)", 5, 1),
    "mt30": Dims("MT30 (obs 24, act 6, 30 tasks, task_dim 64)", 24, 6, 30, 64),
    "mt80": Dims("MT80 (obs 39, act 6, 80 tasks, task_dim 96)", 39, 6, 80, 96),
    "episodic": Dims("episodic single-task (Hopper-v5: obs 11, act 3, termination head)", 11, 3, episodic=True),
}
DYNAMICS = {"mlp": "dynamics", "flow": "velocity"}


def build_on_meta(wm_cfg: DictConfig, dims: Dims) -> LatentWorldModel:
    cfg = OmegaConf.merge(wm_cfg, {"task_dim": dims.task_dim} if dims.num_tasks > 1 else {})
    with torch.device("meta"):
        return build_world_model(cfg, dims.obs_dim, dims.action_dim, num_tasks=dims.num_tasks, episodic=dims.episodic)


def count(wm_cfg: DictConfig, dims: Dims) -> dict[str, int]:
    """Parameters per sub-module (encoder, dynamics | velocity, reward, task_emb) and total."""
    groups = build_on_meta(wm_cfg, dims).parameter_groups()
    groups["total"] = sum(groups.values())
    return groups


def mlp_param_count(in_dim: int, hidden: list[int], out_dim: int, last_normed: bool) -> int:
    """Closed form of `layers.mlp`: Linear + LayerNorm per hidden layer, then the last layer."""
    dims = [in_dim, *hidden]
    n = sum(dims[i] * dims[i + 1] + 3 * dims[i + 1] for i in range(len(hidden)))
    return n + dims[-1] * out_dim + out_dim + (2 * out_dim if last_normed else 0)


def suggest_velocity_units(base_cfg: DictConfig, flow_cfg: DictConfig, dims: Dims) -> tuple[list[int], int, int]:
    """Equal-width velocity layers (as many as configured) whose count is closest to the
    baseline dynamics: returns (units, velocity params, dynamics params)."""
    target = count(base_cfg, dims)["dynamics"]
    depth = len(flow_cfg.velocity_units)
    task_dim = dims.task_dim if dims.num_tasks > 1 else 0
    in_dim = int(flow_cfg.latent_dim) + dims.action_dim + task_dim + int(flow_cfg.tau_features)
    best = min(
        range(1, 8 * max(base_cfg.units) + 1),
        key=lambda w: abs(mlp_param_count(in_dim, [w] * depth, int(flow_cfg.latent_dim), False) - target),
    )
    return [best] * depth, mlp_param_count(in_dim, [best] * depth, int(flow_cfg.latent_dim), False), target


def rel_diff(flow: int, base: int) -> float:
    return (flow - base) / base


@dataclass
class PairReport:
    base_name: str
    flow_name: str
    dims: Dims
    base: dict[str, int]
    flow: dict[str, int]

    @property
    def dynamics_diff(self) -> float:
        return rel_diff(self.flow["velocity"], self.base["dynamics"])

    @property
    def total_diff(self) -> float:
        return rel_diff(self.flow["total"], self.base["total"])

    def within(self, tolerance: float) -> bool:
        return abs(self.total_diff) <= tolerance and abs(self.dynamics_diff) <= tolerance

    def table(self) -> str:
        rows = [f"  {self.dims.label}",
                f"    {'module':<20}{self.base_name:>14}{self.flow_name:>16}{'diff':>9}"]
        for name in ("encoder", "dynamics", "reward", "termination", "task_emb", "total"):
            fname = "velocity" if name == "dynamics" else name
            if name not in self.base:
                continue
            b, f = self.base[name], self.flow[fname]
            label = "dynamics/velocity" if name == "dynamics" else name
            rows.append(f"    {label:<20}{b:>14,}{f:>16,}{rel_diff(f, b):>+9.2%}")
        return "\n".join(rows)


def compare(base_name: str, flow_name: str, presets: list[Dims]) -> list[PairReport]:
    base_cfg, flow_cfg = load_alg(base_name).world_model, load_alg(flow_name).world_model
    if base_cfg.type != "mlp" or flow_cfg.type != "flow":
        raise UserError(f"parity compares an mlp config with a flow config; got {base_name} "
                        f"({base_cfg.type}) and {flow_name} ({flow_cfg.type})")
    return [PairReport(base_name, flow_name, d, count(base_cfg, d), count(flow_cfg, d)) for d in presets]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="verify_param_parity",
        description="Count baseline vs flow world-model parameters; exit 1 beyond the tolerance.",
    )
    p.add_argument("--pair", nargs=2, action="append", metavar=("BASELINE", "FLOW"),
                   help="alg configs to compare (default: pwm_5M/pwm_5M_flow and pwm_48M/pwm_48M_flow)")
    p.add_argument("--presets", nargs="+", choices=sorted(PRESETS), default=["single", "episodic", "mt30", "mt80"])
    p.add_argument("--obs-dim", type=int, help="observation dim of the single-task preset")
    p.add_argument("--action-dim", type=int, help="action dim of the single-task preset")
    p.add_argument("--tolerance", type=float, default=0.02, help="relative tolerance (default 0.02 = 2%%)")
    p.add_argument("--suggest", action="store_true", help="print the velocity width closest to the dynamics")
    args = p.parse_args(argv)
    if not 0 < args.tolerance < 1:
        raise UserError(f"--tolerance {args.tolerance:g}: give a fraction in (0, 1), e.g. 0.02 for 2 %")
    pairs = args.pair or [("pwm_5M", "pwm_5M_flow"), ("pwm_48M", "pwm_48M_flow")]
    presets = [PRESETS[k] for k in args.presets]
    if args.obs_dim or args.action_dim:
        s = PRESETS["single"]
        obs, act = args.obs_dim or s.obs_dim, args.action_dim or s.action_dim
        presets = [Dims(f"single-task (obs {obs}, act {act})", obs, act) if d is s else d for d in presets]

    ok = True
    for base_name, flow_name in pairs:
        reports = compare(base_name, flow_name, presets)
        base_wm, flow_wm = load_alg(base_name).world_model, load_alg(flow_name).world_model
        print(f"{base_name} vs {flow_name} (tolerance {args.tolerance:.1%} on total and dynamics/velocity)")
        for r in reports:
            print(r.table())
            verdict = "OK" if r.within(args.tolerance) else "OUT OF TOLERANCE"
            print(f"    -> {verdict}: total {r.total_diff:+.2%}, dynamics/velocity {r.dynamics_diff:+.2%}")
            ok &= r.within(args.tolerance)
            if args.suggest:
                units, n, target = suggest_velocity_units(base_wm, flow_wm, r.dims)
                print(f"    suggest velocity_units: {units} ({n:,} vs dynamics {target:,}, "
                      f"{rel_diff(n, target):+.3%})")
        print()
    print("parity: OK" if ok else f"parity: FAILED (beyond {args.tolerance:.1%}); run with --suggest for widths")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

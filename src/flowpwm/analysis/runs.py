"""Read what training runs wrote to disk (config.yaml, metrics.jsonl) and tabulate eval
returns against env steps; analysis never needs the live process or WandB."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from flowpwm.config import UserError
from flowpwm.training.rundir import read_records


@dataclass
class Run:
    path: Path
    config: dict
    metrics: list[dict]

    @property
    def evals(self) -> list[tuple[int, float]]:
        """(env_steps, eval_return) for every evaluated epoch, in order."""
        return [(r["env_steps"], r["eval_return"]) for r in self.metrics if "eval_return" in r]

    def eval_at(self, steps: int) -> float | None:
        """Eval return of the last evaluation at or before `steps` env steps."""
        before = [ret for s, ret in self.evals if s <= steps]
        return before[-1] if before else None


def load_run(path: Path | str) -> Run:
    path = Path(path)
    metrics_file, config_file = path / "metrics.jsonl", path / "config.yaml"
    if not metrics_file.exists() or not config_file.exists():
        raise UserError(f"{path} is not a run directory (needs metrics.jsonl and config.yaml)")
    return Run(path, OmegaConf.to_container(OmegaConf.load(config_file)), read_records(metrics_file))


def eval_table(groups: dict[str, list[Run]], steps: list[int]) -> str:
    """Markdown: per group, eval return at each step budget (each seed, then the mean)."""
    head = "| world model | seeds | " + " | ".join(f"{s // 1000}k steps" for s in steps) + " |"
    rows = [head, "|" + "---|" * (len(steps) + 2)]
    for name, runs in groups.items():
        cells = []
        for s in steps:
            vals = [r.eval_at(s) for r in runs]
            vals = [v for v in vals if v is not None]
            cells.append(f"{statistics.mean(vals):.0f} ({', '.join(f'{v:.0f}' for v in vals)})" if vals else "–")
        seeds = ", ".join(str(r.config.get("seed")) for r in runs)
        rows.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="flowpwm results",
                                description="Eval return vs env steps for groups of run directories.")
    p.add_argument("--group", nargs="+", action="append", required=True, metavar=("NAME", "RUN_DIR"),
                   help="a group name then its run directories; repeat per group")
    p.add_argument("--steps", nargs="+", type=int, default=[25_000, 50_000, 75_000, 100_000])
    args = p.parse_args(argv)
    groups = {}
    for name, *dirs in args.group:
        if not dirs:
            raise UserError(f"--group {name} names no run directory")
        groups[name] = [load_run(d) for d in dirs]
    print(eval_table(groups, args.steps))
    return 0

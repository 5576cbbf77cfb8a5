"""Read what training runs wrote to disk (config.yaml, metrics.jsonl) and tabulate eval
returns against env steps; analysis never needs the live process or WandB."""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

from omegaconf import OmegaConf

from flowpwm.config import UserError
from flowpwm.rundir import RunDir, damaged_note


@dataclass
class Run:
    path: Path
    config: dict
    metrics: list[dict]
    damaged: list[int] = field(default_factory=list)  # metrics.jsonl lines that could not be read
    damaged_last_eval: int | None = None  # a damaged eval line after the last readable eval
    lines: int = 0  # lines in metrics.jsonl

    @property
    def evals(self) -> list[tuple[int, float]]:
        """(env_steps, eval_return) for every evaluated epoch, in order."""
        return [(r["env_steps"], r["eval_return"]) for r in self.metrics if "eval_return" in r]

    def eval_at(self, steps: int) -> float | None:
        """Eval return of the last evaluation at or before `steps` env steps."""
        before = [ret for s, ret in self.evals if s <= steps]
        return before[-1] if before else None

    def until(self, steps: int, x: str = "env_steps") -> "Run":
        """The run as it stood when it reached `steps` of `x`: its records up to the first past it
        (metrics.jsonl is in order), so a longer run can be compared at a shorter run's budget."""
        return replace(self, metrics=list(itertools.takewhile(lambda r: r.get(x, 0) <= steps, self.metrics)))


def load_run(path: Path | str) -> Run:
    run = RunDir(path)
    if not run.metrics_path.exists() or not run.config.exists():
        raise UserError(f"{run.path} is not a run directory (needs metrics.jsonl and config.yaml)")
    m = run.metrics()
    return Run(run.path, OmegaConf.to_container(OmegaConf.load(run.config)), m.records, m.damaged,
               m.last_eval_damaged(), m.lines)


def metrics_notes(runs: list[Run]) -> list[str]:
    """A warning per run with damaged metrics lines; a UserError when a run's last eval line is
    the damaged one (its final return would silently come from an earlier eval)."""
    for r in runs:
        if r.damaged_last_eval is not None:
            raise UserError(f"{r.path / 'metrics.jsonl'}: line {r.damaged_last_eval} (an eval record after the last "
                            f"readable one) is damaged, so the run's final return cannot be read; repair or delete "
                            f"that line, or leave the run out")
    return [f"warning: {damaged_note(r.path / 'metrics.jsonl', r.damaged, r.lines)}" for r in runs if r.damaged]


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
    import sys

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
    for note in metrics_notes([r for runs in groups.values() for r in runs]):
        print(note, file=sys.stderr)
    print(eval_table(groups, args.steps))
    return 0

"""`flowpwm data manifest DIR` and `flowpwm data info DIR`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flowpwm.config import UserError

USAGE = "flowpwm data manifest DIR | flowpwm data info DIR [--task-set NAME] [--manifest FILE]"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 through the CLI's UserError handling
        raise UserError(f"{message} (usage: {USAGE})")


def manifest(root: Path) -> int:
    """Record the SHA256 of every file under a trusted dataset download."""
    from flowpwm.reproducibility import DatasetVerifier

    if not root.is_dir():
        raise UserError(f"dataset directory {root} does not exist")
    path = DatasetVerifier(root).write_manifest()
    n = len(json.loads(path.read_text(encoding="utf-8"))["files"])
    print(f"wrote {path}: sha256 of {n} file(s); `flowpwm data info {root}` and training now accept exactly these files")
    return 0


def info(root: Path, task_set: str | None, manifest_path: Path | None) -> int:
    """Episodes and transitions per task, and episode-return statistics."""
    from flowpwm.data.dataset import load_dataset

    ds = load_dataset(root, task_set=task_set, manifest=manifest_path)
    m = ds.meta
    print(f"dataset {root}: task set {m.task_set} ({len(m.tasks)} tasks), obs dim {m.obs_dim}, action dim {m.action_dim}, "
          f"episode length {m.episode_length}" + (f", source {m.source}" if m.source else ""))
    print(f"{len(ds.files)} file(s), {ds.num_episodes} episodes, {ds.num_transitions} transitions")
    print()
    print("| id | task | episodes | transitions | return mean | return std | return min | return max |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for row in ds.task_stats():
        if not row["episodes"]:
            print(f"| {row['task_id']} | {row['task']} | 0 | 0 | | | | |")
            continue
        print(f"| {row['task_id']} | {row['task']} | {row['episodes']} | {row['transitions']} | {row['return_mean']:.1f} "
              f"| {row['return_std']:.1f} | {row['return_min']:.1f} | {row['return_max']:.1f} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="flowpwm data", description="Offline datasets: TD-MPC2's MT30/MT80 chunks or flowpwm's own.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    m = sub.add_parser("manifest", help="record the sha256 of a trusted download in DIR/MANIFEST.sha256.json")
    m.add_argument("dir", type=Path)
    i = sub.add_parser("info", help="episodes and transitions per task, return statistics")
    i.add_argument("dir", type=Path)
    i.add_argument("--task-set", help="read the data as this task set (mt30, mt80, mt-mini); default: the data's own")
    i.add_argument("--manifest", type=Path, help="manifest to check files against (default: DIR/MANIFEST.sha256.json)")
    args = p.parse_args(argv)
    if args.command == "manifest":
        return manifest(args.dir)
    return info(args.dir, args.task_set, args.manifest)

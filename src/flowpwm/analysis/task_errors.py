"""Per task, how well a pretrained multi-task world model predicts the dataset's own rewards
(`python scripts/task_errors.py PRETRAIN_RUN`).

A pretraining run's held-out errors are means over all tasks: one task the model has not learned
hides among the rest, and shows only later, as policies that do not learn. For each task this
draws `slices` (H+1)-step slices of its episodes and rolls the world model out open loop from the
encoded first obs with the recorded actions: the H-step reward sum, real against predicted, in all
slices and in the slices where the env paid little (under a quarter of the task's mean sum)."""

from __future__ import annotations

import argparse

import torch
from omegaconf import OmegaConf

from flowpwm.algorithms.pwm import PWM
from flowpwm.config import UserError
from flowpwm.data.dataset import OfflineDataset
from flowpwm.envs.tasksets import get_task_set
from flowpwm.models.rollout import reward_sums
from flowpwm.rundir import RunDir
from flowpwm.training.offline import KIND as PRETRAIN_KIND
from flowpwm.training.offline_common import load_data, multitask_agent


def load_pretrain_run(path) -> tuple[PWM, dict]:
    """The world model of a pretraining run's latest checkpoint (in an agent) and the run's config."""
    run = RunDir(path)
    if not run.has_checkpoint():
        raise UserError(f"{path}: no checkpoint ({run.latest_checkpoint}): give a `flowpwm pretrain` run dir")
    state = run.load_checkpoint()
    if state["dims"].get("kind") != PRETRAIN_KIND:
        raise UserError(f"{path}: not a pretraining run (checkpoint kind {state['dims'].get('kind')!r}): give a "
                        f"`flowpwm pretrain` run dir")
    cfg = OmegaConf.load(run.config)
    ts = get_task_set(state["dims"]["task_set"])
    agent = multitask_agent(cfg.alg, ts, "cpu", cfg.perf, bool(state["dims"]["episodic"]))
    agent.wm.load_state_dict(state["agent"]["world_model"])
    return agent, OmegaConf.to_container(cfg, resolve=False)


@torch.no_grad()
def task_errors(agent: PWM, data: OfflineDataset, slices: int = 512, seed: int = 0) -> list[dict]:
    """One row per task with episodes in `data`: mean real and predicted H-step reward sums, their
    mean absolute difference, and the same means over the low-reward slices."""
    H, g, rows = agent.horizon, torch.Generator().manual_seed(seed), []
    for task_id, task in enumerate(data.meta.tasks):
        if not bool((data.task == task_id).any()):
            continue
        b = data.sample(slices, H, g, task=task_id)
        real = b["reward"].sum(0).squeeze(-1)
        pred = reward_sums(agent.wm, agent.wm.encode(b["obs"][0], task_id), task_id, b["action"])
        low = real < 0.25 * real.mean()
        rows.append({"task": task, "slices": slices, "real": real.mean().item(), "model": pred.mean().item(),
                     "abs_error": (pred - real).abs().mean().item(), "low_slices": int(low.sum()),
                     "low_real": real[low].mean().item() if low.any() else float("nan"),
                     "low_model": pred[low].mean().item() if low.any() else float("nan")})
    return rows


def format_table(path, rows: list[dict], horizon: int) -> str:
    head = (f"{path}: open-loop H = {horizon} reward sums on the dataset's slices (recorded actions)\n\n"
            "| task | real | model | mean abs. error | low-reward slices | there: real | there: model |\n"
            "|---|---:|---:|---:|---:|---:|---:|")
    return "\n".join([head, *(f"| {r['task']} | {r['real']:.2f} | {r['model']:.2f} | {r['abs_error']:.2f} | "
                              f"{r['low_slices']} of {r['slices']} | {r['low_real']:.2f} | {r['low_model']:.2f} |"
                              for r in rows)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="`flowpwm pretrain` run dirs")
    p.add_argument("--data", default=None, help="the dataset (default: the one each run was trained on)")
    p.add_argument("--slices", type=int, default=512, help="slices per task")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.slices < 2:
        raise UserError("--slices must be >= 2")
    torch.set_num_threads(1)
    loaded = [load_pretrain_run(run) for run in args.runs]  # every bad path refused before any work
    for i, (run, (agent, cfg)) in enumerate(zip(args.runs, loaded)):
        ts = get_task_set(cfg["data"]["task_set"])
        path = args.data or cfg["data"]["path"]
        episodes, files = load_data(path, ts, key="--data" if args.data else f"the data.path of {run}")
        rows = task_errors(agent, OfflineDataset(episodes, files), args.slices, args.seed)
        print(("\n" if i else "") + format_table(run, rows, agent.horizon), flush=True)
    return 0

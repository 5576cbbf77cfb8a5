"""Offline multi-task world-model pretraining (`flowpwm pretrain`): PWM's world model (MLP or flow,
with task embedding and per-task action masks) trained on a dataset of (H+1)-step slices, as
TD-MPC2's trainer does for PWM's 48M models. No env, no actor: the world model only.

Read top to bottom: checks (config, data, run dir) → the world model → per epoch (`log_every`
iterations) sample slices, mask the padded action dims, update → held-out evaluation every
`eval_every` iterations → metrics line → checkpoint. SIGUSR1/SIGTERM/^C stop at the next epoch edge
with a checkpoint (exit 75); `resume=auto` continues with the same iterations, RNG streams and
metrics. Learning rate: constant `alg.model_lr` (TD-MPC2's trainer).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from flowpwm.algorithms.pwm import PWM
from flowpwm.config import UserError
from flowpwm.data.dataset import OfflineDataset
from flowpwm.envs.tasksets import get_task_set
from flowpwm.models.rollout import open_loop_errors
from flowpwm.perf import host_means
from flowpwm.reproducibility import rng_state, set_rng_state, set_seed, write_run_metadata
from flowpwm.rundir import RunDir, RunWriter, damaged_note
from flowpwm.schema import check_offline_config
from flowpwm.training.offline_common import (IterationMonitor, check_slices, crossed, flow_line, load_data,
                                             multitask_agent,
                                             manifest_file, open_wandb, parity_line, resume_changes, split_held_out,
                                             total_epochs)
from flowpwm.training.online import rss_mib
from flowpwm.training.preemption import EXIT_REQUEUE, Preempted, StopSignals
from flowpwm.training.resume import describe_changes, history_entry, resolve_run_dir

KIND = "pretrain"  # checkpoint dims["kind"] of a pretraining run
RESUMABLE = ("pretrain.iterations", "pretrain.eval_every", "pretrain.eval_batch_size", "pretrain.checkpoint_every",
             "pretrain.threads", "monitor.", "wandb.", "perf.", "device", "deterministic", "resume")


def resolve_episodic(setting, terminated: torch.Tensor) -> bool:
    """`alg.episodic`: auto = the data holds a termination (no dm_control or TD-MPC2 data does)."""
    return bool(terminated.any()) if str(setting) == "auto" else str(setting).lower() == "true"


def masked_batch(agent: PWM, ds: OfflineDataset, batch_size: int, generator: torch.Generator) -> dict:
    """(H+1)-step slices on the agent's device with each task's padded action dims zeroed: they
    never reach the dynamics. The dataset stays in host memory (MT80 is ~85 GB of observations)."""
    b = {k: v.to(agent.device, non_blocking=True) for k, v in ds.sample(batch_size, agent.horizon, generator).items()}
    b["action"] = agent.wm.mask_action(b["action"], b["task"])
    return b


@torch.no_grad()
def held_out_metrics(agent: PWM, held: OfflineDataset, batch_size: int, seed: int, episodic: bool) -> dict[str, float]:
    """World-model losses and the open-loop latent / reward error at steps 1 and H on held-out
    slices, and the step-H reward error of each task in them (`heldout_reward_err_hH_TASK`: a task
    whose reward the model has not learned hides in the mean over tasks). Its own generator and a
    forked RNG: training's random streams are untouched."""
    H = agent.horizon
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        b = masked_batch(agent, held, batch_size, torch.Generator().manual_seed(seed))
        _, losses = agent.compute_wm_loss(b["obs"], b["action"], b["reward"], b["task"],
                                          b["terminated"] if episodic else None)
        err = open_loop_errors(agent.wm, b["obs"], b["action"], b["reward"], b["task"])
        per_task = {}
        for task_id in b["task"].unique().tolist():
            m = b["task"] == task_id
            e = open_loop_errors(agent.wm, b["obs"][:, m], b["action"][:, m], b["reward"][:, m], b["task"][m])
            per_task[f"heldout_reward_err_h{H}_{held.meta.tasks[task_id]}"] = e["reward_abs_err"][-1]
    out = {f"heldout_{k}": float(v) for k, v in losses.items()}
    out.update({"heldout_latent_mse_h1": err["latent_mse"][0], f"heldout_latent_mse_h{H}": err["latent_mse"][-1],
                "heldout_reward_err_h1": err["reward_abs_err"][0], f"heldout_reward_err_h{H}": err["reward_abs_err"][-1],
                **per_task})
    return out


def worst_task(record: dict, horizon: int) -> str:
    """The held-out line's note on the task with the largest step-H reward error (multi-task data)."""
    prefix = f"heldout_reward_err_h{horizon}_"
    per_task = {k[len(prefix):]: v for k, v in record.items() if k.startswith(prefix)}
    if len(per_task) < 2:
        return ""
    task = max(per_task, key=per_task.get)
    return f" (worst: {task} {per_task[task]:.3f})"


def precheck(cfg: DictConfig) -> None:
    """Checked for each job before Hydra makes a directory: the dataset exists."""
    if not Path(str(cfg.data.path)).exists():
        raise UserError(f"data.path={cfg.data.path}: dataset {cfg.data.path} does not exist")


def pretrain(cfg: DictConfig, run_dir: Path | str, log=print, monitor_stream=None) -> dict[str, float]:
    # -- everything that can be refused, before the run dir is written ---------------------------
    check_offline_config(cfg, "pretrain")
    if cfg.pretrain.threads:
        torch.set_num_threads(int(cfg.pretrain.threads))
    p, H = cfg.pretrain, int(cfg.alg.horizon)
    ts = get_task_set(cfg.data.task_set)
    episodes, files = load_data(cfg.data.path, ts, cfg.data.manifest)
    episodic = resolve_episodic(cfg.alg.episodic, episodes.terminated)
    train_eps, held_eps = split_held_out(episodes, float(p.held_out), int(cfg.seed))
    none_held_out = held_eps is episodes
    del episodes  # with a held-out part, the training episodes are a copy: let the whole go
    data, held = OfflineDataset(train_eps, files), OfflineDataset(held_eps)
    check_slices(data, H, f"data.path={cfg.data.path}")
    check_slices(held, H, f"data.path={cfg.data.path} (held out: pretrain.held_out={p.held_out})")
    run_dir, resumed = resolve_run_dir(cfg, run_dir, log)
    changes = resume_changes(RunDir(run_dir), cfg, RESUMABLE) if resumed else {}
    set_seed(int(cfg.seed), deterministic=bool(cfg.deterministic))
    agent = multitask_agent(cfg.alg, ts, cfg.device, cfg.perf, episodic)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    iterations, log_every = int(p.iterations), int(p.log_every)
    epoch, iteration, wall_time, logged = 0, 0, 0.0, 0
    dims = {"kind": KIND, "task_set": ts.name, "obs_dim": ts.obs_dim, "action_dim": ts.action_dim,
            "num_tasks": len(ts), "task_dim": int(cfg.alg.world_model.task_dim), "episodic": episodic}

    run = RunWriter(run_dir)  # one writer per run dir: a second one stops here
    try:
        if resumed:
            state = run.load_checkpoint(map_location=agent.device)
            run.load_buffer(state)  # the (empty) buffer file must belong to it
            try:
                agent.load_state_dict(state["agent"])
            except (RuntimeError, ValueError, KeyError) as e:
                raise UserError(f"{run.latest_checkpoint} does not fit this config ({str(e).splitlines()[0][:160]}); "
                                f"resume with the run's own config, or start a new run") from None
            epoch, iteration, wall_time = int(state["epoch"]), int(state["iteration"]), float(state["wall_time"])
            set_rng_state(state["rng"], gen)
            m = run.metrics()
            if m.damaged:
                log(f"resume: {damaged_note(run.metrics_path, m.damaged, m.lines)}; they are dropped")
            logged, _ = run.truncate_metrics(epoch)
            run.append_history(history_entry(changes, epoch, 0))
            log(f"resume: continuing {run.path} at iteration {iteration} (epoch {epoch}); {describe_changes(changes)}")
        else:
            if run.has_checkpoint():
                raise UserError(f"{run.path} already holds a run ({run.latest_checkpoint}); continue it with "
                                f"resume=auto, or start a new one in another hydra.run.dir")
            logged, _ = run.truncate_metrics(-1)
            run.history.unlink(missing_ok=True)
            manifest = manifest_file(files)
            try:
                write_run_metadata(run.path, cfg, dataset_manifest=manifest)
            finally:
                manifest.unlink(missing_ok=True)

        def checkpoint() -> None:
            run.save_checkpoint({"agent": agent.state_dict(), "epoch": epoch, "iteration": iteration, "env_steps": 0,
                                 "wall_time": wall_time, "rng": rng_state(gen), "esnr": {}, "dims": dims}, {})

        wandb = open_wandb(run.path, cfg, logged, {f"heldout_latent_mse_h{H}": "min", "wm_loss": "min"})
        # epochs of log_every iterations (the last may be shorter), counted from where a resume starts
        epochs = epoch + total_epochs(max(iterations - iteration, 0), log_every)
        monitor = IterationMonitor("pretrain", epochs, epoch, mode=cfg.monitor.progress,
                                   print_every_s=float(cfg.monitor.print_every_s), ema=float(cfg.monitor.ema),
                                   stream=monitor_stream, echo=log)
        n_params = sum(x.numel() for x in agent.wm.parameters())
        log("\n".join(filter(None, [
            f"pretrain: {cfg.alg.name} on task set {ts.name} ({len(ts)} tasks, obs {ts.obs_dim}, act {ts.action_dim}, "
            f"action dims {list(ts.action_dims)}, task_dim {cfg.alg.world_model.task_dim}), seed {cfg.seed}, device "
            f"{cfg.device}; {iterations} iterations of {p.batch_size} x {H + 1}-step slices",
            f"  data {cfg.data.path}: {data.num_episodes} episodes, {data.num_transitions} transitions for training; "
            f"{held.num_episodes} held out" + (" (none held out: evaluated on training episodes)" if none_held_out else ""),
            f"  world model: {agent.wm.kind}, {parity_line(cfg.alg, ts, n_params, episodic)}",
            flow_line(cfg.alg.world_model),
            f"  run dir {run.path}; {wandb.describe()}" + (f"; resumed at iteration {iteration}" if resumed else "")])))

        start, last, exit_code = time.perf_counter() - wall_time, {}, 1
        with StopSignals() as stop:  # SIGUSR1/SIGTERM/^C: finish the epoch, checkpoint, exit
            try:
                while iteration < iterations:
                    # -- one epoch: `log_every` world-model updates on masked multi-task slices
                    epoch += 1
                    n = min(log_every, iterations - iteration)
                    updates = []
                    for _ in range(n):
                        b = masked_batch(agent, data, int(p.batch_size), gen)
                        updates.append(agent.update_world_model(b["obs"], b["action"], b["reward"], b["task"],
                                                                b["terminated"] if episodic else None))
                    iteration += n
                    record = host_means(updates)
                    bad = sorted(k for k, v in record.items() if not math.isfinite(v))
                    if bad:
                        raise FloatingPointError(f"non-finite {', '.join(bad)} at iteration {iteration}; the last "
                                                 f"good checkpoint is {run.latest_checkpoint}")
                    final = iteration == iterations
                    if crossed(iteration, n, int(p.eval_every)) or final:
                        record.update(held_out_metrics(agent, held, int(p.eval_batch_size),
                                                       int(cfg.seed) * 1_000_003 + iteration, episodic))
                        monitor.write(f"  iteration {iteration:6d}  wm {record['wm_loss']:.4f}  held out: wm "
                                      f"{record['heldout_wm_loss']:.4f}  latent mse h1 {record['heldout_latent_mse_h1']:.2e} "
                                      f"h{H} {record[f'heldout_latent_mse_h{H}']:.2e}  reward err h{H} "
                                      f"{record[f'heldout_reward_err_h{H}']:.3f}{worst_task(record, H)}  "
                                      f"({time.perf_counter() - start:.0f}s)")
                    wall_time = time.perf_counter() - start
                    record = {"epoch": epoch, "iteration": iteration, "samples": iteration * int(p.batch_size),
                              "wall_time": wall_time, "rss_mib": rss_mib(), **record}
                    run.log(record)
                    extra = (wandb.gradient_histograms({"world_model": agent.wm})
                             if wandb.wants_grad_histograms(epoch) else {})
                    wandb.log({**record, **extra}, step=epoch)
                    monitor.update(epoch, iteration, record)
                    last = record
                    if crossed(iteration, n, int(p.checkpoint_every)) or final:
                        checkpoint()
                    if stop.received and not final:
                        checkpoint()
                        wandb.mark_preempting()
                        exit_code = EXIT_REQUEUE
                        stop.forward()
                        raise Preempted(f"{stop.received} at iteration {iteration}/{iterations}: checkpoint written "
                                        f"to {run.latest_checkpoint}; continue with resume=auto in the same run dir")
                exit_code = 0
            finally:
                monitor.close()
                wandb.finish(exit_code=exit_code)
    finally:
        run.close()
    if not last:  # a finished run resumed again: report its last line
        last = next(iter(reversed(run.records())), {})
    log(f"pretrained {iteration} iterations in {wall_time:.0f}s; held-out latent mse h{H} "
        f"{last.get(f'heldout_latent_mse_h{H}', float('nan')):.3e}; checkpoint {run.latest_checkpoint}")
    return {"iterations": iteration, "epochs": epoch, "wall_time": wall_time, **{k: v for k, v in last.items()
                                                                                 if isinstance(v, (int, float))}}

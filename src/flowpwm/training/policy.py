"""Per-task policy training through a pretrained multi-task world model (`flowpwm train-policy`),
PWM's per-task protocol: the world model frozen (or fine-tuned with `policy.fine_tune`), a fresh
actor and critic for one task, start states = obs[0] of random (H+1)-step slices of that task's
episodes in the dataset (with `policy.bc_coef` > 0 the actor is also pulled toward the data's actions
there: TD3+BC's behaviour term, against exploiting the model off the data). The env is never stepped for training; the real env (padded obs,
masked actions) only evaluates the deterministic policy, every `policy.eval_every` iterations,
and its normalised score is logged (dm_control: return / 1000).

Read top to bottom: checks (config, pretrained run, task, data, eval env, run dir) → the agent
with the pretrained world model → the untrained policy's eval (epoch 0) → per epoch (`log_every`
iterations) one actor update + critic minibatches per iteration (+ a world-model update when
fine-tuning) → ESNR / eval / checkpoint. Preemption and resume as in `flowpwm train`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from flowpwm.config import UserError
from flowpwm.data.dataset import OfflineDataset
from flowpwm.envs.multitask import make_multitask_env
from flowpwm.envs.tasksets import TaskSet, get_task_set
from flowpwm.esnr import ESNRTracker
from flowpwm.fileio import atomic_write_text
from flowpwm.perf import host_means
from flowpwm.reproducibility import rng_state, set_rng_state, set_seed, write_run_metadata
from flowpwm.rundir import PRETRAINED, RunDir, RunWriter, damaged_note
from flowpwm.schema import check_offline_config
from flowpwm.training.offline import KIND as PRETRAIN_KIND, masked_batch
from flowpwm.training.offline_common import (IterationMonitor, check_slices, crossed, flow_line, load_data,
                                             manifest_file, multitask_agent, open_wandb, parity_line, resume_changes,
                                             subset, total_epochs)
from flowpwm.training.online import ESNR_KEYS, rss_mib
from flowpwm.training.preemption import EXIT_REQUEUE, Preempted, StopSignals
from flowpwm.training.resume import describe_changes, history_entry, resolve_run_dir

KIND = "policy"
RESUMABLE = ("policy.iterations", "policy.eval_every", "policy.eval_episodes", "policy.eval_envs",
             "policy.checkpoint_every", "policy.esnr_every", "policy.esnr_samples", "policy.threads", "monitor.",
             "wandb.", "perf.", "device", "deterministic", "resume")
DMC_MAX_RETURN = 1000.0  # 500 agent steps x action repeat 2 x reward <= 1


def normalised_score(task: str, result: dict[str, float]) -> float:
    """PWM's per-task score: dm_control return / 1000 (Meta-World's success rate cannot be measured
    here: its tasks do not build, see envs/registry.py)."""
    if task.startswith("mw-"):
        raise UserError(f"{task}: Meta-World scores (success rate) need Meta-World envs, which do not run here")
    return result["eval_return"] / DMC_MAX_RETURN


# -- the pretrained world model -----------------------------------------------------------------
@dataclass
class Pretrained:
    path: Path
    config: dict  # the pretraining run's config.yaml
    checkpoint: dict
    task_set: TaskSet
    episodic: bool

    @property
    def data_path(self) -> str:
        return self.config["data"]["path"]


def _is_pretrain_run(d: Path) -> bool:
    run = RunDir(d)
    if not run.config.is_file():
        return False
    cfg = OmegaConf.load(run.config)
    return "pretrain" in cfg and "data" in cfg and "alg" in cfg


def find_pretrained(path, alg) -> Path:
    """The pretraining run `pretrained=` names: that run dir, or among the runs in that directory
    (and one level below: a sweep's jobs) the one whose alg is this config's."""
    p = Path(str(path))
    if not p.exists():
        raise UserError(f"pretrained={path} does not exist: give a pretraining run dir (`flowpwm pretrain`) or a "
                        f"directory of them")
    if RunDir(p).config.is_file():
        if not _is_pretrain_run(p):
            raise UserError(f"pretrained={path} is not a pretraining run (its config.yaml has no pretrain section): "
                            f"give the run dir of `flowpwm pretrain`")
        return p
    runs = sorted(d for d in p.iterdir() if d.is_dir() and _is_pretrain_run(d))
    if not runs:
        raise UserError(f"pretrained={path} holds no pretraining run (no subdirectory with a pretrain config.yaml)")
    names = {d: OmegaConf.load(RunDir(d).config).alg.name for d in runs}
    match = [d for d in runs if names[d] == alg.name]
    if len(match) != 1:
        what = "no" if not match else f"{len(match)}"
        raise UserError(f"pretrained={path}: {what} pretraining run of alg {alg.name} there (found "
                        f"{', '.join(f'{d.name}: {n}' for d, n in names.items())}); name the run dir itself")
    return match[0]


def pretrained_config(path, alg) -> tuple[Path, dict]:
    """The pretraining run `pretrained=` names and its config, checked against this config's world
    model: the other world-model type, or another architecture, is one UserError line."""
    d = find_pretrained(path, alg)
    config = OmegaConf.to_container(OmegaConf.load(RunDir(d).config), resolve=False)
    theirs, ours = config["alg"]["world_model"], OmegaConf.to_container(alg.world_model, resolve=True)
    if theirs.get("type") != ours["type"]:
        raise UserError(f"pretrained={path}: {d.name} holds a {theirs.get('type')} world model (alg "
                        f"{config['alg']['name']}), this config trains through a {ours['type']} one (alg {alg.name}): "
                        f"use wm={theirs.get('type')}, or pretrain a {ours['type']} world model")
    differ = [f"{k}={theirs.get(k)!r} there, {ours.get(k)!r} here" for k in sorted(theirs.keys() | ours.keys())
              if theirs.get(k) != ours.get(k)]
    if differ:
        raise UserError(f"pretrained={path}: the world model of {d.name} (alg {config['alg']['name']}) differs from "
                        f"this config's alg.world_model ({'; '.join(differ)}): use alg={config['alg']['name']}")
    return d, config


def load_pretrained(path, alg) -> Pretrained:
    """`pretrained_config` and the run's checkpoint (weights only)."""
    d, config = pretrained_config(path, alg)
    run = RunDir(d)
    if not run.has_checkpoint():
        raise UserError(f"pretrained={path}: {d} has no checkpoint yet ({run.latest_checkpoint}); wait for the "
                        f"pretraining run to write one")
    state = run.load_checkpoint()
    if state["dims"].get("kind") != PRETRAIN_KIND or state["dims"]["task_set"] != config["data"]["task_set"]:
        raise UserError(f"pretrained={path}: {run.latest_checkpoint} is not this pretraining run's checkpoint (kind "
                        f"{state['dims'].get('kind')!r}, task set {state['dims'].get('task_set')!r})")
    return Pretrained(d, config, state, get_task_set(state["dims"]["task_set"]), bool(state["dims"]["episodic"]))


def precheck(cfg: DictConfig) -> None:
    """What the command line checks for each job before Hydra makes a directory: the pretrained
    run (exists, same world model), the task (in its task set) and that the dataset exists."""
    d, config = pretrained_config(cfg.pretrained, cfg.alg)  # no checkpoint read: cheap for a sweep of many jobs
    if not RunDir(d).has_checkpoint():
        raise UserError(f"pretrained={cfg.pretrained}: {d} has no checkpoint yet; wait for the pretraining run to "
                        f"write one")
    check_task(cfg.task, get_task_set(config["data"]["task_set"]))
    path = cfg.data.path or config["data"]["path"]
    if not Path(str(path)).exists():
        key = "data.path" if cfg.data.path else f"data.path (the pretraining run's, {d})"
        raise UserError(f"{key}={path}: dataset {path} does not exist")


def check_task(task: str, ts: TaskSet) -> None:
    if task not in ts:
        raise UserError(f"task={task}: not in the pretrained world model's task set {ts.name} "
                        f"({', '.join(ts.tasks)})")


# -- the loop -----------------------------------------------------------------------------------------
def train_policy(cfg: DictConfig, run_dir: Path | str, log=print, monitor_stream=None) -> dict[str, float]:
    # -- everything that can be refused, before the run dir is written ---------------------------
    check_offline_config(cfg, "policy")
    if cfg.policy.threads:
        torch.set_num_threads(int(cfg.policy.threads))
    p, H, task = cfg.policy, int(cfg.alg.horizon), str(cfg.task)
    pre = load_pretrained(cfg.pretrained, cfg.alg)
    ts = pre.task_set
    check_task(task, ts)
    task_id = ts.task_id(task)
    data_key = "data.path" if cfg.data.path else f"data.path (the pretraining run's, {pre.path})"
    episodes, files = load_data(cfg.data.path or pre.data_path, ts, cfg.data.manifest, key=data_key)
    data = OfflineDataset(subset(episodes, (episodes.task == task_id).nonzero().squeeze(1)), files)  # host memory
    del episodes
    if not data.num_episodes:
        raise UserError(f"{data_key}: the dataset has no episode of task {task}")
    check_slices(data, H, data_key, task_id)
    eval_env = make_multitask_env(ts, task, num_envs=min(int(p.eval_envs), int(p.eval_episodes)),
                                  seed=int(cfg.seed) + 10_000)
    try:
        run_dir, resumed = resolve_run_dir(cfg, run_dir, log)
        changes = resume_changes(RunDir(run_dir), cfg, RESUMABLE) if resumed else {}
    except BaseException:
        eval_env.close()
        raise
    set_seed(int(cfg.seed), deterministic=bool(cfg.deterministic))
    agent = multitask_agent(cfg.alg, ts, cfg.device, cfg.perf, pre.episodic)
    try:
        agent.wm.load_state_dict(pre.checkpoint["agent"]["world_model"])
    except (RuntimeError, KeyError) as e:
        eval_env.close()
        raise UserError(f"pretrained={cfg.pretrained}: its world model does not load into this config "
                        f"({str(e).splitlines()[0][:160]})") from None
    if not p.fine_tune:
        agent.wm.requires_grad_(False)  # frozen: the actor's gradient flows through it, nothing updates it
    gen = torch.Generator().manual_seed(int(cfg.seed))
    esnr = ESNRTracker()
    iterations, log_every, bc_coef = int(p.iterations), int(p.log_every), float(p.bc_coef)
    epoch, iteration, wall_time, logged = 0, 0, 0.0, 0
    dims = {"kind": KIND, "task_set": ts.name, "task": task, "task_id": task_id, "obs_dim": ts.obs_dim,
            "action_dim": ts.action_dim, "num_tasks": len(ts), "episodic": pre.episodic}

    try:
        run = RunWriter(run_dir)
    except BaseException:
        eval_env.close()
        raise
    try:
        if resumed:
            state = run.load_checkpoint(map_location=agent.device)
            run.load_buffer(state)
            try:
                agent.load_state_dict(state["agent"])
            except (RuntimeError, ValueError, KeyError) as e:
                raise UserError(f"{run.latest_checkpoint} does not fit this config ({str(e).splitlines()[0][:160]}); "
                                f"resume with the run's own config, or start a new run") from None
            epoch, iteration, wall_time = int(state["epoch"]), int(state["iteration"]), float(state["wall_time"])
            set_rng_state(state["rng"], gen)
            esnr.load_state_dict(state["esnr"])
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
            pre_hash = RunDir(pre.path).config_hash
            atomic_write_text(run.path / PRETRAINED, json.dumps({
                "run": str(pre.path.resolve()), "alg": pre.config["alg"]["name"],
                "config_hash": pre_hash.read_text().strip() if pre_hash.is_file() else None,
                "iteration": int(pre.checkpoint["iteration"]), "epoch": int(pre.checkpoint["epoch"])}, indent=2) + "\n")

        def checkpoint() -> None:
            run.save_checkpoint({"agent": agent.state_dict(), "epoch": epoch, "iteration": iteration, "env_steps": 0,
                                 "wall_time": wall_time, "rng": rng_state(gen), "esnr": esnr.state_dict(),
                                 "dims": dims}, {})

        def evaluate() -> dict[str, float]:
            result = agent.eval(eval_env, int(p.eval_episodes), seed=int(cfg.seed) + 10_000 + iteration, task=task_id)
            return {**result, "eval_score": normalised_score(task, result)}

        def start_states(generator: torch.Generator) -> torch.Tensor:
            return data.start_states(task_id, int(cfg.alg.actor_batch_size), H, generator).to(agent.device)

        def update_policy() -> dict[str, float]:
            if not bc_coef:
                return agent.update_policy(start_states(gen), task_id)
            obs0, action0 = data.start_states(task_id, int(cfg.alg.actor_batch_size), H, gen, with_actions=True)
            return agent.update_policy(obs0.to(agent.device), task_id, action0.to(agent.device), bc_coef)

        wandb = open_wandb(run.path, cfg, logged, {"eval_score": "max", "eval_return": "max", "esnr_db": "mean"})
        # epochs of log_every iterations (the last may be shorter), counted from where a resume starts
        epochs = epoch + total_epochs(max(iterations - iteration, 0), log_every)
        monitor = IterationMonitor("policy", epochs, epoch, mode=cfg.monitor.progress,
                                   print_every_s=float(cfg.monitor.print_every_s), ema=float(cfg.monitor.ema),
                                   stream=monitor_stream, echo=log)
        n_params = sum(x.numel() for x in agent.wm.parameters())
        log("\n".join(filter(None, [
            f"train-policy: {cfg.alg.name} on {task} (task {task_id} of {ts.name}, action dims "
            f"{ts.action_dims[task_id]} of {ts.action_dim}), seed {cfg.seed}, device {cfg.device}; {iterations} "
            f"iterations of 1 actor update + {cfg.alg.critic_iterations}x{cfg.alg.critic_batches} critic minibatches"
            + ("; world model fine-tuned" if p.fine_tune else "; world model frozen")
            + (f"; behaviour term, bc_coef {bc_coef:g}" if bc_coef else ""),
            f"  pretrained {pre.path} (iteration {int(pre.checkpoint['iteration'])}): {agent.wm.kind}, "
            f"{parity_line(cfg.alg, ts, n_params, pre.episodic)}",
            flow_line(cfg.alg.world_model),
            f"  start states: {data.num_episodes} episodes of {task} ({data.num_transitions} transitions); eval: "
            f"{p.eval_episodes} episodes every {p.eval_every} iterations in the real env, score = return / 1000",
            f"  run dir {run.path}; {wandb.describe()}" + (f"; resumed at iteration {iteration}" if resumed else "")])))

        start, exit_code = time.perf_counter() - wall_time, 1
        earlier = [r for r in run.records() if "eval_return" in r]
        last: dict = earlier[-1] if earlier else {}
        with StopSignals() as stop:
            try:
                if epoch == 0:  # the untrained policy: where the learning curve starts
                    last = {"epoch": 0, "iteration": 0, "env_steps": 0, "wall_time": time.perf_counter() - start,
                            **evaluate()}
                    run.log(last)
                    monitor.write(f"  iteration      0  eval return {last['eval_return']:7.1f}  score "
                                  f"{last['eval_score']:.3f}  (untrained policy)")
                while iteration < iterations:
                    # -- one epoch: `log_every` iterations of 1 actor update + critic minibatches
                    epoch += 1
                    n = min(log_every, iterations - iteration)
                    updates = []
                    for _ in range(n):
                        agent.set_progress(iteration / iterations)
                        wm_metrics = {}
                        if p.fine_tune:
                            b = masked_batch(agent, data, int(cfg.alg.wm_batch_size), gen)
                            wm_metrics = agent.update_world_model(b["obs"], b["action"], b["reward"], b["task"],
                                                                  b["terminated"] if pre.episodic else None)
                        updates.append({**wm_metrics, **update_policy()})
                        iteration += 1
                    record = host_means(updates)
                    bad = sorted(k for k, v in record.items() if not math.isfinite(v))
                    if bad:
                        raise FloatingPointError(f"non-finite {', '.join(bad)} at iteration {iteration}; the last "
                                                 f"good checkpoint is {run.latest_checkpoint}")
                    final = iteration == iterations
                    if crossed(iteration, n, int(p.esnr_every)):
                        g = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + iteration)
                        values = agent.actor_esnr((start_states(g) for _ in range(int(p.esnr_samples))), task_id)
                        record.update(esnr.update({k: values[k] for k in ESNR_KEYS}))
                    if crossed(iteration, n, int(p.eval_every)) or final:
                        record.update(evaluate())
                        monitor.write(f"  iteration {iteration:6d}  eval return {record['eval_return']:7.1f}  score "
                                      f"{record['eval_score']:.3f}  actor {record['actor_loss']:.3f}  critic "
                                      f"{record['critic_loss']:.4f}  ({time.perf_counter() - start:.0f}s)")
                    wall_time = time.perf_counter() - start
                    record = {"epoch": epoch, "iteration": iteration, "env_steps": 0, "wall_time": wall_time,
                              "rss_mib": rss_mib(), **record}
                    run.log(record)
                    extra = (wandb.gradient_histograms({"actor": agent.actor, "critic": agent.critic})
                             if wandb.wants_grad_histograms(epoch) else {})
                    wandb.log({**record, **extra}, step=epoch)
                    monitor.update(epoch, iteration, record)
                    if "eval_return" in record:
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
        eval_env.close()
        run.close()
    log(f"final eval return {last.get('eval_return', float('nan')):.1f} (score {last.get('eval_score', float('nan')):.3f}) "
        f"on {task} after {iteration} iterations, {wall_time:.0f}s; outputs in {run.path}")
    return {"eval_return": last.get("eval_return", float("nan")), "eval_score": last.get("eval_score", float("nan")),
            "iterations": iteration, "epochs": epoch, "wall_time": wall_time}

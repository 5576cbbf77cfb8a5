"""Single-task online PWM training: seed steps with random actions, world-model pretraining,
then per epoch collect → world-model updates → actor/critic update → (ESNR, eval, checkpoint).
Progress goes to a `TrainingMonitor`, every record to metrics.jsonl and W&B."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from flowpwm.algorithms.pwm import PWM
from flowpwm.config import UserError
from flowpwm.data.buffer import ReplayBuffer
from flowpwm.envs import make_env
from flowpwm.esnr import ESNRTracker
from flowpwm.monitoring import TrainingMonitor, WandBLogger
from flowpwm.perf import host_means
from flowpwm.reproducibility import ExperimentConfig, rng_state, set_rng_state, set_seed, write_run_metadata
from flowpwm.rundir import RunDir, RunWriter, damaged_note
from flowpwm.schema import check_config
from flowpwm.training.header import run_header
from flowpwm.training.preemption import EXIT_REQUEUE, Preempted, StopSignals
from flowpwm.training.resume import describe_changes, history_entry, resolve_run_dir, resume_changes

ESNR_KEYS = ("esnr", "esnr_db", "esnr_param", "esnr_param_db")


def rss_mib() -> float:
    """Resident memory of this process now (Linux), else its peak (ru_maxrss)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resolve_episodic(setting, env) -> bool:
    """`alg.episodic`: auto = the task can end an episode before its time limit (a fall)."""
    return bool(env.can_terminate) if str(setting) == "auto" else str(setting).lower() == "true"


class OnlineTrainer:
    def __init__(self, cfg: DictConfig, run_dir: Path | str, log=print, monitor_stream=None):
        """Everything that can be refused (the run dir, a resume's config changes, the task) is
        checked before the run dir is locked and written."""
        self.cfg, self.log_fn, self.monitor_stream = cfg, log, monitor_stream
        check_config(cfg)
        if cfg.train.threads:
            torch.set_num_threads(int(cfg.train.threads))
        run_dir, self.resumed = resolve_run_dir(cfg, run_dir, log)
        changes = resume_changes(RunDir(run_dir), cfg) if self.resumed else {}
        set_seed(int(cfg.seed), deterministic=bool(cfg.get("deterministic", False)))
        self.env = make_env(cfg.env.task, int(cfg.env.num_envs), seed=cfg.seed)
        self.eval_env = make_env(cfg.env.task, min(int(cfg.train.eval_episodes), 8), seed=cfg.seed + 10_000)
        self.episodic = resolve_episodic(cfg.alg.episodic, self.env)
        self.agent = PWM(cfg.alg, self.env.obs_dim, self.env.action_dim, cfg.device, episodic=self.episodic,
                         perf=cfg.get("perf"))
        self.buffer = ReplayBuffer(int(cfg.train.buffer_size), self.env.num_envs, self.env.obs_dim,
                                   self.env.action_dim, device=cfg.device)
        self.sample_gen = torch.Generator().manual_seed(cfg.seed)
        self.esnr = ESNRTracker()
        self.epoch, self.env_steps, self.wall_time, self.logged_epochs = 0, 0, 0.0, 0
        steps_per_epoch = int(cfg.train.steps_per_epoch) * self.env.num_envs
        learn_steps = max(int(cfg.train.env_steps) - int(cfg.train.seed_steps), 0)
        self.total_epochs = math.ceil(learn_steps / steps_per_epoch)
        try:
            self.run = RunWriter(run_dir)  # one writer per run dir: a second one stops here
        except BaseException:
            self.close_envs()
            raise
        try:
            self.start_or_restore(changes)
        except BaseException:
            self.close()
            raise
        # A resumed run starts new episodes (env state is not checkpointed): other seeds than at the start.
        self.obs = self.env.reset(seed=int(cfg.seed) + 1_000_003 * self.epoch)

    def start_or_restore(self, changes: dict) -> None:
        if not self.resumed:
            if self.run.has_checkpoint():  # another run finished here since resolve_run_dir looked
                raise UserError(f"{self.run.path} already holds a run ({self.run.latest_checkpoint}); continue it "
                                f"with resume=auto, or start a new one in another hydra.run.dir")
            # a job that died before its first checkpoint and is run again starts its metrics (and
            # config history) over
            self.logged_epochs, _ = self.run.truncate_metrics(-1)
            self.run.history.unlink(missing_ok=True)
            write_run_metadata(self.run.path, self.cfg)
            return
        self.restore()
        self.run.append_history(history_entry(changes, self.epoch, self.env_steps))
        self.log_fn(f"resume: continuing {self.run.path} at epoch {self.epoch} ({self.env_steps} env steps); "
                    f"{describe_changes(changes)}")

    def close_envs(self) -> None:
        self.env.close()
        self.eval_env.close()

    def close(self) -> None:
        """Close the envs and give up the run dir."""
        self.close_envs()
        if hasattr(self, "run"):
            self.run.close()

    # -- data ---------------------------------------------------------------------------------
    def collect(self, steps: int, random_actions: bool = False) -> float:
        """Step every env `steps` times into the buffer; returns the mean env reward per step
        collected (the reward density of the new data: how well the policy explores)."""
        total = 0.0
        for _ in range(steps):
            if random_actions:
                action = torch.rand(self.env.num_envs, self.env.action_dim) * 2 - 1
            else:
                action = self.agent.act(self.obs).cpu()
            next_obs, reward, terminated, truncated, final_obs = self.env.step(action)
            if terminated.any() and not self.episodic:
                raise UserError(f"{self.cfg.env.task} ended an episode by termination (not a time limit) but "
                                f"alg.episodic={str(self.cfg.alg.episodic).lower()}: the world model would not learn it; "
                                f"use alg.episodic=auto or true")
            self.buffer.add(self.obs, action, reward, final_obs, terminated, truncated)
            self.obs = next_obs
            self.env_steps += self.env.num_envs
            total += float(reward.sum())
        return total / max(steps * self.env.num_envs, 1)

    def sample(self, batch_size: int, generator=None, through_terminal: bool = False):
        b = self.buffer.sample(batch_size, self.agent.horizon, generator=generator or self.sample_gen,
                               through_terminal=through_terminal)
        return b["obs"], b["action"], b["reward"], b["terminated"], b["mask"]

    def update_world_model(self, iterations: int) -> dict[str, float]:
        """Episodic tasks learn from slices that run into a termination at any step (the
        steps after it masked), so the termination head sees terminal transitions at every
        position, not only at a slice's last step (one slice in an episode's length)."""
        batch, episodic = int(self.cfg.alg.wm_batch_size), self.episodic

        def update(obs, action, reward, terminated, mask):
            if not episodic:
                return self.agent.update_world_model(obs, action, reward)
            return self.agent.update_world_model(obs, action, reward, terminated=terminated, mask=mask)

        return host_means(update(*self.sample(batch, through_terminal=episodic)) for _ in range(iterations))

    def update_policy(self, iterations: int) -> dict[str, float]:
        """Actor + critic updates, each from fresh real start states."""
        batch = int(self.cfg.alg.actor_batch_size)
        return host_means(self.agent.update_policy(self.sample(batch)[0][0]) for _ in range(iterations))

    def measure_esnr(self) -> dict[str, float]:
        """ESNR of the actor gradient from M independent micro-batches of start states, same
        parameters. Its own generator and a forked RNG: training's random stream is untouched."""
        start, batch = time.perf_counter(), int(self.cfg.alg.actor_batch_size)
        gen = torch.Generator().manual_seed(int(self.cfg.seed) * 1_000_003 + self.epoch)
        values = self.agent.actor_esnr(self.sample(batch, gen)[0][0] for _ in range(int(self.cfg.train.esnr_samples)))
        out = self.esnr.update({k: values[k] for k in ESNR_KEYS})
        out["esnr_time"] = time.perf_counter() - start
        return out

    # -- loop ---------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        return self.agent.eval(self.eval_env, int(self.cfg.train.eval_episodes), seed=self.cfg.seed + 10_000 + self.epoch)

    def checkpoint(self) -> Path:
        dims = {"obs_dim": self.env.obs_dim, "action_dim": self.env.action_dim, "num_envs": self.env.num_envs}
        return self.run.save_checkpoint(
            {"agent": self.agent.state_dict(), "epoch": self.epoch, "env_steps": self.env_steps,
             "wall_time": self.wall_time, "rng": rng_state(self.sample_gen), "esnr": self.esnr.state_dict(),
             "dims": dims},
            self.buffer.state_dict())

    def restore(self) -> None:
        """Continue from the run's checkpoint: state, counters and RNGs; the metrics file is cut
        back to the checkpoint's epoch so no epoch appears twice."""
        state = self.run.load_checkpoint(map_location=self.agent.device)
        buffer = self.run.load_buffer(state, map_location="cpu")
        try:
            self.agent.load_state_dict(state["agent"])
            self.buffer.load_state_dict(buffer)
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"{self.run.latest_checkpoint} does not fit this config ({str(e).splitlines()[0][:160]}); "
                            f"resume with the run's own config, or start a new run") from None
        self.buffer.end_episodes()
        self.epoch, self.env_steps, self.wall_time = int(state["epoch"]), int(state["env_steps"]), float(state["wall_time"])
        set_rng_state(state["rng"], self.sample_gen)
        self.esnr.load_state_dict(state["esnr"])
        metrics = self.run.metrics()
        if metrics.damaged:
            self.log_fn(f"resume: {damaged_note(self.run.metrics_path, metrics.damaged, metrics.lines)}; they are "
                        f"dropped")
        self.logged_epochs, _ = self.run.truncate_metrics(self.epoch)

    def open_wandb(self) -> WandBLogger:
        w = self.cfg.wandb
        logger = WandBLogger(self.run.path, ExperimentConfig(self.cfg).to_dict(), mode=w.mode, project=w.project,
                             entity=w.entity, group=w.group, name=w.name, tags=list(w.tags),
                             grad_hist_every=int(w.grad_hist_every))
        logger.skip_to(self.logged_epochs)
        logger.add_metric("eval_return", summary="max")  # the run table shows the best eval
        logger.add_metric("esnr_db", summary="mean")
        return logger

    def train(self) -> dict[str, float]:
        cfg = self.cfg
        wandb = self.open_wandb()
        monitor = TrainingMonitor(self.total_epochs, self.epoch, mode=cfg.monitor.progress,
                                  print_every_s=float(cfg.monitor.print_every_s), ema=float(cfg.monitor.ema),
                                  stream=self.monitor_stream, echo=self.log_fn)
        self.log_fn(run_header(self, wandb.describe()))
        start = time.perf_counter() - self.wall_time
        # A resumed run reports its earlier evals (the untrained one, and the last if nothing is left).
        earlier = [r for r in self.run.records() if "eval_return" in r]
        untrained = next((r["eval_return"] for r in earlier if r["epoch"] == 0), float("nan"))
        last: dict[str, float] = next((r for r in reversed(earlier) if r["epoch"] > 0), {})
        exit_code = 1
        with StopSignals() as stop:  # SIGUSR1/SIGTERM/^C: finish the epoch, checkpoint, exit
            try:
                if self.epoch == 0:
                    untrained = self.seed_phase(start, monitor)
                while self.epoch < self.total_epochs:
                    last = self.train_epoch(start, monitor, wandb) or last
                    if stop.received and self.epoch < self.total_epochs:
                        self.checkpoint()
                        wandb.mark_preempting()
                        exit_code = EXIT_REQUEUE
                        stop.forward()
                        raise Preempted(f"{stop.received} at epoch {self.epoch}/{self.total_epochs} ({self.env_steps} "
                                        f"env steps): checkpoint written to {self.run.latest_checkpoint}; "
                                        f"continue with resume=auto in the same run dir")
                exit_code = 0
            finally:
                monitor.close()
                wandb.finish(exit_code=exit_code)
        return {"eval_return": last.get("eval_return", float("nan")), "untrained_return": untrained,
                "env_steps": self.env_steps, "epochs": self.epoch, "wall_time": self.wall_time}

    def seed_phase(self, start: float, monitor: TrainingMonitor) -> float:
        """Random-action data, world-model pretraining, and the untrained policy's return (the
        point the learning curve starts from, logged as epoch 0), which it returns."""
        cfg = self.cfg
        seed_steps = math.ceil(int(cfg.train.seed_steps) / self.env.num_envs)
        seed_reward = self.collect(max(seed_steps, self.agent.horizon + 1), random_actions=True)
        pre = self.update_world_model(int(cfg.train.pretrain_iterations))  # {} for 0 iterations
        initial = self.evaluate()
        monitor.write(f"  epoch     0  env steps {self.env_steps:7d}  eval return {initial['eval_return']:7.1f}  "
                      f"(untrained policy)")
        self.run.log({"epoch": 0, "env_steps": self.env_steps, "wall_time": time.perf_counter() - start,
                      "collect_reward": seed_reward, **initial, **{f"pretrain_{k}": v for k, v in pre.items()}})
        return initial["eval_return"]

    def train_epoch(self, start: float, monitor: TrainingMonitor, wandb: WandBLogger) -> dict[str, float] | None:
        """One epoch; returns its record when it evaluated."""
        cfg = self.cfg
        self.epoch += 1
        epoch_start, steps_before = time.perf_counter(), self.env_steps
        self.agent.set_progress((self.epoch - 1) / self.total_epochs)
        self.agent.set_env_steps(self.env_steps)
        collect_reward = self.collect(int(cfg.train.steps_per_epoch))
        record = self.update_world_model(int(cfg.alg.wm_iterations))
        record["collect_reward"] = collect_reward
        record.update(self.update_policy(int(cfg.alg.policy_iterations)))
        record["fps"] = (self.env_steps - steps_before) / max(time.perf_counter() - epoch_start, 1e-9)
        bad = sorted(k for k, v in record.items() if not math.isfinite(v))
        if bad:
            raise FloatingPointError(f"non-finite {', '.join(bad)} at epoch {self.epoch} ({self.env_steps} env "
                                     f"steps); the last good checkpoint is {self.run.latest_checkpoint}")
        every = int(cfg.train.esnr_every)
        if every > 0 and self.epoch % every == 0:
            record.update(self.measure_esnr())
        final = self.epoch == self.total_epochs
        evaluated = self.epoch % int(cfg.train.eval_every) == 0 or final
        if evaluated:
            record.update(self.evaluate())
            monitor.write(f"  epoch {self.epoch:5d}  env steps {self.env_steps:7d}  eval return "
                          f"{record['eval_return']:7.1f}  length {record['eval_length']:5.0f}  wm {record['wm_loss']:.4f}  "
                          f"actor {record['actor_loss']:.3f}  ({time.perf_counter() - start:.0f}s)")
        self.wall_time = time.perf_counter() - start
        record = {"epoch": self.epoch, "env_steps": self.env_steps, "wall_time": self.wall_time,
                  "rss_mib": rss_mib(), **record}
        self.run.log(record)
        extra = {}
        if wandb.wants_grad_histograms(self.epoch):
            extra = wandb.gradient_histograms({"actor": self.agent.actor, "critic": self.agent.critic,
                                               "world_model": self.agent.wm})
        wandb.log({**record, **extra}, step=self.epoch)
        monitor.update(self.epoch, self.env_steps, record)
        if self.epoch % int(cfg.train.checkpoint_every) == 0 or final:
            self.checkpoint()
        return record if evaluated else None


def train(cfg: DictConfig, run_dir: Path | str, log=print, monitor_stream=None) -> dict[str, float]:
    trainer = OnlineTrainer(cfg, run_dir, log, monitor_stream)
    try:
        try:
            summary = trainer.train()
        finally:
            trainer.close_envs()
        if cfg.train.plots:
            from flowpwm.visualization import plot_run_quietly

            plot_run_quietly(trainer.run.path, log=log)
    finally:
        trainer.run.close()
    log(f"final eval return {summary['eval_return']:.1f} after {summary['env_steps']} env steps (untrained "
        f"policy: {summary['untrained_return']:.1f}), {summary['wall_time']:.0f}s; outputs in {trainer.run.path}")
    return summary

"""Single-task online PWM training: seed steps with random actions, world-model pretraining,
then per epoch collect → world-model updates → actor/critic update → (eval, checkpoint)."""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from flowpwm.algorithms.pwm import PWM
from flowpwm.data.buffer import ReplayBuffer
from flowpwm.envs import make_env
from flowpwm.training.rundir import RunDir


def rss_mib() -> float:
    """Resident memory of this process now (Linux), else its peak (ru_maxrss)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def averaged(updates) -> dict[str, float]:
    """Mean of each metric over several updates' metric dicts."""
    sums, n = {}, 0
    for metrics in updates:
        n += 1
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v
    return {k: v / n for k, v in sums.items()}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class OnlineTrainer:
    def __init__(self, cfg: DictConfig, run_dir: Path | str, log=print):
        self.cfg, self.log_fn = cfg, log
        if cfg.train.threads:
            torch.set_num_threads(int(cfg.train.threads))
        seed_everything(cfg.seed)
        # Bad task or config names fail here, before anything is written.
        self.env = make_env(cfg.env.task, int(cfg.env.num_envs), seed=cfg.seed)
        self.eval_env = make_env(cfg.env.task, min(int(cfg.train.eval_episodes), 8), seed=cfg.seed + 10_000)
        self.agent = PWM(cfg.alg, self.env.obs_dim, self.env.action_dim, cfg.device)
        self.run = RunDir(run_dir)
        self.run.save_config(cfg)
        self.buffer = ReplayBuffer(int(cfg.train.buffer_size), self.env.num_envs, self.env.obs_dim,
                                   self.env.action_dim, device=cfg.device)
        self.sample_gen = torch.Generator().manual_seed(cfg.seed)
        self.epoch, self.env_steps, self.wall_time = 0, 0, 0.0
        steps_per_epoch = int(cfg.train.steps_per_epoch) * self.env.num_envs
        learn_steps = max(int(cfg.train.env_steps) - int(cfg.train.seed_steps), 0)
        self.total_epochs = math.ceil(learn_steps / steps_per_epoch)
        self.obs = self.env.reset(seed=cfg.seed)

    # -- data ---------------------------------------------------------------------------------
    def collect(self, steps: int, random_actions: bool = False) -> None:
        for _ in range(steps):
            if random_actions:
                action = torch.rand(self.env.num_envs, self.env.action_dim) * 2 - 1
            else:
                action = self.agent.act(self.obs).cpu()
            next_obs, reward, terminated, truncated, final_obs = self.env.step(action)
            self.buffer.add(self.obs, action, reward, final_obs, terminated, truncated)
            self.obs = next_obs
            self.env_steps += self.env.num_envs

    def sample(self, batch_size: int):
        b = self.buffer.sample(batch_size, self.agent.horizon, generator=self.sample_gen)
        return b["obs"], b["action"], b["reward"]

    def update_world_model(self, iterations: int) -> dict[str, float]:
        batch = int(self.cfg.alg.wm_batch_size)
        return averaged(self.agent.update_world_model(*self.sample(batch)) for _ in range(iterations))

    def update_policy(self, iterations: int) -> dict[str, float]:
        """Actor + critic updates, each from fresh real start states."""
        batch = int(self.cfg.alg.actor_batch_size)
        return averaged(self.agent.update_policy(self.sample(batch)[0][0]) for _ in range(iterations))

    # -- loop ---------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        return self.agent.eval(self.eval_env, int(self.cfg.train.eval_episodes), seed=self.cfg.seed + 10_000 + self.epoch)

    def checkpoint(self) -> Path:
        return self.run.save_checkpoint({
            "agent": self.agent.state_dict(), "buffer": self.buffer.state_dict(),
            "epoch": self.epoch, "env_steps": self.env_steps, "wall_time": self.wall_time,
            "sample_gen": self.sample_gen.get_state(), "torch_rng": torch.get_rng_state(),
        })

    def train(self) -> dict[str, float]:
        cfg, start = self.cfg, time.perf_counter()
        self.log_fn(f"train: {cfg.alg.name} ({self.agent.wm.kind}) on {cfg.env.task}, seed {cfg.seed}, "
                    f"{self.total_epochs} epochs after {cfg.train.seed_steps} seed steps; run dir {self.run.path}")
        seed_steps = math.ceil(int(cfg.train.seed_steps) / self.env.num_envs)
        self.collect(max(seed_steps, self.agent.horizon + 1), random_actions=True)
        pre = self.update_world_model(int(cfg.train.pretrain_iterations))  # {} for 0 iterations
        self.run.log({"epoch": 0, "env_steps": self.env_steps, "wall_time": time.perf_counter() - start,
                      **{f"pretrain_{k}": v for k, v in pre.items()}})
        last: dict[str, float] = {}
        while self.epoch < self.total_epochs:
            self.epoch += 1
            self.agent.set_progress((self.epoch - 1) / self.total_epochs)
            self.collect(int(cfg.train.steps_per_epoch))
            record = self.update_world_model(int(cfg.alg.wm_iterations))
            record.update(self.update_policy(int(cfg.alg.policy_iterations)))
            bad = sorted(k for k, v in record.items() if not math.isfinite(v))
            if bad:
                raise FloatingPointError(f"non-finite {', '.join(bad)} at epoch {self.epoch} ({self.env_steps} env "
                                         f"steps); the last good checkpoint is {self.run.latest_checkpoint}")
            final = self.epoch == self.total_epochs
            if self.epoch % int(cfg.train.eval_every) == 0 or final:
                record.update(self.evaluate())
                self.log_fn(f"  epoch {self.epoch:5d}  env steps {self.env_steps:7d}  eval return "
                            f"{record['eval_return']:7.1f}  wm {record['wm_loss']:.4f}  "
                            f"actor {record['actor_loss']:.3f}  ({time.perf_counter() - start:.0f}s)")
                last = record
            self.wall_time = time.perf_counter() - start
            self.run.log({"epoch": self.epoch, "env_steps": self.env_steps, "wall_time": self.wall_time,
                          "rss_mib": rss_mib(), **record})
            if self.epoch % int(cfg.train.checkpoint_every) == 0 or final:
                self.checkpoint()
        return {"eval_return": last.get("eval_return", float("nan")), "env_steps": self.env_steps,
                "epochs": self.epoch, "wall_time": self.wall_time}


def train(cfg: DictConfig, run_dir: Path | str, log=print) -> dict[str, float]:
    trainer = OnlineTrainer(cfg, run_dir, log)
    try:
        summary = trainer.train()
    finally:
        trainer.env.close()
        trainer.eval_env.close()
    log(f"final eval return {summary['eval_return']:.1f} after {summary['env_steps']} env steps "
        f"({summary['wall_time']:.0f}s); outputs in {trainer.run.path}")
    return summary

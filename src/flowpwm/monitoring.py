"""What a researcher watches during a run: `TrainingMonitor` (progress, ETA, smoothed metrics)
and `WandBLogger` (the run's one Weights & Biases run). Both are driven by the training loop."""

from __future__ import annotations

import math
import os
import secrets
import string
import sys
import time
from pathlib import Path
from typing import IO

import numpy as np
import torch.nn as nn

from flowpwm.ema import ema_update
from flowpwm.rundir import WANDB_RUN_ID

# Metrics shown in the progress postfix, with their short labels.
SHOWN = {"eval_return": "eval", "eval_length": "len", "actor_loss": "actor", "critic_loss": "critic", "wm_loss": "wm", "fps": "fps"}
PROGRESS_MODES = ("auto", "bar", "lines", "off")
WANDB_MODES = ("online", "offline", "disabled", "auto")


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


class TrainingMonitor:
    """Progress over epochs with ETA and EMA-smoothed metrics.

    mode: "bar" (tqdm, redrawn), "lines" (one plain line every `print_every_s` seconds: Slurm
    logs and CI, where a redrawn bar is unreadable), "off", or "auto" (bar on a terminal).
    The smoothed values are `ema_update` over the values the trainer logs, nothing else."""

    def __init__(self, total_epochs: int, initial_epoch: int = 0, mode: str = "auto", print_every_s: float = 30.0,
                 ema: float = 0.9, stream: IO[str] | None = None, echo=print, clock=time.monotonic):
        if mode not in PROGRESS_MODES:
            raise ValueError(f"monitor mode {mode!r}: use one of {', '.join(PROGRESS_MODES)}")
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "lines"
        self.mode, self.total, self.epoch = mode, total_epochs, initial_epoch
        self.alpha, self.print_every_s, self.clock, self.echo = ema, print_every_s, clock, echo
        self.smoothed: dict[str, float] = {}
        self._start, self._start_epoch, self._last_print = clock(), initial_epoch, -math.inf
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total_epochs, initial=initial_epoch, unit="epoch", file=self.stream,
                             dynamic_ncols=True, desc="train")

    def eta_s(self) -> float:
        done = self.epoch - self._start_epoch
        if done <= 0:
            return math.inf
        return (self.clock() - self._start) / done * (self.total - self.epoch)

    def postfix(self) -> str:
        return "  ".join(f"{label} {self.smoothed[k]:.4g}" for k, label in SHOWN.items() if k in self.smoothed)

    def update(self, epoch: int, env_steps: int, metrics: dict[str, float]) -> None:
        for key in SHOWN:
            value = metrics.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.smoothed[key] = ema_update(self.smoothed.get(key), float(value), self.alpha)
        advanced, self.epoch = epoch - self.epoch, epoch
        if self._bar is not None:
            self._bar.set_postfix_str(self.postfix(), refresh=False)
            self._bar.update(advanced)
        elif self.mode == "lines":
            now = self.clock()
            if now - self._last_print >= self.print_every_s or epoch >= self.total:
                self._last_print = now
                print(self.line(env_steps), file=self.stream, flush=True)

    def line(self, env_steps: int) -> str:
        pct = 100.0 * self.epoch / max(self.total, 1)
        return (f"[train] epoch {self.epoch}/{self.total} ({pct:.0f}%)  env steps {env_steps}  {self.postfix()}  "
                f"elapsed {format_duration(self.clock() - self._start)}  eta {format_duration(self.eta_s())}")

    def write(self, message: str) -> None:
        """Print a message (through `echo`) without breaking the bar."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            self.echo(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def new_run_id() -> str:
    """Eight lowercase letters and digits, W&B's own id format."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def wandb_api_key_configured() -> bool:
    """An API key in the environment or in ~/.netrc (where `wandb login` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if wandb_api_key_configured() else "offline"
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb.mode={mode!r}: use one of {', '.join(WANDB_MODES)}")
    return mode


class WandBLogger:
    """The run's single `wandb.init`, owned here.

    The run id is kept in `run_dir/wandb_run_id.txt`, so a run restarted from its checkpoint
    continues the same W&B run. Metrics are plotted against `env_steps` (`define_metric`);
    the W&B step is the epoch, which only grows: epochs a resumed run already sent are skipped.
    The config passed in must already be redacted: the API key only ever comes from the
    environment or ~/.netrc."""

    ID_FILE = WANDB_RUN_ID

    def __init__(self, run_dir: Path | str, config: dict, mode: str = "auto", project: str = "flowpwm",
                 entity: str | None = None, group: str | None = None, name: str | None = None,
                 tags: list[str] | tuple[str, ...] = (), grad_hist_every: int = 200):
        self.mode = resolve_wandb_mode(mode)
        self.grad_hist_every = int(grad_hist_every)
        self.run, self.last_step = None, 0
        if self.mode == "disabled":
            return
        import wandb

        from flowpwm.fileio import atomic_write_text

        run_dir = Path(run_dir)
        if not (os.environ.get("HOME") or os.environ.get("XDG_CACHE_HOME")):
            # wandb-core without a home dir logs to stderr and caches in the cwd: keep it in the run.
            for var, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"), ("WANDB_CONFIG_DIR", "config")):
                os.environ.setdefault(var, str(run_dir / "wandb" / sub))
        id_file = run_dir / self.ID_FILE
        resuming = id_file.exists()
        run_id = id_file.read_text().strip() if resuming else new_run_id()
        if not resuming:
            atomic_write_text(id_file, run_id + "\n")
        self._wandb = wandb
        self.run = wandb.init(project=project, entity=entity, group=group, name=name or run_dir.name,
                              tags=list(tags), config=config, dir=str(run_dir), id=run_id, resume="allow",
                              mode=self.mode, settings=wandb.Settings(silent=True, console="off"))
        self.run.define_metric("env_steps")
        self.run.define_metric("*", step_metric="env_steps")
        self.id, self.resumed = run_id, resuming

    @property
    def enabled(self) -> bool:
        return self.run is not None

    def describe(self) -> str:
        if not self.enabled:
            return "wandb: disabled"
        how = "resumed" if self.resumed else "new"
        sync = f"; upload with `wandb sync {self.run.dir.rsplit('/files', 1)[0]}`" if self.mode == "offline" else ""
        return f"wandb: {self.mode} run {self.id} ({how}){sync}"

    def add_metric(self, name: str, summary: str | None = None) -> None:
        """A custom metric, plotted against env steps; `summary` = min | max | mean | last."""
        if self.enabled:
            self.run.define_metric(name, step_metric="env_steps", summary=summary)

    def log(self, metrics: dict, step: int) -> bool:
        """Log at W&B step `step` (the epoch); returns False for a step already sent."""
        if not self.enabled or step <= self.last_step:
            return False
        self.run.log(metrics, step=step)
        self.last_step = step
        return True

    def skip_to(self, step: int) -> None:
        """Steps up to `step` were sent before a restart: don't send them again."""
        self.last_step = max(self.last_step, step)

    def wants_grad_histograms(self, epoch: int) -> bool:
        return self.enabled and self.grad_hist_every > 0 and epoch % self.grad_hist_every == 0

    def gradient_histograms(self, modules: dict[str, nn.Module], bins: int = 64) -> dict:
        """One histogram per module of the gradients its parameters hold now (the last update's)."""
        out = {}
        for name, module in modules.items():
            grads = [p.grad.detach().flatten().float().cpu() for p in module.parameters() if p.grad is not None]
            if grads:
                values = np.concatenate([g.numpy() for g in grads])
                values = values[np.isfinite(values)]
                out[f"gradients/{name}"] = self._wandb.Histogram(np_histogram=np.histogram(values, bins=bins))
        return out

    def mark_preempting(self) -> None:
        """Tell W&B the run will be requeued and resumed, not that it crashed."""
        if self.enabled:
            self.run.mark_preempting()

    def finish(self, exit_code: int = 0) -> None:
        if self.enabled:
            self.run.finish(exit_code=exit_code)
            self.run = None
            # finish() can return before wandb-core has written the run's files (seen under load):
            # teardown waits for the service, so a job that ends next has complete offline runs.
            self._wandb.teardown()

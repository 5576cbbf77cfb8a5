"""The run directory: the one module that knows its layout (file names, checkpoint keys, the
metrics file and its damaged lines, the writer's lock). Training writes through `RunWriter`;
`diagnose`, `compare`, `results` and `plot` read through `RunDir`. Importing it does not
import torch (analysis stays torch-free); checkpoints import it when they are read or written.

    RUN/config.yaml             the config the run started with (resolved, secrets removed);
                                never rewritten, a resume appends its changes to the history
    RUN/config_hash.txt         SHA256 of that config
    RUN/provenance.json         git commit, package versions, host and time of the first start
    RUN/config_history.jsonl    one JSON line per resume: time, host, commit, and every key
                                that changed (old -> new)
    RUN/metrics.jsonl           one JSON line per epoch (epoch 0: the untrained policy)
    RUN/checkpoints/latest.pt   agent, counters, RNG states, format version, and the name of
                                its replay-buffer file (tensors and plain values only)
    RUN/checkpoints/buffer-eNNNNNN.pt   the replay buffer's filled rows at epoch NNNNNN
    RUN/plots/  RUN/wandb/  RUN/wandb_run_id.txt
    RUN/dataset_manifest.json   runs that read a dataset (pretrain, train-policy): sha256 per file
    RUN/pretrained.json         policy runs: the pretraining run (path, config hash, iteration)

Offline runs (`flowpwm pretrain`, `flowpwm train-policy`) count iterations, not env steps: their
checkpoints add `iteration`, `dims["kind"]` ("pretrain" | "policy"), env_steps 0 and an empty
buffer file; their metrics lines carry `epoch` (a block of log_every iterations) and `iteration`.
    RUN/.lock                   held (flock) by the one process writing the run: its PID and host

Files are written to a temporary name and renamed, so none is ever half-written; the buffer
file is written before the checkpoint that names it, so a crash between the two leaves the
previous pair intact.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from flowpwm.config import UserError
from flowpwm.fileio import atomic_open, atomic_write_text, json_text

CONFIG = "config.yaml"
CONFIG_HASH = "config_hash.txt"
PROVENANCE = "provenance.json"
CONFIG_HISTORY = "config_history.jsonl"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
LATEST = "latest.pt"
PLOTS = "plots"
LOCK = ".lock"
WANDB_RUN_ID = "wandb_run_id.txt"
PRETRAINED = "pretrained.json"  # policy runs (`flowpwm train-policy`): the pretraining run they start from
DATASET_MANIFEST = "dataset_manifest.json"  # runs that read a dataset: the sha256 of every file read

CHECKPOINT_FORMAT = 2  # 1: one pickle with numpy RNG state and the whole preallocated buffer
CHECKPOINT_KEYS = ("format", "agent", "epoch", "env_steps", "wall_time", "rng", "esnr", "dims", "buffer_file")
BUFFER_KEYS = ("format", "epoch", "env_steps", "buffer")


def remove_if_empty(run_dir: Path | str) -> None:
    """Remove a run dir that holds nothing (the one Hydra made for a job that then wrote nothing),
    and its empty parents below the working directory (`runs/policy/` Hydra made for it)."""
    cwd, d = Path.cwd().resolve(), Path(run_dir).resolve()
    while d.is_dir() and not any(d.iterdir()):
        d.rmdir()
        d = d.parent
        if d == cwd or cwd not in d.parents:
            break


def buffer_file_name(epoch: int) -> str:
    return f"buffer-e{int(epoch):06d}.pt"


# -- metrics ----------------------------------------------------------------------------------
@dataclass
class Metrics:
    """The records of a metrics file, and the 1-based numbers of lines that are not JSON objects
    (cut short by a kill, or damaged); `damaged_evals` are those that mention eval_return."""

    records: list[dict] = field(default_factory=list)
    damaged: list[int] = field(default_factory=list)
    damaged_evals: list[int] = field(default_factory=list)
    record_lines: list[int] = field(default_factory=list)
    lines: int = 0

    def last_eval_damaged(self) -> int | None:
        """The line of a damaged eval record after the last readable eval, if any: the run's
        final return cannot be read from this file."""
        last_good = max((n for n, r in zip(self.record_lines, self.records) if "eval_return" in r), default=0)
        later = [n for n in self.damaged_evals if n > last_good]
        return later[-1] if later else None


def read_metrics(path: Path | str) -> Metrics:
    path, out = Path(path), Metrics()
    if not path.exists():
        return out
    text = path.read_text(errors="replace").splitlines()
    out.lines = len(text)
    for n, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            out.records.append(record)
            out.record_lines.append(n)
        else:
            out.damaged.append(n)
            if "eval_return" in line:
                out.damaged_evals.append(n)
    return out


def damaged_note(path: Path | str, damaged: list[int], last_line: int) -> str:
    """One line: how many lines of a metrics file were skipped, and which."""
    lines = ", ".join(map(str, damaged[:5])) + (", …" if len(damaged) > 5 else "")
    tail = "; the last line is one of them: the run's final eval may be missing" if last_line in damaged else ""
    return f"{path}: {len(damaged)} damaged line(s) skipped (line {lines}){tail}"


# -- reading a run ----------------------------------------------------------------------------
class RunDir:
    """Paths of one run directory, and readers; creates nothing."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    config = property(lambda self: self.path / CONFIG)
    config_hash = property(lambda self: self.path / CONFIG_HASH)
    provenance = property(lambda self: self.path / PROVENANCE)
    history = property(lambda self: self.path / CONFIG_HISTORY)
    metrics_path = property(lambda self: self.path / METRICS)
    checkpoints = property(lambda self: self.path / CHECKPOINTS)
    latest_checkpoint = property(lambda self: self.path / CHECKPOINTS / LATEST)
    plots = property(lambda self: self.path / PLOTS)
    lock_path = property(lambda self: self.path / LOCK)

    def has_checkpoint(self) -> bool:
        return self.latest_checkpoint.is_file()

    def metrics(self) -> Metrics:
        return read_metrics(self.metrics_path)

    def records(self) -> list[dict]:
        return self.metrics().records

    def read_history(self) -> list[dict]:
        """The resume entries of config_history.jsonl (a damaged line is a UserError: the
        effective config of the run could not be known)."""
        if not self.history.exists():
            return []
        m = read_metrics(self.history)
        if m.damaged:
            raise UserError(f"{self.history}: line {m.damaged[0]} is damaged; repair it (one JSON object per "
                            f"resume) before resuming this run")
        return m.records

    def load_checkpoint(self, path: Path | str | None = None, map_location="cpu") -> dict:
        """The checkpoint (weights only: tensors and plain values), its format checked."""
        path = Path(path) if path is not None else self.latest_checkpoint
        state = safe_load(path, map_location)
        if not isinstance(state, dict) or "format" not in state:
            raise UserError(f"{path} is not a flowpwm checkpoint (no format version); pass a run's "
                            f"checkpoints/{LATEST}, or start a new run")
        if state["format"] != CHECKPOINT_FORMAT:
            raise UserError(f"{path}: checkpoint format {state['format']!r}, this flowpwm reads format "
                            f"{CHECKPOINT_FORMAT}; continue it with the flowpwm that wrote it, or start a new run")
        missing = [k for k in CHECKPOINT_KEYS if k not in state]
        if missing:
            raise UserError(f"{path}: checkpoint lacks {', '.join(missing)} (damaged?); restore it from a copy "
                            f"or start a new run")
        return state

    def load_buffer(self, checkpoint: dict, checkpoint_path: Path | str | None = None, map_location="cpu") -> dict:
        """The replay-buffer state the checkpoint names, checked to belong to it."""
        where = Path(checkpoint_path) if checkpoint_path is not None else self.latest_checkpoint
        path = where.parent / str(checkpoint["buffer_file"])
        if not path.is_file():
            raise UserError(f"{path} is missing (the replay buffer of {where}); without it this checkpoint "
                            f"can be analysed but not resumed or sampled from")
        state = safe_load(path, map_location)
        if not isinstance(state, dict) or any(k not in state for k in BUFFER_KEYS) or \
                (state["epoch"], state["env_steps"]) != (checkpoint["epoch"], checkpoint["env_steps"]):
            raise UserError(f"{path} does not belong to {where} (damaged or from another epoch); restore both "
                            f"from a copy or start a new run")
        return state["buffer"]


def safe_load(path: Path, map_location="cpu"):
    """torch.load with weights_only=True: a file that would import anything beyond tensors and
    plain containers is refused before any of it runs. Every failure is one UserError line."""
    import pickle

    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: pass a run directory that saved a checkpoint") from None
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise UserError(f"{path}: refused to load: it would import {found.group(1)}, which a flowpwm checkpoint "
                            f"(format {CHECKPOINT_FORMAT}) never holds; nothing in it was run. If an older flowpwm "
                            f"wrote it, start a new run; otherwise delete it") from None
        raise UserError(f"{path}: damaged or not a flowpwm checkpoint (weights-only load failed); restore it from "
                        f"a copy or start a new run") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0]
        raise UserError(f"{path}: damaged or cut short ({why[:120] or type(e).__name__}); restore it from a copy "
                        f"or start a new run") from None


# -- writing a run ----------------------------------------------------------------------------
class RunLock:
    """An exclusive flock on RUN/.lock for as long as the run writes; the file names the holder."""

    def __init__(self, path: Path):
        self.path, self.fd = Path(path), None

    def acquire(self) -> "RunLock":
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 500).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"{self.path.parent} is being written by {holder}: one run per directory; wait "
                            f"for it to end, or start this one in another hydra.run.dir") from None
        except OSError as e:
            os.close(fd)
            raise UserError(f"cannot lock {self.path} ({e.strerror}): this filesystem offers no file locks; put "
                            f"runs on one that does (local disk, NFSv4)") from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()} (since {stamp})\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock; the file stays, naming the last writer
            self.fd = None


class RunWriter(RunDir):
    """The one writer of a run directory: creates it, holds its lock until `close()`."""

    def __init__(self, path: Path | str):
        super().__init__(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = RunLock(self.lock_path).acquire()
        self.checkpoints.mkdir(exist_ok=True)

    def close(self) -> None:
        self._lock.release()

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def log(self, record: dict) -> None:
        """Append one JSON line (plain numbers only: never tensors holding a graph)."""
        with open(self.metrics_path, "a") as f:
            f.write(json_text(record) + "\n")

    def truncate_metrics(self, epoch: int) -> tuple[int, int]:
        """Keep only readable records up to `epoch` (a run resumed from that checkpoint redoes
        the rest); returns (the last epoch that had been logged, damaged lines dropped)."""
        m = self.metrics()
        if not self.metrics_path.exists():
            return 0, 0
        last = max((int(r.get("epoch", 0)) for r in m.records), default=0)
        kept = "".join(json_text(r) + "\n" for r in m.records if int(r.get("epoch", 0)) <= epoch)
        atomic_write_text(self.metrics_path, kept)
        return last, len(m.damaged)

    def append_history(self, entry: dict) -> None:
        with open(self.history, "a") as f:
            f.write(json_text(entry) + "\n")

    def save_checkpoint(self, state: dict, buffer_state: dict) -> Path:
        """Write the buffer file, then the checkpoint naming it (both atomic), then drop buffer
        files no checkpoint names."""
        import torch

        name = buffer_file_name(state["epoch"])
        with atomic_open(self.checkpoints / name) as f:
            torch.save({"format": CHECKPOINT_FORMAT, "epoch": state["epoch"], "env_steps": state["env_steps"],
                        "buffer": buffer_state}, f)
        with atomic_open(self.latest_checkpoint) as f:
            torch.save({**state, "format": CHECKPOINT_FORMAT, "buffer_file": name}, f)
        for old in self.checkpoints.glob("buffer-e*.pt"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return self.latest_checkpoint

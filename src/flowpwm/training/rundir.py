"""What a run leaves on disk: resolved config, JSON-lines metrics, checkpoints.
Files are written to a temporary name and renamed, so none is ever half-written."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _json_value(v):
    # NaN/inf are not JSON; keep them visible as strings instead of breaking the file.
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class RunDir:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "checkpoints").mkdir(exist_ok=True)
        self.metrics_path = self.path / "metrics.jsonl"

    def save_config(self, cfg: DictConfig) -> None:
        atomic_write_text(self.path / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    def log(self, record: dict) -> None:
        """Append one JSON line (plain numbers only: never tensors holding a graph)."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps({k: _json_value(v) for k, v in record.items()}) + "\n")

    @property
    def latest_checkpoint(self) -> Path:
        return self.path / "checkpoints" / "latest.pt"

    def save_checkpoint(self, state: dict) -> Path:
        atomic_torch_save(state, self.latest_checkpoint)
        return self.latest_checkpoint

"""What a run leaves on disk: JSON-lines metrics and checkpoints (the config and provenance
are `reproducibility.write_run_metadata`'s).
Files are written to a temporary name and renamed, so none is ever half-written."""

from __future__ import annotations

import json
import math
from pathlib import Path

from flowpwm.fileio import atomic_torch_save, atomic_write_text


def _json_value(v):
    # NaN/inf are not JSON; keep them visible as strings instead of breaking the file.
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def read_records(metrics_path: Path) -> list[dict]:
    """The JSON lines of a metrics file; a line cut short by a kill is skipped."""
    if not metrics_path.exists():
        return []
    out = []
    for line in metrics_path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class RunDir:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "checkpoints").mkdir(exist_ok=True)
        self.metrics_path = self.path / "metrics.jsonl"

    def log(self, record: dict) -> None:
        """Append one JSON line (plain numbers only: never tensors holding a graph)."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps({k: _json_value(v) for k, v in record.items()}) + "\n")

    def records(self) -> list[dict]:
        return read_records(self.metrics_path)

    def truncate_metrics(self, epoch: int) -> int:
        """Keep only records up to `epoch` (a run resumed from that checkpoint redoes the rest);
        returns the last epoch that had been logged before."""
        if not self.metrics_path.exists():
            return 0
        records = self.records()
        last = max((int(r.get("epoch", 0)) for r in records), default=0)
        kept = "".join(json.dumps(r) + "\n" for r in records if int(r.get("epoch", 0)) <= epoch)
        atomic_write_text(self.metrics_path, kept)
        return last

    @property
    def latest_checkpoint(self) -> Path:
        return self.path / "checkpoints" / "latest.pt"

    def save_checkpoint(self, state: dict) -> Path:
        atomic_torch_save(state, self.latest_checkpoint)
        return self.latest_checkpoint

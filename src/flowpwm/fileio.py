"""Atomic file writes: a temp file in the same directory, then os.replace, so a reader (or a
resumed run) never sees a half-written file and a crash never destroys the previous one.

Missing numbers are written one way in every output file: NaN and ±inf become JSON `null`
(metrics.jsonl, diagnose --json, config_history.jsonl) and an empty cell in CSV files
(`finite_or_none` and `csv_cell`); readers treat both as "no value"."""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike):
    """A binary file that replaces `path` only when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    import torch

    with atomic_open(path) as f:
        torch.save(obj, f)
    return Path(path)


def finite_or_none(x):
    """`x` with every non-finite float (NaN, ±inf) replaced by None, through dicts, lists and
    tuples (tuples become lists); numpy scalars become Python numbers."""
    if hasattr(x, "item") and not isinstance(x, (dict, list, tuple)) and getattr(x, "ndim", 1) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_none(v) for v in x]
    return x


def json_text(x, **kwargs) -> str:
    """JSON with non-finite numbers as null (never the non-standard NaN/Infinity tokens)."""
    return json.dumps(finite_or_none(x), allow_nan=False, **kwargs)


def csv_cell(v):
    """A CSV cell: empty for None and non-finite floats."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return v

"""What makes a run reproducible and auditable: seeding, a hashable config snapshot, dataset
checksums and the provenance (code version, library versions) written next to every run."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import random
import re
import socket
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from flowpwm.fileio import atomic_write_bytes
from flowpwm.rundir import RunDir

# ---------------------------------------------------------------------------------------------
# Seeding


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed python `random`, numpy and torch (CPU and every CUDA device).

    Environments are not touched: they are seeded through their own `reset(seed=...)`, and the
    trainer passes this same seed to them.

    deterministic=True also makes torch raise on ops without a deterministic implementation
    (rather than silently differing between runs) and pins cuDNN to deterministic kernels.
    deterministic=False leaves those flags as they are (off by default in a fresh process).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA in current torch; the explicit call below is harmless
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        # cuBLAS matmuls are only deterministic with a fixed workspace; it must be set before the
        # first CUDA call, so call set_seed early. An explicit user setting wins.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The python, numpy and torch (and `generator`'s) RNG states as tensors and plain values,
    so a checkpoint holding them loads with `torch.load(weights_only=True)`."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next}}
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: Mapping[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if generator is not None:
        generator.set_state(state["generator"])


# ---------------------------------------------------------------------------------------------
# Files


def _sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):  # streamed: dataset files can be larger than memory
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Config snapshot

_SECRET_KEY = re.compile(r"^(.*_key|token|password|secret)$", re.IGNORECASE)


def _is_secret(key: Any) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEY.match(key))


def redact(d: Any) -> Any:
    """A copy of `d` without secret keys (`api_key`, `*_key`, `token`, `password`, `secret`,
    any case, at any depth, also inside lists), so they never reach disk, logs or the hash."""
    if isinstance(d, Mapping):
        return {k: redact(v) for k, v in d.items() if not _is_secret(k)}
    if isinstance(d, (list, tuple)):
        return [redact(v) for v in d]
    return copy.deepcopy(d)


def _plain(value: Any, where: str = "") -> Any:
    """Plain JSON/YAML-able containers: DictConfig/ListConfig resolved, tuples as lists, paths as
    strings. Anything else is refused instead of being hashed through an unstable repr."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"config value at {where or '<root>'} has type {type(value).__name__}, which cannot be saved")


def _canonical_json(value: Any) -> str:
    # Sorted keys and fixed separators: the same config in any key order dumps identically.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()  # stands for a key that one of two diffed configs does not have


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of nested dicts; lists (and empty dicts) are leaves compared as whole values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


class ExperimentConfig:
    """A snapshot of a resolved config (DictConfig or dict), secrets removed, with a stable hash.

    The snapshot is taken at construction, so later edits to the source config do not change it.
    """

    def __init__(self, cfg: DictConfig | Mapping[str, Any] | "ExperimentConfig") -> None:
        if isinstance(cfg, ExperimentConfig):
            cfg = cfg.to_dict()
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        if not isinstance(cfg, Mapping):
            raise TypeError(f"ExperimentConfig needs a mapping config, got {type(cfg).__name__}")
        # Redact first, so a secret is dropped before anything can fail on (or print) its value.
        self._data: dict[str, Any] = _plain(redact(cfg))

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    @property
    def hash(self) -> str:
        """SHA256 of the canonical JSON dump. Types matter: 1 and 1.0 hash differently."""
        return hashlib.sha256(_canonical_json(self._data).encode("utf-8")).hexdigest()

    @property
    def short_hash(self) -> str:
        return self.hash[:16]

    def save(self, path: str | os.PathLike) -> Path:
        """Write YAML (JSON when the suffix is .json), atomically; key order is kept for reading."""
        path = Path(path)
        if path.suffix.lower() == ".json":
            text = json.dumps(self._data, indent=2, ensure_ascii=False) + "\n"
        else:
            text = yaml.safe_dump(self._data, sort_keys=False, allow_unicode=True)
        return atomic_write_bytes(path, text.encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ExperimentConfig":
        path = Path(path)
        with open(path, encoding="utf-8") as f:
            data = json.load(f) if path.suffix.lower() == ".json" else yaml.safe_load(f)
        return cls(data if data is not None else {})

    def diff(self, other: "ExperimentConfig | DictConfig | Mapping[str, Any]") -> list[tuple[str, Any, Any]]:
        """(dotted key, this value, other value) for every differing key, sorted by key; a key on one
        side only shows MISSING on the other. Values compare like the hash does (1 != 1.0)."""
        other = other if isinstance(other, ExperimentConfig) else ExperimentConfig(other)
        a, b = _flatten(self._data), _flatten(other._data)
        out = []
        for key in sorted(a.keys() | b.keys()):
            old, new = a.get(key, MISSING), b.get(key, MISSING)
            if old is MISSING or new is MISSING or _canonical_json(old) != _canonical_json(new):
                out.append((key, old, new))
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExperimentConfig) and self.hash == other.hash

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        return f"ExperimentConfig(short_hash={self.short_hash!r})"


def _fmt(value: Any) -> str:
    if value is MISSING:
        return "<missing>"
    try:
        return json.dumps(value, ensure_ascii=False)  # strings quoted, so "1" and 1 stay distinct
    except (TypeError, ValueError):
        return repr(value)


def format_diff(diff: list[tuple[str, Any, Any]]) -> str:
    """One `key: old -> new` line per difference, or 'configs are identical'."""
    if not diff:
        return "configs are identical"
    return "\n".join(f"{key}: {_fmt(old)} -> {_fmt(new)}" for key, old, new in diff)


# ---------------------------------------------------------------------------------------------
# Dataset checksums

MANIFEST_NAME = "MANIFEST.sha256.json"


class DatasetMismatch(ValueError):
    """The files under a dataset root do not match its manifest."""

    def __init__(self, message: str, path: str, reason: str) -> None:
        super().__init__(message)
        self.path = path  # relative posix path of the first mismatching file
        self.reason = reason  # "changed", "missing" or "extra"


class DatasetVerifier:
    """SHA256 manifest of every file under a dataset root, to detect silently changed data."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @property
    def default_manifest(self) -> Path:
        return self.root / MANIFEST_NAME

    def _require_root(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root {self.root} does not exist or is not a directory")

    def _hashes(self, skip: tuple[Path, ...] = ()) -> dict[str, str]:
        self._require_root()
        skip_resolved = {p.resolve() for p in (self.default_manifest, *skip)}
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root):  # does not follow directory symlinks
            dirnames.sort()
            for name in filenames:
                p = Path(dirpath, name)
                if p.is_file() and p.resolve() not in skip_resolved:
                    files.append((p.relative_to(self.root).as_posix(), p))
        return {rel: _sha256_file(p) for rel, p in sorted(files)}

    def compute(self) -> dict[str, str]:
        """Relative posix path -> sha256 hex of every regular file under root, sorted by path."""
        return self._hashes()

    def write_manifest(self, path: str | os.PathLike | None = None) -> Path:
        path = Path(path) if path is not None else self.default_manifest
        manifest = {"algorithm": "sha256", "files": self._hashes(skip=(path,))}
        return atomic_write_bytes(path, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))

    def verify(self, manifest_path: str | os.PathLike | None = None) -> None:
        """Raise DatasetMismatch naming the first (sorted) file that differs from the manifest."""
        self._require_root()
        path = Path(manifest_path) if manifest_path is not None else self.default_manifest
        if not path.is_file():
            raise FileNotFoundError(
                f"dataset {self.root}: no manifest at {path}; create one with DatasetVerifier(root).write_manifest()"
            )
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("algorithm") != "sha256" or not isinstance(manifest.get("files"), dict):
            raise ValueError(f"{path} is not a sha256 dataset manifest")
        expected: dict[str, str] = manifest["files"]
        actual = self._hashes(skip=(path,))

        bad = [k for k in sorted(expected.keys() | actual.keys()) if expected.get(k) != actual.get(k)]
        if not bad:
            return
        rel = bad[0]
        if rel not in actual:
            reason, what = "missing", "is listed in the manifest but missing"
        elif rel not in expected:
            reason, what = "extra", "is not in the manifest (unexpected extra file)"
        else:
            reason = "changed"
            what = f"differs from the manifest (sha256 {actual[rel][:12]}… != {expected[rel][:12]}…)"
        more = f" ({len(bad) - 1} more file(s) mismatch)" if len(bad) > 1 else ""
        raise DatasetMismatch(
            f"dataset {self.root}: file '{rel}' {what}{more}; re-download it or re-create the manifest",
            rel,
            reason,
        )


# ---------------------------------------------------------------------------------------------
# Provenance

_VERSIONED = ("torch", "numpy", "mujoco", "dm_control", "flowpwm")


def _git(args: list[str], cwd: Path) -> str | None:
    """Output of a git command, or None when git is missing, cwd is not a repo, or git fails."""
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


_SOURCE_SUFFIXES = (".py", ".yaml")


def code_digest(package_dir: str | os.PathLike | None = None) -> str:
    """sha256 over the source files (.py, .yaml) of the running flowpwm package, by relative path.

    The code's identity where git cannot give one (a wheel, a `git archive` export, a copy on a
    cluster's scratch): two runs with the same digest ran the same code, wherever it was installed.
    """
    root = Path(package_dir) if package_dir is not None else Path(__file__).resolve().parent
    digest = hashlib.sha256()
    files = sorted(f for f in root.rglob("*") if f.suffix in _SOURCE_SUFFIXES and f.is_file()
                   and "__pycache__" not in f.relative_to(root).parts)
    for f in files:
        digest.update(f.relative_to(root).as_posix().encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()


def run_provenance(repo_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Code and environment a run was produced with. Never raises: unknowns are recorded as such.

    git_dirty counts untracked (non-ignored) files too, since a new module can change behaviour.
    code_sha256 names the code even where there is no git (see `code_digest`).
    """
    repo = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parent
    commit = _git(["rev-parse", "HEAD"], repo) if repo.is_dir() else None
    status = _git(["status", "--porcelain"], repo) if commit else None
    return {
        "git_commit": commit or "unknown",
        "git_dirty": None if status is None else bool(status),
        "code_sha256": code_digest(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in _VERSIONED},
        "hostname": socket.gethostname(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_run_metadata(
    run_dir: str | os.PathLike,
    cfg: DictConfig | Mapping[str, Any] | ExperimentConfig,
    dataset_manifest: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Write config.yaml, config_hash.txt, provenance.json (and dataset_manifest.json) into run_dir.

    Returns the provenance dict. When a dataset manifest is given, its own sha256 is recorded too,
    so two runs can be checked for identical data from provenance.json alone.
    """
    run = RunDir(run_dir)
    manifest_bytes = Path(dataset_manifest).read_bytes() if dataset_manifest is not None else None  # fail before writing
    exp = ExperimentConfig(cfg)
    exp.save(run.config)
    atomic_write_bytes(run.config_hash, (exp.hash + "\n").encode("utf-8"))
    prov = run_provenance()
    prov["config_hash"] = exp.hash
    if manifest_bytes is not None:
        atomic_write_bytes(run.path / "dataset_manifest.json", manifest_bytes)
        prov["dataset_manifest_sha256"] = hashlib.sha256(manifest_bytes).hexdigest()
    atomic_write_bytes(run.provenance, (json.dumps(prov, indent=2) + "\n").encode("utf-8"))
    return prov

"""TD-MPC2's MT30/MT80 dataset chunks (`chunk_{i}.pt`): pickled TensorDicts, read only after
their SHA256 matched a manifest.

A chunk is a TensorDict of batch size [N_episodes, L] (L = 501 for MT30, 101 for MT80) with
`obs` [N, L, 24|39] float32, `action` [N, L, 6] float32, `reward` [N, L] float32 and `task` [N, L]
int32; row 0 holds the reset observation with a filler action and reward (TD-MPC2 writes NaN);
there is no termination key. Unpickling runs code named by the file, so a file is opened, hashed
through that same handle, checked, and only then unpickled from it:

- a file whose hash is one of TD-MPC2's published chunk hashes (`PUBLISHED_SHA256`) is trusted;
- else it must be listed, with the same hash, in the user's manifest (`flowpwm data manifest DIR`
  after a trusted download writes DIR/MANIFEST.sha256.json, the format of
  `reproducibility.DatasetVerifier`); a listed file with another hash is refused even if published;
- anything else is refused with one line, and nothing is unpickled.

A trusted file is still read by torch's restricted (weights-only) unpickler, which lets in only
tensordict and torch globals: a manifest made over a bad download cannot run code either.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pickle
import re
from pathlib import Path
from typing import IO, Any

import torch

from flowpwm.config import UserError
from flowpwm.data.episodes import DatasetMeta, Episodes
from flowpwm.envs.tasksets import TASK_SETS
from flowpwm.reproducibility import MANIFEST_NAME

# Git-LFS object ids (= SHA256 of the file) of TD-MPC2's chunks, as published with the datasets.
PUBLISHED_SHA256: dict[str, str] = {
    "mt30/chunk_3.pt": "0e5f412fd3d7d58fd78b291fcbf139b14a5ce03abed63a715a3844061aa92549",
    "mt80/chunk_0.pt": "904f85a706126666e84df2c099232051ca1710ebce6c6895490d5c08c318be21",
    "mt80/chunk_1.pt": "ada1ea4eaf167891820c797379453cee1fabe80dbbaa14758d6a5f3ddd09bb2b",
    "mt80/chunk_2.pt": "1d886ff62650f2fb682169e23c7c55fde448fdfc0d3f6955e1b96fdd28d1ef19",
    "mt80/chunk_3.pt": "a300eec8c396fc11d31a8e9092dcaf064128750784b78b10dd2faf574ae5d726",
    "mt80/chunk_4.pt": "165122c11a2035a231a14b8f35d6fc0122bfa11e64607059799aa8b44b10bcc4",
    "mt80/chunk_5.pt": "4a63897307f12cf6a3f298cd6d3cad745844c4046638960f3f854269f7ecd4df",
    "mt80/chunk_8.pt": "fe23d5b2fe4acfe73516e7c8c325977513b5ddabca76314145e3b2a41f099492",
    "mt80/chunk_9.pt": "350404bf0bb402a1965b4b011eec38c2c9b9d1d727eafeed55ca36bb48d84301",
    "mt80/chunk_10.pt": "4dd7c00fa8304178688d1da4584c6b2301e727081a307896a554481fee6880dc",
    "mt80/chunk_11.pt": "e2967a6b0fb335d65c8499a2f6dabf2a4ce366f4a830bc5904a00b28f9295179",
    "mt80/chunk_12.pt": "ba1df41b3cc53f38e26c037edd391bf237a5122218127c7f9a336e4cb84853dd",
    "mt80/chunk_14.pt": "51c5fa162a1d4100238bc40a968dfd64ae8c2832a3c7512a953a07b776ad440b",
    "mt80/chunk_16.pt": "4334ac353470144e9ab3ddc377eff56fc3cdcf05fa85b9411ae22e2fcf46df44",
    "mt80/chunk_18.pt": "e742ce990bbb2660957defede4c5546a8ebc7a3860406e13aea09876d4050c37",
    "mt80/chunk_19.pt": "589b7645e1af463e901b70ed45310ecdfacd3605e7a739254c4a75b6c30a2963",
}
_PUBLISHED_HASHES = frozenset(PUBLISHED_SHA256.values())

# The task set a chunk's ids refer to follows from its obs width (never from its path).
TASK_SET_BY_OBS_WIDTH = {TASK_SETS["mt30"].obs_dim: "mt30", TASK_SETS["mt80"].obs_dim: "mt80"}
TENSORDICT_INSTALL = "pip install tensordict==0.15.3"


def sha256_of(f: IO[bytes]) -> str:
    """SHA256 of an open binary file, streamed; leaves the file at its start."""
    f.seek(0)
    h = hashlib.sha256()
    while block := f.read(1 << 20):
        h.update(block)
    f.seek(0)
    return h.hexdigest()


def read_manifest(path: Path) -> dict[str, str]:
    """The `files` map (relative path -> sha256) of a DatasetVerifier manifest."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read dataset manifest {path}: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("algorithm") != "sha256" or not isinstance(manifest.get("files"), dict):
        raise UserError(f"{path} is not a sha256 dataset manifest (write one with `flowpwm data manifest DIR`)")
    return manifest["files"]


class Trust:
    """Decides whether a chunk may be unpickled: published hashes, then the user's manifest."""

    def __init__(self, root: Path, manifest: Path | None = None):
        self.root = root
        path = manifest if manifest is not None else root / MANIFEST_NAME
        if manifest is not None and not path.is_file():
            raise UserError(f"dataset manifest {path} does not exist")
        self.manifest_path = path if path.is_file() else None
        self.manifest = read_manifest(path) if self.manifest_path else {}

    def check(self, file: Path, actual: str, published_ok: bool = True) -> None:
        """Raise a one-line UserError unless `file` (under root) with hash `actual` is trusted:
        listed in the manifest with that hash, or (when `published_ok`) a published chunk."""
        rel = file.relative_to(self.root).as_posix()
        record = f"run `flowpwm data manifest {self.root}`"
        if rel in self.manifest:
            expected = self.manifest[rel]
            if expected == actual:
                return
            verb = "unpickle" if published_ok else "read"
            raise UserError(f"{file}: sha256 {actual[:12]}… differs from {self.manifest_path}'s {expected[:12]}…; "
                            f"refusing to {verb} it: re-download it, then {record}")
        if published_ok and actual in _PUBLISHED_HASHES:
            return
        if not published_ok:
            raise UserError(f"{file}: sha256 {actual[:12]}… is not in {self.manifest_path}: re-create the manifest "
                            f"if the file is yours ({record})")
        published = [f"{k} {v[:12]}…" for k, v in PUBLISHED_SHA256.items() if Path(k).name == file.name]
        expected = f"published {', '.join(published)}" if published else "no published hash under this name"
        where = f"is not in {self.manifest_path}" if self.manifest_path else f"there is no {MANIFEST_NAME} beside it"
        raise UserError(f"{file}: sha256 {actual[:12]}… is not a published TD-MPC2 chunk ({expected}) and {where}; "
                        f"refusing to unpickle it: after a trusted download {record}")


def _natural_key(p: Path) -> list[Any]:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]


# What a chunk's pickle may reference beyond torch's weights-only defaults: the TensorDict (and
# torch) classes older tensordict versions pickled by name. Anything else is refused unread.
CHUNK_GLOBAL_MODULES = ("tensordict.", "torch.")


def _resolve(qualified: str) -> Any:
    """'tensordict._td.TensorDict' -> the class (the longest importable module prefix, then attributes)."""
    parts = qualified.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(qualified)


def _unpickle(f: IO[bytes], name: str) -> Any:
    """A trusted chunk, still through torch's restricted unpickler: the globals it names are
    listed without unpickling, and only tensordict/torch ones are allowed in."""
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(f)
    except (RuntimeError, pickle.UnpicklingError, ValueError) as e:
        raise UserError(f"{name}: not a torch.save file ({str(e).splitlines()[0][:120]})") from None
    foreign = [g for g in needed if not g.startswith(CHUNK_GLOBAL_MODULES)]
    if foreign:
        raise UserError(f"{name}: refused to unpickle: it would load {foreign[0]}, which no TD-MPC2 chunk holds "
                        f"(only tensordict and torch classes are allowed); nothing in it was run")
    f.seek(0)
    try:
        with torch.serialization.safe_globals([_resolve(g) for g in needed]):
            return torch.load(f, map_location="cpu", weights_only=True)
    except ModuleNotFoundError as e:
        raise UserError(f"{name}: reading TD-MPC2 chunks needs tensordict: {TENSORDICT_INSTALL} ({e})") from e


def chunk_to_episodes(td: Any, name: str) -> Episodes:
    """One TD-MPC2 chunk as Episodes: per-episode task ids, row-0 filler zeroed, no terminations.
    Its task ids are MT30 or MT80 ids; which one, the obs width says (24 or 39): TD-MPC2 made no
    other kind. A config's task set is applied afterwards (`Episodes.select_tasks`)."""
    try:
        obs, action, reward, task = (td.get(k) for k in ("obs", "action", "reward", "task"))
    except (AttributeError, KeyError) as e:
        raise UserError(f"{name}: not a TD-MPC2 chunk (needs obs, action, reward and task; {e})") from e
    if any(not isinstance(x, torch.Tensor) for x in (obs, action, reward, task)) or obs.ndim != 3:
        raise UserError(f"{name}: not a TD-MPC2 chunk (obs, action, reward, task must be tensors, obs [N, L, D])")
    n, rows, width = obs.shape
    if tuple(reward.shape) != (n, rows) or tuple(task.shape) != (n, rows) or action.shape[:2] != (n, rows):
        raise UserError(f"{name}: field shapes disagree: obs {tuple(obs.shape)}, action {tuple(action.shape)}, "
                        f"reward {tuple(reward.shape)}, task {tuple(task.shape)}")
    if width not in TASK_SET_BY_OBS_WIDTH:
        raise UserError(f"{name}: obs width {width} is neither MT30's 24 nor MT80's 39: not a TD-MPC2 chunk")
    task_set = TASK_SETS[TASK_SET_BY_OBS_WIDTH[width]]
    if action.shape[2] != task_set.action_dim:
        raise UserError(f"{name}: action width {action.shape[2]}, TD-MPC2's {task_set.name} has {task_set.action_dim}")
    episode_task = task[:, 0].long()
    if not bool((task == task[:, :1]).all()):
        raise UserError(f"{name}: an episode changes task id mid-episode")
    action, reward = action.float().clone(), reward.float().clone()
    action[:, 0], reward[:, 0] = 0.0, 0.0  # the reset row's filler (NaN in TD-MPC2's data) is never a transition
    if not (torch.isfinite(obs).all() and torch.isfinite(action).all() and torch.isfinite(reward).all()):
        raise UserError(f"{name}: non-finite values after the reset row")
    meta = DatasetMeta(task_set.name, task_set.tasks, task_set.obs_dim, task_set.action_dim, rows - 1,
                       source="TD-MPC2")
    try:
        return Episodes(obs=obs.float(), action=action, reward=reward, terminated=torch.zeros(n, rows, dtype=torch.bool),
                        task=episode_task, length=torch.full((n,), rows, dtype=torch.long), meta=meta)
    except ValueError as e:
        raise UserError(f"{name}: {e}") from e


def read_tdmpc2_chunks(files: list[Path], root: Path,
                       manifest: Path | None = None) -> tuple[list[Episodes], dict[str, str]]:
    """Verify every file (one pass, through the handles later unpickled), then read them.
    Returns the episode blocks and {relative path: sha256} of what was read."""
    trust = Trust(root, manifest)
    handles = [open(f, "rb") for f in sorted(files, key=_natural_key)]
    try:
        hashes = {}
        for f in handles:
            path = Path(f.name)
            digest = sha256_of(f)
            trust.check(path, digest)
            hashes[path.relative_to(root).as_posix()] = digest
        blocks = [chunk_to_episodes(_unpickle(f, f.name), f.name) for f in handles]
    finally:
        for f in handles:
            f.close()
    return blocks, hashes

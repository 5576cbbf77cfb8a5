"""Offline datasets: TD-MPC2 chunks (hash-checked before unpickling), flowpwm's format (exact round
trip), (H+1)-step slices with TD-MPC2's step-0 convention, start states, `flowpwm data`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from flowpwm.config import UserError
from flowpwm.data.dataset import OfflineDataset, load_dataset, load_episodes
from flowpwm.data.episodes import DatasetMeta, Episodes, read_chunk, write_chunk
from flowpwm.data.tdmpc2 import PUBLISHED_SHA256, Trust
from flowpwm.envs.tasksets import MT30, get_task_set
from flowpwm.reproducibility import MANIFEST_NAME


def tdmpc2_chunk(path: Path, tasks: list[int], rows: int = 11, obs_dim: int = 24, seed: int = 0) -> dict:
    """A chunk with TD-MPC2's exact structure: a TensorDict [N, L] saved with torch.save; row 0 holds
    the reset obs with NaN action and reward; obs[t] encodes (episode, t) so slices can be checked."""
    g = torch.Generator().manual_seed(seed)
    n = len(tasks)
    obs = torch.randn(n, rows, obs_dim, generator=g)
    obs[..., 0] = torch.arange(n)[:, None].float()  # episode index
    obs[..., 1] = torch.arange(rows)[None].float()  # row index
    action = 2 * torch.rand(n, rows, 6, generator=g) - 1
    reward = torch.rand(n, rows, generator=g)
    action[:, 0], reward[:, 0] = float("nan"), float("nan")
    task = torch.tensor(tasks, dtype=torch.int32)[:, None].expand(n, rows).contiguous()
    td = TensorDict({"obs": obs, "action": action, "reward": reward, "task": task}, batch_size=(n, rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(td, path)
    return {"obs": obs, "action": action, "reward": reward, "task": task}


def record(root: Path) -> None:
    assert main(["manifest", str(root)]) == 0


def main(argv: list[str]) -> int:
    from flowpwm.data.commands import main as data_main

    return data_main(argv)


class Marker:
    """Unpickling this creates a file: proof that a pickle was (or was not) executed."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_reader_reads_tdmpc2s_exact_structure(tmp_path: Path):
    raw = tdmpc2_chunk(tmp_path / "mt30" / "chunk_0.pt", tasks=[0, 29, 28, 29])
    tdmpc2_chunk(tmp_path / "mt30" / "chunk_1.pt", tasks=[3], seed=1)
    record(tmp_path / "mt30")
    episodes, files = load_episodes(tmp_path / "mt30")
    assert sorted(files) == ["chunk_0.pt", "chunk_1.pt"]
    m = episodes.meta
    assert (m.task_set, m.tasks, m.obs_dim, m.action_dim, m.episode_length, m.source) == ("mt30", MT30, 24, 6, 10, "TD-MPC2")
    assert len(episodes) == 5 and episodes.task.tolist() == [0, 29, 28, 29, 3]
    assert torch.equal(episodes.obs[:4], raw["obs"])
    assert torch.equal(episodes.action[:4, 1:], raw["action"][:, 1:]) and torch.equal(episodes.reward[:4, 1:], raw["reward"][:, 1:])
    assert not episodes.action[:, 0].any() and not episodes.reward[:, 0].any()  # the NaN filler is gone
    assert not episodes.terminated.any() and episodes.length.tolist() == [11] * 5
    torch.testing.assert_close(episodes.returns()[:4], raw["reward"][:, 1:].double().sum(1))


def test_slices_skip_tdmpc2s_step0_filler(tmp_path: Path):
    raw = tdmpc2_chunk(tmp_path / "chunk_0.pt", tasks=[4, 7, 7])
    record(tmp_path)
    ds = load_dataset(tmp_path)
    H, B = 4, 256
    batch = ds.sample(B, H, torch.Generator().manual_seed(0))
    assert batch["obs"].shape == (H + 1, B, 24) and batch["action"].shape == (H, B, 6)
    assert batch["reward"].shape == batch["terminated"].shape == (H, B, 1) and batch["task"].shape == (B,)
    ep, row = batch["obs"][..., 0].long(), batch["obs"][..., 1].long()
    assert (ep == ep[0]).all() and torch.equal(row, row[0] + torch.arange(H + 1)[:, None])
    assert row[0].min() == 0 and row[-1].max() == 10  # slices reach both ends of the episodes
    for b in range(B):
        e, s = int(ep[0, b]), int(row[0, b])
        # transition t: obs[t] --action[t+1], reward[t+1]--> obs[t+1] in TD-MPC2's rows
        assert torch.equal(batch["obs"][:, b], raw["obs"][e, s:s + H + 1])
        assert torch.equal(batch["action"][:, b], raw["action"][e, s + 1:s + H + 1])
        assert torch.equal(batch["reward"][:, b, 0], raw["reward"][e, s + 1:s + H + 1])
        assert batch["task"][b] == raw["task"][e, 0]
    assert torch.isfinite(batch["action"]).all() and torch.isfinite(batch["reward"]).all()
    assert not batch["terminated"].any()
    # Start states: obs[0] of random 17-step slices of one task's episodes.
    starts = ds.start_states("pendulum-swingup", 64, horizon=4, generator=torch.Generator().manual_seed(1))
    assert starts.shape == (64, 24)
    assert set(starts[:, 0].long().tolist()) == {1, 2} and starts[:, 1].max() <= 10 - 4
    with pytest.raises(UserError, match="no episode of task"):
        ds.start_states("walker-run", 4, horizon=4)
    with pytest.raises(UserError, match="at most 10"):
        ds.sample(2, 11)


def test_hash_mismatch_is_refused_before_unpickling(tmp_path: Path):
    marker = tmp_path / "unpickled"
    root = tmp_path / "data"
    root.mkdir()
    evil = root / "chunk_0.pt"
    torch.save(Marker(str(marker)), evil)  # executes Path.touch when unpickled
    # 1. Unknown file, no manifest: refused, nothing unpickled.
    with pytest.raises(UserError) as info:
        load_dataset(root)
    msg = str(info.value)
    assert "\n" not in msg and "chunk_0.pt" in msg and "flowpwm data manifest" in msg
    assert PUBLISHED_SHA256["mt80/chunk_0.pt"][:12] in msg  # what a real chunk_0 would hash to
    # 2. Listed in a manifest with another hash: refused, nothing unpickled.
    (root / MANIFEST_NAME).write_text(json.dumps({"algorithm": "sha256", "files": {"chunk_0.pt": "ab" * 32}}))
    with pytest.raises(UserError) as info:
        load_dataset(root)
    msg = str(info.value)
    assert "\n" not in msg and "abababababab" in msg and "differs" in msg and "flowpwm data manifest" in msg
    assert not marker.exists()
    # 3. Trusted by the user's manifest, and still not run: a trusted chunk goes through torch's
    #    restricted unpickler, which lets in only tensordict and torch classes.
    record(root)
    with pytest.raises(UserError) as info:
        load_dataset(root)
    msg = str(info.value)
    assert "\n" not in msg and "refused to unpickle" in msg and "nothing in it was run" in msg
    assert not marker.exists()


def test_a_chunk_naming_tensordict_globals_loads_through_the_restricted_unpickler(tmp_path: Path):
    """Older tensordict versions pickled TensorDict pieces by name; tensordict globals outside
    torch's allowlist are let in (and only those, test above)."""
    from tensordict.utils import expand_as_right

    from flowpwm.data.tdmpc2 import _unpickle

    path = tmp_path / "chunk_0.pt"
    torch.save({"td": TensorDict({"obs": torch.ones(2, 3)}, batch_size=(2,)), "fn": expand_as_right}, path)
    with open(path, "rb") as f:
        assert torch.serialization.get_unsafe_globals_in_checkpoint(f) == ["tensordict.utils.expand_as_right"]
        f.seek(0)
        out = _unpickle(f, path.name)
    assert out["fn"] is expand_as_right and torch.equal(out["td"]["obs"], torch.ones(2, 3))


def test_published_hashes_are_trusted_without_a_manifest(tmp_path: Path):
    f = tmp_path / "chunk_3.pt"
    f.write_bytes(b"x")
    trust = Trust(tmp_path)
    trust.check(f, PUBLISHED_SHA256["mt30/chunk_3.pt"])  # no error
    with pytest.raises(UserError, match="0e5f412fd3d7.*a300eec8c396"):
        trust.check(f, "cd" * 32)  # both published chunk_3 hashes are named as expected values
    assert len(PUBLISHED_SHA256) == 16 and all(len(h) == 64 for h in PUBLISHED_SHA256.values())


def _episodes(n: int = 7, rows: int = 9, seed: int = 0) -> Episodes:
    g = torch.Generator().manual_seed(seed)
    ts = get_task_set("mt-mini")
    length = torch.randint(2, rows + 1, (n,), generator=g)
    length[0] = rows
    terminated = torch.zeros(n, rows, dtype=torch.bool)
    for i in range(n):
        terminated[i, length[i] - 1] = bool(length[i] < rows)  # short episodes ended by a termination
    valid = torch.arange(rows)[None] < length[:, None]
    obs = torch.randn(n, rows, 24, generator=g) * valid[..., None]
    action = (2 * torch.rand(n, rows, 6, generator=g) - 1) * valid[..., None]
    action[:, 0] = 0.0
    reward = torch.rand(n, rows, generator=g) * valid
    reward[:, 0] = 0.0
    meta = DatasetMeta(ts.name, ts.tasks, ts.obs_dim, ts.action_dim, rows - 1, source="test", extra={"run": "x"})
    return Episodes(obs=obs, action=action, reward=reward, terminated=terminated,
                    task=torch.randint(0, len(ts), (n,), generator=g), length=length, meta=meta)


def test_flowpwm_format_round_trip_is_exact(tmp_path: Path):
    ep = _episodes()
    path = write_chunk(tmp_path / "chunk_000.safetensors", ep)
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temp file and a rename
    assert path.read_bytes()[8:9] == b"{"  # safetensors: a JSON header then raw tensor bytes, no pickle
    back = read_chunk(path)
    assert back.meta == ep.meta and back.meta.extra == ep.meta.extra
    for k, v in ep.tensors().items():
        assert back.tensors()[k].dtype == v.dtype and torch.equal(back.tensors()[k], v), k
    # A directory of chunks loads as one dataset; slices never cross an episode's end.
    write_chunk(tmp_path / "chunk_001.safetensors", _episodes(seed=1))
    ds = load_dataset(tmp_path)
    assert ds.num_episodes == 14 and ds.meta.task_set == "mt-mini"
    batch = ds.sample(512, 3, torch.Generator().manual_seed(0))
    assert (batch["terminated"][:-1] == 0).all()  # a termination can only be a slice's last transition
    assert batch["terminated"].any()


def test_bad_chunks_are_one_line_errors(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "chunk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    (tmp_path / "b").mkdir()
    write_chunk(tmp_path / "b" / "c0.safetensors", _episodes())
    torch.save({"x": 1}, tmp_path / "b" / "c1.pt")
    cases = [(tmp_path / "a", "not a flowpwm dataset chunk"), (tmp_path / "b", "mixes"),
             (tmp_path / "none", "does not exist"), (tmp_path, "holds no chunk files")]
    for path, hint in cases:
        with pytest.raises(UserError) as info:
            load_dataset(path)
        assert hint in str(info.value) and "\n" not in str(info.value), path
    with pytest.raises(UserError, match="unknown task set"):
        load_dataset(tmp_path / "b" / "c0.safetensors", task_set="mt31")
    with pytest.raises(UserError, match="obs width 24"):
        load_dataset(tmp_path / "b" / "c0.safetensors", task_set="mt80")


def test_task_set_from_the_config_selects_and_renumbers(tmp_path: Path):
    mini = get_task_set("mt-mini")
    ids = [MT30.index(t) for t in ("cup-spin", "walker-run", "cartpole-balance", "cup-spin")]
    tdmpc2_chunk(tmp_path / "chunk_0.pt", tasks=ids)
    record(tmp_path)
    ds = load_dataset(tmp_path, task_set="mt-mini")
    assert ds.meta.task_set == "mt-mini" and ds.meta.tasks == mini.tasks
    assert ds.task.tolist() == [mini.task_id("cup-spin"), mini.task_id("cartpole-balance"), mini.task_id("cup-spin")]
    assert ds.obs[:, 0, 0].tolist() == [0.0, 2.0, 3.0]  # walker-run's episode dropped


def test_data_info_and_manifest_commands(tmp_path: Path):
    ep = _episodes(n=6)
    ep.task[:] = torch.tensor([0, 0, 3, 3, 3, 5])
    write_chunk(tmp_path / "d" / "chunk_000.safetensors", ep)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "flowpwm.cli", "data", *a], capture_output=True, text=True,
                                    timeout=120, env=env)
    r = run("info", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    rows = {line.split("|")[2].strip(): line for line in r.stdout.splitlines() if line.startswith("| ") and "task" not in line}
    returns = ep.returns()
    ps = rows["pendulum-spin"].split("|")
    assert [c.strip() for c in ps[1:5]] == ["3", "pendulum-spin", "3", str(int((ep.length[2:5] - 1).sum()))]
    assert float(ps[5]) == pytest.approx(float(returns[2:5].mean()), abs=0.05)
    assert rows["cartpole-swingup"].split("|")[3].strip() == "0"
    assert "task set mt-mini" in r.stdout and "6 episodes" in r.stdout and "episode length 8" in r.stdout
    # manifest: recorded, then enforced for our format too.
    r = run("manifest", str(tmp_path / "d"))
    assert r.returncode == 0 and (tmp_path / "d" / MANIFEST_NAME).is_file(), r.stderr
    write_chunk(tmp_path / "d" / "chunk_000.safetensors", _episodes(n=6, seed=5))  # changed after the manifest
    for args, hint in [(("info", str(tmp_path / "d")), "differs"), (("info", str(tmp_path / "nope")), "does not exist"),
                       (("manifest", str(tmp_path / "nope")), "does not exist"), (("frobnicate",), "usage"),
                       (("info", str(tmp_path / "d"), "--task-set", "mt31"), "mt-mini")]:
        r = run(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and hint in lines[0], (args, r.stderr)


def test_offline_dataset_on_device_argument_and_manifest(tmp_path: Path):
    ds = OfflineDataset(_episodes(), {"chunk_000.safetensors": "ab" * 32}, device="cpu")
    path = ds.save_manifest(tmp_path / "dataset_manifest.json")
    assert json.loads(path.read_text()) == {"algorithm": "sha256", "files": {"chunk_000.safetensors": "ab" * 32}}
    assert ds.num_transitions == int((ds.length - 1).sum())

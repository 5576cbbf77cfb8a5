import json
import os
import random
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from flowpwm.reproducibility import (
    MISSING,
    _version,
    DatasetMismatch,
    DatasetVerifier,
    ExperimentConfig,
    format_diff,
    code_digest,
    run_provenance,
    set_seed,
    write_run_metadata,
)


def _cfg():
    return {
        "seed": 1,
        "alg": {
            "actor_lr": 3e-4,
            "world_model": {"substeps": 4, "integrator": "heun", "hidden": [256, 256]},
        },
        "wandb": {"project": "flowpwm", "api_key": "sk-SECRET"},
    }


def _draws():
    return torch.rand(5).tolist(), np.random.rand(5).tolist(), [random.random() for _ in range(5)]


def test_set_seed_repeats_draws():
    set_seed(123)
    first = _draws()
    set_seed(123)
    assert _draws() == first
    set_seed(124)
    assert _draws() != first


def test_set_seed_deterministic_flag(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # monkeypatch restores it afterwards
    try:
        set_seed(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def test_hash_ignores_key_order_but_not_values():
    cfg = _cfg()
    reordered = {
        "wandb": {"api_key": "sk-SECRET", "project": "flowpwm"},
        "alg": {"world_model": {"hidden": [256, 256], "integrator": "heun", "substeps": 4}, "actor_lr": 3e-4},
        "seed": 1,
    }
    h = ExperimentConfig(cfg).hash
    assert len(h) == 64 and ExperimentConfig(cfg).short_hash == h[:16]
    assert ExperimentConfig(reordered).hash == h
    assert ExperimentConfig(OmegaConf.create(cfg)).hash == h  # DictConfig and dict agree

    changed = _cfg()
    changed["alg"]["world_model"]["substeps"] = 8
    assert ExperimentConfig(changed).hash != h


def test_interpolations_are_resolved():
    cfg = OmegaConf.create({"a": 2, "b": "${a}"})
    assert ExperimentConfig(cfg).to_dict() == {"a": 2, "b": 2}


def test_secrets_never_leave(tmp_path):
    cfg = _cfg()
    cfg["nested"] = {"Token": "t", "PASSWORD": "p", "hf_key": "k", "items": [{"secret": "s", "keep": 1}]}
    exp = ExperimentConfig(cfg)
    d = exp.to_dict()
    assert "api_key" not in d["wandb"] and d["wandb"]["project"] == "flowpwm"
    assert d["nested"] == {"items": [{"keep": 1}]}

    path = exp.save(tmp_path / "config.yaml")
    text = path.read_text()
    for secret in ("sk-SECRET", "api_key", "Token", "PASSWORD", "hf_key"):
        assert secret not in text

    other_secret = _cfg()
    other_secret["wandb"]["api_key"] = "sk-OTHER"
    assert ExperimentConfig(other_secret).hash == ExperimentConfig(_cfg()).hash


@pytest.mark.parametrize("name", ["config.yaml", "config.json"])
def test_save_load_round_trip(tmp_path, name):
    cfg = _cfg()
    cfg["alg"]["tiny"] = 1e-5  # PyYAML must not read this back as a string
    exp = ExperimentConfig(cfg)
    path = exp.save(tmp_path / "sub" / name)
    back = ExperimentConfig.load(path)
    assert back.to_dict() == exp.to_dict()
    assert back.hash == exp.hash
    assert [p.name for p in path.parent.iterdir()] == [name]  # no temp file left behind
    if name.endswith(".json"):
        json.loads(path.read_text())
    else:
        yaml.safe_load(path.read_text())


def test_diff_lists_exactly_the_changed_keys():
    a = _cfg()
    b = _cfg()
    b["alg"]["actor_lr"] = 1e-3
    b["alg"]["world_model"]["substeps"] = 8
    b["alg"]["world_model"]["solver_tol"] = 1e-6  # added
    del b["alg"]["world_model"]["integrator"]  # removed
    b["wandb"]["api_key"] = "changed secret"  # invisible

    diff = ExperimentConfig(a).diff(ExperimentConfig(b))
    assert diff == [
        ("alg.actor_lr", 3e-4, 1e-3),
        ("alg.world_model.integrator", "heun", MISSING),
        ("alg.world_model.solver_tol", MISSING, 1e-6),
        ("alg.world_model.substeps", 4, 8),
    ]
    assert format_diff(diff).splitlines() == [
        "alg.actor_lr: 0.0003 -> 0.001",
        'alg.world_model.integrator: "heun" -> <missing>',
        "alg.world_model.solver_tol: <missing> -> 1e-06",
        "alg.world_model.substeps: 4 -> 8",
    ]
    assert ExperimentConfig(a).diff(a) == []
    assert format_diff([]) == "configs are identical"


def test_diff_compares_lists_whole_and_types_strictly():
    a = {"hidden": [256, 256], "flag": 1}
    b = {"hidden": [256, 512], "flag": True}
    assert [k for k, _, _ in ExperimentConfig(a).diff(b)] == ["flag", "hidden"]


def _dataset(root):
    (root / "a" / "b").mkdir(parents=True)
    (root / "top.bin").write_bytes(b"\x00\x01\x02" * 100)
    (root / "a" / "x.pt").write_bytes(b"hello")
    (root / "a" / "b" / "y.pt").write_bytes(b"world" * 10)
    return DatasetVerifier(root)


def test_dataset_manifest_round_trip(tmp_path):
    v = _dataset(tmp_path)
    hashes = v.compute()
    assert list(hashes) == ["a/b/y.pt", "a/x.pt", "top.bin"]
    manifest = v.write_manifest()
    assert manifest == tmp_path / "MANIFEST.sha256.json"
    assert json.loads(manifest.read_text()) == {"algorithm": "sha256", "files": hashes}
    assert v.compute() == hashes  # the manifest does not list itself
    v.verify()


def test_dataset_changed_byte(tmp_path):
    v = _dataset(tmp_path)
    v.write_manifest()
    f = tmp_path / "a" / "b" / "y.pt"
    data = bytearray(f.read_bytes())
    data[7] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(DatasetMismatch, match=r"file 'a/b/y\.pt' differs from the manifest") as e:
        v.verify()
    assert e.value.reason == "changed" and isinstance(e.value, ValueError)


def test_dataset_missing_and_extra(tmp_path):
    v = _dataset(tmp_path)
    v.write_manifest()
    (tmp_path / "a" / "x.pt").unlink()
    with pytest.raises(DatasetMismatch, match=r"'a/x\.pt' is listed in the manifest but missing"):
        v.verify()

    v.write_manifest()
    (tmp_path / "a" / "new.pt").write_bytes(b"extra")
    with pytest.raises(DatasetMismatch, match=r"'a/new\.pt' is not in the manifest \(unexpected extra file\)"):
        v.verify()


def test_dataset_missing_root_or_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DatasetVerifier(tmp_path / "nope").compute()
    with pytest.raises(FileNotFoundError, match="no manifest"):
        DatasetVerifier(tmp_path).verify()


def test_provenance_outside_git(tmp_path, monkeypatch):
    # Stop git from finding a repository in a parent of tmp_path.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    prov = run_provenance(repo_dir=tmp_path)
    assert prov["git_commit"] == "unknown" and prov["git_dirty"] is None
    assert prov["versions"]["torch"] == torch.__version__  # the installed version, not a fallback
    assert prov["versions"]["flowpwm"] == metadata.version("flowpwm") != "not installed"
    assert _version("no-such-distribution-xyz") == "not installed"  # the fallback, only when it applies
    assert run_provenance(repo_dir=tmp_path / "does-not-exist")["git_commit"] == "unknown"


def test_code_digest_names_the_code_wherever_it_is_installed(tmp_path):
    import shutil

    pkg = Path(__file__).resolve().parents[1] / "src" / "flowpwm"
    if not pkg.is_dir():
        pytest.skip("the tests are not next to the source tree")
    a, b = tmp_path / "a" / "flowpwm", tmp_path / "b" / "flowpwm"
    shutil.copytree(pkg, a, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(pkg, b)  # with whatever bytecode the source tree has: not part of the code
    (b / "notes.txt").write_text("not source")
    assert code_digest(a) == code_digest(b) == code_digest(pkg)
    with (b / "integrators.py").open("a") as f:
        f.write("\n# one more line\n")
    assert code_digest(b) != code_digest(a)  # an edited module is other code
    (a / "integrators.py").rename(a / "integrators_.py")
    assert code_digest(a) != code_digest(pkg)  # so is a renamed one
    assert run_provenance(repo_dir=tmp_path)["code_sha256"] == code_digest(pkg)


def test_provenance_inside_git_names_the_commit():
    import subprocess

    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    if head.returncode != 0:
        pytest.skip("the tests are not in a git checkout")
    prov = run_provenance(repo_dir=Path(__file__).parent)
    assert prov["git_commit"] == head.stdout.strip() and isinstance(prov["git_dirty"], bool)


def test_write_run_metadata(tmp_path):
    v = _dataset(tmp_path / "data")
    manifest = v.write_manifest()
    cfg = OmegaConf.create(_cfg())
    run_dir = tmp_path / "run"
    prov = write_run_metadata(run_dir, cfg, dataset_manifest=manifest)

    expected_hash = ExperimentConfig(cfg).hash
    assert (run_dir / "config_hash.txt").read_text() == expected_hash + "\n"
    assert json.loads((run_dir / "provenance.json").read_text()) == prov
    assert prov["config_hash"] == expected_hash
    assert ExperimentConfig.load(run_dir / "config.yaml").hash == expected_hash
    assert "sk-SECRET" not in (run_dir / "config.yaml").read_text()
    assert (run_dir / "dataset_manifest.json").read_bytes() == manifest.read_bytes()


def test_rng_state_is_plain_and_restores_every_generator(tmp_path):
    from flowpwm.reproducibility import rng_state, set_rng_state

    gen = torch.Generator().manual_seed(3)
    set_seed(11)
    state = rng_state(gen)
    torch.save(state, tmp_path / "rng.pt")
    first = (*_draws(), torch.rand(2, generator=gen).tolist())
    set_seed(99)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), gen)  # no numpy objects in the file
    assert (*_draws(), torch.rand(2, generator=gen).tolist()) == first

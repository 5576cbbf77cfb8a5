import subprocess
import sys
from pathlib import Path

import pytest

from flowpwm.models.layers import mlp
from flowpwm.parity import PRESETS, compare, mlp_param_count, suggest_velocity_units
from flowpwm.config import load_alg

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "verify_param_parity.py"


@pytest.mark.parametrize("size", ["5M", "48M", "tiny"])
def test_flow_configs_are_within_two_percent_of_their_baseline(size):
    reports = compare(f"pwm_{size}", f"pwm_{size}_flow", list(PRESETS.values()))
    for r in reports:
        print(r.table())
        assert abs(r.total_diff) < 0.02 and abs(r.dynamics_diff) < 0.02, r.table()
        # only the dynamics/velocity network may differ
        assert all(r.base[k] == r.flow[k] for k in ("encoder", "reward"))
        # episodic dims count the termination head, built from the same module for both models
        assert ("termination" in r.base) == r.dims.episodic
        assert r.base.get("termination") == r.flow.get("termination")


def test_48M_world_model_has_pwm_sizes():
    cfg = load_alg("pwm_48M").world_model
    assert (cfg.latent_dim, list(cfg.units), list(cfg.encoder_units), cfg.num_bins) == (768, [1792] * 2, [1792] * 3, 101)
    mt30 = compare("pwm_48M", "pwm_48M_flow", [PRESETS["mt30"]])[0]
    assert mt30.base["task_emb"] == 30 * 64


@pytest.mark.parametrize("last", [None, "simnorm"])
def test_closed_form_count_matches_the_built_module(last):
    from flowpwm.models.layers import SimNorm

    net = mlp(37, [50, 29], 16, last_act=SimNorm(8) if last else None)
    assert sum(p.numel() for p in net.parameters()) == mlp_param_count(37, [50, 29], 16, last_normed=bool(last))


def test_suggested_width_is_the_closest_one():
    base, flow = load_alg("pwm_5M").world_model, load_alg("pwm_5M_flow").world_model
    units, n, target = suggest_velocity_units(base, flow, PRESETS["single"])
    w = units[0]
    in_dim = 512 + 1 + 16
    for other in (w - 1, w + 1):
        assert abs(mlp_param_count(in_dim, [other] * 2, 512, False) - target) >= abs(n - target)


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_script_passes_for_the_shipped_pairs_and_prints_counts():
    r = run_script()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pwm_48M_flow" in r.stdout and "MT30" in r.stdout and "parity: OK" in r.stdout


def test_script_exits_1_beyond_tolerance_and_suggests_a_width():
    r = run_script("--pair", "pwm_5M", "pwm_tiny_flow", "--presets", "single", "--suggest")
    assert r.returncode == 1
    assert "OUT OF TOLERANCE" in r.stdout and "suggest velocity_units" in r.stdout


def test_script_names_an_unknown_config_in_one_line():
    r = run_script("--pair", "pwm_5M", "pwm_9M_flow")
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pwm_9M_flow" in lines[0] and "pwm_5M_flow" in lines[0]

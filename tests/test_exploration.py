"""scripts/reward_density.py: the reward that open-loop random actions find on a task."""

import subprocess
import sys
from pathlib import Path

import pytest

from flowpwm.analysis.exploration import reward_density
from flowpwm.config import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_saturated_noise_finds_finger_spins_sparse_reward_where_uniform_noise_does_not():
    """The measurement behind docs/results.md's finger-spin diagnosis: the exploration noise's
    distribution decides how much of the sparse reward reaches the buffer."""
    uniform = reward_density("finger-spin", "uniform", 3000, seed=1)
    bang = reward_density("finger-spin", "bang-bang", 3000, seed=1)
    assert uniform["rewarded_fraction"] < 0.002
    assert bang["rewarded_fraction"] > 5 * max(uniform["rewarded_fraction"], 1e-3)
    assert bang["return_per_episode"] == pytest.approx(bang["mean_reward"] * 500)


def test_bad_input_is_one_line_and_exit_2():
    with pytest.raises(UserError, match="unknown action scheme"):
        reward_density("cartpole-swingup", "gaussian", 10)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "reward_density.py"), "no-such-task", "--steps", "10"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "unknown task 'no-such-task'" in out.stderr

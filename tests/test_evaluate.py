"""`flowpwm evaluate`: a checkpoint's policy over many real episodes, with a 95 % CI."""

import json
import math

import pytest

from flowpwm.analysis.diagnostics import load_agent
from flowpwm.analysis.evaluate import evaluate, main
from flowpwm.cli import run_command
from flowpwm.envs import make_env
from flowpwm.training.online import train

from test_training import cfg_for


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    train(cfg_for("flow", task="Hopper-v5"), path, log=lambda *_: None)  # episodes end early: lengths differ
    return path


def test_evaluate_reports_the_training_eval_policy_over_many_episodes_with_a_ci(run, tmp_path):
    out = tmp_path / "eval.json"
    assert main([str(run), "--episodes", "6", "--envs", "3", "--seed", "5", "--policy", "both", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["task"] == "Hopper-v5" and r["env_steps"] == 48 and r["envs"] == 3
    mean, sample = r["mean"], r["sample"]
    assert mean["episodes"] == sample["episodes"] == 6 == len(mean["returns"]) == len(mean["lengths"])
    # The mean action is the policy training evaluates: the same episodes give the same figure.
    agent, _, _ = load_agent(run, buffer=False)
    same = agent.eval(make_env("Hopper-v5", 3, seed=5), 6, seed=5)
    assert mean["return_mean"] == pytest.approx(same["eval_return"])
    assert mean["length_mean"] == pytest.approx(same["eval_length"])
    lo, hi = mean["ci95"]
    assert lo < mean["return_mean"] < hi and hi - lo > 0 and math.isfinite(mean["return_sd"])
    assert mean["return_min"] == min(mean["returns"]) and mean["return_max"] == max(mean["returns"])
    assert sample["returns"] != mean["returns"]  # sampled actions are another policy
    # Reproducible: the sampled policy's noise is seeded too.
    again = evaluate(run, episodes=6, envs=3, seed=5, policies=("sample",))
    assert again["sample"]["returns"] == sample["returns"]


def test_evaluate_rejects_bad_input_in_one_line_and_writes_nothing(run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    for args, hint in [([str(run), "--episodes", "0"], "--episodes"),
                       ([str(tmp_path / "missing")], "does not exist"),
                       ([str(tmp_path)], "no checkpoint")]:
        assert run_command("evaluate", [*args, "--json", str(out)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and hint in lines[0], lines
    assert not out.exists()

"""`flowpwm compare` on per-task policy runs: the normalised score aggregated over tasks × seeds
(mean and IQM with task-stratified bootstrap CIs, checked against a hand computation and the exact
bootstrap distribution), the per-task table, performance profiles, and the data reference."""

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from flowpwm.analysis.compare import compare_runs, main
from flowpwm.analysis.multitask import performance_profile
from flowpwm.config import UserError

# Final normalised scores: group -> task -> one per seed.
SCORES = {"mlp": {"cup-spin": [0.2, 0.5, 0.9], "pendulum-spin": [0.1, 0.4, 0.6]},
          "flow": {"cup-spin": [0.3, 0.3, 0.8], "pendulum-spin": [0.5, 0.7, 0.7]}}


def make_policy_run(root: Path, name: str, wm: str, task: str, seed: int, final: float, iterations: int = 40,
                    eval_every: int = 20, pretrained: str = "pre") -> Path:
    """A `flowpwm train-policy` run dir: the score rises linearly from 0 to `final`."""
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"seed: {seed}\npretrained: {pretrained}\ntask: {task}\npolicy:\n  iterations: "
                                   f"{iterations}\nalg:\n  name: pwm_tiny\n  world_model:\n    type: {wm}\n")
    lines = []
    for it in range(0, iterations + 1, 10):
        rec = {"epoch": it // 10, "iteration": it, "env_steps": 0, "wall_time": 1.0 + it}
        if it % eval_every == 0:
            score = final * it / iterations
            rec.update(eval_return=1000 * score, eval_score=score)
        lines.append(rec)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return d


def make_sweep(root: Path, scores=SCORES) -> dict[str, list[Path]]:
    return {wm: [make_policy_run(root, f"{wm}_{task}_s{s}", wm, task, s, x)
                 for task, xs in by_task.items() for s, x in enumerate(xs)] for wm, by_task in scores.items()}


def exact_bootstrap(strata: list[list[float]], statistic) -> np.ndarray:
    """The statistic over every equally likely stratified resample (each task's runs drawn with
    replacement, in order): the bootstrap distribution the resampling estimates."""
    per_stratum = [list(itertools.product(s, repeat=len(s))) for s in strata]
    return np.array([statistic(np.concatenate(parts)) for parts in itertools.product(*per_stratum)])


def consistent_with_quantile(value: float, exact: np.ndarray, q: float, eps: float = 0.006) -> bool:
    """`value` is the q-quantile of the distribution `exact` (equal weights) up to sampling error
    eps in probability: P(X < value) <= q + eps and P(X <= value) >= q - eps."""
    below, at_or_below = np.mean(exact < value - 1e-12), np.mean(exact <= value + 1e-12)
    return below <= q + eps and at_or_below >= q - eps


def iqm_by_hand(x) -> float:
    x = sorted(x)
    cut = int(0.25 * len(x))  # scipy's trim_mean(x, 0.25): int(0.25 n) runs cut at each end
    return float(np.mean(x[cut:len(x) - cut]))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("policies")
    groups = make_sweep(root)
    out = root / "cmp"
    return groups, out, compare_runs(groups, out, n_bootstrap=20000, seed=3)


def test_iqm_and_mean_over_tasks_and_seeds_with_stratified_bootstrap_cis(report):
    _, _, result = report
    assert result["measure"] == "eval_score"
    # By hand: mlp pools 0.2 0.5 0.9 0.1 0.4 0.6 -> mean 2.7 / 6; IQM drops one run at each end.
    assert result["groups"]["mlp"]["mean"] == pytest.approx(0.45)
    assert result["groups"]["mlp"]["iqm"] == pytest.approx((0.2 + 0.4 + 0.5 + 0.6) / 4)
    assert result["groups"]["flow"]["mean"] == pytest.approx(3.3 / 6)
    assert result["groups"]["flow"]["iqm"] == pytest.approx((0.3 + 0.5 + 0.7 + 0.7) / 4)
    for wm, by_task in SCORES.items():
        g = result["groups"][wm]
        assert sorted(g["finals"]) == sorted(x for xs in by_task.values() for x in xs)
        assert g["iqm"] == pytest.approx(iqm_by_hand(g["finals"]))
        strata = list(by_task.values())
        for key, stat in (("mean", np.mean), ("iqm", iqm_by_hand)):
            exact = exact_bootstrap(strata, stat)  # 27 x 27 resamples, each as likely
            lo, hi = g[f"{key}_ci"]
            assert consistent_with_quantile(lo, exact, 0.025) and consistent_with_quantile(hi, exact, 0.975), \
                (wm, key, lo, hi)
        # Stratified: a resample keeps 3 runs of each task, so the pooled mean never leaves the
        # range of task-balanced means (an unstratified bootstrap reaches 6 copies of the minimum).
        assert g["mean_ci"][0] >= np.mean([min(s) for s in strata]) - 1e-12


def test_per_task_table_and_performance_profile_are_written(report):
    groups, out, result = report
    for name in ("report.md", "report.html", "per_task.csv", "performance_profile.png", "learning_curves.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "performance_profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "## Per-task scores" in md and "## Performance profile" in md and "stratified by `task`" in md
    assert "| cup-spin | 0.533 ± 0.351 (3) | 0.467 ± 0.289 (3) |" in md.replace("flow", "x").replace("mlp", "x") or \
        "| cup-spin | 0.467 ± 0.289 (3) | 0.533 ± 0.351 (3) |" in md
    with open(out / "per_task.csv", newline="") as f:
        rows = {(r["task"], r["group"]): r for r in csv.DictReader(f)}
    assert float(rows[("pendulum-spin", "flow")]["mean"]) == pytest.approx(1.9 / 3)
    assert rows[("cup-spin", "mlp")]["n"] == "3"
    profile = result["multitask"]["profiles"]["mlp"]
    taus = np.array(profile["taus"])
    mlp = [x for xs in SCORES["mlp"].values() for x in xs]
    for tau in (0.0, 0.15, 0.45, 0.85, 1.0):
        i = int(np.argmin(np.abs(taus - tau)))
        assert profile["fraction"][i] == pytest.approx(np.mean(np.array(mlp) > taus[i]))
        assert profile["low"][i] <= profile["fraction"][i] <= profile["high"][i]
    assert result["multitask"]["per_task"]["cup-spin"]["mlp"]["finals"] == [0.2, 0.5, 0.9]
    # curves run against iterations, not env steps (policy runs step no env for training)
    assert result["curves"]["eval_score"]["mlp"]["steps"][-1] == 40


def test_performance_profile_bands_by_hand():
    taus = np.array([0.0, 0.5, 1.0])
    same = performance_profile([np.array([0.6, 0.6]), np.array([0.2, 0.2])], taus, 500, np.random.default_rng(0))
    assert same.fraction.tolist() == [1.0, 0.5, 0.0]
    assert same.low.tolist() == same.high.tolist() == [1.0, 0.5, 0.0]  # nothing to resample within a task
    spread = performance_profile([np.array([0.4, 0.6])], taus, 4000, np.random.default_rng(0))
    # 2 runs resampled: 0, 1 or 2 of them above 0.5 with probabilities 1/4, 1/2, 1/4
    assert spread.fraction[1] == 0.5 and spread.low[1] == 0.0 and spread.high[1] == 1.0
    none = performance_profile([np.array([0.4, 0.6])], taus, 0, np.random.default_rng(0))
    assert np.isnan(none.low).all()


def test_command_line_groups_policy_runs_by_world_model(tmp_path, capsys):
    groups = make_sweep(tmp_path)
    dirs = [str(d) for ds in groups.values() for d in ds]
    out = tmp_path / "cmp"
    assert main(["--by", "alg.world_model.type", *dirs, "--out", str(out), "--bootstrap", "500"]) == 0
    stdout = capsys.readouterr().out
    assert "normalised score over 2 tasks x seeds" in stdout and "performance_profile.png" in stdout
    assert (out / "performance_profile.png").is_file()


def test_policy_and_online_runs_are_not_mixed(tmp_path):
    from test_compare import make_run

    policy = make_policy_run(tmp_path, "p", "mlp", "cup-spin", 0, 0.5)
    online = make_run(tmp_path, "o", 500.0, seed=0)
    with pytest.raises(UserError, match="cannot be compared in one report"):
        compare_runs({"A": [policy], "B": [online]}, tmp_path / "cmp", n_bootstrap=10)


def test_per_task_table_refers_to_the_online_runs_that_made_the_data(tmp_path):
    from test_compare import make_run

    online = make_run(tmp_path, "online_cup", 800.0, seed=0, task="cup-spin")  # final eval return 800
    data = tmp_path / "data"
    data.mkdir()
    (data / "export.json").write_text(json.dumps({"runs": [{"run": str(online), "task": "cup-spin"}]}))
    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "config.yaml").write_text(f"data:\n  path: {data}\npretrain:\n  iterations: 1\n")
    runs = [make_policy_run(tmp_path, f"p{s}", "mlp", "cup-spin", s, x) for s, x in enumerate([0.5, 0.7])]
    for r in runs:
        (r / "pretrained.json").write_text(json.dumps({"run": str(pre)}))
    result = compare_runs({"mlp": runs}, tmp_path / "cmp", n_bootstrap=100)
    assert result["multitask"]["reference"] == {"cup-spin": pytest.approx(0.8)}
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "| cup-spin | 0.600 ± 0.141 (2) | 0.800 | 0.75 |" in md


def test_export_summary_name_matches_the_exporter():
    from flowpwm.analysis.multitask import EXPORT_SUMMARY
    from flowpwm.data.export import SUMMARY

    assert EXPORT_SUMMARY == SUMMARY

"""Multi-seed run comparison on synthetic run directories with known numbers."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from flowpwm.analysis.compare import (
    FEW_SEEDS,
    bootstrap_ci,
    compare_runs,
    curve,
    group_by,
    main,
    probability_of_improvement,
)
from flowpwm.analysis.report import markdown_to_html
from flowpwm.analysis.runs import load_run
from flowpwm.config import UserError

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_runs.py"
A = [100.0, 200.0, 300.0, 400.0, 1000.0]
B = [50.0, 60.0, 70.0, 80.0, 90.0]
C = [90.0, 300.0, 300.0, 60.0, 250.0]  # overlaps A and B, with ties


def make_run(root: Path, name: str, final: float, seed: int, wm: str = "mlp", task: str = "cartpole-swingup",
             epochs: int = 6, steps_per_epoch: int = 1000, eval_every: int = 2, esnr: bool = True,
             esnr_offset: float = 0.0, esnr_every: int = 3) -> Path:
    """Eval return rises linearly from 0 at epoch 0 to `final` at the last epoch; ESNR (dB) is
    -10 + epoch + esnr_offset every `esnr_every` epochs."""
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"seed: {seed}\nenv:\n  task: {task}\nalg:\n  name: pwm_tiny\n"
                                   f"  world_model:\n    type: {wm}\n")
    lines = [{"epoch": 0, "env_steps": 500, "wall_time": 1.0, "eval_return": 0.0}]
    for e in range(1, epochs + 1):
        rec = {"epoch": e, "env_steps": 500 + e * steps_per_epoch, "wall_time": 60.0 * e + seed,
               "rss_mib": 1000.0 + 10 * e + seed, "wm_loss": 1.0 / e, "actor_loss": -e}
        if e % eval_every == 0 or e == epochs:
            rec["eval_return"] = final * e / epochs
        if esnr and e % esnr_every == 0:
            rec["esnr_db"] = -10.0 + e + esnr_offset
        lines.append(rec)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return d


def make_group(root: Path, name: str, finals, **kw) -> list[Path]:
    return [make_run(root, f"{name}{i}", f, seed=i, **kw) for i, f in enumerate(finals)]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def iqm_by_hand(x):
    """Middle 50 %: with n=5, 25 % of 5 = 1.25 -> drop int(1.25) = 1 run at each end."""
    x = sorted(x)
    cut = int(0.25 * len(x))
    return float(np.mean(x[cut:len(x) - cut]))


def poi_brute_force(x, y):
    wins = sum((xi > yj) + 0.5 * (xi == yj) for xi in x for yj in y)
    return wins / (len(x) * len(y))


@pytest.fixture(scope="module")
def three_groups(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    groups = {"A": make_group(root, "a", A), "B": make_group(root, "b", B, wm="flow"), "C": make_group(root, "c", C)}
    extra = [("World-model diagnostics", "| horizon | latent MSE |\n|---|---|\n| 1 | 0.125 |")]
    out = root / "cmp"
    result = compare_runs(groups, out, n_bootstrap=2000, seed=7, extra_sections=extra)
    return groups, out, result


def test_final_performance_matches_independent_computation(three_groups):
    _, out, result = three_groups
    rows = {r["group"]: r for r in read_csv(out / "summary.csv")}
    for name, finals in (("A", A), ("B", B), ("C", C)):
        g = result["groups"][name]
        assert g["n"] == 5 and g["finals"] == finals
        assert g["mean"] == pytest.approx(np.mean(finals))
        assert g["iqm"] == pytest.approx(iqm_by_hand(finals)) == pytest.approx(stats.trim_mean(finals, 0.25))
        assert float(rows[name]["mean"]) == pytest.approx(np.mean(finals))
        assert float(rows[name]["iqm"]) == pytest.approx(iqm_by_hand(finals))
        assert int(rows[name]["n"]) == 5
        for key in ("mean", "iqm"):
            lo, hi = g[f"{key}_ci"]
            assert lo <= g[key] <= hi and lo >= min(finals) and hi <= max(finals) and lo < hi
            assert float(rows[name][f"{key}_ci_low"]) == pytest.approx(lo)
    assert iqm_by_hand(A) == 300.0 and result["groups"]["A"]["mean"] == 400.0
    md = (out / "report.md").read_text()
    assert "| A | 5 |" in md and "400.0 [" in md and "300.0 [" in md  # mean and IQM of A in the table
    # Wall time (min) = last wall_time / 60, peak memory = max rss over the group's records.
    walls = [(60.0 * 6 + s) / 60 for s in range(5)]
    assert result["groups"]["A"]["wall_time_min_mean"] == pytest.approx(np.mean(walls))
    assert result["groups"]["A"]["wall_time_min_sd"] == pytest.approx(np.std(walls, ddof=1))
    assert float(rows["A"]["peak_rss_mib"]) == 1000.0 + 60 + 4
    assert float(rows["A"]["final_esnr_db"]) == pytest.approx(-4.0)


def test_pairwise_tests_match_scipy_and_brute_force(three_groups):
    _, out, result = three_groups
    finals = {"A": A, "B": B, "C": C}
    rows = {(r["x"], r["y"]): r for r in read_csv(out / "tests.csv")}
    assert [(p["x"], p["y"]) for p in result["pairs"]] == [("A", "B"), ("A", "C"), ("B", "C")]
    for p in result["pairs"]:
        x, y = finals[p["x"]], finals[p["y"]]
        welch = stats.ttest_ind(x, y, equal_var=False)
        mw = stats.mannwhitneyu(x, y, alternative="two-sided")
        assert p["welch_t"] == pytest.approx(welch.statistic) and p["welch_p"] == pytest.approx(welch.pvalue)
        assert p["mannwhitney_u"] == pytest.approx(mw.statistic) and p["mannwhitney_p"] == pytest.approx(mw.pvalue)
        assert p["prob_improvement"] == pytest.approx(poi_brute_force(x, y))
        lo, hi = p["prob_improvement_ci"]
        assert 0.0 <= lo <= p["prob_improvement"] <= hi <= 1.0
        row = rows[(p["x"], p["y"])]
        assert float(row["welch_t"]) == pytest.approx(welch.statistic)
        assert float(row["mannwhitney_p"]) == pytest.approx(mw.pvalue)
        assert float(row["prob_improvement"]) == pytest.approx(poi_brute_force(x, y))
    assert result["pairs"][0]["prob_improvement"] == 1.0  # every A run beats every B run
    assert 0.0 < result["pairs"][2]["prob_improvement"] < 0.5  # B mostly loses to C, one tie at 90


def test_probability_of_improvement_counts_ties_as_half():
    x, y = [1.0, 2.0, 3.0, 3.0], [3.0, 2.0, 0.0]
    assert probability_of_improvement(x, y) == pytest.approx(poi_brute_force(x, y))
    assert probability_of_improvement(y, x) == pytest.approx(1 - poi_brute_force(x, y))


def test_bootstrap_is_reproducible_and_seeded(three_groups, tmp_path):
    groups, _, result = three_groups
    again = compare_runs({"A": groups["A"], "B": groups["B"]}, tmp_path / "again", n_bootstrap=2000, seed=7)
    for name in ("A", "B"):
        assert again["groups"][name]["mean_ci"] == result["groups"][name]["mean_ci"]
        assert again["groups"][name]["iqm_ci"] == result["groups"][name]["iqm_ci"]
    assert again["pairs"][0]["prob_improvement_ci"] == result["pairs"][0]["prob_improvement_ci"]
    mean = lambda parts: np.concatenate(parts, axis=-1).mean(-1)
    ci = [bootstrap_ci([np.array(A)], mean, 2000, np.random.default_rng(s)) for s in (1, 1, 2)]
    assert ci[0] == ci[1] != ci[2]
    assert ci[0][0] < np.mean(A) < ci[0][1]


def test_outputs_exist_and_html_is_self_contained(three_groups):
    _, out, _ = three_groups
    for name in ("report.md", "report.html", "summary.csv", "tests.csv", "final_returns.png",
                 "learning_curves.png", "esnr_db.png", "wm_loss.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert 'src="learning_curves.png"' not in page and ".png)" not in page
    # The extra-sections hook lands in both reports, the table rendered as HTML.
    md = (out / "report.md").read_text()
    assert md.rstrip().endswith("| 1 | 0.125 |") and "## World-model diagnostics" in md
    assert "<h2>World-model diagnostics</h2>" in page and "<td>0.125</td>" in page
    assert FEW_SEEDS not in md  # 5 seeds per group


def test_learning_curve_grid_stops_at_shortest_run(tmp_path):
    runs = [load_run(make_run(tmp_path, "long", 600.0, seed=0, epochs=6)),
            load_run(make_run(tmp_path, "short", 200.0, seed=1, epochs=4))]
    c = curve(runs, "eval_return", smooth=("ema", 0.0))
    assert c.steps.tolist() == [500, 2500, 4500]  # evals of both; the short run ends at 4500
    expected = np.mean([[0, 200, 400], [0, 100, 200]], axis=0)
    assert np.allclose(c.mean, expected) and c.n == 2
    half = stats.t.ppf(0.975, 1) * stats.sem([[0, 200, 400], [0, 100, 200]], axis=0)
    assert np.allclose(c.high - c.mean, half) and np.allclose(c.mean - c.low, half)
    smoothed = curve(runs, "eval_return", smooth="window:2")
    assert np.allclose(smoothed.mean, [0, 75, 225])


def test_few_seeds_warning_and_by_key_grouping(tmp_path, capsys):
    dirs = make_group(tmp_path, "m", [10, 20, 30, 40, 50], wm="mlp") + make_group(tmp_path, "f", [5, 6, 7], wm="flow")
    assert group_by("alg.world_model.type", dirs) == {"flow": dirs[5:], "mlp": dirs[:5]}
    out = tmp_path / "cmp"
    assert main(["--by", "alg.world_model.type", *map(str, dirs), "--out", str(out), "--bootstrap", "500"]) == 0
    stdout = capsys.readouterr().out
    warned = [line for line in stdout.splitlines() if FEW_SEEDS in line]
    assert len(warned) == 1 and "'flow'" in warned[0] and "3 seed" in warned[0]
    md = (out / "report.md").read_text()
    assert FEW_SEEDS in md and "'mlp' has" not in md
    rows = {r["group"]: r for r in read_csv(out / "summary.csv")}
    assert set(rows) == {"flow", "mlp"} and rows["flow"]["n"] == "3" and rows["mlp"]["n"] == "5"
    assert float(rows["mlp"]["mean"]) == 30.0 and float(rows["flow"]["mean"]) == 6.0


def test_final_window_averages_last_evals(tmp_path):
    dirs = make_group(tmp_path, "w", [60.0, 120.0])  # evals at epochs 2, 4, 6: final/3, 2final/3, final
    r = compare_runs({"w": dirs}, tmp_path / "cmp", final_window=2, n_bootstrap=100)
    assert r["groups"]["w"]["finals"] == [pytest.approx(50.0), pytest.approx(100.0)]
    assert r["pairs"] == [] and any(FEW_SEEDS in w for w in r["warnings"])


def test_until_compares_longer_runs_at_a_screens_budget(tmp_path, capsys):
    # A 4-epoch screen against the same seeds' 6-epoch runs: both evaluate at epochs 2 and 4 (4500 env
    # steps), the long runs at 6 too (final/3, 2 final/3, final).
    long = make_group(tmp_path, "long", [90.0, 180.0])
    screen = make_group(tmp_path, "screen", [50.0, 70.0], epochs=4)
    r = compare_runs({"long": long, "screen": screen}, tmp_path / "cmp", n_bootstrap=100, until=4500)
    assert r["groups"]["long"]["finals"] == [pytest.approx(60.0), pytest.approx(120.0)]  # the epoch-4 evals
    assert r["groups"]["long"]["final_steps"] == r["groups"]["screen"]["final_steps"] == [4500, 4500]
    assert not any("different env steps" in w for w in r["warnings"])
    assert "as it stood at 4500 env steps" in (tmp_path / "cmp" / "report.md").read_text()
    uncut = compare_runs({"long": long, "screen": screen}, tmp_path / "cmp3", n_bootstrap=100)
    assert uncut["groups"]["long"]["finals"] == [pytest.approx(90.0), pytest.approx(180.0)]
    # Cut before every eval: one clear line, nothing written.
    with pytest.raises(UserError, match=r"group 'long': .*long0 has no eval at or before --until 400 env steps"):
        compare_runs({"long": long}, tmp_path / "cmp2", until=400)
    with pytest.raises(UserError, match="--until 0"):
        main(["--group", "A", *map(str, long), "--until", "0"])
    assert not (tmp_path / "cmp2").exists()


def test_bad_input_is_a_user_error(tmp_path):
    good = make_run(tmp_path, "ok", 1.0, seed=0)
    with pytest.raises(UserError, match="no run directories"):
        compare_runs({"A": []}, tmp_path / "o")
    with pytest.raises(UserError, match="not a run directory"):
        compare_runs({"A": [tmp_path / "missing"]}, tmp_path / "o")
    with pytest.raises(UserError, match="no key 'alg.nope'"):
        group_by("alg.nope", [good])
    with pytest.raises(UserError, match="--smooth gauss:2"):
        main(["--group", "A", str(good), "--smooth", "gauss:2"])
    with pytest.raises(UserError, match="not both"):
        main(["--group", "A", str(good), "--by", "seed", str(good)])
    r = subprocess.run([sys.executable, str(SCRIPT), "--group", "A", str(good), str(tmp_path / "missing"),
                        "--out", str(tmp_path / "o")], check=False, capture_output=True, text=True,
                       timeout=120, env={"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("compare_runs: error: group 'A':") and "missing" in lines[0]
    assert not (tmp_path / "o").exists()


def test_markdown_to_html_escapes_and_embeds():
    page = markdown_to_html("# T <x>\n\n> warn `a<b`\n\n- item **b**\n\n![fig](f.png)\n![other](g.png)\n",
                            images={"f.png": b"\x89PNG"})
    assert "<h1>T &lt;x&gt;</h1>" in page and "<code>a&lt;b</code>" in page and "<strong>b</strong>" in page
    assert 'src="data:image/png;base64,iVBORw=="' in page and "[image: other]" in page and 'src="g.png"' not in page


def test_tasks_are_strata_and_unequal_budgets_are_flagged(tmp_path):
    xa = make_group(tmp_path, "xa", [10, 20, 30], task="walker") + make_group(tmp_path, "xb", [100, 400], task="cheetah")
    ya = make_group(tmp_path, "ya", [15, 25], task="walker") + make_group(tmp_path, "yb", [300, 350, 500], task="cheetah",
                                                                          epochs=4)
    r = compare_runs({"X": xa, "Y": ya}, tmp_path / "cmp", n_bootstrap=300)
    per_task = np.mean([poi_brute_force([10, 20, 30], [15, 25]), poi_brute_force([100, 400], [300, 350, 500])])
    assert r["pairs"][0]["prob_improvement"] == pytest.approx(per_task)
    assert r["pairs"][0]["welch_t"] == pytest.approx(stats.ttest_ind([10, 20, 30, 100, 400], [15, 25, 300, 350, 500],
                                                                     equal_var=False).statistic)
    notes = "\n".join(r["warnings"])
    assert "mixes tasks" in notes and "group 'Y': runs end at different env steps (4500–6500)" in notes
    assert "groups end at different env steps" in notes


def test_report_includes_world_model_diagnostics_of_runs_with_checkpoints(tmp_path):
    from flowpwm.training.online import train
    from test_training import cfg_for

    for kind in ("mlp", "flow"):
        train(cfg_for(kind, epochs=2), tmp_path / kind, log=lambda *_: None)
    out = tmp_path / "report"
    assert main(["--group", "mlp", str(tmp_path / "mlp"), "--group", "flow", str(tmp_path / "flow"),
                 "--out", str(out), "--bootstrap", "200", "--diagnose-slices", "16"]) == 0
    report = (out / "report.md").read_text()
    section = report.split("World-model diagnostics", 1)[1]
    mlp_row = next(line for line in section.splitlines() if line.startswith("| mlp |"))
    flow_row = next(line for line in section.splitlines() if line.startswith("| flow |"))
    assert mlp_row.split("|")[10].strip() == "–" and float(flow_row.split("|")[10]) >= 0  # straightness: flow only
    assert all(-130 < float(row.split("|")[9]) < 130 for row in (mlp_row, flow_row))  # ESNR dB
    # the latent spread beside the errors: relative error >= 0, effective rank within 1..latent dim
    assert all(float(row.split("|")[5]) >= 0 and 1 <= float(row.split("|")[6]) <= 64 for row in (mlp_row, flow_row))
    assert "World-model diagnostics" in (out / "report.html").read_text()


def test_reference_scores_normalise_each_task_so_tasks_pool(tmp_path, capsys):
    """`--reference TASK=SCORE`: each run's final return over its task's reference score, pooled
    over tasks (the dev-set figure: mean normalised return with a task-stratified CI)."""
    runs = [make_run(tmp_path, f"{task}{seed}", final, seed, task=task)
            for task, finals in (("cheetah-run", (259.5, 519.0)), ("finger-spin", (474.0, 948.0)))
            for seed, final in enumerate(finals)]
    out = tmp_path / "cmp"
    assert main(["--group", "mlp", *map(str, runs), "--reference", "cheetah-run=519", "finger-spin=948",
                 "--out", str(out), "--bootstrap", "200", "--diagnose-slices", "0"]) == 0
    summary = read_csv(out / "summary.csv")[0]
    assert float(summary["mean"]) == pytest.approx(0.75)  # (0.5 + 1.0 + 0.5 + 1.0) / 4
    report = (out / "report.md").read_text()
    assert "normalised return" in report and (out / "learning_curves.png").is_file()
    assert "| 0.750 [" in report  # values near 1 keep 3 decimals (0.4 vs 0.35 matters here)
    printed = capsys.readouterr().out
    assert "mixes tasks" not in printed  # normalised returns pool across tasks by design
    # seeds 0 and 1 of each task: counted per task, and a seed on two tasks is no repeat
    assert "has 2 seed(s) of some task" in printed and "repeats seed" not in printed
    twice = make_run(tmp_path, "finger-spin1b", 900.0, 1, task="finger-spin")
    assert main(["--group", "mlp", *map(str, runs), str(twice), "--reference", "cheetah-run=519", "finger-spin=948",
                 "--out", str(tmp_path / "cmp2"), "--bootstrap", "200", "--diagnose-slices", "0"]) == 0
    assert "repeats seed(s) finger-spin 1" in capsys.readouterr().out

    for bad, hint in ((["cheetah-run=519"], "no score for task 'finger-spin'"), (["cheetah-run"], "TASK=SCORE"),
                      (["cheetah-run=-1", "finger-spin=948"], "positive score")):
        with pytest.raises(UserError, match=hint):
            main(["--group", "mlp", *map(str, runs), "--reference", *bad, "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()


def test_esnr_per_task_compares_groups_at_the_steps_all_runs_measured(tmp_path, capsys):
    """The headline comparison: per task, each group's actor-gradient ESNR averaged over the env
    steps where every run of the task measured it (a longer run's later, lower-ESNR points are
    left out), with the difference between groups and Welch's interval."""
    mlp = [make_run(tmp_path, f"m{i}", 100.0, i, task="finger-spin", esnr_offset=o) for i, o in enumerate((0.0, 1.0, 2.0))]
    # the flow runs go on to epoch 9: their ESNR at 9000+ env steps has no MLP counterpart
    flow = [make_run(tmp_path, f"f{i}", 100.0, i, wm="flow", task="finger-spin", epochs=9, esnr_offset=o)
            for i, o in enumerate((3.0, 4.0, 6.0))]
    other = [make_run(tmp_path, "c0", 100.0, 0, task="cheetah-run", esnr_every=3),
             make_run(tmp_path, "c1", 100.0, 1, wm="flow", task="cheetah-run", esnr_every=4)]
    out = tmp_path / "cmp"
    assert main(["--by", "alg.world_model.type", *map(str, mlp + flow + other), "--out", str(out),
                 "--bootstrap", "100", "--diagnose-slices", "0"]) == 0
    rows = {(r["task"], r["group"]): r for r in read_csv(out / "esnr_by_task.csv")}
    finger_m, finger_f = rows[("finger-spin", "mlp")], rows[("finger-spin", "flow")]
    assert finger_m["steps"] == finger_f["steps"] == "3500 6500"  # epochs 3 and 6 only
    # per run: mean of -10 + 3 + o and -10 + 6 + o = -5.5 + o; at the last common step -4 + o
    assert float(finger_m["mean_db"]) == pytest.approx(-4.5) and float(finger_f["mean_db"]) == pytest.approx(-1.1666667)
    assert float(finger_f["last_db"]) == pytest.approx(-4 + 13 / 3)
    m_runs, f_runs = np.array([-5.5, -4.5, -3.5]), np.array([-2.5, -1.5, 0.5])
    half = stats.t.ppf(0.975, 2) * stats.sem(f_runs)
    assert float(finger_f["mean_db_ci_low"]) == pytest.approx(f_runs.mean() - half)
    welch = stats.ttest_ind(f_runs, m_runs, equal_var=False)
    report = (out / "report.md").read_text()
    ci = welch.confidence_interval(0.95)
    assert f"| finger-spin | flow | mlp | 3.33 [{ci.low:.2f}, {ci.high:.2f}] | {welch.pvalue:.3g} |" in report
    # runs that share no measured step are averaged over their own, and the report says so
    assert rows[("cheetah-run", "mlp")]["common"] == "False" and ", own" in report
    assert "cheetah-run runs share no env steps at which all measured ESNR" in capsys.readouterr().out

import subprocess
import sys


def flowpwm(*args):
    return subprocess.run([sys.executable, "-m", "flowpwm.cli", *args], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_fit_wm_trains_both_world_models_and_prints_losses():
    for alg in ("pwm_tiny", "pwm_tiny_flow"):
        r = flowpwm("fit-wm", f"alg={alg}", "fit_wm.iterations=40", "fit_wm.log_every=20", "fit_wm.episodes=8")
        assert r.returncode == 0, r.stderr
        losses = [float(line.split("wm_loss")[1].split()[0]) for line in r.stdout.splitlines() if "wm_loss" in line]
        assert len(losses) == 2 and losses[1] < losses[0]
        assert "held-out open-loop" in r.stdout


def test_bad_input_gives_one_clear_line_and_nonzero_exit():
    cases = {
        ("fit-wm", "alg=pwm_3M"): "pwm_tiny_flow",
        ("fit-wm", "alg.world_model.integrator=rk4"): "heun",
        ("fit-wm", "alg.world_model.flow_source=decoder"): "rollout",
        ("bogus",): "parity",
    }
    for args, hint in cases.items():
        r = flowpwm(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and hint in lines[0], (args, r.stderr)

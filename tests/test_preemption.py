import json
import os
import signal
import subprocess
import sys
import time

from flowpwm.training.preemption import EXIT_REQUEUE, StopSignals
from test_training import FAST

EPOCHS = 12


def start(run_dir, *extra):
    args = [sys.executable, "-m", "flowpwm.cli", "train", "wm=mlp", *FAST, "train.checkpoint_every=1000",
            f"train.env_steps={40 + EPOCHS * 8}", "train.eval_every=4", f"hydra.run.dir={run_dir}", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(run_dir.parent)})


def epochs_logged(run_dir):
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.endswith("}")]


def test_sigusr1_checkpoints_exits_for_requeue_and_resume_finishes_the_same_run(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(run_dir)
    deadline = time.monotonic() + 240
    while max(epochs_logged(run_dir), default=0) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == EXIT_REQUEUE, err
    assert "stopped on SIGUSR1" in err and "resume=auto" in err
    stopped_at = max(epochs_logged(run_dir))
    assert 2 <= stopped_at < EPOCHS and (run_dir / "checkpoints" / "latest.pt").exists()

    proc = start(run_dir, "resume=auto")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert f"resumed at epoch {stopped_at}" in out
    assert epochs_logged(run_dir) == list(range(EPOCHS + 1))  # each epoch once, none missing
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    num_envs, steps_per_epoch, seed_rows = 2, 4, 20  # FAST: 2 envs, 4 steps an epoch, 40 seed steps
    assert last["env_steps"] == (seed_rows + EPOCHS * steps_per_epoch) * num_envs


def test_the_requeue_command_survives_the_sigterm_that_slurms_requeue_sends():
    """Slurm's requeue SIGTERMs every process of the job, the `scontrol requeue` submitit's
    handler runs included: a command the forwarded handler starts must not die of it (one did on
    a loaded node, and the sweep failed although the job had been requeued)."""
    done = []

    def submitit_like(signum, frame):  # requeues by a command, as submitit's handler does
        done.append(subprocess.run(["sh", "-c", "kill -TERM $$; echo requeued"], capture_output=True, text=True))

    before, term = signal.signal(signal.SIGUSR1, submitit_like), signal.getsignal(signal.SIGTERM)
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert stop.received == "SIGUSR1" and not done  # ours only notes it; the loop decides
            stop.forward()
    finally:
        signal.signal(signal.SIGUSR1, before)
    assert done[0].returncode == 0 and done[0].stdout == "requeued\n", done[0]
    assert signal.getsignal(signal.SIGTERM) is term  # the handlers from before are back


def test_ctrl_c_asks_for_the_checkpoint_and_a_second_ctrl_c_stops_at_once():
    import pytest

    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.received == "SIGINT"  # noted: the loop checkpoints at the epoch's end
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here at the latest
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

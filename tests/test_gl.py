"""Headless GPU nodes: our envs read state observations and need no OpenGL; a GL backend that
cannot load (no libEGL, an unknown name) must not stop training. Each case runs in a fresh
process (the backend is chosen when mujoco is first imported)."""

import json
import os
import subprocess
import sys
import textwrap

# Makes every libEGL unloadable in the child, as on a GPU node without it: PyOpenGL then fails
# with the error seen there (`'NoneType' object has no attribute 'eglQueryString'`).
HIDE_EGL = textwrap.dedent("""
    import ctypes, ctypes.util
    _init = ctypes.CDLL.__init__
    def _no_egl(self, name, *args, **kwargs):
        if name and "EGL" in str(name):
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        _init(self, name, *args, **kwargs)
    ctypes.CDLL.__init__ = _no_egl
    _find = ctypes.util.find_library
    ctypes.util.find_library = lambda name: None if "EGL" in name else _find(name)
""")

TRAIN_ONE_EPOCH = textwrap.dedent("""
    import json, os, sys
    from flowpwm.config import compose
    from flowpwm.training.online import train
    task = sys.argv[2]
    cfg = compose(["alg=pwm_tiny", f"env.task={task}", "env.num_envs=2", "train.seed_steps=40",
                   "train.pretrain_iterations=1", "train.steps_per_epoch=4", "train.env_steps=48",
                   "train.eval_episodes=1", "alg.wm_batch_size=8", "alg.wm_iterations=1", "alg.actor_batch_size=8",
                   "alg.critic_iterations=1", "alg.policy_iterations=1", "alg.horizon=3", "train.threads=1",
                   "wandb.mode=disabled", "monitor.progress=off", "train.plots=false", "train.esnr_every=0"])
    summary = train(cfg, sys.argv[1], log=lambda *a: None)
    print(json.dumps({"epochs": summary["epochs"], "MUJOCO_GL": os.environ.get("MUJOCO_GL"),
                      "opengl_loaded": "OpenGL" in sys.modules}))
""")


def run_child(tmp_path, env_gl, hide_egl=False, task="cartpole-swingup"):
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    if env_gl is not None:
        env["MUJOCO_GL"] = env_gl
    if hide_egl:
        (tmp_path / "site").mkdir()
        (tmp_path / "site" / "sitecustomize.py").write_text(HIDE_EGL)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", TRAIN_ONE_EPOCH, str(tmp_path / "run"), task], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_dm_control_trains_with_egl_forced_but_libegl_missing(tmp_path):
    result, stderr = run_child(tmp_path, "egl", hide_egl=True)
    assert result["epochs"] == 1 and result["MUJOCO_GL"] == "disable"
    assert "MUJOCO_GL=egl could not be loaded" in stderr and "eglQueryString" in stderr


def test_gymnasium_mujoco_trains_with_an_unknown_gl_backend(tmp_path):
    result, stderr = run_child(tmp_path, "no-such-backend", task="Hopper-v5")
    assert result["epochs"] == 1 and result["MUJOCO_GL"] == "disable"
    assert "MUJOCO_GL=no-such-backend could not be loaded" in stderr


def test_no_gl_backend_is_loaded_unless_asked_for(tmp_path):
    result, stderr = run_child(tmp_path, None)
    assert result == {"epochs": 1, "MUJOCO_GL": "disable", "opengl_loaded": False}
    assert "could not be loaded" not in stderr

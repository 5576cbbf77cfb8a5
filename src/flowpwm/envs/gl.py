"""MuJoCo's OpenGL backend (`MUJOCO_GL`) for our envs, which read state observations and never
render.

Importing mujoco or dm_control loads the backend `MUJOCO_GL` names, and a backend that cannot
load makes the import fail: on a GPU node without libEGL, `MUJOCO_GL=egl` gives
`AttributeError: 'NoneType' object has no attribute 'eglQueryString'`. So no backend is forced:
unset, `MUJOCO_GL` becomes `disable` (no GL library loaded, no display looked for); set by the
user, it is kept when it loads, and otherwise replaced by `disable` with one warning.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable

NO_GL = "disable"
NO_GL_NAMES = ("off", "disable", "disabled", "false", "0")  # mujoco's and dm_control's spellings of "none"

# As soon as our envs are imported, so that a mujoco / dm_control imported directly afterwards
# (tests, notebooks) does not look for a display either.
os.environ.setdefault("MUJOCO_GL", NO_GL)


def import_without_required_gl(importer: Callable[[], Any]) -> Any:
    """`importer()` (a function that imports mujoco / dm_control) with a GL backend that loads,
    or none. A missing package still raises from the retry, as it would have."""
    os.environ.setdefault("MUJOCO_GL", NO_GL)
    try:
        return importer()
    except Exception as e:  # noqa: BLE001 - whatever the GL loader raised (AttributeError, RuntimeError, ...)
        backend = os.environ.get("MUJOCO_GL", "")
        if backend.strip().lower() in NO_GL_NAMES:
            raise
        first = (str(e).strip().splitlines() or [""])[0][:160]
        warnings.warn(f"MUJOCO_GL={backend} could not be loaded ({type(e).__name__}: {first}); state observations "
                      f"need no renderer, so continuing with MUJOCO_GL={NO_GL}", RuntimeWarning, stacklevel=2)
        os.environ["MUJOCO_GL"] = NO_GL
        return importer()

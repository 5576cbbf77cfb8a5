"""TD-MPC2's 11 custom dm_control tasks (MT30 ids 19-29), built here from their reward definitions
on dm_control's own physics and task classes. `tol` below is `dm_control.utils.rewards.tolerance`;
"linear m/v" means margin m, sigmoid 'linear', value v at the margin.

- walker-{walk,run}-backwards: dm_control's walker stand reward (3·standing + upright)/4
  × (5·tol(v_x ≤ −s, linear s/2, 0.5) + 1)/6, s = 1 (walk) or 8 (run).
- cheetah-run-backwards: tol(v_x ≤ −8, linear 8, 0) (0.8 × dm_control's run speed of 10).
- cheetah-run-front / run-back: the back / front foot raised: up = (3·foot_up + 2·torso_up)/5 with
  tol(height ≥ 1.2, margin 0.6) for the foot and the torso, × (5·tol(v_x ≥ 6, linear 6, 0) + 1)/6.
- cheetah-jump: the mean of standing on the front and on the back foot, each
  (5·tol((torso_z + foot_z)/2 ≥ 1.2, margin 0.6) + tol(|v_x| ≤ 0.5, linear 0.5, 0))/6.
- hopper-hop-backwards: tol(height ∈ [0.6, 2]) × tol(v_x ≤ −1, linear 0.5, 0.5).
- reacher-three-{easy,hard}: a 3-link reacher (assets/reacher_three.xml) with dm_control's reacher
  task: target size 0.05 / 0.015, reward tol(finger-target distance ≤ target + finger radius).
- cup-spin: (1 − in_target) × (tol(|ball − target| ≥ 0.5, linear 0.25, 0.5)
  + 2·tol(ball speed ≥ 6, linear 3, 0.5))/3; the ball starts in the cup 90 % of the time.
- pendulum-spin: tol(|ω| ≥ 9, linear 4.5, 0.5), from swingup's random start angle.

Episode lengths and control steps are those of each domain's suite tasks. The walker and cheetah
floors are made twice as long, so running backwards stays on the (rendered) floor.

Imports dm_control at module level: import this module only when building an env.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

import numpy as np
from dm_control.rl import control
from dm_control.suite import ball_in_cup, cheetah, common, hopper, pendulum, reacher, walker
from dm_control.utils import rewards

INF = float("inf")
REACHER_THREE_XML = Path(__file__).with_name("assets") / "reacher_three.xml"

_CHEETAH_UP = 1.2  # height (m) of a raised foot / torso for full reward
_CHEETAH_BACKWARDS_SPEED = 0.8 * cheetah._RUN_SPEED  # 8 m/s
_CHEETAH_ONE_FOOT_SPEED = 0.6 * cheetah._RUN_SPEED  # 6 m/s
_CHEETAH_JUMP_SPEED = 0.5  # |v_x| allowed while standing on one foot
_HOPPER_BACKWARDS_SPEED = 1.0
_CUP_SPIN_DISTANCE = 0.5
_CUP_SPIN_SPEED = 6.0
_CUP_START_OUTSIDE = 0.1  # probability that the ball may start anywhere (else inside the cup)
_PENDULUM_SPIN_SPEED = 9.0


def _linear(x: float, bounds: tuple[float, float], margin: float, value_at_margin: float) -> float:
    return float(rewards.tolerance(x, bounds=bounds, margin=margin, sigmoid="linear", value_at_margin=value_at_margin))


def _longer_floor(model_file: str, floor: str, factor: float = 2.0) -> str:
    """A suite model's XML with the half-length of its floor plane `floor` times `factor`."""
    root = ET.fromstring(common.read_model(model_file))
    geom = next(g for g in root.iter("geom") if g.get("name") == floor)
    size = [float(s) for s in geom.get("size").split()]
    size[0] *= factor
    geom.set("size", " ".join(f"{s:g}" for s in size))
    return ET.tostring(root, encoding="unicode")


# ---- walker ------------------------------------------------------------------------------------

class BackwardsWalker(walker.PlanarWalker):
    """Stand up and move backwards at `move_speed` (m/s)."""

    def get_reward(self, physics: walker.Physics) -> float:
        standing = rewards.tolerance(physics.torso_height(), bounds=(walker._STAND_HEIGHT, INF),
                                     margin=walker._STAND_HEIGHT / 2)
        upright = (1 + physics.torso_upright()) / 2
        stand = (3 * standing + upright) / 4
        s = self._move_speed
        move = _linear(physics.horizontal_velocity(), (-INF, -s), s / 2, 0.5)
        return float(stand * (5 * move + 1) / 6)


def _walker(speed: float, random: Any) -> control.Environment:
    physics = walker.Physics.from_xml_string(_longer_floor("walker.xml", "floor"), common.ASSETS)
    return control.Environment(physics, BackwardsWalker(speed, random=random), time_limit=walker._DEFAULT_TIME_LIMIT,
                               control_timestep=walker._CONTROL_TIMESTEP)


# ---- cheetah -----------------------------------------------------------------------------------

def cheetah_up(physics: cheetah.Physics, body: str) -> float:
    """tol(height of `body` ≥ 1.2 m, gaussian margin 0.6)."""
    z = physics.named.data.xpos[body, "z"]
    return float(rewards.tolerance(z, bounds=(_CHEETAH_UP, INF), margin=_CHEETAH_UP / 2))


def cheetah_run_one_foot(physics: cheetah.Physics, raised_foot: str) -> float:
    up = (3 * cheetah_up(physics, raised_foot) + 2 * cheetah_up(physics, "torso")) / 5
    run = _linear(physics.speed(), (_CHEETAH_ONE_FOOT_SPEED, INF), _CHEETAH_ONE_FOOT_SPEED, 0.0)
    return up * (5 * run + 1) / 6


def cheetah_stand_one_foot(physics: cheetah.Physics, raised_foot: str) -> float:
    z = (physics.named.data.xpos["torso", "z"] + physics.named.data.xpos[raised_foot, "z"]) / 2
    height = float(rewards.tolerance(z, bounds=(_CHEETAH_UP, INF), margin=_CHEETAH_UP / 2))
    still = _linear(physics.speed(), (-_CHEETAH_JUMP_SPEED, _CHEETAH_JUMP_SPEED), _CHEETAH_JUMP_SPEED, 0.0)
    return (5 * height + still) / 6


CHEETAH_REWARDS: dict[str, Callable[[cheetah.Physics], float]] = {
    "run-backwards": lambda p: _linear(p.speed(), (-INF, -_CHEETAH_BACKWARDS_SPEED), _CHEETAH_BACKWARDS_SPEED, 0.0),
    "run-front": lambda p: cheetah_run_one_foot(p, "bfoot"),  # front feet on the ground, back foot up
    "run-back": lambda p: cheetah_run_one_foot(p, "ffoot"),
    "jump": lambda p: (cheetah_stand_one_foot(p, "bfoot") + cheetah_stand_one_foot(p, "ffoot")) / 2,
}


class CustomCheetah(cheetah.Cheetah):
    """dm_control's cheetah with one of the rewards in `CHEETAH_REWARDS`."""

    def __init__(self, goal: str, random: Any = None):
        super().__init__(random=random)
        self.goal = goal
        self._reward = CHEETAH_REWARDS[goal]

    def get_reward(self, physics: cheetah.Physics) -> float:
        return float(self._reward(physics))


def _cheetah(goal: str, random: Any) -> control.Environment:
    physics = cheetah.Physics.from_xml_string(_longer_floor("cheetah.xml", "ground"), common.ASSETS)
    return control.Environment(physics, CustomCheetah(goal, random=random), time_limit=cheetah._DEFAULT_TIME_LIMIT)


# ---- hopper ------------------------------------------------------------------------------------

class HopBackwards(hopper.Hopper):
    """Stay upright and hop backwards."""

    def __init__(self, random: Any = None):
        super().__init__(hopping=False, random=random)

    def get_reward(self, physics: hopper.Physics) -> float:
        standing = rewards.tolerance(physics.height(), (hopper._STAND_HEIGHT, 2))
        hop = _linear(physics.speed(), (-INF, -_HOPPER_BACKWARDS_SPEED), _HOPPER_BACKWARDS_SPEED / 2, 0.5)
        return float(standing * hop)


def _hopper(random: Any) -> control.Environment:
    physics = hopper.Physics.from_xml_string(common.read_model("hopper.xml"), common.ASSETS)
    return control.Environment(physics, HopBackwards(random=random), time_limit=hopper._DEFAULT_TIME_LIMIT,
                               control_timestep=hopper._CONTROL_TIMESTEP)


# ---- reacher-three -----------------------------------------------------------------------------

def _reacher_three(target_size: float, random: Any) -> control.Environment:
    physics = reacher.Physics.from_xml_string(REACHER_THREE_XML.read_text(), common.ASSETS)
    return control.Environment(physics, reacher.Reacher(target_size, random=random),
                               time_limit=reacher._DEFAULT_TIME_LIMIT)


# ---- cup-spin ----------------------------------------------------------------------------------

class CupSpin(ball_in_cup.BallInCup):
    """Swing the ball around the cup, far from it and fast."""

    def initialize_episode(self, physics: ball_in_cup.Physics) -> None:
        # Rejection-sample a collision-free ball position; 90 % of episodes also require it in the cup.
        anywhere = self.random.uniform() < _CUP_START_OUTSIDE
        while True:
            physics.named.data.qpos["ball_x"] = self.random.uniform(-0.2, 0.2)
            physics.named.data.qpos["ball_z"] = self.random.uniform(0.2, 0.5)
            physics.after_reset()
            if physics.data.ncon == 0 and (anywhere or physics.in_target()):
                break
        super(ball_in_cup.BallInCup, self).initialize_episode(physics)  # base.Task's, not catch's sampler

    def get_reward(self, physics: ball_in_cup.Physics) -> float:
        dist = float(np.linalg.norm(physics.ball_to_target()))
        speed = float(np.linalg.norm(physics.named.data.qvel[["ball_x", "ball_z"]]))
        far = _linear(dist, (_CUP_SPIN_DISTANCE, INF), _CUP_SPIN_DISTANCE / 2, 0.5)
        fast = _linear(speed, (_CUP_SPIN_SPEED, INF), _CUP_SPIN_SPEED / 2, 0.5)
        return (1.0 - physics.in_target()) * (far + 2 * fast) / 3


def _cup(random: Any) -> control.Environment:
    physics = ball_in_cup.Physics.from_xml_string(common.read_model("ball_in_cup.xml"), common.ASSETS)
    return control.Environment(physics, CupSpin(random=random), time_limit=ball_in_cup._DEFAULT_TIME_LIMIT,
                               control_timestep=ball_in_cup._CONTROL_TIMESTEP)


# ---- pendulum-spin -----------------------------------------------------------------------------

class PendulumSpin(pendulum.SwingUp):
    """Spin the pole as fast as possible, either way."""

    def get_reward(self, physics: pendulum.Physics) -> float:
        w = float(np.linalg.norm(physics.angular_velocity()))  # |ω|
        return _linear(w, (_PENDULUM_SPIN_SPEED, INF), _PENDULUM_SPIN_SPEED / 2, 0.5)


def _pendulum(random: Any) -> control.Environment:
    physics = pendulum.Physics.from_xml_string(common.read_model("pendulum.xml"), common.ASSETS)
    return control.Environment(physics, PendulumSpin(random=random), time_limit=pendulum._DEFAULT_TIME_LIMIT)


LOADERS: dict[str, Callable[[Any], control.Environment]] = {
    "walker-walk-backwards": lambda random: _walker(walker._WALK_SPEED, random),
    "walker-run-backwards": lambda random: _walker(walker._RUN_SPEED, random),
    "cheetah-run-backwards": lambda random: _cheetah("run-backwards", random),
    "cheetah-run-front": lambda random: _cheetah("run-front", random),
    "cheetah-run-back": lambda random: _cheetah("run-back", random),
    "cheetah-jump": lambda random: _cheetah("jump", random),
    "hopper-hop-backwards": _hopper,
    "reacher-three-easy": lambda random: _reacher_three(reacher._BIG_TARGET, random),
    "reacher-three-hard": lambda random: _reacher_three(reacher._SMALL_TARGET, random),
    "cup-spin": _cup,
    "pendulum-spin": _pendulum,
}


def load(task: str, random: Any = None) -> control.Environment:
    """The dm_control Environment of custom task `task`; `random` seeds its RandomState."""
    return LOADERS[task](random)

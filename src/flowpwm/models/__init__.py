from flowpwm.models.actor import Actor
from flowpwm.models.critic import Critic
from flowpwm.models.flow_world_model import FlowWorldModel
from flowpwm.models.layers import NormedLinear, SimNorm, mlp
from flowpwm.models.factory import build_world_model
from flowpwm.models.world_model import WorldModel

__all__ = [
    "Actor",
    "Critic",
    "FlowWorldModel",
    "NormedLinear",
    "SimNorm",
    "WorldModel",
    "build_world_model",
    "mlp",
]

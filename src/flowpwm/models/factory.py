"""Build a world model from a config's `alg.world_model` section."""

from __future__ import annotations

from omegaconf.errors import OmegaConfBaseException

from flowpwm.config import UserError
from flowpwm.models.flow_world_model import FlowWorldModel
from flowpwm.models.world_model import LatentWorldModel, WorldModel


def build_world_model(wm_cfg, obs_dim: int, action_dim: int, num_tasks: int = 1,
                      action_dims=None, episodic: bool = False) -> LatentWorldModel:
    """`type: mlp` → WorldModel, `type: flow` → FlowWorldModel (with a termination head when
    `episodic`). A bad or missing setting raises `UserError` naming it."""
    try:
        common = dict(
            obs_dim=obs_dim,
            action_dim=action_dim,
            latent_dim=int(wm_cfg.latent_dim),
            encoder_units=list(wm_cfg.encoder_units),
            units=list(wm_cfg.units),
            num_bins=int(wm_cfg.num_bins),
            vmin=float(wm_cfg.vmin),
            vmax=float(wm_cfg.vmax),
            simnorm_dim=int(wm_cfg.simnorm_dim),
            num_tasks=num_tasks,
            task_dim=int(wm_cfg.get("task_dim", 0)),
            action_dims=action_dims,
            dropout=float(wm_cfg.get("dropout", 0.0)),
            episodic=episodic,
        )
        if wm_cfg.type == "mlp":
            return WorldModel(**common)
        if wm_cfg.type == "flow":
            return FlowWorldModel(
                **common,
                velocity_units=list(wm_cfg.velocity_units),
                integrator=wm_cfg.integrator,
                substeps=int(wm_cfg.substeps),
                tau_embedding=wm_cfg.tau_embedding,
                tau_features=int(wm_cfg.tau_features),
                tangent_projection=bool(wm_cfg.tangent_projection),
                simplex_retraction=bool(wm_cfg.get("simplex_retraction", False)),
                flow_space=wm_cfg.get("flow_space", "latent"),
                logit_floor=float(wm_cfg.get("logit_floor", 1e-3)),
            )
        raise ValueError(f"type={wm_cfg.type!r} is unknown: use 'mlp' or 'flow'")
    except (ValueError, OmegaConfBaseException) as e:
        raise UserError(f"alg.world_model: {str(e).splitlines()[0]}") from e

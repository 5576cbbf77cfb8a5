"""Where the Hydra configs live and how to compose them outside `@hydra.main`."""

from __future__ import annotations

import re
import secrets
import string
from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, OmegaConf

# `${uid:}` in hydra.run.dir / hydra.sweep.dir: 6 random characters, one value per composed
# config (cached like Hydra's `${now:}`, and copied with it into every job of a sweep), so two
# runs started in the same second get different directories.
OmegaConf.register_new_resolver(
    "uid", lambda: "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(6)),
    use_cache=True, replace=True)


class UserError(Exception):
    """A mistake the user can fix (bad config, missing file, unknown name): the CLI prints
    the message as one line and exits non-zero."""


def config_dir() -> Path:
    """Configs packaged into the wheel, else the repository's ./configs (editable install)."""
    packaged = Path(__file__).with_name("configs")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "configs"


def alg_names() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "alg").glob("*.yaml"))


def compose(overrides: Iterable[str] = (), config_name: str = "config") -> DictConfig:
    """The config `flowpwm` commands run with, after Hydra-syntax overrides (`alg=pwm_5M`)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from hydra.core.global_hydra import GlobalHydra

    try:
        if GlobalHydra.instance().is_initialized():  # inside `flowpwm train`'s Hydra job: same search path
            return hydra_compose(config_name, overrides=list(overrides))
        with initialize_config_dir(version_base=None, config_dir=str(config_dir())):
            return hydra_compose(config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        first = str(e).strip().splitlines()[0]
        unknown = re.match(r"Could not override '([^']+)'", first)
        if unknown:  # Hydra's hint (`+key=value`) would add the key; the schema refuses unknown keys
            from flowpwm.schema import unknown_key_line

            raise UserError(unknown_key_line(unknown.group(1), show_value=False)) from e
        raise UserError(f"config {list(overrides)}: {first} (algorithms: {', '.join(alg_names())})") from e


def load_alg(name: str) -> DictConfig:
    if name not in alg_names():
        raise UserError(f"unknown alg config {name!r}: choose one of {', '.join(alg_names())} in {config_dir() / 'alg'}")
    return compose([f"alg={name}"]).alg

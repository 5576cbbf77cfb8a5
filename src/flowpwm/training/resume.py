"""Which run directory a training run writes, and what a resume may change.

`resume=null` starts a new run (refusing a directory that holds a checkpoint), `resume=auto`
continues the run directory's checkpoint or says it starts fresh, `resume=PATH` continues
PATH in place. A resumed run keeps its experiment: every key of the config is frozen except
those in `RESUMABLE` (budgets, evaluation and checkpoint cadence, logging, device); a change
to any other key is refused, naming the keys. Allowed changes are appended to
config_history.jsonl; config.yaml stays the config the run started with."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig

from flowpwm.config import UserError
from flowpwm.reproducibility import MISSING, ExperimentConfig, _canonical_json, _flatten, run_provenance
from flowpwm.rundir import CONFIG_HISTORY, RunDir, remove_if_empty

# Keys a resumed run may change: a dotted key, or a prefix ending in "." for a whole section.
RESUMABLE = ("train.env_steps", "train.eval_every", "train.eval_episodes", "train.checkpoint_every",
             "train.threads", "train.plots", "train.esnr_every", "train.esnr_samples", "monitor.", "wandb.",
             "fit_wm.", "perf.", "device", "deterministic", "resume")


# Keys added to the config after runs were made with it, each with the value that reproduces what
# the code did before the key existed. A run whose config lacks one continues when the new value
# is that one (the addition is recorded like any change); any other value is a frozen change.
ADDED_KEYS = {
    "alg.wm_loss.termination_pos_weight": 1.0,
    "alg.actor.explore_logstd": None,
    "alg.actor.saturation_coef": 0.0,
    "alg.actor.min_logstd_final": None,
    "alg.actor.min_logstd_steps": 50000,
    "alg.imagine_horizon": None,
    "alg.imagine_horizon_from": None,
    # the flow knobs of the latent-collapse fix (docs/results.md), at what the code did before them
    "alg.world_model.consistency_coef": 0.0,
    "alg.world_model.fm_source_grad": True,
    "alg.world_model.identity_grad": True,
    "alg.world_model.flow_space": "latent",
    "alg.world_model.logit_floor": 0.001,
}


def resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE)


def resolve_run_dir(cfg: DictConfig, run_dir: Path | str, log=print) -> tuple[Path, bool]:
    """(the directory this run writes, whether it continues a checkpoint there). Writes
    nothing, except removing `run_dir` when resume=PATH names another one and `run_dir` is the
    empty directory Hydra made for this job."""
    resume, run_dir = cfg.get("resume"), Path(run_dir)
    if not resume:
        if RunDir(run_dir).has_checkpoint():
            raise UserError(f"{run_dir} already holds a run ({RunDir(run_dir).latest_checkpoint}); continue it with "
                            f"resume=auto, or start a new one in another hydra.run.dir")
        return run_dir, False
    if resume == "auto":
        if RunDir(run_dir).has_checkpoint():
            return run_dir, True
        log(f"resume=auto: no checkpoint in {run_dir}: starting a new run there")
        return run_dir, False
    path = Path(str(resume))
    if not RunDir(path).has_checkpoint():
        raise UserError(f"resume={resume}: no checkpoint at {RunDir(path).latest_checkpoint}; pass the directory of "
                        f"a run that saved one, or resume=auto")
    if path.resolve() != run_dir.resolve():
        remove_if_empty(run_dir)
        log(f"resume={resume}: continuing {path} in place")
    return path, True


def effective_config(run: RunDir) -> dict:
    """The run's config now: config.yaml (as it started) with every recorded resume's changes."""
    flat = _flatten(ExperimentConfig.load(run.config).to_dict())
    for entry in run.read_history():
        for key, (_old, new) in entry.get("changes", {}).items():
            flat[key] = new
    return flat


def resume_changes(run: RunDir, cfg: DictConfig) -> dict[str, list]:
    """{key: [old, new]} of every allowed change against the run's effective config; a change
    to a frozen key is a UserError that names every such key."""
    if not run.config.is_file():
        raise UserError(f"{run.path} has a checkpoint but no {run.config.name}: it cannot be checked what the run "
                        f"was; start a new run")
    old, new = effective_config(run), _flatten(ExperimentConfig(cfg).to_dict())
    changed = {}
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, MISSING), new.get(key, MISSING)
        if a is MISSING or b is MISSING or _canonical_json(a) != _canonical_json(b):
            changed[key] = [a, b]
    frozen = [f"{k} ({_show(a)}{_as_before(k, a)} -> {_show(b)})" for k, (a, b) in changed.items()
              if not resumable(k) and not _added_as_before(k, a, b)]
    if frozen:
        raise UserError(f"resume {run.path}: {'; '.join(frozen)} would mix two experiments in one run; keep the "
                        f"run's values, or start a new run (a resume may change only "
                        f"{', '.join(k + '*' if k.endswith('.') else k for k in RESUMABLE)})")
    plain = lambda v: None if v is MISSING else copy.deepcopy(v)  # noqa: E731
    return {k: [plain(a), plain(b)] for k, (a, b) in changed.items() if k != "resume"}


def history_entry(changes: dict[str, list], epoch: int, env_steps: int) -> dict:
    prov = run_provenance()
    return {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": prov["hostname"],
            "git_commit": prov["git_commit"], "code_sha256": prov["code_sha256"],
            "resumed_at_epoch": int(epoch), "env_steps": int(env_steps),
            "changes": changes}


def describe_changes(changes: dict[str, list]) -> str:
    if not changes:
        return "no config changes"
    return ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in changes.items()) + f" (see {CONFIG_HISTORY})"


def _added_as_before(key: str, old, new) -> bool:
    if old is not MISSING or key not in ADDED_KEYS:
        return False
    before = ADDED_KEYS[key]
    if isinstance(new, (int, float)) and not isinstance(new, bool):  # termination_pos_weight=1 is 1.0
        return float(new) == before
    return _canonical_json(new) == _canonical_json(before)


def _as_before(key: str, old) -> str:
    """For a key the run predates: the value to pass to continue it as it ran."""
    if old is not MISSING or key not in ADDED_KEYS:
        return ""
    return f", i.e. {key}={_canonical_json(ADDED_KEYS[key])} before the key existed"


def _show(v) -> str:
    return "<absent>" if v is MISSING else repr(v)

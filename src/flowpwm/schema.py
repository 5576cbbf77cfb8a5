"""The typed schema of the whole config, checked on the composed config before anything is
written: every key known (a `+new_key` is refused), every type, range and choice checked,
every violation reported as one line `key=value: what is allowed`.

HOW TO ADD A KEY: add one line to the dataclass of its section below, e.g. for
`alg.wm_loss.my_coef` add to `WmLoss`:

        my_coef: float = key(ge=0)

and give it its default in the YAML file as usual (the schema holds types and allowed values,
never defaults). Keys of every world model go into `WorldModel`, keys of flow world models only
(`*_flow` configs) into `FlowWorldModel`, keys of `alg` into `Alg`, a new section is a new
dataclass plus one line in its parent. `key()` takes ge/gt/le/lt (numbers, or each element of a
list), `choices` (a collection, or a function returning one), `min_len` (lists); types are
int, float (an int is accepted), bool, str, list[int], list[str], `X | None`, and unions such as
`bool | str` (a value fits when it fits one member). Checks that
involve several keys are the `_cross_*` functions at the end, one line each.
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, Iterable

from omegaconf import DictConfig, OmegaConf

from flowpwm.config import UserError
from flowpwm.algorithms.pwm import TERMINATION_MASKS
from flowpwm.envs.registry import available_tasks
from flowpwm.envs.tasksets import MT80, TASK_SETS
from flowpwm.integrators import STEPS, TAU_SAMPLING
from flowpwm.losses import FLOW_SOURCES
from flowpwm.models.flow_world_model import FLOW_SPACES, TAU_EMBEDDINGS
from flowpwm.monitoring import PROGRESS_MODES, WANDB_MODES
from flowpwm.perf import AUTO, COMPILE_BACKENDS, COMPILE_MODES

LR_SCHEDULES = ("linear", "constant")
DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def key(*, ge=None, gt=None, le=None, lt=None, choices: Iterable | Callable[[], Iterable] | None = None,
        min_len: int | None = None) -> Any:
    """A schema entry: the annotation gives the type, these the allowed values."""
    return field(metadata={"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "min_len": min_len})


# -- the sections ---------------------------------------------------------------------------------
@dataclass
class WorldModel:
    type: str = key(choices=("mlp", "flow"))
    latent_dim: int = key(ge=1)
    encoder_units: list[int] = key(ge=1, min_len=1)
    units: list[int] = key(ge=1, min_len=1)
    num_bins: int = key(ge=1)
    vmin: float = key()
    vmax: float = key()
    simnorm_dim: int = key(ge=1)
    task_dim: int = key(ge=0)
    dropout: float = key(ge=0, lt=1)


@dataclass
class FlowWorldModel(WorldModel):
    integrator: str = key(choices=tuple(STEPS))
    substeps: int = key(ge=1)
    tau_sampling: str = key(choices=TAU_SAMPLING)
    flow_source: str = key(choices=FLOW_SOURCES)
    tangent_projection: bool = key()
    simplex_retraction: bool = key()
    flow_space: str = key(choices=FLOW_SPACES)
    logit_floor: float = key(gt=0, lt=1)
    tau_embedding: str = key(choices=TAU_EMBEDDINGS)
    tau_features: int = key(ge=1)
    velocity_units: list[int] = key(ge=1, min_len=1)
    consistency_coef: float = key(ge=0)
    fm_source_grad: bool = key()
    identity_grad: bool = key()


WORLD_MODELS = {"mlp": WorldModel, "flow": FlowWorldModel}  # alg.world_model.type -> its schema


@dataclass
class Actor:
    units: list[int] = key(ge=1, min_len=1)
    init_logstd: float = key()
    min_logstd: float = key()
    explore_logstd: float | None = key()
    min_logstd_final: float | None = key()
    min_logstd_steps: int = key(ge=1)
    saturation_coef: float = key(ge=0)


@dataclass
class Critic:
    units: list[int] = key(ge=1, min_len=1)
    num_critics: int = key(ge=1)


@dataclass
class WmLoss:
    rho: float = key(gt=0, le=1)
    dynamics_coef: float = key(ge=0)
    reward_coef: float = key(ge=0)
    termination_coef: float = key(ge=0)
    termination_pos_weight: float = key(gt=0)


@dataclass
class Alg:
    name: str = key()
    world_model: WorldModel = key()  # WorldModel or FlowWorldModel, by its `type`
    actor: Actor = key()
    critic: Critic = key()
    horizon: int = key(ge=1)
    imagine_horizon: int | None = key(ge=1)  # null: horizon
    imagine_horizon_from: int | None = key(ge=0)  # null: imagine_horizon from the start
    gamma: float = key(gt=0, le=1)
    lam: float = key(ge=0, le=1)
    model_lr: float = key(gt=0)
    actor_lr: float = key(gt=0)
    critic_lr: float = key(gt=0)
    wm_batch_size: int = key(ge=1)
    wm_iterations: int = key(ge=1)
    wm_grad_norm: float = key(gt=0)
    actor_grad_norm: float = key(gt=0)
    critic_grad_norm: float = key(gt=0)
    critic_iterations: int = key(ge=1)
    critic_batches: int = key(ge=1)
    target_critic_alpha: float = key(ge=0, lt=1)
    actor_batch_size: int = key(ge=1)
    policy_iterations: int = key(ge=1)
    detach: bool = key()
    ret_rms: bool = key()
    lr_schedule: str = key(choices=LR_SCHEDULES)
    min_lr: float = key(ge=0)
    episodic: bool | str = key(choices=("auto", True, False))  # auto: the task can terminate
    termination_mask: str = key(choices=TERMINATION_MASKS)
    wm_loss: WmLoss = key()


@dataclass
class Env:
    task: str = key(choices=available_tasks)
    num_envs: int = key(ge=1)


@dataclass
class Train:
    env_steps: int = key(ge=1)
    seed_steps: int = key(ge=0)
    pretrain_iterations: int = key(ge=0)
    steps_per_epoch: int = key(ge=1)
    eval_every: int = key(ge=1)
    eval_episodes: int = key(ge=1)
    checkpoint_every: int = key(ge=1)
    buffer_size: int = key(ge=1)
    threads: int = key(ge=0)
    plots: bool = key()
    esnr_every: int = key(ge=0)
    esnr_samples: int = key(ge=2)


@dataclass
class Monitor:
    progress: str = key(choices=PROGRESS_MODES)
    print_every_s: float = key(ge=0)
    ema: float = key(ge=0, lt=1)


@dataclass
class Wandb:
    mode: str = key(choices=WANDB_MODES)
    project: str = key()
    entity: str | None = key()
    group: str | None = key()
    name: str | None = key()
    tags: list[str] = key()
    grad_hist_every: int = key(ge=0)


@dataclass
class FitWm:
    iterations: int = key(ge=1)
    batch_size: int = key(ge=1)
    episodes: int = key(ge=1)
    episode_length: int = key(ge=2)
    obs_dim: int = key(ge=1)
    action_dim: int = key(ge=1)
    log_every: int = key(ge=1)
    buffer: str | None = key()  # a run dir: fit on its replay buffer instead of the toy system
    simulator: int = key(ge=0)  # with buffer: check the fitted model's ∂z'/∂a against the simulator at N states


@dataclass
class Perf:
    device_metrics: bool = key()
    fused_adam: bool | str = key(choices=AUTO)
    tf32: bool | str = key(choices=AUTO)
    compile: bool = key()
    compile_mode: str = key(choices=COMPILE_MODES)
    compile_backend: str = key(choices=COMPILE_BACKENDS)


@dataclass
class Config:
    seed: int = key(ge=0)
    device: str = key()  # cpu | cuda | cuda:N | mps: checked by `_cross_device`
    deterministic: bool = key()
    resume: str | None = key()  # null | auto | a run directory
    env: Env = key()
    train: Train = key()
    monitor: Monitor = key()
    wandb: Wandb = key()
    fit_wm: FitWm = key()
    perf: Perf = key()
    alg: Alg = key()


# -- offline multi-task configs: `flowpwm pretrain` (configs/pretrain.yaml) and `flowpwm
# train-policy` (configs/policy.yaml); roots of their own, checked by `validate_offline` -----------
@dataclass
class Data:
    path: str | None = key()  # the dataset directory (or one chunk); null is refused by _cross_pretrain
    task_set: str = key(choices=tuple(TASK_SETS))
    manifest: str | None = key()  # null: DIR/MANIFEST.sha256.json when there is one


@dataclass
class Pretrain:
    iterations: int = key(ge=1)
    batch_size: int = key(ge=1)
    log_every: int = key(ge=1)  # iterations per metrics line (the run's "epoch")
    eval_every: int = key(ge=1)  # iterations between held-out evaluations (a multiple of log_every)
    eval_batch_size: int = key(ge=1)
    held_out: float = key(ge=0, lt=1)  # fraction of each task's episodes kept out of training
    checkpoint_every: int = key(ge=1)  # iterations (a multiple of log_every)
    threads: int = key(ge=0)


@dataclass
class PretrainConfig:
    seed: int = key(ge=0)
    device: str = key()
    deterministic: bool = key()
    resume: str | None = key()
    data: Data = key()
    pretrain: Pretrain = key()
    monitor: Monitor = key()
    wandb: Wandb = key()
    perf: Perf = key()
    alg: Alg = key()


@dataclass
class PolicyData:
    path: str | None = key()  # null: the dataset the pretraining run was trained on
    manifest: str | None = key()


@dataclass
class Policy:
    iterations: int = key(ge=1)
    log_every: int = key(ge=1)  # iterations per metrics line (the run's "epoch")
    eval_every: int = key(ge=1)  # iterations (a multiple of log_every)
    eval_episodes: int = key(ge=1)
    eval_envs: int = key(ge=1)
    checkpoint_every: int = key(ge=1)
    fine_tune: bool = key()
    bc_coef: float = key(ge=0)
    esnr_every: int = key(ge=0)  # iterations (a multiple of log_every); 0 = off
    esnr_samples: int = key(ge=2)
    threads: int = key(ge=0)


@dataclass
class PolicyConfig:
    seed: int = key(ge=0)
    device: str = key()
    deterministic: bool = key()
    resume: str | None = key()
    pretrained: str | None = key()  # a pretraining run dir, or a directory of them (a sweep's)
    task: str | None = key(choices=MT80)  # must also be in the pretrained world model's task set
    data: PolicyData = key()
    policy: Policy = key()
    monitor: Monitor = key()
    wandb: Wandb = key()
    perf: Perf = key()
    alg: Alg = key()


OFFLINE_ROOTS = {"pretrain": PretrainConfig, "policy": PolicyConfig}  # config name -> its schema


# -- checking -------------------------------------------------------------------------------------
class ConfigError(UserError):
    """One or more config violations; str() is one line per violation."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def check_config(cfg: DictConfig | dict, hardware: bool = True) -> None:
    """Raise ConfigError listing every violation of the composed config. `hardware=False` leaves
    out what depends on this machine (is CUDA here?): for checking a job on a login node."""
    problems = validate(cfg, hardware)
    if problems:
        raise ConfigError(problems)


def validate(cfg: DictConfig | dict, hardware: bool = True) -> list[str]:
    """Every violation of the composed config, one line each (empty: the config is valid)."""
    if isinstance(cfg, DictConfig):
        try:
            cfg = OmegaConf.to_container(cfg, resolve=True)
        except Exception as e:  # an interpolation that cannot be resolved
            return [f"config: {(str(e).strip().splitlines() or [type(e).__name__])[0]}"]
    problems: list[str] = []
    _check_section(Config, cfg, "", problems)
    if problems:  # cross checks read values the section checks have vouched for
        return problems
    for check in (_cross_world_model, _cross_budget, _cross_buffer, _cross_fit_wm, _cross_device):
        problems += check(cfg, hardware)
    return problems


def keys(cls=Config, prefix: str = "") -> list[str]:
    """Every dotted key the schema knows (flow keys included), for hints."""
    out = []
    for f in fields(cls):
        t = _hints(cls)[f.name]
        if f.name == "world_model":
            t = FlowWorldModel
        out += keys(t, f"{prefix}{f.name}.") if is_dataclass(t) else [f"{prefix}{f.name}"]
    return out


def unknown_key_line(dotted: str, value: Any = None, show_value: bool = True, root=None) -> str:
    """`key=value: unknown key` with the nearest known key (of config `root`, default the
    training config) as a hint."""
    parent = dotted.rsplit(".", 1)[0] + "." if "." in dotted else ""
    known = keys(root or Config)
    close = difflib.get_close_matches(dotted, known, n=1, cutoff=0.75)
    siblings = sorted({k[len(parent):].split(".")[0] for k in known if k.startswith(parent)})
    hint = (" (a flow-model key: use a *_flow alg config)" if dotted.startswith("alg.world_model.") and dotted in known
            else f" (did you mean {close[0]}?)" if close
            else f" (keys {'under ' + parent[:-1] if parent else 'at the top'}: {', '.join(siblings)})")
    if re.search(r"(api_key|token|password|secret)$", dotted, re.IGNORECASE):
        hint = " (keys are never taken from a config, which is saved with the run: set WANDB_API_KEY or run `wandb login`)"
        show_value = False  # nor printed
    shown = f"{dotted}={_show(value)}" if show_value else dotted
    return f"{shown}: unknown key{hint}"


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_section(cls, data: Any, prefix: str, problems: list[str], root=None) -> None:
    where = prefix[:-1] or "the config"
    if not isinstance(data, dict):
        problems.append(f"{where}={_show(data)}: must be a section (a mapping of keys)")
        return
    if cls is WorldModel or cls is FlowWorldModel:
        cls = WORLD_MODELS.get(data.get("type"), WorldModel)
    hints = _hints(cls)
    known = {f.name: f for f in fields(cls)}
    for name in data:
        if name not in known:
            problems.append(unknown_key_line(f"{prefix}{name}", data[name], root=root))
    for name, f in known.items():
        if name not in data:
            problems.append(f"{prefix}{name}: missing (the config must set it)")
        elif is_dataclass(hints[name]):
            _check_section(hints[name], data[name], f"{prefix}{name}.", problems, root)
        else:
            line = _check_value(hints[name], f.metadata, data[name])
            choices = _choices(f.metadata)
            if line and choices is not None and isinstance(data[name], str):
                close = difflib.get_close_matches(data[name], [c for c in choices if isinstance(c, str)], n=1)
                line = f"unknown value{f' (did you mean {close[0]}?)' if close else ''}; choose one of " \
                       f"{', '.join(map(_show_choice, choices))}"
            if line:
                problems.append(f"{prefix}{name}={_show(data[name])}: {line}")


def _check_value(t, meta: dict, value: Any) -> str | None:
    """None when `value` fits type `t` and the constraints, else what is allowed."""
    args = typing.get_args(t)
    members = [a for a in args if a is not type(None)]
    if len(members) > 1:  # e.g. `bool | str`: whichever member the value fits
        if (value is None and type(None) in args) or any(_check_value(a, meta, value) is None for a in members):
            return None
        return "must be " + " or ".join(_describe(a, meta) for a in members)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), t) if optional else t
    if value is None:
        return None if optional else f"must be {_describe(base, meta)}"
    if typing.get_origin(base) is list:
        (elem,) = typing.get_args(base)
        ok = isinstance(value, list) and all(_fits(elem, meta, v) for v in value) and \
            len(value) >= (meta["min_len"] or 0)
    else:
        ok = _fits(base, meta, value)
    return None if ok else f"must be {_describe(base, meta)}" + (" or null" if optional else "")


def _fits(t, meta: dict, v: Any) -> bool:
    if t is bool:
        return isinstance(v, bool)
    if t is int and (not isinstance(v, int) or isinstance(v, bool)):
        return False
    if t is float and (not isinstance(v, (int, float)) or isinstance(v, bool)):
        return False
    if t is str and not isinstance(v, str):
        return False
    if t in (int, float):
        if v != v:  # NaN fits no range
            return False
        return not ((meta["ge"] is not None and v < meta["ge"]) or (meta["gt"] is not None and v <= meta["gt"]) or
                    (meta["le"] is not None and v > meta["le"]) or (meta["lt"] is not None and v >= meta["lt"]))
    choices = _choices(meta)
    return choices is None or v in choices


def _choices(meta: dict):
    c = meta["choices"]
    return list(c()) if callable(c) else c


def _show_choice(c) -> str:
    return str(c).lower() if isinstance(c, bool) else str(c)  # as YAML and overrides spell it


def _describe(t, meta: dict) -> str:
    if typing.get_origin(t) is list:
        (elem,) = typing.get_args(t)
        what = {int: "integers", float: "numbers", str: "strings"}[elem]
        bounds = _bounds(meta)
        return f"a {'non-empty ' if meta['min_len'] else ''}list of {what}{' ' + bounds if bounds else ''}"
    if t is bool:
        return "true or false"
    choices = _choices(meta)
    if choices is not None:
        return f"one of {', '.join(map(_show_choice, choices))}"
    what = {int: "an integer", float: "a number", str: "a string"}[t]
    bounds = _bounds(meta)
    return f"{what} {bounds}" if bounds else what


def _bounds(meta: dict) -> str:
    lo = next(((op, meta[k]) for k, op in (("ge", ">="), ("gt", ">")) if meta[k] is not None), None)
    hi = next(((op, meta[k]) for k, op in (("le", "<="), ("lt", "<")) if meta[k] is not None), None)
    if lo and hi:
        return f"in {'[' if lo[0] == '>=' else '('}{lo[1]}, {hi[1]}{']' if hi[0] == '<=' else ')'}"
    op, x = lo or hi or (None, None)
    return f"{op} {x}" if op else ""


def _show(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        text = "[" + ", ".join(_show(x) for x in v) + "]"
    elif isinstance(v, dict):
        text = "{" + ", ".join(f"{k}: {_show(x)}" for k, x in v.items()) + "}"
    else:
        text = str(v)
    return text if len(text) < 80 else text[:77] + "..."


# -- checks across keys (each returns its lines; they run once every key is valid) ---------------
def _cross_world_model(cfg: dict, hardware: bool) -> list[str]:
    wm, out = cfg["alg"]["world_model"], []
    if wm["latent_dim"] % wm["simnorm_dim"]:
        out.append(f"alg.world_model.latent_dim={wm['latent_dim']}: must be a multiple of "
                   f"alg.world_model.simnorm_dim={wm['simnorm_dim']} (SimNorm groups)")
    if wm["vmin"] >= wm["vmax"]:
        out.append(f"alg.world_model.vmin={wm['vmin']}: must be below alg.world_model.vmax={wm['vmax']}")
    if wm["type"] == "flow" and wm["tau_embedding"] == "sinusoidal" and wm["tau_features"] % 2:
        out.append(f"alg.world_model.tau_features={wm['tau_features']}: must be even with "
                   f"tau_embedding=sinusoidal (sin and cos pairs)")
    return out


def _cross_budget(cfg: dict, hardware: bool) -> list[str]:
    t = cfg["train"]
    if t["env_steps"] <= t["seed_steps"]:
        return [f"train.env_steps={t['env_steps']}: must exceed train.seed_steps={t['seed_steps']} (else no epoch "
                f"of learning runs); raise it, e.g. train.env_steps={t['seed_steps'] + 10 * t['steps_per_epoch'] * cfg['env']['num_envs']}"]
    return []


def _cross_buffer(cfg: dict, hardware: bool) -> list[str]:
    size, n, horizon = cfg["train"]["buffer_size"], cfg["env"]["num_envs"], cfg["alg"]["horizon"]
    if size // n < horizon + 1:
        return [f"train.buffer_size={size}: must hold alg.horizon+1={horizon + 1} steps of env.num_envs={n} envs "
                f"(at least {(horizon + 1) * n})"]
    return []


def _cross_fit_wm(cfg: dict, hardware: bool) -> list[str]:
    length, horizon = cfg["fit_wm"]["episode_length"], cfg["alg"]["horizon"]
    if length < horizon + 1:
        return [f"fit_wm.episode_length={length}: must be at least alg.horizon+1={horizon + 1}"]
    if cfg["fit_wm"]["simulator"] and not cfg["fit_wm"]["buffer"]:
        return [f"fit_wm.simulator={cfg['fit_wm']['simulator']}: needs fit_wm.buffer=RUN_DIR (the run whose task "
                f"and policy give the states), or set fit_wm.simulator=0"]
    return []


def _cross_device(cfg: dict, hardware: bool) -> list[str]:
    device = cfg["device"]
    if not DEVICE.match(device):
        return [f"device={device}: must be cpu, cuda, cuda:N or mps"]
    if not hardware or device == "cpu":
        return []
    import torch

    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if count == 0:
            return [f"device={device}: CUDA is not available here (torch {torch.__version__}); use device=cpu, or "
                    f"run on a GPU node with a CUDA build of torch"]
        if index >= count:
            return [f"device={device}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})"]
    if device == "mps" and not torch.backends.mps.is_available():
        return ["device=mps: MPS is not available here; use device=cpu"]
    return []


# -- checking command-line overrides (before Hydra creates anything) ------------------------------
def sweep_combinations(overrides: list[str]) -> list[list[str]]:
    """Each job's overrides of a Hydra sweep (`seed=0,1 wm=...` -> one list per combination)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        return BasicSweeper.split_arguments(parsed, None)[0]
    except HydraException as e:
        raise UserError(f"overrides {' '.join(overrides)}: {str(e).strip().splitlines()[0]}") from None


LOCAL_LAUNCHERS = ("basic", "local", "joblib")  # hydra/launcher choices whose jobs run on this machine


def runs_here(overrides: list[str]) -> bool:
    """Whether these overrides' jobs run on this machine, so that its hardware is what to check
    (not with a cluster launcher: hydra/launcher=slurm runs them on the cluster's nodes)."""
    return all(o.split("=", 1)[1] in LOCAL_LAUNCHERS for o in overrides if o.startswith("hydra/launcher="))


def check_overrides(overrides: list[str], multirun: bool = False, hardware: bool = True) -> list:
    """Compose and check the config of each job these overrides start (every combination of a
    sweep with `multirun`); raise ConfigError / UserError naming every problem. Returns the
    composed configs."""
    from flowpwm.config import compose

    jobs = sweep_combinations(overrides) if multirun else [list(overrides)]
    swept = [i for i in range(len(jobs[0])) if len({job[i] for job in jobs}) > 1]
    configs, found = [], []
    for job in jobs:
        configs.append(compose(job))
        found.append(validate(configs[-1], hardware))
    everywhere = [p for p in found[0] if all(p in f for f in found)]  # said once, without a label
    problems = everywhere + [f"[{' '.join(job[i] for i in swept)}] {p}"
                             for job, f in zip(jobs, found) for p in f if p not in everywhere]
    if problems:
        raise ConfigError(problems)
    if not multirun:
        _check_resume_dir(overrides, configs[0])
    return configs


def _check_resume_dir(overrides: list[str], cfg) -> None:
    """resume=PATH continues PATH in place: an explicit, different hydra.run.dir is refused
    (it would stay empty while PATH is written)."""
    from pathlib import Path

    resume = cfg.get("resume")
    run_dir = next((o.split("=", 1)[1] for o in reversed(overrides) if o.lstrip("+").startswith("hydra.run.dir=")), None)
    if resume and resume != "auto" and run_dir and Path(run_dir).resolve() != Path(str(resume)).resolve():
        raise UserError(f"resume={resume} continues that run dir in place; drop hydra.run.dir={run_dir} (or use "
                        f"hydra.run.dir={resume} resume=auto)")


# -- checking the offline configs (pretrain, policy) ---------------------------------------------
def validate_offline(cfg: DictConfig | dict, config_name: str, hardware: bool = True) -> list[str]:
    """Every violation of a composed `pretrain` or `policy` config, one line each."""
    root = OFFLINE_ROOTS[config_name]
    if isinstance(cfg, DictConfig):
        try:
            cfg = OmegaConf.to_container(cfg, resolve=True)
        except Exception as e:
            return [f"config: {(str(e).strip().splitlines() or [type(e).__name__])[0]}"]
    problems: list[str] = []
    _check_section(root, cfg, "", problems, root)
    if problems:
        return problems
    cross = _cross_pretrain if config_name == "pretrain" else _cross_policy
    for check in (_cross_world_model, cross, _cross_device):
        problems += check(cfg, hardware)
    return problems


def check_offline_config(cfg: DictConfig | dict, config_name: str, hardware: bool = True) -> None:
    problems = validate_offline(cfg, config_name, hardware)
    if problems:
        raise ConfigError(problems)


def check_offline_overrides(config_name: str, overrides: list[str], multirun: bool = False,
                            hardware: bool = True) -> list:
    """`check_overrides` for the `pretrain` / `policy` configs: each job's config composed and
    checked; returns the composed configs."""
    from flowpwm.config import compose

    jobs = sweep_combinations(overrides) if multirun else [list(overrides)]
    swept = [i for i in range(len(jobs[0])) if len({job[i] for job in jobs}) > 1]
    configs, found = [], []
    for job in jobs:
        try:
            configs.append(compose(job, config_name=config_name))
        except UserError as e:  # an override of a key this config lacks: hint from this config's keys
            unknown = re.match(r"^(\S+): unknown key", str(e))
            if unknown:
                raise UserError(unknown_key_line(unknown.group(1), show_value=False, root=OFFLINE_ROOTS[config_name])) from None
            raise
        found.append(validate_offline(configs[-1], config_name, hardware))
    everywhere = [p for p in found[0] if all(p in f for f in found)]
    problems = everywhere + [f"[{' '.join(job[i] for i in swept)}] {p}"
                             for job, f in zip(jobs, found) for p in f if p not in everywhere]
    if problems:
        raise ConfigError(problems)
    if not multirun:
        _check_resume_dir(overrides, configs[0])
    return configs


def _cross_pretrain(cfg: dict, hardware: bool) -> list[str]:
    p, out = cfg["pretrain"], []
    if not cfg["data"]["path"]:
        out.append("data.path=null: give the dataset directory, e.g. data.path=datasets/mt-mini (`flowpwm data "
                   "export RUN_DIR... --out DIR` makes one from online runs)")
    for name in ("eval_every", "checkpoint_every"):
        if p[name] % p["log_every"]:
            out.append(f"pretrain.{name}={p[name]}: must be a multiple of pretrain.log_every={p['log_every']}")
    if cfg["alg"]["world_model"]["task_dim"] < 1:
        out.append(f"alg.world_model.task_dim={cfg['alg']['world_model']['task_dim']}: a multi-task world model "
                   f"needs a task embedding (PWM: 64 for MT30, 96 for MT80)")
    return out


def _cross_policy(cfg: dict, hardware: bool) -> list[str]:
    out = []
    if not cfg["pretrained"]:
        out.append("pretrained=null: give a pretraining run dir (`flowpwm pretrain`), or a directory of them")
    if not cfg["task"]:
        out.append("task=null: give the task to train a policy for, e.g. task=cartpole-swingup")
    p = cfg["policy"]
    for name in ("eval_every", "checkpoint_every", "esnr_every"):
        if p[name] % p["log_every"]:
            out.append(f"policy.{name}={p[name]}: must be a multiple of policy.log_every={p['log_every']}")
    return out

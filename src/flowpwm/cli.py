"""`flowpwm <command>`: the one entry point (USAGE lists the commands)."""

from __future__ import annotations

import sys

from flowpwm.config import UserError

USAGE = """usage: flowpwm <command> [args]

commands:
  train [k=v ...]    PWM online training (Hydra overrides; wm=mlp|flow picks the world model,
                     e.g. `flowpwm train wm=mlp seed=1`, `flowpwm train -m seed=1,2,3`)
  demo               the default job: `train` with the default config
  pretrain [k=v ...] offline multi-task world-model pretraining on a dataset (configs/pretrain.yaml;
                     e.g. `flowpwm pretrain -m wm=mlp,flow data.path=DIR data.task_set=mt-mini`)
  train-policy [k=v ...]  one task's policy through a pretrained world model, evaluated in the real
                     env (configs/policy.yaml; e.g. `flowpwm train-policy -m wm=mlp,flow
                     task=cup-spin,pendulum-spin seed=0,1,2 pretrained=SWEEP_DIR`)
  fit-wm [k=v ...]   fit a world model alone, on the toy oscillator or a run's replay buffer
                     (fit_wm.buffer=RUN_DIR); reports losses, open-loop error and latent spread
  check-config [-m] [--no-hardware] [k=v ...]   compose and check the config (each sweep job's with -m)
                     as `train` would, without running anything; one line per problem, exit 2
  parity [options]   baseline vs flow parameter counts (--help for options)
  results [options]  eval return vs env steps for groups of runs (--help for options)
  diagnose RUN_DIR|CHECKPOINT  open-loop error vs horizon, latent spread, flow straightness, NFE,
                     Jacobian norm, ESNR; --simulator N: against the real simulator (--help)
  evaluate RUN_DIR|CHECKPOINT  a checkpoint's policy in the real env over many episodes (default 32),
                     mean return with a 95 % CI; --policy sample|both: the collection policy too
  plot RUN_DIR       learning curves, losses, gradient norms/ESNR, summary as PNG/SVG (--help)
  compare [options]  multi-seed comparison of run groups: curves with 95 % bands, mean/IQM with
                     bootstrap CIs, Welch / Mann-Whitney tests, report.md + report.html (--help)
  data manifest DIR  record the sha256 of a trusted dataset download (TD-MPC2 chunks are unpickled
                     only when their hash is published or in such a manifest)
  data info DIR      offline dataset: episodes, transitions and returns per task (--help)
  data export RUN_DIR... --out DIR [--task-set mt-mini]   online runs' replay buffers as a multi-task
                     dataset (whole episodes, padded obs/actions, task ids from env.task)
"""


def translate_wm(args: list[str]) -> list[str]:
    """`wm=mlp|flow` picks the baseline or flow config of the chosen size, nothing else
    changed: (alg=pwm_5M, wm=flow) -> alg=pwm_5M_flow. Comma lists sweep (`wm=mlp,flow`)."""
    wm = [a for a in args if a.startswith("wm=")]
    if not wm:
        return args
    from flowpwm.config import compose

    alg = next((a.split("=", 1)[1] for a in args if a.startswith("alg=")), None) or compose().alg.name
    if "," in alg:
        raise UserError(f"alg={alg}: sweep one of alg or wm, not both")
    base = alg.removesuffix("_flow")
    names = []
    for kind in wm[-1].split("=", 1)[1].split(","):
        if kind not in ("mlp", "flow"):
            raise UserError(f"wm={kind!r} is unknown: use wm=mlp or wm=flow")
        names.append(base if kind == "mlp" else f"{base}_flow")
    return [a for a in args if not a.startswith(("wm=", "alg="))] + [f"alg={','.join(names)}"]


def _run_hydra(command: str, config_name: str, args: list[str], check, job, precheck=None) -> int:
    """`flowpwm <command> [-m] [k=v ...]` on config `config_name`: every job's config is checked
    (`check(overrides, multirun=, hardware=)`, then `precheck(cfg)`) before Hydra makes a
    directory; `job(cfg, run_dir)` runs in Hydra, its value goes to Hydra's sweeper. A user error
    ends as one line per problem and exit status 2 (Hydra's empty run dir removed), a stop on a
    signal with EXIT_REQUEUE (`sweep_job`)."""
    import logging
    from pathlib import Path

    import hydra

    from flowpwm.config import config_dir

    args = translate_wm(args)
    flags = {a for a in args if a.startswith("-")}
    if flags <= {"-m", "--multirun"}:  # not for --help, --cfg job, ...: those run nothing
        from flowpwm.schema import runs_here

        overrides = [a for a in args if not a.startswith("-")]
        for cfg in check(overrides, multirun=bool(flags), hardware=runs_here(overrides)):
            if precheck is not None:
                precheck(cfg)

    @hydra.main(version_base=None, config_path=str(config_dir()), config_name=config_name)
    def hydra_job(cfg):
        from hydra.core.hydra_config import HydraConfig

        from flowpwm.rundir import remove_if_empty
        from flowpwm.training.preemption import sweep_job

        output_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            with sweep_job(command, output_dir):
                return job(cfg, output_dir)
        except UserError as e:  # inside Hydra's job: report here, one line per problem
            remove_if_empty(output_dir)
            print_error(command, e)
            raise SystemExit(2)

    for noisy in ("absl", "OpenGL"):  # dm_control / MuJoCo start-up INFO lines
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sys.argv = [f"flowpwm {command}", *args]
    hydra_job()
    return 0


def _train(args: list[str]) -> int:
    from flowpwm.schema import check_overrides
    from flowpwm.training.online import train

    return _run_hydra("train", "config", args, check_overrides, lambda cfg, run_dir: train(cfg, run_dir)["eval_return"])


def _pretrain(args: list[str]) -> int:
    from functools import partial

    from flowpwm.schema import check_offline_overrides
    from flowpwm.training.offline import precheck, pretrain

    return _run_hydra("pretrain", "pretrain", args, partial(check_offline_overrides, "pretrain"), pretrain, precheck)


def _train_policy(args: list[str]) -> int:
    from functools import partial

    from flowpwm.schema import check_offline_overrides
    from flowpwm.training.policy import precheck, train_policy

    return _run_hydra("train-policy", "policy", args, partial(check_offline_overrides, "policy"), train_policy,
                      precheck)


def _fit_wm(args: list[str]) -> int:
    from flowpwm.schema import check_overrides
    from flowpwm.training.fit_wm import fit_world_model

    (cfg,) = check_overrides(translate_wm(args))
    fit_world_model(cfg)
    return 0


def _check_config(args: list[str]) -> int:
    from flowpwm.schema import check_overrides

    multirun = bool({"-m", "--multirun"} & set(args))
    overrides = [a for a in args if not a.startswith("-")]
    bad = [a for a in args if a.startswith("-") and a not in ("-m", "--multirun", "--no-hardware")]
    if bad:
        raise UserError(f"check-config: unknown option {bad[0]}: use -m/--multirun, --no-hardware, then k=v overrides")
    configs = check_overrides(translate_wm(overrides), multirun=multirun, hardware="--no-hardware" not in args)
    for cfg in configs:
        print(f"config OK: alg={cfg.alg.name} env.task={cfg.env.task} seed={cfg.seed} device={cfg.device} "
              f"train.env_steps={cfg.train.env_steps}")
    return 0


def _parity(args: list[str]) -> int:
    from flowpwm.parity import main

    return main(args)


def _results(args: list[str]) -> int:
    from flowpwm.analysis.runs import main

    return main(args)


def _diagnose(args: list[str]) -> int:
    from flowpwm.analysis.diagnostics import main

    return main(args)


def _evaluate(args: list[str]) -> int:
    from flowpwm.analysis.evaluate import main

    return main(args)


def _plot(args: list[str]) -> int:
    from flowpwm.visualization import main

    return main(args)


def _compare(args: list[str]) -> int:
    from flowpwm.analysis.compare import main

    return main(args)


def _data(args: list[str]) -> int:
    if args[:1] == ["export"]:
        from flowpwm.data.export import main as export

        return export(args[1:])
    from flowpwm.data.commands import main

    return main(args)


COMMANDS = {"train": _train, "demo": _train, "fit-wm": _fit_wm, "parity": _parity, "results": _results,
            "diagnose": _diagnose, "evaluate": _evaluate, "plot": _plot, "compare": _compare,
            "check-config": _check_config, "data": _data, "pretrain": _pretrain, "train-policy": _train_policy}


def print_error(command: str, e: UserError, prefix: str = "flowpwm ") -> None:
    """A user mistake: one line per problem on stderr."""
    for line in str(e).splitlines() or [type(e).__name__]:
        print(f"{prefix}{command}: error: {line}", file=sys.stderr)


def run_script(name: str, main, args: list[str], prefix: str = "") -> int:
    """`main(args)` of a command or a scripts/ entry point; user mistakes end as one line on
    stderr and exit status 2."""
    try:
        return main(args)
    except UserError as e:
        print_error(name, e, prefix)
        return 2


def run_command(command: str, args: list[str]) -> int:
    return run_script(command, COMMANDS[command], args, prefix="flowpwm ")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"flowpwm: error: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return run_command(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())

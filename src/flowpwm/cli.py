"""`flowpwm <command>`: demo | fit-wm | parity."""

from __future__ import annotations

import sys

from flowpwm.config import UserError

USAGE = """usage: flowpwm <command> [args]

commands:
  demo               the default job (fit-wm with the default config)
  fit-wm [k=v ...]   fit a world model on the toy oscillator; Hydra overrides, e.g. alg=pwm_tiny
  parity [options]   baseline vs flow parameter counts (--help for options)
"""


def _fit_wm(args: list[str]) -> int:
    from flowpwm.config import compose
    from flowpwm.training.fit_wm import fit_world_model

    fit_world_model(compose(args))
    return 0


def _parity(args: list[str]) -> int:
    from flowpwm.parity import main

    return main(args)


COMMANDS = {"demo": _fit_wm, "fit-wm": _fit_wm, "parity": _parity}


def run_command(command: str, args: list[str]) -> int:
    """Run one command; user mistakes end as one line on stderr and exit status 2."""
    try:
        return COMMANDS[command](args)
    except UserError as e:
        print(f"flowpwm {command}: error: {e}", file=sys.stderr)
        return 2


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

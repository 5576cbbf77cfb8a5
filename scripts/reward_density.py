#!/usr/bin/env python
"""Reward found by open-loop random actions on a task; see `flowpwm.analysis.exploration`.

    python scripts/reward_density.py finger-spin --steps 6000
"""
import sys

from flowpwm.analysis.exploration import main
from flowpwm.config import UserError

if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except UserError as e:
        print(f"reward_density: error: {' '.join(str(e).split())}", file=sys.stderr)
        code = 2
    sys.exit(code)

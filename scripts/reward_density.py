#!/usr/bin/env python
"""Reward found by open-loop random actions on a task; see `flowpwm.analysis.exploration`.

    python scripts/reward_density.py finger-spin --steps 6000
"""
import sys

from flowpwm.analysis.exploration import main
from flowpwm.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("reward_density", main, sys.argv[1:]))

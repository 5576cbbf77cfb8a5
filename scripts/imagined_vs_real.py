#!/usr/bin/env python
"""A per-task policy's imagined H-step rewards against the real env's, along its own real
trajectories: does it exploit its world model? See `flowpwm.analysis.imagined_vs_real`.

    python scripts/imagined_vs_real.py POLICY_RUN_DIR [...] [--episodes 4] [--stride 10]
"""
import sys

from flowpwm.analysis.imagined_vs_real import main
from flowpwm.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("imagined_vs_real", main, sys.argv[1:]))

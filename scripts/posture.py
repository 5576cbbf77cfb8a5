#!/usr/bin/env python
"""Does a run's policy flip the body over (cheetah-run)? See `flowpwm.analysis.posture`.

    python scripts/posture.py RUN_DIR [RUN_DIR ...]
"""
import sys

from flowpwm.analysis.posture import main
from flowpwm.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("posture", main, sys.argv[1:]))

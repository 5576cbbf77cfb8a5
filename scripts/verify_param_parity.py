#!/usr/bin/env python
"""Baseline vs flow world-model parameter counts; see `flowpwm.parity` (`flowpwm parity`)."""
import sys

from flowpwm.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("parity", sys.argv[1:]))

#!/usr/bin/env python
"""Plot one training run: `generate_visualizations.py RUN_DIR [--out DIR] [--smooth ema:0.9 |
window:5] [--format png svg]`; the same as `flowpwm plot` (see `flowpwm.visualization`)."""
import sys

from flowpwm.config import UserError
from flowpwm.visualization import main

if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:], prog="generate_visualizations"))
    except UserError as e:
        print(f"generate_visualizations: error: {e}", file=sys.stderr)
        sys.exit(2)

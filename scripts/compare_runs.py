#!/usr/bin/env python
"""Compare groups of runs over seeds; see `flowpwm.analysis.compare` (`flowpwm compare`).

    python scripts/compare_runs.py --by alg.world_model.type runs/* --out comparison
    python scripts/compare_runs.py --group mlp runs/a runs/b --group flow runs/c runs/d
"""
import sys

from flowpwm.analysis.compare import main
from flowpwm.config import UserError

if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except UserError as e:
        print(f"compare_runs: error: {' '.join(str(e).split())}", file=sys.stderr)
        code = 2
    sys.exit(code)

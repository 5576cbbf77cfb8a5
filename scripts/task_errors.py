#!/usr/bin/env python
"""Per task, a pretrained world model's H-step reward sums on the dataset against the real ones:
which task has it not learned? See `flowpwm.analysis.task_errors`.

    python scripts/task_errors.py PRETRAIN_RUN_DIR [...] [--data DIR] [--slices 512]
"""
import sys

from flowpwm.analysis.task_errors import main
from flowpwm.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("task_errors", main, sys.argv[1:]))

#!/usr/bin/env python
"""Hyperparameter sweeps from a W&B sweep file: W&B's agent online, Optuna offline.
Example: python scripts/sweep.py sweep.yaml --count 4"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ignite_app.sweep import main_exit  # noqa: E402

if __name__ == "__main__":
    main_exit()

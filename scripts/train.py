#!/usr/bin/env python
"""Train with PyTorch-Ignite and log to W&B.  Example: python scripts/train.py --dataset digits --epochs 3"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ignite_app.main import main_exit  # noqa: E402

if __name__ == "__main__":
    main_exit()

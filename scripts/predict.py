#!/usr/bin/env python
"""Classify images with an exported model.  Example: python scripts/predict.py runs/RUN_ID/model.onnx --split test"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ignite_app.main import exit_process, guarded  # noqa: E402
from ignite_app.predict import predict  # noqa: E402

if __name__ == "__main__":
    exit_process(guarded("predict.py", predict))

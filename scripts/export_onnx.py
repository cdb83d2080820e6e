#!/usr/bin/env python
"""Export a checkpoint to ONNX and verify it.  Example: python scripts/export_onnx.py --checkpoint runs/RUN_ID --output model.onnx"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ignite_app.export import export  # noqa: E402
from ignite_app.main import exit_process, guarded  # noqa: E402

if __name__ == "__main__":
    exit_process(guarded("export_onnx.py", export))

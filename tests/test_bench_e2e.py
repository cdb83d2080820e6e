"""`bench/run.py --quick` runs end to end and writes its table (timings are the benchmark's to report, never
asserted here: these machines are shared and noisy)."""
import json
import subprocess
import sys

import pytest

from helpers import ROOT, clean_env

pytestmark = pytest.mark.e2e


def test_quick_benchmark_runs_and_writes_every_row(tmp_path):
    env = clean_env(tmp_path, OMP_NUM_THREADS="1")
    committed = (ROOT / "bench" / "results.md").stat().st_mtime
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--dataset", "digits",
                           "--out", str(tmp_path / "out")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "out" / "results.md").read_text()
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    measures = [row[0] for row in results["table"]]
    for expected in ("same process", "eager bare loop", "first training iteration", "checkpoint", "ONNX export"):
        assert any(expected in m for m in measures), expected
        assert expected in table
    loop = {m: v for m, v, _, _ in results["table"]}
    assert loop["(a)/(b) training loop, same process, median of alternating epochs"] != "n/a"
    assert (ROOT / "bench" / "results.md").stat().st_mtime == committed  # --out leaves the committed table alone

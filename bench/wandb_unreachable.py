"""What an unreachable W&B costs a run: `python bench/wandb_unreachable.py [ROUNDS]`.

Alternates a plain offline run (no API key) with the same run given an API key and a W&B server that refuses
connections (WANDB_BASE_URL on a closed port of 127.0.0.1), where --wandb-mode auto falls back to offline after its
init timeout (tracking.AUTO_INIT_TIMEOUT_SECONDS). Digits, one epoch, no ONNX or test report; wall seconds of the
whole process, medians. Writes bench/wandb_unreachable.md.
"""
from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--dataset", "digits", "--epochs", "1", "--no-progress-bar", "--no-onnx", "--no-test-report"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wall_seconds(work: Path, **extra: str) -> float:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_DIR=str(work), WANDB_SILENT="true", NETRC=str(work / "no-netrc"), IGNITE_APP_NO_DOWNLOAD="1",
               **extra)
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *ARGS, "--output-dir", str(work / "runs")],
                   cwd=work, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    times: dict[str, list[float]] = {"offline (no key)": [], "key set, W&B unreachable": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            times["offline (no key)"].append(wall_seconds(Path(tmp, "a")))
            times["key set, W&B unreachable"].append(wall_seconds(
                Path(tmp, "b"), WANDB_API_KEY="x" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}"))
    medians = {k: statistics.median(v) for k, v in times.items()}
    lines = ["# W&B unreachable: cost of the fallback to offline", "",
             f"Command: `python bench/wandb_unreachable.py {rounds}` ({os.cpu_count()} CPU cores, load average "
             f"{os.getloadavg()[0]:.1f} at the end: other jobs shared the machine; {' '.join(ARGS)}).",
             "", "| run | median wall s | each |", "|---|---|---|"]
    lines += [f"| {k} | {medians[k]:.1f} | {', '.join(f'{t:.1f}' for t in v)} |" for k, v in times.items()]
    lines += ["", f"Difference of the medians: {medians['key set, W&B unreachable'] - medians['offline (no key)']:.1f} s "
              "(W&B's own default waits ~95 s and ends in a traceback)."]
    text = "\n".join(lines) + "\n"
    (ROOT / "bench" / "wandb_unreachable.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

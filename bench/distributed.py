"""One process vs two under torchrun on this machine, and what the ranks' all-reduces cost per training iteration.

    .venv/bin/python bench/distributed.py                  # fashion-mnist, one epoch, 2 rounds: a few minutes
    .venv/bin/python bench/distributed.py --dataset digits --rounds 1 --iterations 200     # under a minute

Writes bench/distributed.json and bench/distributed.md. `measure(...)` returns the same rows for bench/run.py.
The processes are timed alternating (1, 2, 1, 2, ...), medians reported. Two processes on two cores get one thread
each (OMP_NUM_THREADS=1) where the single process uses both: no speed-up is possible here; the figure shows the
overhead of running distributed (DDP's gradient all-reduce, the loss/stop all-reduce, sharded evaluation).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(tmp), WANDB_SILENT="true", NETRC=str(tmp / "no-netrc"), **extra)
    return env


def _train(processes: int, dataset: str, epochs: int, tmp: Path) -> dict[str, float]:
    """Wall seconds of the whole job and Ignite's seconds for the last epoch's iterations (rank 0's)."""
    args = ["--dataset", dataset, "--epochs", str(epochs), "--no-progress-bar", "--no-onnx", "--output-dir",
            str(tmp / "runs"), "--handler", f"{ROOT}/bench/probes.py:training_time"]
    script = str(ROOT / "scripts" / "train.py")
    if processes == 1:
        cmd, env = [sys.executable, script, *args], _env(tmp)
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               script, *args]
        env = _env(tmp, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // processes)))
    start = time.time()
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [json.loads(line[len("BENCH "):]) for line in proc.stdout.splitlines() if line.startswith("BENCH {")]
    return {"wall": wall, "train_seconds": max(line["train_seconds"] for line in lines),
            "iterations": lines[0]["iterations"]}


def _allreduce_probe(local_rank: int, iterations: int, out: str) -> None:
    """In each of 2 gloo processes: the per-iteration collectives of a training step, timed alone."""
    import ignite.distributed as idist
    import torch

    from ignite_app.models import build_model

    model = build_model("convnet", (16, 32), 10, 0.0, 1.0)
    grads = torch.zeros(sum(p.numel() for p in model.parameters()))
    pair = torch.zeros(2, dtype=torch.float64)
    timings = {}
    for name, tensor in (("loss_and_stop_flag", pair), ("gradients", grads)):
        for _ in range(10):  # warm-up
            idist.all_reduce(tensor)
        idist.barrier()
        start = time.perf_counter()
        for _ in range(iterations):
            idist.all_reduce(tensor)
        timings[name] = (time.perf_counter() - start) / iterations
    if idist.get_rank() == 0:
        Path(out).write_text(json.dumps({"world_size": idist.get_world_size(), "gradient_values": grads.numel(),
                                         **timings}))


def allreduce_cost(iterations: int) -> dict[str, Any]:
    import ignite.distributed as idist

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "allreduce.json")
        with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
            parallel.run(_allreduce_probe, iterations, out)
        return json.loads(Path(out).read_text())


def measure(dataset: str = "fashion-mnist", epochs: int = 1, rounds: int = 2, iterations: int = 1000) -> dict[str, Any]:
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for processes in (1, 2):
                runs[processes].append(_train(processes, dataset, epochs, Path(tmp)))
    median = {p: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for p, rs in runs.items()}
    return {"dataset": dataset, "epochs": epochs, "rounds": rounds, "cores": os.cpu_count(), "median": median,
            "allreduce": allreduce_cost(iterations)}


def rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    one, two, ar = result["median"][1], result["median"][2], result["allreduce"]
    per_iteration = ar["loss_and_stop_flag"] + ar["gradients"]
    return [
        ("1 process: training loop seconds (last epoch)", f"{one['train_seconds']:.2f} s"),
        ("2 processes (torchrun, gloo): training loop seconds", f"{two['train_seconds']:.2f} s"),
        ("2 vs 1 processes, training loop", f"{two['train_seconds'] / one['train_seconds']:.2f}x the time"),
        ("1 process: whole job wall seconds", f"{one['wall']:.1f} s"),
        ("2 processes: whole job wall seconds", f"{two['wall']:.1f} s"),
        ("all-reduce of the loss and stop flag (2 float64), per iteration", f"{ar['loss_and_stop_flag'] * 1e6:.0f} us"),
        (f"all-reduce of the gradients ({ar['gradient_values']} float32, DDP's bucket), per iteration",
         f"{ar['gradients'] * 1e6:.0f} us"),
        ("all-reduces per iteration, as a share of a 2-process iteration",
         f"{per_iteration / (two['train_seconds'] / two['iterations']):.1%}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=1000, help="all-reduces timed per kind")
    args = parser.parse_args()
    result = measure(args.dataset, args.epochs, args.rounds, args.iterations)
    (ROOT / "bench" / "distributed.json").write_text(json.dumps(result, indent=2))
    table = "\n".join(f"| {name} | {value} |" for name, value in rows(result))
    command = " ".join(["python", "bench/distributed.py", *sys.argv[1:]])
    text = (f"# One process vs two\n\nMachine: {result['cores']} CPU cores. Command: `{command}`. Dataset: "
            f"{result['dataset']}, {result['epochs']} epoch(s), {result['rounds']} round(s) alternating, medians.\n\n"
            f"| measure | value |\n|---|---|\n{table}\n")
    (ROOT / "bench" / "distributed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

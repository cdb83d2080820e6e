"""Benchmarks, side by side in one run: framework overhead, time to accuracy, start-up, checkpoint and export costs.

    .venv/bin/python bench/run.py            # a few minutes on 2 CPU cores (3 rounds)
    .venv/bin/python bench/run.py --quick    # about a minute and a half (1 round, no time-to-accuracy)

Writes bench/results.json and bench/results.md. Whole processes are timed A/B/C/D alternating, medians reported.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
FMNIST = Path("/usr/share/datasets/fashion-mnist")


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Wall seconds, peak RSS (MiB, from /usr/bin/time when present) and the BENCH lines of one process."""
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    start = time.time()
    proc = subprocess.run(timer + cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = {"wall": wall, "start": start}
    for match in re.finditer(r"BENCH (\{.*?\})\s*$", proc.stdout, re.MULTILINE):  # progress bars share lines
        out.setdefault("bench", []).append(json.loads(match.group(1)))
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if rss:
        out["rss_mib"] = int(rss.group(1)) / 1024
    return out


def merged(result: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for line in result.get("bench", []):
        values.update(line)
    return values


def stage_seed_root(tmp: Path) -> Path:
    """torchvision's layout for the seed example (it reads FashionMNIST/raw/*-ubyte)."""
    raw = tmp / "seed-root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in FMNIST.glob("*.gz"):
        with gzip.open(gz) as src, open(raw / gz.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return tmp / "seed-root"


def lightning_available() -> bool:
    return subprocess.run([PY, "-c", "import lightning"], capture_output=True).returncode == 0


def overhead(tmp: Path, env: dict, dataset: str, rounds: int, two_epochs: bool = False) -> dict[str, Any]:
    """One epoch, four ways (and, with `two_epochs`, ours and Lightning's for two epochs), alternating; medians."""
    commands = {
        "a_ignite_app": [PY, str(ROOT / "scripts/train.py"), "--dataset", dataset, "--epochs", "1",
                         "--handler", f"{ROOT}/bench/probes.py:training_time",
                         "--handler", f"{ROOT}/bench/probes.py:first_iteration", "--output-dir", str(tmp / "runs")],
        "b_bare_pytorch": [PY, str(ROOT / "bench/bare_loop.py"), "--dataset", dataset, "--epochs", "1"],
        # the same loop with the network as (a) trains it: (a)'s framework cost alone, in separate processes
        "b2_bare_as_trained": [PY, str(ROOT / "bench/bare_loop.py"), "--dataset", dataset, "--epochs", "1",
                               "--as-trained"],
    }
    if dataset == "fashion-mnist":
        commands["c_seed_example"] = [PY, str(ROOT / "bench/seed_example.py"), "--epochs", "1",
                                      "--root", str(stage_seed_root(tmp))]
    if lightning_available():
        commands["d_lightning"] = [PY, str(ROOT / "bench/lightning_example.py"), "--dataset", dataset, "--epochs", "1",
                                   "--output-dir", str(tmp / "lightning")]
        if two_epochs:  # default flags, two epochs: the Lightning comparison
            commands["a2_ignite_app_2_epochs"] = [PY, str(ROOT / "scripts/train.py"), "--dataset", dataset, "--epochs",
                                                  "2", "--output-dir", str(tmp / "runs2")]
            commands["d2_lightning_2_epochs"] = [PY, str(ROOT / "bench/lightning_example.py"), "--dataset", dataset,
                                                 "--epochs", "2", "--output-dir", str(tmp / "lightning2")]
    samples: dict[str, list[dict]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, cmd in commands.items():
            result = run(cmd, tmp, env)
            samples[name].append({"wall": result["wall"], "rss_mib": result.get("rss_mib"), **merged(result),
                                  "first_iteration_after_start": merged(result).get("first_iteration", result["start"])
                                  - result["start"]})
    med = {name: {key: statistics.median(s[key] for s in runs if s.get(key) is not None)
                  for key in runs[0] if isinstance(runs[0][key], (int, float))} for name, runs in samples.items()}
    return {"medians": med, "samples": samples}


def time_to_accuracy(tmp: Path, env: dict, epochs: int) -> dict[str, Any]:
    """Launch to 0.90 test accuracy on Fashion-MNIST: ours with default flags and with `--preset fast`, and the W&B
    tutorial's pipeline as written (the issue's peer); each stops once it is reached. Times are from the process's
    launch to the test pass that reached it (the BENCH line's wall clock `at`)."""
    def ours(*flags: str) -> dict[str, Any]:
        return run([PY, str(ROOT / "scripts/train.py"), "--dataset", "fashion-mnist", *flags,
                    "--no-onnx", "--handler", f"{ROOT}/bench/probes.py:time_to_accuracy",
                    "--output-dir", str(tmp / "tta")], tmp, env)

    root = str(stage_seed_root(tmp))
    runs = {
        "ignite_app_default": ours("--epochs", str(epochs)),
        "ignite_app_fast": ours("--preset", "fast"),
        "wandb_tutorial": run([PY, str(ROOT / "bench/wandb_tutorial.py"), "--epochs", str(epochs), "--root", root,
                               "--stop-at", "0.90"], tmp, env),
    }

    def first_reach(result: dict) -> Optional[dict]:
        for line in result.get("bench", []):
            if line.get("test_accuracy", 0) >= 0.90:
                return {"epoch": line["epoch"], "seconds": line["at"] - result["start"],
                        "accuracy": line["test_accuracy"]}
        return None

    out: dict[str, Any] = {"epochs_cap": epochs}
    for name, result in runs.items():
        out[name] = first_reach(result)
        out[name + "_curve"] = [l for l in result.get("bench", []) if "test_accuracy" in l]
    return out


def startup(tmp: Path, env: dict, repeats: int) -> dict[str, float]:
    walls = [run([PY, str(ROOT / "scripts/train.py"), "--help"], tmp, env)["wall"] for _ in range(repeats)]
    return {"help_seconds": statistics.median(walls)}


def inprocess(tmp: Path, env: dict, dataset: str) -> dict[str, Any]:
    return merged(run([PY, str(ROOT / "bench/inprocess.py"), "--dataset", dataset, "--output-dir", str(tmp / "inproc")],
                      tmp, env))


def step_options(tmp: Path, env: dict, rounds: int) -> dict[str, Any]:
    return merged(run([PY, str(ROOT / "bench/step_options.py"), "--rounds", str(rounds)], tmp, env))


def loop_overhead(tmp: Path, env: dict, dataset: str, rounds: int) -> dict[str, Any]:
    return merged(run([PY, str(ROOT / "bench/loop_overhead.py"), "--dataset", dataset, "--rounds", str(rounds),
                       "--output-dir", str(tmp / "loop")], tmp, env))


def companions(tmp: Path, env: dict) -> list[str]:
    """The other benchmarks, when present: 1 vs 2 processes (bench/distributed.py); it writes its own table, listed
    under ours."""
    notes = []
    for script, flags, table in (("distributed.py", [], "bench/distributed.md"),):
        if not (ROOT / "bench" / script).exists():
            continue
        start = time.time()
        proc = subprocess.run([PY, str(ROOT / "bench" / script), *flags], cwd=ROOT, env=env, capture_output=True,
                              text=True)
        status = "ok" if proc.returncode == 0 else f"failed ({proc.returncode})"
        notes.append(f"- `python bench/{script} {' '.join(flags)}`: {status} in {time.time() - start:.0f} s; see `{table}`.")
    return ["## Companion benchmarks", "", *notes, ""] if notes else []


def image_rows(tmp: Path) -> tuple[dict[str, Any], list[tuple[str, str, str, str]]]:
    """bench/images.py's measures (CIFAR-10-sized training with and without --augment, PNG decoding cold and warm)
    as rows of our table."""
    sys.path.insert(0, str(Path(__file__).parent))
    import images

    measured = images.measure(tmp / "images")
    return measured, [(name, value, "", "") for name, value in images.rows(measured)]


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a and b else None


def summarize(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(measure, value, target, verdict) rows."""
    med = results["overhead"]["medians"]
    a, b = med["a_ignite_app"], med["b_bare_pytorch"]
    c, d = med.get("c_seed_example", {}), med.get("d_lightning", {})
    a2, d2 = med.get("a2_ignite_app_2_epochs", {}), med.get("d2_lightning_2_epochs", {})
    ip, su, loop = results["inprocess"], results["startup"], results["loop"]
    rows = []

    def row(name: str, value: Optional[float], fmt: str, target: Optional[float] = None, unit: str = "",
            at_least: bool = False) -> None:
        shown = "n/a" if value is None else format(value, fmt) + unit
        ok = value is not None and target is not None and (value >= target if at_least else value <= target)
        verdict = "" if target is None or value is None else ("pass" if ok else "MISS")
        rows.append((name, shown, "" if target is None else f"{'>=' if at_least else '<='} {target:g}{unit}", verdict))

    row("(a)/(b) training loop, same process, median of alternating epochs", loop.get("loop_ratio"), ".3f", 1.05)
    row("(a)/(b) training loop, same process, CPU seconds (W&B's service processes included)",
        loop.get("loop_cpu_ratio"), ".3f")
    row("(a)/(b) training loop, same process, fastest epoch each",
        ratio(min(loop.get("framework_epochs", [0]) or [0]), min(loop.get("bare_epochs", [0]) or [0])), ".3f")
    row("(a) samples/s / (b) samples/s: our loop vs the eager bare loop, separate processes",
        ratio(b.get("train_seconds"), a.get("train_seconds")), ".3f", 1.3, at_least=True)
    b2 = med.get("b2_bare_as_trained", {})
    row("(a)/(b') training loop, separate processes, the bare loop with (a)'s network (channels-last, pool first)",
        ratio(a.get("train_seconds"), b2.get("train_seconds")), ".3f", 1.05)
    row("(b) eager tutorial network / (b') the network as (a) trains it, bare loops, 2 threads",
        ratio(b.get("train_seconds"), b2.get("train_seconds")), ".3f")
    row("(a)/(b) whole process wall time", ratio(a["wall"], b["wall"]), ".3f")
    row("(a)/(c) whole process wall time (seed example as written)", ratio(a["wall"], c.get("wall")), ".3f", 0.7)
    speedup = results.get("steps", {}).get("speedup_vs_eager_tutorial", {})
    row("training step, default network (channels-last, pool before ReLU) vs the tutorial's eager loop, 1 thread, "
        "CPU time (bench/step_options.py)", speedup.get("default"), ".2f", 1.3, "x", at_least=True)
    row("same, with bf16 autocast (--amp: changes numerics)", speedup.get("default_bf16_autocast"), ".2f", unit="x")
    row("(a)/(d) whole process wall time (Lightning)", ratio(a["wall"], d.get("wall")), ".3f", 0.8)
    row("(a)/(d) training loop time (Lightning)", ratio(a.get("train_seconds"), d.get("train_seconds")), ".3f")
    row("(a)/(d) whole process wall time, two epochs, default flags (Lightning)", ratio(a2.get("wall"), d2.get("wall")),
        ".3f", 0.8)
    row("(a) wall seconds, two epochs, default flags", a2.get("wall"), ".2f", unit=" s")
    row("(d) wall seconds, two epochs", d2.get("wall"), ".2f", unit=" s")
    row("(a) wall seconds, one epoch", a["wall"], ".2f", unit=" s")
    row("(b) wall seconds", b["wall"], ".2f", unit=" s")
    row("(c) wall seconds", c.get("wall"), ".2f", unit=" s")
    row("(d) wall seconds", d.get("wall"), ".2f", unit=" s")
    row("(a) training loop seconds", a.get("train_seconds"), ".2f", unit=" s")
    row("(b) training loop seconds", b.get("train_seconds"), ".2f", unit=" s")
    row("(d) training loop seconds", d.get("train_seconds"), ".2f", unit=" s")
    row("`train.py --help`", su["help_seconds"], ".3f", 1.0, " s")
    row("process start to first training iteration (a)", a.get("first_iteration_after_start"), ".2f", 1.5, " s")
    row("process start to first training iteration (b), the floor: torch, its optimizer's torch._dynamo, the data",
        b.get("first_iteration_after_start"), ".2f", unit=" s")
    row("training thread blocked per checkpoint (W&B artifact incl.)", ip.get("checkpoint_blocked_ms"), ".1f", 50, " ms")
    row("same, if the artifact were logged inline", ip.get("checkpoint_inline_upload_ms"), ".1f", unit=" ms")
    row("resume: load + restore", (ip.get("resume_load_seconds") or 0) + (ip.get("resume_restore_seconds") or 0),
        ".3f", unit=" s")
    row("ONNX export + verification (dynamo)", ip.get("onnx_dynamo_seconds"), ".2f", unit=" s")
    row("ONNX export + verification (torchscript)", ip.get("onnx_torchscript_seconds"), ".2f", unit=" s")
    row("peak RSS (a)", a.get("rss_mib"), ".0f", unit=" MiB")
    row("peak RSS (b)", b.get("rss_mib"), ".0f", unit=" MiB")
    tta = results.get("time_to_accuracy")
    if tta:
        def seconds(who: str) -> Optional[float]:
            return tta[who]["seconds"] if tta.get(who) else None

        row("time to test accuracy 0.90: ignite_app default flags / the W&B tutorial's pipeline as written",
            ratio(seconds("ignite_app_default"), seconds("wandb_tutorial")), ".3f", 0.45)
        row("same, ignite_app --preset fast / the W&B tutorial's pipeline",
            ratio(seconds("ignite_app_fast"), seconds("wandb_tutorial")), ".3f")
        labels = {"ignite_app_default": "ignite_app, default flags", "ignite_app_fast": "ignite_app --preset fast",
                  "wandb_tutorial": "the W&B tutorial's pipeline, as written (whole training set)"}
        for who, label in labels.items():
            hit = tta.get(who)
            rows.append((f"time to test accuracy 0.90, {label}",
                         f"{hit['seconds']:.1f} s (epoch {hit['epoch']}, {hit['accuracy']:.4f})" if hit
                         else f"not reached in {tta['epochs_cap']} epochs", "", ""))
    return rows


def write_markdown(results: dict[str, Any], path: Path) -> None:
    lines = [
        "# Benchmark results", "",
        f"Machine: {results['machine']}. Command: `{results['command']}`. Dataset: {results['dataset']}, one epoch, "
        f"{results['rounds']} round(s) alternating a/b/c/d, medians.", "",
        "| measure | value | target | |", "|---|---|---|---|",
        *[f"| {m} | {v} | {t} | {ok} |" for m, v, t, ok in results["table"]], "",
        "(a) `scripts/train.py` with what a user gets by default (W&B offline, loss and lr every 10 iterations, "
        "watch, checkpoint each epoch, ONNX export and verification after the test result, validation and test "
        "evaluation; no progress bar, since the output is not a terminal); (b) a bare eager PyTorch loop over the same in-memory tensors, optimizer and seed, with the W&B "
        "tutorial's network as written (ReLU before pool, NCHW: `bench/bare_loop.py`); (c) the Ignite + W&B example this project grew from, as written "
        "(`bench/seed_example.py`: torchvision PIL transforms per item, its own Net + SGD, batch 64, evaluation on the "
        "train and test sets each epoch); (d) PyTorch Lightning with its W&B logger and ModelCheckpoint "
        "(`bench/lightning_example.py`).", "",
        "The same-process loop ratio alternates whole epochs of (a)'s trainer, with all its handlers attached, and "
        "of a bare loop over the same loader and model (`bench/loop_overhead.py`): it removes start-up and most of "
        "this shared VM's noise, which moves single epochs by up to 30%. "
        "The training-loop time is the epoch's iterations only (Ignite's own epoch timing for (a), the loop for (b), "
        "first to last training batch for (d)); whole-process wall time adds start-up, data loading, evaluation, "
        "checkpointing and export.", "",
    ]
    analysis = Path(__file__).parent / "analysis.md"  # the hand-measured cost table, kept beside the generated one
    extra = ["", analysis.read_text()] if analysis.exists() else []
    path.write_text("\n".join(lines + results.get("notes", []) + extra) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round, no time-to-accuracy run")
    parser.add_argument("--rounds", type=int, help="rounds of the overhead comparison (default 3, 1 with --quick)")
    parser.add_argument("--no-images", action="store_true",
                        help="leave out bench/images.py's rows (run it alone: `python bench/images.py`)")
    parser.add_argument("--tta-epochs", type=int, default=8, help="epoch cap of the time-to-accuracy runs")
    parser.add_argument("--dataset", choices=("fashion-mnist", "digits"),
                        help="default: fashion-mnist when its system files are there, else digits")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent,
                        help="where results.json and results.md go (default: bench/)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    dataset = args.dataset or ("fashion-mnist" if FMNIST.is_dir() else "digits")
    tmp = Path(tempfile.mkdtemp(prefix="ignite-app-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(tmp), WANDB_SILENT="true", XDG_CACHE_HOME=str(tmp / "cache"))
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}",
        "command": " ".join(["python", "bench/run.py", *sys.argv[1:]]), "dataset": dataset, "rounds": rounds,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    results["startup"] = startup(tmp, env, 2 if args.quick else 5)
    results["inprocess"] = inprocess(tmp, env, dataset)
    results["loop"] = loop_overhead(tmp, env, dataset, max(3, rounds + 2))
    results["steps"] = step_options(tmp, env, 3 if args.quick else 6)
    results["overhead"] = overhead(tmp, env, dataset, rounds, two_epochs=not args.quick)
    if not args.quick and dataset == "fashion-mnist":
        results["time_to_accuracy"] = time_to_accuracy(tmp, env, args.tta_epochs)
    results["table"] = summarize(results)
    if not args.quick and not args.no_images:
        results["images"], rows = image_rows(tmp)
        results["table"] += rows
    if not args.quick:
        results["notes"] = companions(tmp, env)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    write_markdown(results, out / "results.md")
    for m, v, t, ok in results["table"]:
        print(f"{m:<62} {v:>28} {t:>10} {ok}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

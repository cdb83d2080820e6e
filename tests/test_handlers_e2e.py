"""Ways to attach handlers (Python API, --handler file/module/name/plugin) and the built-in handlers behind flags."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from helpers import QUICK, ROOT, clean_env, history, inspect_summary, offline_runs, run_train, trained_once

pytestmark = pytest.mark.e2e
USER = str(ROOT / "tests" / "user_handlers.py")
# no ONNX export, no test report: neither is what these tests are about (test_onnx, test_images_e2e test them)
FAST = [*QUICK, "--no-onnx", "--no-test-report"]


def lr_curve(tmp_path):
    return [(r["_step"], r["lr/group_0"]) for r in history(offline_runs(tmp_path)[0]) if "lr/group_0" in r]


def final_checkpoint(tmp_path):
    return torch.load(max((tmp_path / "runs").glob("*/checkpoints/checkpoint_*.pt"), key=lambda p: int(p.stem.split("_")[1])),
                      weights_only=True)


# ---------------------------------------------------------------- ways in


def test_python_api_drives_the_same_app(tmp_path):
    script = tmp_path / "my_training.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from ignite.engine import Events
        from ignite_app import attach_handlers, build, parse

        app = attach_handlers(build(parse({[*FAST, "--epochs", "1", "--output-dir", str(tmp_path / "runs")]!r})))
        calls = []
        app.trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: calls.append(engine.state.iteration))
        assert {{"trainer", "evaluator", "model", "optimizer", "loaders", "wandb_logger", "config", "output_dir"}} <= set(vars(app))
        metrics = app.run()
        app.wandb_logger.log({{"custom/calls": len(calls)}}, step=app.trainer.state.iteration)
        app.close()
        print("metrics", metrics["test/accuracy"], len(calls))
    """))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=clean_env(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "metrics" in proc.stdout and proc.stdout.strip().endswith(" 11")
    assert inspect_summary(offline_runs(tmp_path)[0])["summary"]["custom/calls"] == 11


def install_plugin(site):
    """What pip writes for a package `my-plugin` that declares an `ignite_app.handlers` entry point."""
    (site / "my_plugin").mkdir(parents=True)
    (site / "my_plugin" / "__init__.py").write_text(
        "def attach(app, key='plugin/epochs'):\n"
        "    from ignite.engine import Events\n"
        "    app.trainer.add_event_handler(Events.EPOCH_COMPLETED,\n"
        "        lambda e: app.wandb_logger.log({key: e.state.epoch}, step=e.state.iteration))\n"
    )
    dist = site / "my_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[ignite_app.handlers]\nepoch-logger = my_plugin:attach\n")


def hard_example_rows(tmp_path):
    key = "validation/hard_examples"
    return [r for r in history(offline_runs(tmp_path)[0]) if f"{key}._type" in r]


def test_handlers_from_a_file_by_name_and_from_an_installed_plugin_in_one_run(tmp_path):
    """Three ways in, side by side in one run: a function from a file with a keyword argument, the built-in
    hard-examples table by name with JSON arguments (the README's worked example), and a plugin by its entry-point
    name; each logs its own key."""
    site = tmp_path / "site"
    install_plugin(site)
    env = clean_env(tmp_path, PYTHONPATH=str(site))
    listed = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--list-handlers"], env=env,
                            capture_output=True, text=True, check=True).stdout
    assert "epoch-logger" in listed and "installed by my-plugin" in listed and "hard-examples" in listed
    run_train([*FAST, "--handler", f"{USER}:count_epochs", "--handler-arg", "key=custom/seen",
               "--handler", 'hard-examples {"every": 2, "count": 3}', "--handler", "epoch-logger"], tmp_path, env=env)
    rows = history(offline_runs(tmp_path)[0])
    assert [r["custom/seen"] for r in rows if "custom/seen" in r] == [1, 2]
    assert [r["plugin/epochs"] for r in rows if "plugin/epochs" in r] == [1, 2]
    (table,) = hard_example_rows(tmp_path)  # every 2 epochs: once in 2
    key = "validation/hard_examples"
    assert table[f"{key}._type"] == "table-file" and table[f"{key}.ncols"] == 5 and 1 <= table[f"{key}.nrows"] <= 3
    assert list(offline_runs(tmp_path)[0].glob("files/media/table/validation/hard_examples_*.table.json"))


def test_readme_worked_example_hard_examples_table_from_a_file(tmp_path):
    run_train([*FAST, "--handler", str(ROOT / "handlers" / "hard_examples.py") + ":HardExamplesTable",
               "--handler-arg", "count=5"], tmp_path)
    rows = hard_example_rows(tmp_path)
    key = "validation/hard_examples"
    assert len(rows) == 2
    assert rows[-1][f"{key}._type"] == "table-file" and rows[-1][f"{key}.ncols"] == 5
    assert 1 <= rows[-1][f"{key}.nrows"] <= 5
    assert list(offline_runs(tmp_path)[0].glob("files/media/table/validation/hard_examples_*.table.json"))


# ---------------------------------------------------------------- built-in handlers


# one configuration for the schedule test and the resume test below: cosine with warm-up, clipping, accumulation,
# CPU AMP, early stopping (which never stops here) and `net`, whose dropout makes the RNG state matter on resume
# (at lr 0.01: accumulation halves its 22 steps)
SCHEDULED = [*FAST, "--model", "net", "--lr", "0.01", "--lr-schedule", "cosine", "--warmup-iters", "6", "--log-interval", "1",
             "--clip-grad-norm", "0.5", "--accumulation-steps", "2", "--amp", "--checkpoint-every", "4",
             "--early-stopping", "5"]


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory):
    return trained_once(tmp_path_factory, "scheduled", SCHEDULED)


def test_cosine_with_warmup_clipping_accumulation_and_cpu_amp(scheduled):
    curve = [lr for _, lr in lr_curve(scheduled)]
    peak = curve.index(max(curve))
    assert 4 <= peak <= 7 and curve[0] < curve[peak] / 4  # linear warm-up ...
    assert all(a >= b for a, b in zip(curve[peak:], curve[peak + 1:])) and curve[-1] < curve[peak] / 10  # ... then cosine
    rows = [r for r in history(offline_runs(scheduled)[0]) if "training/grad_norm" in r]
    assert len(rows) >= 20 and all(r["training/grad_norm"] > 0 for r in rows)
    ckpt = final_checkpoint(scheduled)
    assert int(ckpt["optimizer"]["state"][0]["step"]) == 11  # 22 iterations, one step per 2
    assert "lr_scheduler" in ckpt
    assert inspect_summary(offline_runs(scheduled)[0])["summary"]["test/accuracy"] > 0.5


@pytest.mark.parametrize("schedule", ["step", "onecycle"])
def test_step_and_onecycle_schedules_shape_the_logged_lr(tmp_path, schedule):
    run_train([*FAST, "--lr-schedule", schedule, "--lr-step-epochs", "1", "--log-interval", "1"], tmp_path)
    curve = dict(lr_curve(tmp_path))
    if schedule == "step":
        assert curve[1] == pytest.approx(0.005) and curve[11] == pytest.approx(0.005)
        assert curve[12] == pytest.approx(0.0005) and curve[22] == pytest.approx(0.0005)
    else:
        values = list(curve.values())
        top = values.index(max(values))
        assert 0 < top < len(values) - 1 and max(values) == pytest.approx(0.005, rel=0.05)
        assert values[0] < 0.001 and values[-1] < 0.0001


def test_early_stopping_stops_and_its_counter_is_checkpointed(tmp_path):
    proc = run_train([*FAST, "--epochs", "6", "--early-stopping", "1", "--lr", "1e-12"], tmp_path)
    assert "Early stopping after epoch 2" in proc.stdout
    s = inspect_summary(offline_runs(tmp_path)[0])["summary"]
    assert s["trainer/epoch"] == 2 and s["stopped"] == "early stopping"
    assert final_checkpoint(tmp_path)["early_stopping"]["counter"] == 1


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    proc = run_train([*FAST, "--checkpoint-every", "4", "--handler", f"{USER}:blow_up_at", "--handler-arg",
                      "iteration=13"], tmp_path, check=False)
    assert proc.returncode == 1 and "the loss became NaN or infinite" in proc.stderr and "Traceback" not in proc.stderr
    assert "checkpoint_12.pt" in proc.stderr
    ckpt = final_checkpoint(tmp_path)
    assert ckpt["trainer"]["iteration"] == 12
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())


def test_resume_with_a_schedule_is_bit_exact(scheduled, tmp_path):
    """SIGKILLed at iteration 10 and resumed from the checkpoint of 8: the same weights, scheduler and early-stopping
    state as the uninterrupted run (with accumulation, clipping and AMP on the way)."""
    crashed = run_train([*SCHEDULED, "--handler", f"{USER}:kill_at", "--handler-arg", "iteration=10"], tmp_path,
                        check=False)
    assert crashed.returncode == -9
    proc = run_train([*SCHEDULED, "--auto-resume"], tmp_path)
    assert "at iteration 8" in proc.stdout
    a, b = final_checkpoint(scheduled), final_checkpoint(tmp_path)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["lr_scheduler"] == b["lr_scheduler"] and a["early_stopping"] == b["early_stopping"]


def test_compile(tmp_path):
    proc = run_train([*FAST, "--epochs", "1", "--compile"], tmp_path)
    assert "Test results" in proc.stdout
    assert not any(k.startswith("_orig_mod") for k in final_checkpoint(tmp_path)["model"])

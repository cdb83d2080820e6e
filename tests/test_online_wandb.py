"""The online-only W&B paths: resume from `wandb:` specs. They need a real W&B account, so they run only when
WANDB_API_KEY is set and the W&B API answers; otherwise they are skipped with the reason."""
import os

import pytest
import torch

from helpers import QUICK, clean_env, run_train

pytestmark = [pytest.mark.e2e, pytest.mark.online]


@pytest.fixture(scope="module")
def api():
    if not os.environ.get("WANDB_API_KEY"):
        pytest.skip("WANDB_API_KEY is not set: the online W&B paths (artifact download, wandb.Api) cannot run here")
    import wandb

    try:
        api = wandb.Api(timeout=20)
        entity = api.default_entity
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"the W&B API does not answer ({type(exc).__name__}: {exc})")
    return api, entity


def online_env(tmp_path):
    env = clean_env(tmp_path)
    env["WANDB_API_KEY"] = os.environ["WANDB_API_KEY"]
    for key in ("WANDB_BASE_URL", "WANDB_ENTITY"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def test_resume_from_artifact_alias_and_from_run_id(api, tmp_path):
    _, entity = api
    project = "ignite-app-tests"
    args = [*QUICK, "--epochs", "1", "--wandb-mode", "online", "--wandb-project", project]
    run_train(args, tmp_path, env=online_env(tmp_path))
    ckpt = next((tmp_path / "runs").glob("*/checkpoints/checkpoint_*.pt"))
    run_id = ckpt.parent.parent.name
    expected = torch.load(ckpt, weights_only=True)["model"]
    for spec in (f"wandb:{entity}/{project}/checkpoint-{run_id}:latest", f"wandb:{entity}/{project}/{run_id}"):
        other = tmp_path / spec.replace("/", "_").replace(":", "_")
        other.mkdir()
        proc = run_train([*args, "--resume", spec], other, env=online_env(other))
        assert "W&B artifact" in proc.stdout and f"W&B run {run_id}" in proc.stdout
        resumed = torch.load(next((other / "runs").glob("*/checkpoints/checkpoint_*.pt")), weights_only=True)["model"]
        assert all(torch.equal(expected[k], resumed[k]) for k in expected)  # nothing left to train: same weights


def test_best_and_last_online_deletes_the_superseded_versions(api, tmp_path):
    """--log-checkpoints best-and-last (the default) online: every version is uploaded, and the uploader thread
    deletes each one that lost both `latest` and `best`; what stays is the last (`latest`) and the best."""
    w, entity = api
    project = "ignite-app-tests"
    run_train([*QUICK, "--checkpoint-every", "4", "--wandb-mode", "online", "--wandb-project", project], tmp_path,
              env=online_env(tmp_path))
    final = max((tmp_path / "runs").glob("*/checkpoints/checkpoint_*.pt"), key=lambda p: p.stat().st_mtime_ns)
    run_id = final.parent.parent.name
    versions = list(w.artifacts("model", f"{entity}/{project}/checkpoint-{run_id}"))
    assert 1 <= len(versions) <= 2 and all({"latest", "best"} & set(v.aliases) for v in versions)
    (latest,) = [v for v in versions if "latest" in v.aliases]
    assert [f.name for f in latest.files()] == [final.name]


def test_missing_artifact_is_a_clear_error(api, tmp_path):
    _, entity = api
    proc = run_train([*QUICK, "--resume", f"wandb:{entity}/ignite-app-tests/checkpoint-doesnotexist:latest"],
                     tmp_path, env=online_env(tmp_path), check=False)
    assert proc.returncode == 2 and "could not find" in proc.stderr


def test_online_sweep_creates_a_wandb_sweep_and_runs_its_trials(api, tmp_path):
    """scripts/sweep.py online: the same YAML becomes a W&B sweep, W&B's agent runs `count` trials, and each trial's
    run belongs to the sweep, with the W&B-given run id naming its output directory."""
    import re

    import yaml

    from helpers import run_script

    wandb_api, entity = api
    project = "ignite-app-tests"
    sweep_file = tmp_path / "online.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "online", "method": "random", "metric": {"name": "validation/best_accuracy", "goal": "maximize"},
        "parameters": {"dataset": {"value": "digits"}, "epochs": {"value": 1}, "onnx": {"value": False},
                       "wandb_project": {"value": project}, "lr": {"values": [0.001, 0.01]}},
    }))
    proc = run_script("sweep.py", [sweep_file.name, "--count", "1"], tmp_path, env=online_env(tmp_path))
    sweep_id = re.search(r"Created W&B sweep (\w+)", proc.stdout).group(1)
    runs = list(wandb_api.sweep(f"{entity}/{project}/{sweep_id}").runs)
    assert len(runs) == 1 and runs[0].summary.get("validation/best_accuracy") is not None
    assert list(tmp_path.rglob(f"runs/{runs[0].id}/config.yaml"))  # the agent's run id names the run directory

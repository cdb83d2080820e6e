"""Checkpoints stored as W&B artifacts: read back from an offline run's records, or downloaded (online)."""
from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from ignite_app import tracking
from ignite_app.errors import UserError


def wandb_cli() -> list[str]:
    """W&B's command line, run by this interpreter (its script may not be on PATH, e.g. in a venv that reuses
    system site-packages)."""
    return [sys.executable, "-m", "wandb"]


def offline_run_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of an offline run's transaction log, via `wandb leet inspect --json` (W&B's own reader)."""
    proc = subprocess.run([*wandb_cli(), "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(
            f"Cannot read the offline W&B run {run_dir} (`wandb leet inspect` said: {proc.stderr.strip()[:300]}). "
            "Check that it is a wandb/offline-run-... directory written by this version of wandb."
        )
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def md5_b64(path: Path) -> str:
    """A file's digest as W&B's artifact manifests record it (base64 of the MD5)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode()


def checkpoint_artifacts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's logged checkpoint artifacts (type model, named checkpoint-...), oldest first."""
    return [
        r["artifact"] for r in records
        if r.get("type") == "artifact" and r["artifact"].get("type") == "model"
        and r["artifact"].get("name", "").startswith("checkpoint-")
    ]


def _pick(artifacts: list[dict[str, Any]], alias: str) -> Optional[dict[str, Any]]:
    """The newest version that carried `alias` (W&B moves an alias to the newest version that claims it)."""
    matching = [a for a in artifacts if alias in a.get("aliases", [])]
    return matching[-1] if matching else None


def checkpoint_from_offline_run(run_dir: Path, alias: str = "latest") -> tuple[Path, str]:
    """Find the checkpoint an offline run logged under `alias`, and check its bytes against the recorded digest."""
    records = offline_run_records(run_dir)
    artifacts = checkpoint_artifacts(records)
    chosen = _pick(artifacts, alias)
    config = next((r["run"]["config"]["update"] for r in records if r.get("type") == "run"), {})
    if chosen is None and config.get("log_checkpoints") == "best-and-last" and alias in ("latest", "best"):
        found = _from_run_directory(run_dir, records, config, alias)
        if found is not None:
            return found
    if chosen is None:
        seen = sorted({a for art in artifacts for a in art.get("aliases", [])})
        raise UserError(
            f"The offline W&B run {run_dir} logged no checkpoint artifact with alias {alias!r} "
            f"({len(artifacts)} checkpoint versions; aliases seen: {', '.join(seen) or 'none'}). It may have been "
            "killed before its first checkpoint: resume from an earlier run, or start afresh."
        )
    (entry,) = chosen["manifest"]["contents"]
    metadata = json.loads(chosen.get("metadata") or "{}")
    candidates = [Path(entry["local_path"])]
    if config.get("output_dir") and chosen.get("run_id"):
        candidates.append(Path(config["output_dir"]) / chosen["run_id"] / "checkpoints" / entry["path"])
    tried = []
    for path in candidates:
        if not path.is_file():
            tried.append(f"{path} (missing)")
            continue
        if md5_b64(path) != entry["digest"]:
            tried.append(f"{path} (digest differs from the recorded {entry['digest']})")
            continue
        version = f"{chosen['name']} ({', '.join(chosen.get('aliases', []))}, iteration {metadata.get('iteration')})"
        return path, f"{path}, artifact {version} of offline run {run_dir}"
    raise UserError(
        f"The offline W&B run {run_dir} logged checkpoint {entry['path']} (alias {alias!r}), but no intact copy is "
        f"left: tried {'; '.join(tried)}. Resume from a checkpoint file instead (OUTPUT_DIR/RUN_ID/checkpoints/)."
    )


def _from_run_directory(run_dir: Path, records: list[dict[str, Any]], config: dict[str, Any],
                        alias: str) -> Optional[tuple[Path, str]]:
    """The newest checkpoint (`latest`) or the best one of the run's own checkpoint directory: with
    --log-checkpoints best-and-last an offline run logs its versions when it ends, so a killed one logged none."""
    run_id = next((r["run"].get("run_id") for r in records if r.get("type") == "run"), None)
    if not (config.get("output_dir") and run_id):
        return None
    directory = Path(config["output_dir"]) / run_id / "checkpoints"
    # the best Checkpoint's files are best_checkpoint_*.pt (filename_prefix "best" in app._attach_checkpoints)
    found = sorted((p for p in directory.glob("*.pt") if p.name.startswith("best_") == (alias == "best")),
                   key=lambda p: p.stat().st_mtime_ns, reverse=True)
    if not found:
        return None
    return found[0], (f"{found[0]} (the offline run {run_dir} stopped before logging its best and last checkpoints, "
                      f"as --log-checkpoints best-and-last does at the end: the {alias} file of its run directory)")


def _api():
    import wandb

    if not tracking.api_key_configured():
        raise UserError(
            "A wandb: checkpoint spec needs the W&B API, but no API key is configured (checked WANDB_API_KEY and "
            "~/.netrc). Run `wandb login` or set WANDB_API_KEY; offline, resume from a checkpoint file or an "
            "offline run directory instead."
        )
    try:
        return wandb.Api()  # honours WANDB_HTTP_TIMEOUT
    except Exception as exc:  # noqa: BLE001 - wandb raises several types for auth and network failures
        raise UserError(f"Cannot reach the W&B API ({type(exc).__name__}: {exc}). Check the network and API key.") from None


def _download(artifact, spec: str) -> tuple[Path, str]:
    root = Path(artifact.download())
    files = sorted(root.rglob("*.pt"))
    if not files:
        raise UserError(f"The W&B artifact {spec} holds no .pt checkpoint file (it has {sorted(p.name for p in root.iterdir())}).")
    return files[0], f"{files[0]} (W&B artifact {artifact.qualified_name})"


def download_checkpoint(spec: str) -> tuple[Path, str]:
    """`ENTITY/PROJECT/NAME:ALIAS` -> that artifact; `ENTITY/PROJECT/RUN_ID` -> the run's newest checkpoint."""
    parts = spec.split("/")
    if len(parts) != 3 or not all(parts):
        raise UserError(
            f"wandb:{spec} is not a W&B checkpoint spec: use wandb:ENTITY/PROJECT/NAME:ALIAS (an artifact, e.g. "
            "wandb:me/ignite-app/checkpoint-abc123:latest) or wandb:ENTITY/PROJECT/RUN_ID."
        )
    api = _api()
    import wandb

    try:
        if ":" in parts[2]:
            return _download(api.artifact(spec, type="model"), spec)
        run = api.run(spec)
        versions = [a for a in run.logged_artifacts() if a.type == "model" and a.name.startswith("checkpoint-")]
    except (wandb.errors.CommError, ValueError) as exc:
        raise UserError(f"W&B could not find wandb:{spec} ({exc}). Check the entity, project, name and alias.") from None
    except Exception as exc:  # noqa: BLE001 - network and auth failures come in many types
        raise UserError(f"Cannot reach the W&B API for wandb:{spec} ({type(exc).__name__}: {exc}). Check the "
                        "network and API key, or resume from a local checkpoint file.") from None
    if not versions:
        raise UserError(f"The W&B run {spec} logged no checkpoint artifacts; resume from a checkpoint file instead.")
    latest = next((a for a in versions if "latest" in a.aliases), versions[-1])
    return _download(latest, spec)

"""W&B, checked before anything is written and then started: which mode a run uses (`resolve_mode`: flag, WANDB_MODE,
API key), the settings and directory it needs (`check_run_settings`, `check_wandb_dir`), which run id it continues
(`given_run_id`, `sweep_agent_run_id`), Ignite's WandBLogger that starts or continues the run (`create_logger`, with
`prestart` warming W&B's imports meanwhile), the one-line description of where the run goes (`describe_run`), and
the run's summary (`log_summary`). The handlers that log to it are attached in `app.attach_handlers`, all on one
step axis, the trainer's iteration; a resumed run logs only steps past what W&B already holds (`resumed_step`).
"""
from __future__ import annotations

import logging
import netrc
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

from ignite_app.config import WANDB_MODES, Config
from ignite_app.errors import AppError, UserError


TRANSACTION_LOG_FLUSH_SECONDS = 1.0
# how long --wandb-mode auto waits for the W&B server before it logs offline (W&B's own init_timeout is 90 s, and
# without a network its retries end in a traceback after ~95 s); WANDB_INIT_TIMEOUT overrides it
AUTO_INIT_TIMEOUT_SECONDS = 5.0
# what wandb.init imports lazily: the launch-inputs check that every run makes (~0.3-0.7 s on 2 cores), and the
# artifact API that the first checkpoint needs
_PREIMPORTS = ("wandb.sdk.launch.inputs.internal", "wandb.apis.public.artifacts")
_prestart: Optional[threading.Thread] = None
DEFAULT_PROJECT = "ignite-app"
ENV_MODE_ALIASES = {"dryrun": "offline", "run": "online", "shared": "online"}  # W&B's older spellings of WANDB_MODE
WANDB_OWN_MODES = ("online", "offline", "disabled", *ENV_MODE_ALIASES)  # what wandb.init accepts in WANDB_MODE, verbatim


def api_key_configured(environ: Optional[dict] = None) -> bool:
    """True when W&B would find credentials without asking: WANDB_API_KEY, an identity token file
    (WANDB_IDENTITY_TOKEN_FILE), or a netrc entry for the W&B host (what `wandb login` writes)."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_API_KEY") or environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def resolve_mode(requested: str, environ: Optional[dict] = None) -> str:
    """--wandb-mode auto -> $WANDB_MODE if set, else online with an API key, else offline. Never prompts. A
    WANDB_MODE in another case, with spaces or empty is rewritten in `environ` to the spelling W&B reads."""
    environ = os.environ if environ is None else environ
    mode = requested
    raw_env_mode = environ.get("WANDB_MODE") or ""
    env_mode = ENV_MODE_ALIASES.get(raw_env_mode.strip().lower(), raw_env_mode.strip().lower())
    if env_mode and env_mode not in WANDB_MODES[1:]:
        # W&B itself would fail later, in wandb.init, with a validation traceback after the run directory exists
        raise UserError(
            f"The environment variable WANDB_MODE={raw_env_mode!r} is not a W&B mode; set it to one of "
            f"{', '.join(WANDB_MODES[1:])} (or unset it and use --wandb-mode)."
        )
    if "WANDB_MODE" in environ and raw_env_mode not in WANDB_OWN_MODES:
        # W&B reads WANDB_MODE itself, verbatim: `OFFLINE`, ` offline` or an empty value fail its Settings validation
        # inside wandb.init (a traceback after the run directory exists); hand it the spelling it accepts
        if env_mode:
            environ["WANDB_MODE"] = env_mode
        else:
            del environ["WANDB_MODE"]
    if mode == "auto":
        if env_mode:
            mode = env_mode
        elif environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
            mode = "disabled"
        else:
            mode = "online" if api_key_configured(environ) else "offline"
    if mode != "disabled":
        check_wandb_dir(environ.get("WANDB_DIR"))
    if mode == "online" and not api_key_configured(environ):
        raise UserError(
            "W&B online mode was asked for (--wandb-mode online or WANDB_MODE=online) but no API key is configured "
            "(checked WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE and ~/.netrc). Run `wandb login` or set WANDB_API_KEY, or log offline with "
            "--wandb-mode offline and upload later with `wandb sync`."
        )
    return mode


def prestart(mode: str) -> None:
    """Import wandb and start its service process on a background thread, so that they overlap the imports of
    torch and ignite, the dataset read and the model build instead of following them (bench/results.md). Writes
    nothing where runs go (the run itself starts in `create_logger`, after every check); W&B's own debug log goes
    to its cache directory. A failure here is left for `create_logger` to report."""
    global _prestart
    if mode == "disabled" or _prestart is not None:
        return

    def start() -> None:
        try:
            import importlib

            import wandb

            for module in _PREIMPORTS:
                importlib.import_module(module)
            wandb.setup()
        except Exception:  # noqa: BLE001 - create_logger starts the run on this thread and reports what fails
            pass

    # not a daemon: the interpreter must not be torn down in the middle of an import, even on a bad-input exit
    _prestart = threading.Thread(target=start, name="wandb-prestart")
    _prestart.start()


def check_wandb_dir(wandb_dir: Optional[str]) -> None:
    """$WANDB_DIR must not run through a file: W&B itself only warns and puts the run under the system's temporary
    directory, where neither the user nor `--resume wandb/offline-run-...` would look.

    Only that is bad input (exit 2): a path through a file can never become a directory, it is a mistake in the
    setting, like an --output-dir that is a file. A directory that is not writable (permissions, a read-only mount)
    is a state of the disk, like a full one, and may change while the run trains; the issue's rule for those is that
    they cost W&B's records, never the run: `unwritable_wandb_dir` turns W&B off for the run with one warning."""
    if not wandb_dir:
        return
    path = Path(wandb_dir).expanduser()
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise UserError(f"The environment variable WANDB_DIR={wandb_dir!r} points at a file ({candidate}), not "
                                "a directory; set it to a directory for the W&B run files (it is created if missing), "
                                "or unset it.")
            return


def unwritable_wandb_dir(environ: Optional[dict] = None) -> Optional[tuple[str, str]]:
    """(directory, why) when W&B cannot write where its runs go ($WANDB_DIR, else the working directory): the first
    existing directory of that path is not writable by this user or lies on a read-only file system. None if it can."""
    environ = os.environ if environ is None else environ
    path = Path(environ.get("WANDB_DIR") or ".").expanduser().absolute()
    candidate = next((p for p in (path, *path.parents) if p.exists()), None)
    if candidate is None or not candidate.is_dir() or os.access(candidate, os.W_OK | os.X_OK):
        return None
    try:
        read_only = bool(os.statvfs(candidate).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return str(candidate), "read-only file system" if read_only else "not writable by this user"


def given_run_id(environ: Optional[dict] = None, flag: Optional[str] = None) -> Optional[str]:
    """The run id set from outside (`--run-id`, else WANDB_RUN_ID: by a sweep agent, or by the user), or None.

    wandb.init uses WANDB_RUN_ID when no id is passed, and under a sweep agent it uses it even when one is: the run
    directory and checkpoint metadata must carry the same id."""
    environ = os.environ if environ is None else environ
    source, run_id = ("--run-id", flag.strip()) if flag else ("WANDB_RUN_ID", (environ.get("WANDB_RUN_ID") or "").strip())
    if not run_id:
        return None
    if any(c in run_id for c in "/\\:#?% ") or run_id in (".", ".."):
        raise UserError(f"{source} {run_id!r} cannot be a W&B run id (no spaces or / \\ : # ? %); pick another"
                        f"{' or unset it' if source == 'WANDB_RUN_ID' else ''}.")
    return run_id


def sweep_agent_run_id(environ: Optional[dict] = None) -> Optional[str]:
    """The run id a W&B sweep agent gave this process (WANDB_SWEEP_ID and WANDB_RUN_ID both set), or None."""
    environ = os.environ if environ is None else environ
    return given_run_id(environ) if environ.get("WANDB_SWEEP_ID") else None


# the W&B settings behind each of our flags, for messages
_RUN_SETTING_FLAGS = {"project": "--wandb-project (or $WANDB_PROJECT)", "entity": "--wandb-entity",
                      "run_name": "--wandb-name", "run_tags": "--wandb-tags", "run_group": "--wandb-group",
                      "run_notes": "--wandb-notes"}


def project_of(config: Config) -> str:
    return config.wandb_project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT


def check_run_settings(config: Config) -> None:
    """W&B's own checks of the run's project, tags, ... (its Settings validators), run before anything is written:
    wandb.init would raise them after the run directory and config.yaml exist (`--wandb-project a/b`, a tag longer
    than 64 characters)."""
    import pydantic
    import wandb

    values = {"project": project_of(config), "entity": config.wandb_entity, "run_name": config.wandb_name,
              "run_tags": tuple(config.wandb_tags), "run_group": config.wandb_group, "run_notes": config.wandb_notes}
    for key, value in values.items():
        if value is None:
            continue
        try:
            wandb.Settings(**{key: value})
        except (wandb.errors.UsageError, pydantic.ValidationError) as exc:
            detail = exc.errors()[0]["msg"].removeprefix("Value error, ") if isinstance(exc, pydantic.ValidationError) \
                else str(exc)
            raise UserError(f"{_RUN_SETTING_FLAGS[key]}: W&B refuses it ({' '.join(detail.split())}). Fix the "
                            "value and run again.") from None


class WandbUnreachable(AppError):
    """W&B online was asked for explicitly and the server cannot be reached: exit 1, one paragraph."""


def chose_online_by_itself(config: Config, environ: Optional[dict] = None) -> bool:
    """True when online mode is --wandb-mode auto's choice (an API key is configured), not the user's: then an
    unreachable server means logging offline instead."""
    environ = os.environ if environ is None else environ
    return config.wandb_mode == "auto" and not (environ.get("WANDB_MODE") or "").strip()


def create_logger(config: Config, run_id: str, mode: str, resume: bool = False):
    """Start (or continue, with the same run id) the W&B run through Ignite's WandBLogger.

    W&B's failures must not cost the training: with an API key but no network, `--wandb-mode auto` gives W&B
    `AUTO_INIT_TIMEOUT_SECONDS` (not its 90 s) and then logs offline, same run id, with one line saying so; a full or
    unwritable WANDB_DIR gives one warning (`wandb_writes`)."""
    if _prestart is not None:
        _prestart.join()
    import wandb

    from ignite_app.disk import describe, disk_error
    from ignite_app.background_log import BackgroundLogWandBLogger
    from ignite_app.wandb_disk import check_space, reset, warn

    reset()
    # Python's logging prints a traceback for every record it cannot write: with WANDB_DIR full, W&B's debug.log
    # turned a finished run into ~9,000 lines. Applications switch that off (the logging docs' advice).
    logging.raiseExceptions = False
    settings: dict[str, Any] = {"silent": True}
    if "x_transaction_log_flush_interval" in wandb.Settings.model_fields:
        # W&B flushes the run's .wandb file every 15 s by default; a SIGKILLed run loses what was not flushed,
        # including the records of its checkpoint artifacts that `--resume wandb/offline-run-...` reads.
        settings["x_transaction_log_flush_interval"] = TRANSACTION_LOG_FLUSH_SECONDS
    fallback = mode == "online" and chose_online_by_itself(config)
    if fallback and not os.environ.get("WANDB_INIT_TIMEOUT"):
        settings["init_timeout"] = AUTO_INIT_TIMEOUT_SECONDS

    def start(run_mode: str, run_settings: dict[str, Any]):
        return BackgroundLogWandBLogger(
            project=project_of(config), entity=config.wandb_entity, name=config.wandb_name,
            tags=list(config.wandb_tags) or None, notes=config.wandb_notes, group=config.wandb_group,
            config=config.to_dict(), id=run_id, resume="allow" if resume else None, mode=run_mode,
            settings=wandb.Settings(**run_settings),
        )

    started = time.time()
    unwritable = unwritable_wandb_dir() if mode != "disabled" else None
    if unwritable is not None:  # W&B would write the run under /tmp instead, where no one looks for it
        warn(unwritable[1], unwritable[0], consequence="W&B is off for this run")
        mode = "disabled"
    try:
        logger = start(mode, settings)
    except wandb.errors.CommError as exc:
        reason = " ".join(str(exc).split("\n")[0].split())
        if not fallback:
            raise WandbUnreachable(
                f"W&B could not start the run online ({reason}). Check the network and the API key, or log offline "
                "with --wandb-mode offline (or auto, which falls back to offline by itself) and upload later with "
                "`wandb sync`.") from None
        print(f"W&B: could not start the run online at {os.environ.get('WANDB_BASE_URL') or 'https://api.wandb.ai'} "
              f"({reason}); logging offline instead, same run id (upload it later with `wandb sync`).",
              file=sys.stderr, flush=True)
        wandb.teardown()  # the service still holds the failed online run under this id
        _remove_failed_online_run(run_id, started)
        settings.pop("init_timeout", None)
        logger = start("offline", settings)
    except Exception as exc:  # noqa: BLE001 - only W&B's disk failing is tolerated here
        error = disk_error(exc)
        if error is None:
            raise
        warn(describe(error), consequence="W&B is off for this run")
        wandb.teardown()
        logger = start("disabled", settings)
    check_space(logger)
    return logger


def _remove_failed_online_run(run_id: str, since: float) -> None:
    """The directory of the online attempt that never reached the server (wandb/run-DATE-RUNID, made just now):
    `wandb sync --include-online` would otherwise upload its empty start beside the offline run."""
    import shutil

    for path in Path(os.environ.get("WANDB_DIR") or ".", "wandb").glob(f"run-*-{run_id}"):
        if path.is_dir() and path.stat().st_mtime >= since - 1:
            shutil.rmtree(path, ignore_errors=True)


def describe_run(logger) -> str:
    """One line: where this run's W&B records go (what the start-up message prints)."""
    run_dir = offline_run_dir(logger)
    if run_dir is None:
        return "W&B: disabled"
    run = logger.run
    if run.settings.mode in ("offline", "dryrun"):
        return (f"W&B offline: {run_dir} ; upload it with `wandb sync {run_dir}`, "
                f"view it with `wandb leet {run_dir}`")
    return f"W&B: {run.url} (local files: {run_dir})"


def offline_run_dir(logger) -> Optional[str]:
    """The local run directory (wandb/offline-run-..., or wandb/run-... online), or None when W&B is disabled."""
    run = getattr(logger, "run", None)
    if run is None or getattr(run, "disabled", False):
        return None
    return os.path.dirname(run.dir.rstrip(os.sep))


def resumed_step(logger) -> int:
    """The step a resumed W&B run continues from (0 offline: the local run starts empty)."""
    run = getattr(logger, "run", None)
    return int(getattr(run, "step", 0) or 0) if run is not None and not getattr(run, "disabled", False) else 0


def log_summary(logger, values: dict[str, Any]) -> None:
    from ignite_app.wandb_disk import wandb_writes

    if logger.run is not None:
        with wandb_writes():
            logger.run.summary.update(values)


def close(logger) -> None:
    """Finish the W&B run; a full or unwritable WANDB_DIR costs W&B's records, not the run (one warning)."""
    logger.close()  # BackgroundLogWandBLogger: sends what is queued; checks the space left, tolerates a disk error


def flush(logger) -> None:
    """Every record logged so far has reached W&B (`BackgroundLogWandBLogger` queues them): before a direct
    `run.log` of ours (the test report's tables), and at each epoch's end."""
    if hasattr(logger, "flush"):
        logger.flush()

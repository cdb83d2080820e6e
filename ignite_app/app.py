"""Assembly: `build(config) -> App`, `attach_handlers(app)`, `App.run()`, and `training(local_rank, config)`.

    from ignite_app import build, attach_handlers
    app = build(config)                       # loaders, model, optimizer, engines, W&B run
    attach_handlers(app)                      # progress bar, validation, W&B logging, ...
    app.trainer.add_event_handler(...)        # anything of your own
    metrics = app.run()                       # train, then evaluate the test set once
"""
from __future__ import annotations


import math
import signal
import os
import secrets
import string
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, ProgressBar, Timer
from ignite.handlers.utils import global_step_from_engine
from ignite.metrics import Frequency
from ignite.utils import manual_seed
from torch import nn

from ignite_app.handlers.best_metrics import BestMetrics
from ignite_app.handlers.onnx_export import OnnxExportHandler
from ignite_app.handlers.test_report import TestReport
from ignite_app.handlers.wandb_checkpoint import ArtifactUploader, WandBCheckpointSaver, clean_debris
from ignite_app import collection, disk, distributed, plugins, resume, tracking
from ignite_app.config import Config, validate
from ignite_app.augment import BatchAugment
from ignite_app.data import Loaders, Splits, make_loaders, splits_from_config, verification_images
from ignite_app.engines import GradNormClipper, create_engines
from ignite_app.errors import TrainingStopped, UserError, quiet_engine_logs
from ignite_app.preemption import CLOSING, FINISHING, STARTING, Preempted, Preemption
from ignite_app.runlock import RunLock
from ignite_app.models import build_model, check_model_name
from ignite_app.schedules import create_lr_scheduler
from ignite_app.state import RESTORED_LAST, AccumulatedGradients, RNGStates, RunMeta, plan_load
from ignite_app.stopping import (
    EARLY_STOPPING, NanWatch, RecordingEarlyStopping, RecordingTerminateOnNan, StopRecorder, divergence, is_finite,
)


@dataclass
class App:
    """Everything a run is made of; `scripts/train.py` and users' own scripts drive the same object."""

    config: Config
    run_id: str
    output_dir: Path
    device: torch.device
    splits: Splits
    loaders: Loaders
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    trainer: Engine
    evaluator: Engine
    test_evaluator: Engine
    wandb_logger: Any
    to_save: dict[str, Any]
    checkpoint: Optional[resume.ResolvedCheckpoint] = None  # what this run resumes from
    progress_bar: Optional[ProgressBar] = None
    checkpointers: dict[str, Checkpoint] = field(default_factory=dict)
    uploader: Optional[ArtifactUploader] = None  # logs the checkpoints as W&B artifact versions, in save order
    min_log_step: int = 0  # a resumed online run already holds steps below this; don't log them again
    onnx_exporter: Optional[OnnxExportHandler] = None
    grad_clipper: Optional[GradNormClipper] = None
    user_handlers: list[Callable[["App"], None]] = field(default_factory=list)  # --handler, resolved
    share_loss: Optional[distributed.ShareWeightedLoss] = None  # the trainer's loss with several processes
    stops: StopRecorder = field(default_factory=StopRecorder)  # why training stopped, as the stopper recorded it
    stop_together: distributed.StopTogether = field(default_factory=distributed.StopTogether)
    nan_watch: Optional[NanWatch] = None  # with --no-terminate-on-nan: where the loss first became NaN
    attached: bool = False  # attach_handlers ran
    run_lock: Optional[RunLock] = None  # this process trains the run (OUTPUT_DIR/RUN_ID/.lock)
    signalled: Optional[int] = None  # the stop signal received so far (SIGTERM, SIGINT, SIGUSR1), if any

    def request_stop(self, reason: str, preempt: bool = False) -> None:
        """Stop training at the end of the current iteration, on every rank at the same one (a preemption signal,
        a handler's decision); calling `trainer.terminate()` on one rank would leave the others in a collective.
        `preempt`: checkpoint and exit instead of finishing the run (test evaluation, ONNX export)."""
        self.stop_together.request(reason, preempt)

    def log(self, message: str) -> None:
        """Print without tearing the progress bar; rank 0 speaks for all ranks."""
        if not distributed.is_main():
            return
        if self.progress_bar is not None:
            self.progress_bar.log_message(message)
        else:
            print(message, flush=True)

    def restore(self, checkpoint: resume.ResolvedCheckpoint) -> None:
        """Load the checkpoint into this run (what `state.plan_load` derives from `to_save`); the RNG states last,
        right before training. An epoch of another length (`resume.epoch_realignment`, checked in `build`) restarts
        the epoch the checkpoint was in, renumbered to the new length."""
        content = checkpoint.content
        epoch_length = len(self.loaders.train)
        realigned = resume.epoch_realignment(self.config.to_dict(), checkpoint, epoch_length)
        plan = plan_load(self.to_save, content, self.config.to_dict(), epoch_length_changed=realigned is not None)
        saved = content["trainer"]
        epoch = int(saved["iteration"]) // int(saved["epoch_length"])
        iteration = epoch * epoch_length if realigned else int(saved["iteration"])
        scheduler = self.to_save.get("lr_scheduler")
        scheduled_lrs = None
        if scheduler is not None and "lr_scheduler" in plan.fresh:
            # where these schedule settings put the lr at this iteration (not the checkpoint's schedule)
            for _ in range(iteration):
                scheduler(None)
            scheduled_lrs = [group["lr"] for group in self.optimizer.param_groups]
            plan.fresh["lr_scheduler"] += f"; it continues as these settings have it at iteration {iteration}"
        Checkpoint.load_objects(to_load=plan.to_load, checkpoint=content)
        self._claim_resumed_file(checkpoint)
        if scheduled_lrs is not None:  # the optimizer's saved lr belongs to the old schedule
            for group, lr in zip(self.optimizer.param_groups, scheduled_lrs):
                group["lr"] = lr
        state = self.trainer.state
        if realigned:
            state.epoch_length, state.epoch, state.iteration = epoch_length, epoch, iteration
            self.log(realigned)
        self.loaders.train.batch_sampler.start_batch = state.iteration % state.epoch_length
        if (note := plan.describe()) is not None:
            self.log(f"Resume: {note}.")
        self.to_save[RESTORED_LAST].load_state_dict(content[RESTORED_LAST])
        written_by, now = self.to_save[RESTORED_LAST].saved_world_size, distributed.world_size()
        if written_by != now:
            self.log(f"Warning: the checkpoint was written by {written_by} process(es) and continues in {now}: each "
                     "process's share of the batches and its random numbers differ, so the result is no longer "
                     f"bit-exact with an uninterrupted {written_by}-process run.")
        done, into = divmod(state.iteration, state.epoch_length)
        where = f"{into} iterations into epoch {done + 1}" if into else f"after epoch {done}"
        self.log(f"Resumed from {checkpoint.origin} at iteration {state.iteration} ({where}); W&B run {self.run_id}")

    def _claim_resumed_file(self, checkpoint: resume.ResolvedCheckpoint) -> None:
        """A file holds its checkpointer's state from just before the file was written (Checkpoint saves `to_save`
        first, then adds the new file to its list): put the resumed file back on its writer's list, so that it is
        pruned in turn like the files written after it. The latest checkpointer's list comes from the directory."""
        best = self.checkpointers.get("best_checkpointer")
        if best is None:
            return
        self._reconcile_latest(int(checkpoint.content["trainer"]["iteration"]))
        name = checkpoint.path.name
        if not name.startswith(f"{best.filename_prefix}_"):
            return
        writer, priority = best, checkpoint.content.get("best_metrics", {}).get("best", {}).get("accuracy")
        saved = writer.state_dict()["_saved"]  # [(priority, filename)], lowest priority (pruned first) first
        if priority is None or any(filename == name for _, filename in saved):
            return
        if writer.n_saved is not None and len(saved) >= writer.n_saved:
            # the file the writer pruned for this one (as Checkpoint.__call__ does); a kill may have left it on disk
            writer.save_handler.remove(saved.pop(0)[1])
        writer.load_state_dict({"_saved": sorted([*saved, (priority, name)], key=lambda item: item[0])})

    def _reconcile_latest(self, iteration: int) -> None:
        """The latest checkpointer's list of files, from the directory rather than the resumed file: its saved list
        names files that may be gone, and misses the files written after it (a best file holds the state from before
        that epoch's latest file, which then was never pruned). Its files up to the resumed iteration are the list;
        the newest --n-saved are kept, as the uninterrupted run keeps them."""
        writer = self.checkpointers["checkpointer"]
        directory = Path(writer.save_handler.dirname)
        prefix = f"{writer.filename_prefix}_" if writer.filename_prefix else ""
        on_disk = []
        for path in directory.glob(f"{prefix}checkpoint_*.pt"):
            step = path.stem[len(f"{prefix}checkpoint_"):]
            if step.isdigit() and int(step) <= iteration:
                on_disk.append((int(step), path.name))
        on_disk.sort()
        keep = len(on_disk) if writer.n_saved is None else writer.n_saved
        for _, old in on_disk[:-keep] if keep else on_disk:
            writer.save_handler.remove(old)  # deferred: goes once the next checkpoint is on disk
        writer.load_state_dict({"_saved": on_disk[-keep:] if keep else []})

    def run(self) -> dict[str, float]:
        """Train for config.epochs (continuing a checkpoint if given), then evaluate the test set once."""
        collection.resume()  # paused for the start-up by main.train
        attach_handlers(self)  # no-op when the caller attached them already
        state = self.trainer.state
        if self.checkpoint is not None:
            self.restore(self.checkpoint)
        if state.iteration and state.iteration >= state.epoch_length * self.config.epochs:
            # Ignite would restart a finished run from scratch; a resumed one that is done has nothing to train
            self.log(f"The checkpoint already completed {state.epoch} epoch{'s' if state.epoch != 1 else ''} (--epochs {self.config.epochs}): nothing "
                     "to train; pass a larger --epochs to train longer. Evaluating the test set.")
        else:
            with Preemption(self.request_stop) as preemption:
                self.trainer.run(self.loaders.train, max_epochs=self.config.epochs)
                self.signalled = preemption.signum
                # still inside: a second Ctrl-C while the stop's checkpoint is written exits at once, as announced
                # (outside, Python's own handler raised KeyboardInterrupt in the middle of it)
                if preemption.signum is not None and self.stop_together.reason:
                    self._stop_preempted(preemption.signum)
        if not is_finite(self.trainer.state.output):
            self._stop_diverged()
        if (stopped := self.stops.reason) is not None:
            self.log(f"{stopped.message}." if stopped.summary == EARLY_STOPPING
                     else f"Training stopped at iteration {stopped.iteration}: {stopped.message}.")
            tracking.log_summary(self.wandb_logger, {"stopped": stopped.summary,
                                                     "stopped_at_iteration": stopped.iteration})
        # training is complete: a signal no longer costs the run its results (the test result line, then the ONNX
        # export: the test evaluator's COMPLETED handlers)
        with Preemption(doing=FINISHING, signalled=self.signalled) as finishing:
            self.test_evaluator.run(self.loaders.test)
        self.signalled = finishing.signum
        test = {f"test/{k}": float(v) for k, v in self.test_evaluator.state.metrics.items()}
        val = {f"validation/{k}": float(v) for k, v in self.evaluator.state.metrics.items()}
        return {**val, **test}

    def _stop_diverged(self) -> None:
        """The loss is NaN or infinite at the end: TerminateOnNan stopped training, or (--no-terminate-on-nan) it ran
        on to the end with NaN weights. Either way exit 1 through `TrainingDiverged`, naming the last good checkpoint."""
        what, summary, last = divergence(
            self.stops, self.nan_watch, self.trainer.state.iteration,
            lambda: self.checkpointers["checkpointer"].last_checkpoint if self.checkpointers else None)
        where = (f"the last good checkpoint is {self.output_dir / 'checkpoints' / Path(str(last)).name}" if last
                 else "no checkpoint was written before it")
        tracking.log_summary(self.wandb_logger, summary)
        raise TrainingDiverged(f"{what}; {where}. Resume from it with a lower --lr, or add --clip-grad-norm.")

    def _stop_preempted(self, signum: int) -> None:
        """Checkpoint this instant (every rank calls the checkpointer: it gathers their RNG states), mark the W&B run
        preempting, and exit 128 + signum through `Preempted`."""
        iteration = self.trainer.state.iteration
        latest = self.checkpointers["checkpointer"]
        name = f"{latest.filename_prefix + '_' if latest.filename_prefix else ''}checkpoint_{iteration}.pt"
        if latest.last_checkpoint is None or Path(str(latest.last_checkpoint)).name != name:
            latest(self.trainer)  # not already written by this iteration's (or epoch's) own checkpoint
        path = self.output_dir / "checkpoints" / name
        signame = signal.Signals(signum).name
        run = getattr(self.wandb_logger, "run", None)
        if run is not None and not getattr(run, "disabled", False):
            run.mark_preempting()
        tracking.log_summary(self.wandb_logger, {"stopped": f"preempted ({signame})", "stopped_at_iteration": iteration})
        raise Preempted(f"Stopped by {signame} at iteration {iteration}; the checkpoint {path} holds that instant. "
                        "Rerun the same command with --auto-resume to continue (bit-exact).", signum)

    def close(self) -> None:
        if self.uploader is not None:
            best = self.checkpointers["best_checkpointer"].last_checkpoint if self.checkpointers else None
            self.uploader.close(best_file=Path(best) if best else None)
        tracking.close(self.wandb_logger)
        if self.run_lock is not None:
            self.run_lock.release()


class TrainingDiverged(TrainingStopped):
    """The loss became NaN/inf (exit code 1, no traceback)."""


def new_run_id() -> str:
    """A W&B-style run id (8 lowercase letters/digits) from the OS RNG, so the training seed is not consumed."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda was asked for but PyTorch sees no CUDA device (torch.cuda.is_available() is False). "
            "Run on a machine with a GPU and a CUDA build of torch, or use --device cpu (or auto)."
        )
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def build_optimizer(config: Config, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer]
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def build(config: Config, checkpoint: Optional[resume.ResolvedCheckpoint] = None,
          run_lock: Optional[RunLock] = None) -> App:
    """Build the run: data, model, optimizer, Ignite engines and the W&B run. Nothing is attached yet.

    With a checkpoint the run continues it: same run id, same output directory, same W&B run. Everything that can
    fail on bad input is checked before anything is written. `run_lock`: the lock of the run directory, when the
    caller took it before choosing the checkpoint (main.worker); otherwise it is taken here.
    """
    config = validate(config)  # a Config built in Python gets the same checks as one parsed from flags
    wandb_mode = tracking.resolve_mode(config.wandb_mode)
    tracking.check_run_settings(config)
    check_model_name(config.model)
    user_handlers = plugins.load_handlers(config.handler)
    device = distributed.device(resolve_device(config.device))
    if checkpoint is None:
        check_output_dir(Path(config.output_dir))
    else:
        resume.check_same_data(config.to_dict(), checkpoint)
    rank, world_size = distributed.rank(), distributed.world_size()
    # each rank draws its own dropout/augmentation numbers; DDP starts every rank from rank 0's weights
    manual_seed(config.seed + rank if world_size > 1 else config.seed)
    with idist.one_rank_first(local=True):  # one process per machine fills the data cache, the others then read it
        splits = splits_from_config(config)
    loaders = make_loaders(
        splits, config.batch_size, config.val_batch_size, config.seed, config.num_workers, device.type == "cuda",
        rank=rank, world_size=world_size,
    )
    info = splits.info
    model = build_model(config.model, config.kernels, info.num_classes, info.mean, info.std, in_channels=info.channels,
                        image_size=info.size, pretrained=config.pretrained,
                        channels_last=config.channels_last).to(device)
    check_split_sizes(config, splits)
    optimizer = build_optimizer(config, model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    share_loss = distributed.ShareWeightedLoss(loss_fn, world_size) if world_size > 1 else None
    engines = create_engines(model, optimizer, loss_fn, device, amp=config.amp,
                             accumulation_steps=config.accumulation_steps, clip_grad_norm=config.clip_grad_norm,
                             compile_model=config.compile, wrap=distributed.wrap_model, train_loss_fn=share_loss)
    epoch_length = len(loaders.train)
    if config.warmup_iters >= config.epochs * epoch_length:
        raise UserError(f"--warmup-iters {config.warmup_iters} is not shorter than the whole run "
                        f"({config.epochs} epochs x {epoch_length} iterations); lower it.")
    lr_scheduler = create_lr_scheduler(
        config.lr_schedule, optimizer, config.lr, config.epochs * epoch_length, epoch_length,
        config.warmup_iters, config.lr_step_epochs, config.lr_gamma,
    )
    if checkpoint is not None:
        resume.check_model_fits(model, checkpoint)
        _check_same_classes(info.classes, checkpoint)
        resume.epoch_realignment(config.to_dict(), checkpoint, epoch_length)  # refused here, before anything is written
    # rank 0 chooses the run id and directory for all; it alone writes files and talks to W&B
    run_lock = run_lock if run_lock is not None else RunLock(wait=config.wait_for_lock)

    def choose_location() -> tuple[str, str]:
        run_id, path = run_location(config, checkpoint)
        check_output_dir(path)
        disk.check_room_for_a_checkpoint(path, sum(t.numel() * t.element_size() for t in model.state_dict().values()))
        if path.is_dir():  # an existing run (a resume): one process trains it at a time; a new one has a new id
            run_lock.acquire(path)
        return run_id, str(path)

    run_id, location = distributed.decided_by_rank_zero(choose_location)
    output_dir = Path(location)
    # the last of the checks: from here on, files and the W&B run are written
    if rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        run_lock.acquire(output_dir)  # held until the process ends (or App.close)
        config.save(output_dir / "config.yaml")
    logger = tracking.create_logger(config, run_id, wandb_mode if rank == 0 else "disabled", resume=checkpoint is not None)
    if rank == 0:
        print_start(config, run_id, output_dir, device, splits, logger)
    if getattr(logger, "run", None) is not None and not getattr(logger.run, "disabled", False):
        logger.run.config.update({"data": info.state_dict()}, allow_val_change=True)  # class names, shape, mean/std
    min_log_step = tracking.resumed_step(logger) if checkpoint is not None else 0

    def log_new_steps(values: dict[str, float], step: int) -> None:
        if step >= min_log_step:
            logger.log(values, step=step)

    stops = StopRecorder()
    # the one dict both checkpointers save (_attach_checkpoints adds them to it) and a resume loads from (plan_load)
    to_save = {
        "model": model, "optimizer": optimizer, "trainer": engines.trainer,
        "rng": RNGStates(), "meta": RunMeta(run_id, config.to_dict()), "data": info,
        "best_metrics": BestMetrics(engines.trainer, log_new_steps),  # validation/best_*: what sweeps rank by
        "lr_scheduler": lr_scheduler, "scaler": engines.scaler,
        "gradients": AccumulatedGradients(model) if config.accumulation_steps > 1 else None,
        "early_stopping": RecordingEarlyStopping(
            stops, config.early_stopping, score_function=lambda engine: engine.state.metrics["accuracy"],
            trainer=engines.trainer,
        ) if config.early_stopping else None,
    }
    return App(
        config=config, run_id=run_id, output_dir=output_dir, device=device, splits=splits, loaders=loaders,
        model=model, optimizer=optimizer, loss_fn=loss_fn, trainer=engines.trainer, evaluator=engines.evaluator,
        test_evaluator=engines.test_evaluator, wandb_logger=logger, checkpoint=checkpoint,
        to_save={k: v for k, v in to_save.items() if v is not None},
        grad_clipper=engines.grad_norm, user_handlers=user_handlers, share_loss=share_loss,
        min_log_step=min_log_step, run_lock=run_lock, stops=stops,
        stop_together=distributed.StopTogether(on_stop=lambda reason, engine: stops.record(reason, reason, engine)),
    )


def _check_same_classes(classes: tuple[str, ...], checkpoint: resume.ResolvedCheckpoint) -> None:
    saved = checkpoint.content.get("data", {}).get("classes")
    if saved is not None and list(saved) != list(classes):
        raise UserError(
            f"The checkpoint {checkpoint.origin} was trained on the classes {saved}, but the data now has {list(classes)}. "
            "Resume with the data the run was trained on (--data-dir), or start a new run."
        )


def check_output_dir(path: Path) -> None:
    """--output-dir (or a resumed run's directory) must be a directory this process can create and write to."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                what = "--output-dir" if candidate == path else f"--output-dir {path}: its parent"
                raise UserError(f"{what} {candidate} is a file, not a directory; pass --output-dir a directory "
                                "(it is created if missing), e.g. --output-dir runs.")
            if not os.access(candidate, os.W_OK | os.X_OK):
                raise UserError(f"--output-dir {path}: {candidate} is not writable by this user; pass --output-dir "
                                "a directory you can write to.")
            return


def check_split_sizes(config: Config, splits: Splits) -> None:
    """Enough images in each split for what the run does with it (known only once the dataset is read). ONNX
    verification needs no minimum: it repeats validation and test images up to its batch sizes
    (`data.verification_images`)."""
    total = len(splits.train) + len(splits.val)
    if len(splits.train) < 1:
        raise UserError(f"--val-fraction {config.val_fraction} leaves no training images (all {total} of "
                        f"{config.dataset}'s training set go to validation); lower it, e.g. to 0.1.")
    if len(splits.val) < 1:
        raise UserError(f"--val-fraction {config.val_fraction} leaves no validation images of {total}; raise it.")


def print_start(config: Config, run_id: str, output_dir: Path, device: torch.device, splits: Splits, logger) -> None:
    """The few values that say what this run is; the whole config is in config.yaml."""
    kernels = f" {' '.join(map(str, config.kernels))}" if config.model == "convnet" else ""
    info = splits.info
    lines = [
        f"Run {run_id}: {config.dataset} ({len(splits.train)} train / {len(splits.val)} validation / "
        f"{len(splits.test)} test images of {info.channels} x {info.size[0]} x {info.size[1]}, {info.num_classes} "
        f"classes, from {splits.source})" + "".join(f"; {note}" for note in splits.notes),
        f"  model {config.model}{kernels}, {config.optimizer} lr {config.lr:g}, {config.epochs} epoch"
        f"{'s' if config.epochs != 1 else ''} of batch "
        f"{config.batch_size}, device {device}" + (f", preset {config.preset}" if config.preset else "")
        + (f", {idist.get_world_size()} processes ({idist.backend()})" if idist.get_world_size() > 1 else ""),
        f"  outputs {output_dir}/ (every setting: {output_dir / 'config.yaml'})",
        "  " + tracking.describe_run(logger),
    ]
    print("\n".join(lines), flush=True)


def run_location(config: Config, checkpoint: Optional[resume.ResolvedCheckpoint]) -> tuple[str, Path]:
    """(run id, output dir): a new id under --output-dir, or the checkpoint's run and directory."""
    agent_run_id = tracking.sweep_agent_run_id()
    if agent_run_id:  # under a W&B sweep agent, wandb.init takes the agent's run id whatever id it is given
        return agent_run_id, Path(config.output_dir) / agent_run_id
    if checkpoint is None:
        given = tracking.given_run_id(flag=config.run_id)
        run_id = given or new_run_id()
        path = Path(config.output_dir) / run_id
        if given and path.is_dir() and resume.checkpoints_newest_first(path):
            raise UserError(f"The run {run_id} already has checkpoints under {path}: pass --auto-resume to continue it "
                            f"(or --resume {path}), or give a new run another --run-id.")
        return run_id, path
    run_id = checkpoint.meta["run_id"]
    return run_id, resume.run_dir_of(checkpoint.path) or Path(config.output_dir) / run_id


class AtMostEvery:
    """An event filter that passes at most once per `seconds` (and always on an epoch's last iteration).

    Ignite's ProgressBar redraws twice per iteration, and under W&B's console capture each redraw costs about half
    a millisecond: 10% of an epoch of the default network on 2 cores (bench/results.md). tqdm's own `mininterval`
    does not apply to the forced redraws of set_description/set_postfix, hence this filter."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.last = -math.inf

    def __call__(self, engine: Engine, iteration: int) -> bool:
        now = time.monotonic()
        epoch_end = bool(engine.state.epoch_length) and iteration % engine.state.epoch_length == 0
        if epoch_end or now - self.last >= self.seconds:
            self.last = now
            return True
        return False


def _attach_throughput(app: App) -> None:
    """Samples/second (Ignite's Frequency metric, summed over ranks) and epoch time (Ignite's Timer), each epoch."""
    trainer = app.trainer
    timer = Timer(average=False)
    timer.attach(trainer, start=Events.EPOCH_STARTED, pause=Events.EPOCH_COMPLETED)
    Frequency(output_transform=lambda _: len(trainer.state.batch[1])).attach(
        trainer, "samples_per_second", event_name=Events.EPOCH_COMPLETED)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _log(engine: Engine) -> None:
        app.wandb_logger.log(
            {"training/samples_per_second": engine.state.metrics["samples_per_second"],
             "training/epoch_time": timer.value()},
            step=engine.state.iteration,
        )


def _attach_validation(app: App) -> None:
    @app.trainer.on(Events.EPOCH_COMPLETED)
    def _validate(engine: Engine) -> None:
        app.evaluator.run(app.loaders.val)
        metrics = app.evaluator.state.metrics
        app.log(
            f"Epoch {engine.state.epoch}/{engine.state.max_epochs}  training loss {engine.state.output:.4f}  "
            f"validation accuracy {metrics['accuracy']:.4f}  loss {metrics['loss']:.4f}"
        )


def _attach_wandb(app: App) -> None:
    logger, trainer, cfg = app.wandb_logger, app.trainer, app.config

    def every_interval(_: Engine, iteration: int) -> bool:
        return iteration % cfg.log_interval == 0 and iteration >= app.min_log_step

    def not_logged_yet(_: Engine, __: int) -> bool:
        return trainer.state.iteration >= app.min_log_step

    clipper = app.grad_clipper
    logger.attach_output_handler(
        trainer, event_name=Events.ITERATION_COMPLETED(event_filter=every_interval), tag="training",
        output_transform=lambda loss: {
            "loss": loss, **({"grad_norm": clipper.last_norm} if clipper and math.isfinite(clipper.last_norm) else {})
        },
    )
    logger.attach_opt_params_handler(
        trainer, event_name=Events.ITERATION_STARTED(event_filter=every_interval), optimizer=app.optimizer
    )
    logger.attach_output_handler(
        app.evaluator,
        event_name=Events.COMPLETED(event_filter=not_logged_yet),
        tag="validation",
        metric_names="all",
        global_step_transform=global_step_from_engine(trainer, Events.ITERATION_COMPLETED),
    )
    # the iteration's records go to W&B from a background thread (background_log.BackgroundLogWandBLogger); each epoch
    # ends with all of them sent, so a record logged another way after it is not overtaken
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: tracking.flush(logger))
    if cfg.watch != "off":
        logger.watch(app.model, log=cfg.watch, log_freq=cfg.watch_freq)


def _attach_checkpoints(app: App) -> None:
    """Latest checkpoints every epoch (after validation) and every --checkpoint-every iterations; the best one by
    validation accuracy. Both save to disk and hand their files to one uploader (W&B artifact versions in save order,
    as many as --log-checkpoints says). Both save `app.to_save`, to which both are added (Checkpoint keeps the dict,
    not a copy): every file, latest or best, holds both checkpointers' states, as they were before the file was
    written (`App._claim_resumed_file` adds the file itself on resume)."""
    cfg, trainer = app.config, app.trainer
    directory = app.output_dir / "checkpoints"
    if distributed.is_main():  # build() holds the run's lock: what lies here was left by a killed process
        debris = clean_debris(directory)
        if debris:
            app.log(f"Removed {len(debris)} leftover file(s) of an interrupted process from {directory} (artifact "
                    "staging links, unfinished checkpoint writes).")
    run = getattr(app.wandb_logger, "run", None)
    iteration = global_step_from_engine(trainer, Events.ITERATION_COMPLETED)
    app.uploader = ArtifactUploader(run, app.output_dir, mode=cfg.log_checkpoints, warn=app.log)
    best = Checkpoint(
        app.to_save, WandBCheckpointSaver(directory, trainer, app.uploader, best=True), filename_prefix="best",
        score_function=Checkpoint.get_default_score_fn("accuracy"), score_name="validation_accuracy",
        n_saved=1, global_step_transform=iteration,
    )
    latest = Checkpoint(app.to_save, WandBCheckpointSaver(directory, trainer, app.uploader), n_saved=cfg.n_saved,
                        global_step_transform=iteration)
    app.checkpointers.update(checkpointer=latest, best_checkpointer=best)
    app.to_save.update(app.checkpointers)
    app.evaluator.add_event_handler(Events.COMPLETED, best)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, latest)  # after validation: its state is part of the epoch
    if cfg.checkpoint_every:
        def mid_epoch(engine: Engine, i: int) -> bool:
            return i % cfg.checkpoint_every == 0 and i % engine.state.epoch_length != 0

        trainer.add_event_handler(Events.ITERATION_COMPLETED(event_filter=mid_epoch), latest)


def _attach_test_results(app: App) -> None:
    """The test result line, the W&B summary and history of the test metrics: the first test-evaluator COMPLETED
    handler, so the user reads the result before the test report and the ONNX export run."""

    @app.test_evaluator.on(Events.COMPLETED)
    def _report(engine: Engine) -> None:
        test = {f"test/{k}": float(v) for k, v in engine.state.metrics.items()}
        app.log("Test results: " + "  ".join(f"{k} {v:.4f}" for k, v in test.items()))
        tracking.log_summary(app.wandb_logger, {**test, "trainer/epoch": app.trainer.state.epoch})
        app.wandb_logger.log(test, step=app.trainer.state.iteration)
        tracking.flush(app.wandb_logger)  # the test report that follows logs its tables with run.log


def _attach_onnx(app: App) -> None:
    cfg = app.config
    if not cfg.onnx or not distributed.is_main():  # rank 0 exports the unwrapped model; the others train on
        return
    from ignite_app.onnx_tools import model_metadata

    info = app.splits.info
    app.onnx_exporter = OnnxExportHandler(
        app.model, verification_images(app.splits), app.output_dir, getattr(app.wandb_logger, "run", None),
        opset=cfg.onnx_opset, exporter=cfg.onnx_exporter, strict=cfg.onnx_strict, log=app.log,
        metadata=model_metadata(cfg.dataset, info.classes, app.run_id, info.channels, info.size, cfg.val_fraction,
                                cfg.seed),
    )
    # after the test evaluation and its result line, not on the trainer's COMPLETED: the export and its verification
    # (0.5-3 s) are off the path to the result, and a preempted or diverged run, which skips the test set, skips them
    app.onnx_exporter.attach(app.test_evaluator, app.evaluator, on_best=cfg.onnx_on_best)


def _attach_test_report(app: App) -> None:
    """Every rank collects its shard's predictions (the report gathers them); rank 0 prints, writes and logs."""
    if not app.config.test_report:
        return
    TestReport(app.splits.info.classes, app.output_dir, getattr(app.wandb_logger, "run", None), images=app.splits.test,
               log=app.log, step=lambda: app.trainer.state.iteration).attach(app.test_evaluator)


def attach_handlers(app: App) -> App:
    """The one place where handlers are attached to the engines (once: `App.run` calls it if you did not)."""
    if app.attached:
        return app
    app.attached = True
    trainer = app.trainer
    quiet_engine_logs(trainer, app.evaluator, app.test_evaluator)  # our errors print once, as one paragraph
    sampler = app.loaders.train.batch_sampler
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: sampler.set_epoch(engine.state.epoch))
    if app.config.augment:  # a pure function of (seed, iteration): resumes stay bit-exact
        BatchAugment(app.config.seed, app.splits.info.size).attach(trainer)
    if app.share_loss is not None:
        trainer.add_event_handler(Events.ITERATION_STARTED, app.share_loss.weigh, sampler)
    # first of all ITERATION_COMPLETED handlers: the loss they see is the mean over ranks, stops are made together
    trainer.add_event_handler(Events.ITERATION_COMPLETED, app.stop_together)
    app.stops.attach(trainer)
    if app.config.terminate_on_nan:
        trainer.add_event_handler(Events.ITERATION_COMPLETED, RecordingTerminateOnNan(app.stops))
    else:
        app.nan_watch = NanWatch(lambda: app.checkpointers["checkpointer"].last_checkpoint)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, app.nan_watch)
    if "lr_scheduler" in app.to_save:
        trainer.add_event_handler(Events.ITERATION_STARTED, app.to_save["lr_scheduler"])
    _attach_throughput(app)
    # piped into a file or a CI log (stdout or stderr, where tqdm writes, not a terminal) its redraws are fragments:
    # there the per-epoch line says it
    if app.config.progress_bar and sys.stdout.isatty() and sys.stderr.isatty() and distributed.is_main():
        app.progress_bar = ProgressBar(persist=False)
        app.progress_bar.attach(trainer, output_transform=lambda loss: {"loss": loss},
                                event_name=Events.ITERATION_COMPLETED(event_filter=AtMostEvery(0.2)))
    _attach_validation(app)
    app.evaluator.add_event_handler(Events.COMPLETED, app.to_save["best_metrics"])
    if "early_stopping" in app.to_save:  # after validation's metrics exist, before the epoch's checkpoint
        app.evaluator.add_event_handler(Events.COMPLETED, app.to_save["early_stopping"])
    _attach_checkpoints(app)
    _attach_test_results(app)
    _attach_test_report(app)
    _attach_onnx(app)
    _attach_wandb(app)
    for attach_user_handler in app.user_handlers:
        attach_user_handler(app)
    # last of all EPOCH_COMPLETED handlers: a stop asked on an epoch's last iteration waits for its validation and checkpoint
    trainer.add_event_handler(Events.EPOCH_COMPLETED, app.stop_together.at_epoch_end)
    return app


def training(local_rank: int, config: Config, checkpoint: Optional[resume.ResolvedCheckpoint] = None,
             run_lock: Optional[RunLock] = None) -> dict[str, float]:
    """Shaped for `ignite.distributed.Parallel(...).run(training, config)`."""
    with Preemption(doing=STARTING):  # a signal while the data loads or W&B starts: one line, exit 128 + signal
        app = attach_handlers(build(config, checkpoint, run_lock))
    try:
        return app.run()
    finally:
        # W&B's records of the run are complete only once it is closed; after a signal, a Ctrl-C here is the second
        with Preemption(doing=CLOSING, signalled=app.signalled):
            app.close()

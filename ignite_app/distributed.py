"""Past one process: the same `scripts/train.py` under a launcher, through ignite.distributed.

    torchrun --standalone --nproc_per_node 2 scripts/train.py --dataset digits       # one machine
    torchrun --nnodes 2 --nproc_per_node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400 scripts/train.py ...
    srun --ntasks 8 --gpus-per-task 1 python scripts/train.py ...                     # Ignite reads SLURM_* variables
    python scripts/train.py --nproc-per-node 2 ...                                    # spawns through idist.Parallel

What the ranks must agree on lives here: the launch itself, what rank 0 decides for everyone (run id, output dir,
checkpoint), the per-iteration consensus (mean loss, stop requests), and turning a lost peer into a clear message.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
from typing import Any, Callable, Optional, TypeVar

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from torch import nn

from ignite_app.config import Config
from ignite_app.errors import EXIT_USER_ERROR, AppError, TrainingStopped, UserError

T = TypeVar("T")


class WorkerFailed(AppError):
    """A process spawned by --nproc-per-node failed; its own message is printed above. `reported`: that message
    says it all (a user error, exit 2, which every rank raises alike), so the parent adds nothing."""

    def __init__(self, message: str, exit_code: int, reported: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.reported = reported


def _quiet_launcher_logs() -> None:
    """Ignite's Parallel logs its set-up and teardown at INFO on every run, and torch's spawn warns about each process
    it stops after another failed: lines around the one paragraph a run or a user error prints (the start-up lines
    already name the process count and the backend). Called after Parallel(...) is built, which sets its level."""
    logging.getLogger("ignite.distributed.launcher.Parallel").setLevel(logging.WARNING)
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)


class PeerLost(TrainingStopped):
    """A collective failed because another process of the job died or was killed."""


# ---------------------------------------------------------------- launching


def launched_world_size(environ: Optional[dict] = None) -> int:
    """How many processes a launcher started (torchrun/Kubeflow: WORLD_SIZE; a task of `srun`: SLURM_NTASKS)."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" in environ:
        return int(environ["WORLD_SIZE"])
    if "SLURM_JOB_ID" in environ and "SLURM_STEP_ID" in environ:  # set in srun's tasks, not in the batch script
        return int(environ.get("SLURM_NTASKS", "1"))
    return 1


def process_rank(environ: Optional[dict] = None) -> int:
    """This process's global rank as its launcher set it (0 without one); valid before and after idist's setup."""
    environ = os.environ if environ is None else environ
    return int(environ.get("RANK", environ.get("SLURM_PROCID", "0") if "SLURM_STEP_ID" in environ else "0"))


def complete_env(environ: Optional[dict] = None) -> Optional[str]:
    """Kubeflow's PyTorchJob without torchrun sets RANK and WORLD_SIZE but no LOCAL_RANK, which idist requires; it runs
    one process per pod, so the local rank is 0. Returns a note when it filled the gap."""
    environ = os.environ if environ is None else environ
    if "RANK" in environ and "WORLD_SIZE" in environ and "LOCAL_RANK" not in environ and "SLURM_JOB_ID" not in environ:
        environ["LOCAL_RANK"] = "0"
        environ.setdefault("LOCAL_WORLD_SIZE", "1")
        return ("RANK and WORLD_SIZE are set but LOCAL_RANK is not (a Kubeflow PyTorchJob without torchrun?): "
                "assuming one process per machine, LOCAL_RANK=0. Run torchrun in the container to start several.")
    return None


def resolve_backend(requested: str, device: str) -> str:
    """auto: nccl when the run uses CUDA GPUs, gloo on the CPU."""
    if requested != "auto":
        return requested
    return "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_backend(backend: str, processes: int) -> None:
    if backend not in idist.available_backends():
        raise UserError(f"--backend {backend} is not available in this torch build (available: "
                        f"{', '.join(idist.available_backends()) or 'none'}).")
    if backend == "nccl":
        gpus = torch.cuda.device_count()
        if gpus == 0:
            raise UserError("--backend nccl needs CUDA GPUs and this machine has none; use --backend gloo (or auto).")
        if processes > gpus:
            raise UserError(f"--nproc-per-node {processes} with nccl needs one GPU per process; this machine has "
                            f"{gpus}. Start at most {gpus} processes.")


def launch(config: Config, worker: Callable[..., Any], *args: Any) -> None:
    """Run `worker(local_rank, *args)` in this process, in each process a launcher started, or in --nproc-per-node
    spawned processes: `idist.Parallel(backend, ...).run(worker, *args)`. One process sets up nothing distributed, so
    its results stay exactly those of a plain run."""
    world = launched_world_size()
    if world > 1 and config.nproc_per_node > 1:
        raise UserError(
            f"--nproc-per-node {config.nproc_per_node}: this process was started by a launcher (torchrun or srun) as "
            f"one of {world}. The launcher decides the process count; drop --nproc-per-node."
        )
    if world == 1 and config.nproc_per_node == 1:
        worker(0, *args)
        return
    backend = resolve_backend(config.backend, config.device)
    if world > 1:
        _check_backend(backend, 1)
        _die_with_parent(os.getppid())  # torchrun's agent or srun's step daemon: orphans would train on as well
        note = complete_env()
        if note and process_rank() == 0:
            print(note, flush=True)
        parallel = idist.Parallel(backend=backend)
        _quiet_launcher_logs()
        with parallel:
            parallel.run(run_worker, worker, *args)
        return
    _check_backend(backend, config.nproc_per_node)
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

    try:
        parallel = idist.Parallel(backend=backend, nproc_per_node=config.nproc_per_node, master_port=_free_port())
        _quiet_launcher_logs()
        with parallel:
            parallel.run(_spawned, os.getpid(), worker, *args)
    except ProcessExitedException as exc:
        how = (f"was killed by {exc.signal_name}" if exc.signal_name
               else f"exited with code {exc.exit_code} (its message is above)")
        raise WorkerFailed(f"process {exc.error_index} of {config.nproc_per_node} {how}; the others were stopped."
                           + (" Resume with --auto-resume." if exc.signal_name else ""),
                           exc.exit_code if exc.exit_code and exc.exit_code > 0 else 1,
                           reported=exc.exit_code == EXIT_USER_ERROR) from None
    except ProcessRaisedException as exc:  # an exception that escaped _spawned's guard: show the child's traceback
        raise WorkerFailed(f"process {exc.error_index} of {config.nproc_per_node} failed:\n{exc}", 1) from None


def _die_with_parent(parent_pid: int) -> None:
    """A --nproc-per-node child (or a process torchrun or srun started) ends when the process that started it dies,
    however it died: SIGKILLed (the OOM killer, `kill -9`, a scheduler that signals one pid), its workers would
    otherwise train on as orphans and keep writing the run's checkpoints and W&B files while `--auto-resume` starts
    a second job on them. Linux's PR_SET_PDEATHSIG does this; neither torch nor the standard library exposes it,
    hence ctypes."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # it died before the line above
        os._exit(1)


def _spawned(local_rank: int, parent_pid: int, worker: Callable[..., Any], *args: Any) -> None:
    """A --nproc-per-node child: the project's exit codes and messages, as the launched processes have them."""
    from ignite_app.main import guarded

    _die_with_parent(parent_pid)

    code = guarded("train.py", lambda: run_worker(local_rank, worker, *args))
    if code:
        sys.exit(code)


PEER_LOSS_SIGNS = ("connection closed by peer", "connection reset by peer", "broken pipe", "socket closed",
                   "nccl communicator was aborted", "timed out", "connection refused")


def run_worker(local_rank: int, worker: Callable[..., Any], *args: Any) -> None:
    """One rank's work; a collective that fails because a peer died becomes one clear message instead of a traceback
    (the launcher, torchrun or spawn, then stops the remaining processes and names the one that died)."""
    try:
        worker(local_rank, *args)
        # leave together: a rank that tears its process group down while rank 0 still writes the run's last files
        # (after the test report's gather) was seen to abort at exit ("terminate called without an active exception")
        idist.barrier()
    except RuntimeError as exc:  # gloo/nccl report a lost peer as a RuntimeError (DistBackendError)
        text = str(exc).strip()
        if not any(sign in text.lower() for sign in PEER_LOSS_SIGNS):
            raise
        raise PeerLost(
            f"rank {idist.get_rank()} of {idist.get_world_size()} lost contact with the other processes "
            f"({text.splitlines()[0][:200]}): one of them died or was killed, so this one stops too. The launcher's "
            "report names the process that failed; resume the run with --auto-resume."
        ) from None


# ---------------------------------------------------------------- ranks deciding together


def rank() -> int:
    return idist.get_rank()


def world_size() -> int:
    return idist.get_world_size()


def is_main() -> bool:
    return idist.get_rank() == 0


def decided_by_rank_zero(decide: Callable[[], T]) -> T:
    """Rank 0 calls `decide()` (a JSON-able value: run id, directory, checkpoint path) and every rank gets its result;
    an error there is raised on every rank, so none waits for an answer that never comes. A long decision (waiting
    for a run's lock, --wait-for-lock) calls `keepalive` now and then: the other ranks' wait is a collective, which
    the process group's timeout (30 minutes) would otherwise end with an error while the holder trains on."""
    if idist.get_world_size() == 1:
        return decide()
    payload = ""
    if idist.get_rank() == 0:
        try:
            payload = json.dumps({"value": decide()})
        except BaseException as error:
            code = error.exit_code if isinstance(error, AppError) else 1
            try:
                idist.broadcast(json.dumps({"error": str(error), "exit_code": code}), src=0, safe_mode=True)  # as below
            except Exception:  # noqa: BLE001 - the others are gone already (a Ctrl-C reached them too): report this
                pass
            raise
    while True:
        message = json.loads(idist.broadcast(payload, src=0, safe_mode=True))
        if "waiting" not in message:
            break
    if "error" in message:
        raise (UserError if message["exit_code"] == EXIT_USER_ERROR else TrainingStopped)(message["error"])
    return message["value"]


def keepalive() -> None:
    """Rank 0, during `decided_by_rank_zero`'s decide(): tell the other ranks that the decision is still coming (each
    message restarts their collective's timeout). Nothing with one process."""
    if idist.get_world_size() > 1 and idist.get_rank() == 0:
        idist.broadcast(json.dumps({"waiting": True}), src=0, safe_mode=True)


def wrap_model(model: nn.Module) -> nn.Module:
    """DistributedDataParallel (Ignite's auto_model: the right device ids for nccl) with several processes; the model
    itself with one (auto_model would wrap a lone process in DataParallel on a multi-GPU machine)."""
    if idist.get_world_size() == 1:
        return model
    logging.disable(logging.INFO)  # its "Apply torch DistributedDataParallel on model" on every run: see _quiet_launcher_logs
    try:
        return idist.auto_model(model)
    finally:
        logging.disable(logging.NOTSET)


def device(single: torch.device) -> torch.device:
    """This rank's device: its own GPU (LOCAL_RANK) under a launcher, else the one resolved for a single process."""
    return idist.device() if idist.get_world_size() > 1 and single.type == "cuda" else single


class StopTogether:
    """Attached first to the trainer's ITERATION_COMPLETED: one all-reduce of two numbers per iteration makes every
    rank's `engine.state.output` the mean loss over ranks (what is logged, shown and checked for NaN, so a NaN on one
    rank stops all of them at the same iteration), and turns a stop that any rank asked for (`request`: a preemption
    signal, a handler) into a stop of every rank at the same iteration, so no rank waits alone in a collective.
    With one process it only honours `request` (no collective, results unchanged). `on_stop(reason, engine)` is
    told when it stops the trainer (the App records why training stopped)."""

    def __init__(self, on_stop: Optional[Callable[[str, Engine], None]] = None) -> None:
        self.on_stop = on_stop
        self.requested: Optional[str] = None
        self.preempt = False  # a signal asked: no end-of-training work (the resumed run does it)
        self.reason: Optional[str] = None  # why the trainer was stopped, once it was
        self.deferred: Optional[str] = None  # a stop asked on an epoch's last iteration, made after the epoch's handlers

    def request(self, reason: str, preempt: bool = False) -> None:
        self.requested, self.preempt = reason, self.preempt or preempt

    def __call__(self, engine: Engine) -> None:
        size = idist.get_world_size()
        stop = self.requested
        if size > 1:
            local = torch.tensor([float(engine.state.output), 1.0 if stop else 0.0, 1.0 if self.preempt else 0.0],
                                 dtype=torch.float64, device=idist.device())
            total = idist.all_reduce(local).cpu()
            engine.state.output = float(total[0]) / size
            stop = stop or ("another process asked to stop" if total[1] > 0 else None)
            self.preempt = bool(total[2] > 0)
        if stop and self.reason is None:
            state = engine.state
            if state.epoch_length and state.iteration % state.epoch_length == 0:
                self.deferred = stop  # let this epoch validate and checkpoint first (`at_epoch_end`)
            else:
                self._stop(engine, stop)

    def at_epoch_end(self, engine: Engine) -> None:
        """Attached last to EPOCH_COMPLETED: a stop decided on the epoch's last iteration (the same on every rank)."""
        if self.deferred and self.reason is None:
            self._stop(engine, self.deferred)

    def _stop(self, engine: Engine, reason: str) -> None:
        self.reason = reason
        if self.on_stop is not None:
            self.on_stop(reason, engine)
        engine.terminate(skip_completed=self.preempt)


class ShareWeightedLoss(nn.Module):
    """The training loss of one rank's share of a global batch, weighted so that DDP's gradient (the mean over ranks)
    is the one-process gradient of the whole batch: a rank holding n of the batch's g samples scales its mean loss by
    n * world_size / g. Shares differ in size when the global batch (or an epoch's last, partial one) does not divide
    by the number of processes (129 over 2: 65 and 64); unweighted, the smaller share's samples would count more.
    The mean over ranks of these losses (what StopTogether logs) is then the batch's mean loss too.
    `weigh`, on the trainer's ITERATION_STARTED, tells it the size of the global batch being trained on."""

    def __init__(self, loss_fn: nn.Module, world_size: int) -> None:
        super().__init__()
        self.loss_fn, self.world_size = loss_fn, world_size
        self.global_len = 0

    def weigh(self, engine: Engine, sampler: Any) -> None:
        self.global_len = sampler.global_batch_len((engine.state.iteration - 1) % len(sampler))

    def forward(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(y_pred, y)
        return loss * (len(y) * self.world_size / self.global_len) if self.global_len else loss


# ---------------------------------------------------------------- per-rank RNG states in checkpoints


def gather_states(local: dict[str, Any]) -> dict[str, Any]:
    """One process: its state as is. Several: every rank's state, in rank order (kept as tensors and plain values, so
    `torch.load(weights_only=True)` still reads the checkpoint)."""
    size = idist.get_world_size()
    if size == 1:
        return local
    return {"world_size": size, "ranks": list(idist.all_gather(local))}


def own_state(saved: dict[str, Any]) -> tuple[Optional[dict[str, Any]], int]:
    """(this rank's state from a checkpoint, the number of processes that wrote it); None when that run had fewer
    ranks than this one (the rank keeps its fresh `seed + rank` state)."""
    ranks = saved["ranks"] if "ranks" in saved else [saved]
    r = idist.get_rank()
    return (ranks[r] if r < len(ranks) else None), len(ranks)

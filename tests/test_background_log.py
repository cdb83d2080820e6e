"""BackgroundLogWandBLogger: W&B history records sent from a worker thread, in order, all of them by `close`."""
import threading

import pytest

from helpers import history
from ignite_app.background_log import BackgroundLogWandBLogger
from ignite_app.wandb_disk import GuardedWandBLogger


@pytest.fixture
def offline_logger(tmp_path, monkeypatch):
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_RUN_ID", "WANDB_SWEEP_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = BackgroundLogWandBLogger(project="test", mode="offline")
    yield logger
    logger.close()


def test_records_arrive_in_order_from_the_worker_thread(offline_logger, tmp_path, monkeypatch):
    threads = set()
    send = GuardedWandBLogger.log

    def recording(self, *args, **kwargs):
        threads.add(threading.current_thread().name)
        send(self, *args, **kwargs)

    monkeypatch.setattr(GuardedWandBLogger, "log", recording)
    for step in range(0, 300, 3):
        offline_logger.log({"training/loss": step / 10}, step=step)
    offline_logger.flush()
    assert threads and all(name.startswith("wandb-log") for name in threads)  # not the caller's thread
    offline_logger.log({"validation/accuracy": 0.5}, step=300)
    offline_logger.close()  # sends what is queued, then finishes the run
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    rows = history(run_dir)
    assert [r["_step"] for r in rows] == [*range(0, 300, 3), 300]  # none dropped or reordered
    assert [r["training/loss"] for r in rows[:-1]] == [step / 10 for step in range(0, 300, 3)]
    assert rows[-1]["validation/accuracy"] == 0.5


def test_an_error_of_a_queued_call_reaches_the_caller(offline_logger, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise ValueError("refused by W&B")

    monkeypatch.setattr(GuardedWandBLogger, "log", refuse)
    offline_logger.log({"x": 1}, step=0)  # queued: the caller goes on
    with pytest.raises(ValueError, match="refused by W&B"):
        offline_logger.flush()
    offline_logger.flush()  # raised once


def test_a_disabled_run_logs_on_the_callers_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = BackgroundLogWandBLogger(mode="disabled")
    logger.log({"x": 1}, step=0)
    logger.flush()
    logger.close()
    assert not any(t.name.startswith("wandb-log") for t in threading.enumerate())

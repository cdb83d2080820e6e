"""The signal handlers of `ignite_app.preemption`, in-process: what each phase of a run does with SIGTERM/SIGINT/SIGUSR1
(the e2e tests in test_checkpoints_e2e.py send them to a real training process)."""
from __future__ import annotations

import os
import signal

import pytest

from ignite_app.preemption import CLOSING, FINISHING, STARTING, SIGNALS, Preempted, Preemption


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_during_start_up_stops_at_once_with_exit_128_plus_signal(signum: int) -> None:
    before = {s: signal.getsignal(s) for s in SIGNALS}
    with pytest.raises(Preempted) as raised:
        with Preemption(doing=STARTING):
            os.kill(os.getpid(), signum)
            for _ in range(1000):  # the handler runs between bytecodes, at the latest here
                pass
            pytest.fail("the signal did not stop the start-up")
    assert raised.value.exit_code == 128 + signum
    assert "during start-up" in str(raised.value) and "Rerun" in str(raised.value)
    assert {s: signal.getsignal(s) for s in SIGNALS} == before  # the previous handlers are back


def test_a_signal_while_training_asks_for_a_stop_and_a_finishing_run_goes_on(capfd) -> None:
    asked: list[tuple[str, bool]] = []
    with Preemption(lambda reason, preempt=False: asked.append((reason, preempt))) as preemption:
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(1000):
            pass
    assert preemption.signum == signal.SIGUSR1 and asked == [("SIGUSR1 received", True)]
    with Preemption(doing=FINISHING) as finishing:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    assert finishing.signum == signal.SIGTERM  # announced, nothing raised: the finished run ends with its results
    assert "training is complete" in capfd.readouterr().err


def test_a_ctrl_c_after_an_earlier_phase_was_signalled_is_the_second_and_exits_at_once() -> None:
    """The stop's checkpoint and W&B's close run in later phases (each its own Preemption): a Ctrl-C there must count
    as the second one (exit at once), not start a new round of 'finishing ...' or raise KeyboardInterrupt midway. The
    exit is os._exit, so it is checked in a child process."""
    pid = os.fork()
    if pid == 0:
        try:
            with Preemption(doing=CLOSING, signalled=signal.SIGINT):
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):
                    pass
        finally:
            os._exit(3)  # reached only if the Ctrl-C did not exit at once
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGINT

"""The rank's signal handling: a signal while loading ends the rank; in training the first one asks for a
checkpoint at the next step boundary, duplicates within 2 s count once, a later second one stops at once."""
from __future__ import annotations

import signal
from types import SimpleNamespace

from launcher.worker.preempt import PreemptionCallback
from launcher.worker.signals import StopSignals


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def handler():
    clock, exits = Clock(), []
    return StopSignals(clock=clock, exit_now=exits.append), clock, exits


def test_a_signal_while_loading_ends_the_rank_at_once():
    s, _, exits = handler()
    s.handle(signal.SIGTERM)
    assert exits == [signal.SIGTERM] and s.signum is None


def test_in_training_the_first_signal_asks_and_a_duplicate_counts_once():
    s, clock, exits = handler()
    s.arm()
    s.handle(signal.SIGTERM)
    clock.now += 1.9  # torchrun forwarding the same SIGTERM the process group got
    s.handle(signal.SIGTERM)
    assert s.signum == signal.SIGTERM and exits == []
    clock.now += 0.2  # 2.1 s after the first: the user means it
    s.handle(signal.SIGINT)
    assert exits == [signal.SIGINT]


def step_end(callback, step, max_steps=10):
    state = SimpleNamespace(global_step=step, max_steps=max_steps)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    callback.on_step_end(SimpleNamespace(device="cpu"), state, control)
    return control


def test_a_signal_or_the_request_file_saves_and_stops_at_the_step_boundary(tmp_path):
    s, _, _ = handler()
    callback = PreemptionCallback(s, str(tmp_path / "preempt.request"))
    callback.on_train_begin(None, None, None)  # arms the handler
    assert not step_end(callback, 3).should_save
    s.handle(signal.SIGTERM)
    control = step_end(callback, 4)
    assert control.should_save and control.should_training_stop
    assert (callback.stopped_at, callback.by_signal, callback.describe()) == (4, True, "SIGTERM")

    by_file = PreemptionCallback(handler()[0], str(tmp_path / "preempt.request"))
    (tmp_path / "preempt.request").touch()  # Slurm's USR2, through the batch script
    assert step_end(by_file, 5).should_training_stop and not by_file.by_signal


def test_a_signal_at_the_last_step_lets_training_finish():
    s, _, _ = handler()
    callback = PreemptionCallback(s)
    s.arm()
    s.handle(signal.SIGTERM)
    assert not step_end(callback, 10, max_steps=10).should_training_stop and callback.stopped_at is None

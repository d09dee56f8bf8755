"""The rank's signal handling: a signal while loading ends the rank; in training the first one asks for a
checkpoint, duplicates within 2 s count once, a later second one stops at once."""
from __future__ import annotations

import signal

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

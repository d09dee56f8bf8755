"""launcher.worker.stuck: which errors are collective timeouts (the stuck rank itself: test_failures.py)."""
from __future__ import annotations

from launcher.worker.stuck import is_collective_timeout


def test_timeouts_are_recognised_and_other_errors_are_not():
    assert is_collective_timeout(RuntimeError("[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] "
                                              "Timed out waiting 15000ms for recv operation to complete"))
    assert is_collective_timeout(RuntimeError("Watchdog caught collective operation timeout: WorkNCCL(...)"))
    assert not is_collective_timeout(RuntimeError("CUDA out of memory"))
    assert not is_collective_timeout(ValueError("timed out"))  # not torch.distributed's kind of error


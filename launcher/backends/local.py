"""Run a plan on this machine: `bash launch.sh NODE_RANK` (one process, torchrun or the deepspeed launcher).

Running the written launch.sh, not a rebuilt command, keeps "what ran" and "what is recorded" the same.
SIGINT/SIGTERM/SIGHUP are forwarded to the launch's process group (launcher and ranks), and the exit code
is the launcher's (non-zero when any rank fails).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: after a forwarded signal, how long the ranks get to stop before they are killed
GRACE_S = 60.0


def execute(launch_sh: Path, *args: str) -> int:
    # A new session: a terminal's Ctrl-C reaches launch only, and launch decides how the ranks stop.
    child = subprocess.Popen(["bash", str(launch_sh), *args], start_new_session=True)
    stopping: list[int] = []

    def forward(signum, _frame):
        if not stopping and child.poll() is None:
            # The whole process group: the deepspeed runner does not forward signals to its launcher and
            # ranks (torchrun does; its ranks then get the signal twice, which stops them the same way).
            os.killpg(child.pid, signal.SIGTERM if signum == signal.SIGHUP else signum)
        stopping.append(signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    deadline = None
    try:
        while (rc := child.poll()) is None:
            if stopping and deadline is None:
                deadline = time.monotonic() + GRACE_S
            if deadline is not None and time.monotonic() > deadline:
                os.killpg(child.pid, signal.SIGKILL)
            time.sleep(0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 + stopping[0] if stopping else rc

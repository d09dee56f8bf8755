"""Run a plan on this machine: `bash launch.sh NODE_RANK` (one process, torchrun or the deepspeed launcher).

Running the written launch.sh, not a rebuilt command, keeps "what ran" and "what is recorded" the same.
SIGINT/SIGTERM/SIGHUP go to launch.sh's shell only: its trap stops the restart loop and passes the signal
on so that every rank gets it once (torchrun forwards it; a second copy from the process group would
read as "stop at once"). One that launch started with ignored stays ignored, as for any command: `nohup
launch ...` survives the terminal's hangup, and a script's background job ignores SIGINT (bash could not
trap it in launch.sh either, so forwarding it would only lead to the kill after GRACE_S). The exit status
is launch.sh's: 0, 75 when the ranks saved a checkpoint after a signal, 128+signal otherwise, or the failed
attempt's. A `kill -9` of launch still stops everything:
launch.sh gets SIGTERM when launch dies (PR_SET_PDEATHSIG), and so on down to the ranks.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from launcher.pdeathsig import die_with_parent
from launcher.plan import SHUTDOWN_TIMEOUT_S

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: after a forwarded signal, how long the ranks get to checkpoint and stop before everything is killed
GRACE_S = SHUTDOWN_TIMEOUT_S + 30.0


def execute(launch_sh: Path, *args: str) -> int:
    # A new session: a terminal's Ctrl-C reaches launch only, and launch decides how the ranks stop.
    child = subprocess.Popen(["bash", str(launch_sh), *args], start_new_session=True, preexec_fn=die_with_parent)
    stopping: list[int] = []

    def forward(signum, _frame):
        if child.poll() is None:
            os.kill(child.pid, signum)  # every signal: a second one, >= 2 s later, stops the ranks at once
        stopping.append(signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED if signal.getsignal(s) != signal.SIG_IGN}
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
    if rc < 0:  # launch.sh itself was killed (the grace ran out)
        return 128 + (stopping[0] if stopping else -rc)
    return rc

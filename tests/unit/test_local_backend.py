"""launch's local backend (launcher/backends/local.py): the stop signals it passes to launch.sh, and those it
leaves ignored, as `nohup` asks. launch.sh is a stand-in here that reports the signals its trap gets."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support import signal_set, signals_as_in_a_terminal

STAND_IN = """
trap 'echo HUP >> "$DIR/got"; exit 0' HUP
trap 'echo TERM >> "$DIR/got"; exit 75' TERM
touch "$DIR/ready"
while true; do sleep 0.05; done
"""
LAUNCH = "import sys; from pathlib import Path; from launcher.backends.local import execute; " \
         "sys.exit(execute(Path(sys.argv[1])))"


def start(tmp_path: Path, ignored: tuple[int, ...]) -> subprocess.Popen:
    """execute() of the stand-in in a process of its own, returned once it passes signals on."""
    (tmp_path / "launch.sh").write_text(STAND_IN)
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(tmp_path / "launch.sh")],
                            env={**os.environ, "DIR": str(tmp_path)},
                            preexec_fn=lambda: signals_as_in_a_terminal(ignored))
    deadline = time.monotonic() + 30
    while not ((tmp_path / "ready").exists() and signal.SIGTERM in signal_set(proc.pid, "SigCgt")):
        assert time.monotonic() < deadline and proc.poll() is None, "the stand-in did not start"
        time.sleep(0.05)
    return proc


def got(tmp_path: Path) -> list[str]:
    return (tmp_path / "got").read_text().split() if (tmp_path / "got").exists() else []


def test_a_hangup_reaches_launch_sh(tmp_path):
    proc = start(tmp_path, ignored=())
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=30) == 0 and got(tmp_path) == ["HUP"]


def test_under_nohup_a_hangup_stays_ignored_and_the_run_goes_on(tmp_path):
    # Before, launch caught SIGHUP all the same and passed it to launch.sh, whose shell (started with it
    # ignored) could not trap it: nothing stopped, and GRACE_S later launch killed every rank.
    proc = start(tmp_path, ignored=(signal.SIGHUP,))
    assert signal.SIGHUP in signal_set(proc.pid, "SigIgn")
    proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert proc.poll() is None and got(tmp_path) == []
    proc.send_signal(signal.SIGTERM)  # the other stop signals still stop it
    assert proc.wait(timeout=30) == 75 and got(tmp_path) == ["TERM"]

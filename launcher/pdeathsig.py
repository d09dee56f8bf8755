"""`python -m launcher.pdeathsig CMD ARGS...`: exec CMD so that Linux sends it SIGTERM when its parent dies.

launch.sh starts torchrun and the deepspeed runner through it: a `kill -9` of launch (or of launch.sh) then
still stops them, and they stop their ranks (which set the same for themselves). util-linux's
`setpriv --pdeathsig` does the same but is missing from older distributions (RHEL 8) on cluster nodes.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send sig to this process when its parent exits (kept across exec)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m launcher.pdeathsig CMD [ARGS...]", file=sys.stderr)
        return 2
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the request took effect
        return 128 + signal.SIGTERM
    os.execvp(argv[0], argv)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""After each attempt of launch.sh's restart loop: why it ended, an "exit" event in attempts.jsonl, and
whether the loop restarts the rank group.

launch.sh calls `python -m launcher.restarts RUN_DIR ...` once per attempt and node; it prints `restart` or
the exit status launch.sh ends with. No torch here: it runs between attempts, on every node, in a second.

No restart after: success (also when a rank fails at its exit after rank 0's "done" event); a signal to
launch.sh (the user's or the scheduler's); ranks that stopped on a signal after saving (interrupted.json of
this attempt: exit 75); a rank's "fatal" event of this attempt (bad data, a failed preflight check: a restart
cannot fix it, exit with its code); or when restarts are used up.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from launcher import shm_buffers
from launcher.checkpoints import checkpoint_step, last_complete_checkpoint
from launcher.exitcodes import EXIT_INTERRUPTED
from launcher.rundir import RunDir, append_event, read_events

RESTART = "restart"
#: torchrun's report of a failed rank group on stderr (torch.distributed.elastic ChildFailedError)
_ROOT_CAUSE = re.compile(r"Root Cause \(first observed failure\):\s*\n\[\d+\]:\s*\n(?P<block>(?:  .*\n?)+)")
_FIELD = re.compile(r"^\s+(\w+)\s*: (.*)$", re.M)


@dataclass(frozen=True)
class Failure:
    rank: Optional[int]
    host: Optional[str]
    exitcode: Optional[int]


def root_cause(log_text: str) -> Optional[Failure]:
    """The failed rank, host and exit code of torchrun's last "Root Cause" block in log_text, if any."""
    found = list(_ROOT_CAUSE.finditer(log_text))
    if not found:
        return None
    fields = dict(_FIELD.findall(found[-1].group("block")))
    rank = re.match(r"-?\d+", fields.get("rank", ""))
    code = re.match(r"-?\d+", fields.get("exitcode", ""))
    return Failure(rank=int(rank.group()) if rank else None, host=fields.get("host") or None,
                   exitcode=int(code.group()) if code else None)


@dataclass(frozen=True)
class Decision:
    reason: str
    #: None: restart the rank group; else launch.sh exits with it
    exit_code: Optional[int]


def decide(*, exit_code: int, signal: int, interrupted: bool, fatal: Optional[Mapping[str, Any]], restart: int,
           max_restarts: int, done: bool = False) -> Decision:
    """Pure: what the loop does after an attempt that ended with exit_code (signal: the one launch.sh got, 0
    if none; interrupted: the ranks wrote interrupted.json during this attempt; done: rank 0 wrote its last
    output during this attempt, so a failure came later, at a rank's exit)."""
    if signal:
        return Decision("signal", EXIT_INTERRUPTED if interrupted else 128 + signal)
    if interrupted:
        return Decision("interrupted", EXIT_INTERRUPTED)
    if exit_code == 0:
        return Decision("finished", 0)
    if done:
        return Decision("finished; a rank failed at its exit", 0)
    if fatal is not None:
        return Decision(f"fatal: {fatal.get('check', '?')}", int(fatal.get("exit_code") or exit_code))
    if restart >= max_restarts:
        return Decision("rank failed", exit_code)
    return Decision("rank failed", None)


def attempt_fatal(events: Sequence[Mapping[str, Any]], started: float) -> Optional[Mapping[str, Any]]:
    return next((e for e in events if e.get("event") == "fatal" and e.get("time", 0) >= started), None)


def attempt_done(events: Sequence[Mapping[str, Any]], started: float) -> bool:
    return any(e.get("event") == "done" and e.get("time", 0) >= started for e in events)


def attempt_stuck(events: Sequence[Mapping[str, Any]], started: float) -> Optional[Failure]:
    """The rank rank 0 found stuck in a collective during this attempt (a "stuck" event), if any: the rank to
    blame, rather than the one whose wait timed out (which torchrun reports)."""
    stuck = next((e for e in events if e.get("event") == "stuck" and e.get("time", 0) >= started
                  and e.get("stuck_ranks")), None)
    return Failure(rank=stuck["stuck_ranks"][0], host=None, exitcode=None) if stuck else None


def interrupted_since(run: RunDir, started: float) -> bool:
    """interrupted.json was written during this attempt (a stale one from an earlier attempt does not count)."""
    try:
        info = json.loads(run.interrupted.read_text())
        written = float(info.get("time") or run.interrupted.stat().st_mtime)
    except (OSError, ValueError, AttributeError):
        return False
    return written >= started


def read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def after_attempt(run: RunDir, *, node: int, restart: int, max_restarts: int, exit_code: int, signal: int,
                  log: Path, log_offset: int, started: float) -> Decision:
    """Record this node's "exit" event for the attempt and decide; a line on stderr says what happens next."""
    events = read_events(run)
    fatal = attempt_fatal(events, started)
    decision = decide(exit_code=exit_code, signal=signal, interrupted=interrupted_since(run, started), fatal=fatal,
                      restart=restart, max_restarts=max_restarts, done=attempt_done(events, started))
    if decision.exit_code == 0 and exit_code != 0:
        print(f"launch.sh: node {node}: a rank exited with code {exit_code} after the run had written all its "
              "outputs; not restarting", file=sys.stderr)
    failure = None  # after a signal or a save, no rank failed (torchrun reports the stopped ones all the same)
    if decision.reason == "rank failed":
        failure = attempt_stuck(events, started) or root_cause(read_from(log, log_offset))
    elif fatal is not None and decision.reason.startswith("fatal"):
        failure = Failure(fatal.get("rank"), fatal.get("host"), fatal.get("exit_code"))
    restarting = decision.exit_code is None
    checkpoint = last_complete_checkpoint(run.checkpoints) if restarting else None
    append_event(run, {"event": "exit", "time": time.time(), "node": node, "restart": restart,
                       "exit_code": exit_code, "reason": decision.reason,
                       "failed_rank": failure.rank if failure else None,
                       "failed_host": failure.host if failure else None,
                       "restarting": restarting, "resume_step": checkpoint_step(checkpoint) if checkpoint else None})
    if decision.reason == "rank failed":
        who = f"a rank (exit code {exit_code})" if failure is None or failure.rank is None else \
            f"rank {failure.rank} (stuck in a collective)" if failure.exitcode is None else \
            f"rank {failure.rank} on {failure.host} (exit code {failure.exitcode})"
        then = (f"restart {restart + 1} of at most {max_restarts}, resuming from "
                f"{checkpoint.name if checkpoint else 'the start (no complete checkpoint yet)'}") if restarting \
            else f"not restarting: max_restarts={max_restarts} used up"
        print(f"launch.sh: node {node}: {who} failed; {then}", file=sys.stderr)
    return decision


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launcher.restarts", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--node", type=int, required=True)
    p.add_argument("--restart", type=int, required=True)
    p.add_argument("--max-restarts", type=int, required=True)
    p.add_argument("--exit-code", type=int, required=True)
    p.add_argument("--signal", type=int, default=0, help="the signal launch.sh got during the attempt (0: none)")
    p.add_argument("--log", type=Path, required=True, help="this node's launcher log (its stderr)")
    p.add_argument("--log-offset", type=int, default=0, help="where this attempt's part of --log begins")
    p.add_argument("--started", type=float, required=True, help="when the attempt began (unix seconds)")
    p.add_argument("--port", help="the attempt's rendezvous port: DeepSpeed's /dev/shm buffers of it are removed")
    a = p.parse_args(argv)
    if a.port:
        shm_buffers.sweep(a.port)  # what a rank that died before releasing its own left (launcher.shm_buffers)
    d = after_attempt(RunDir(Path(a.run_dir)), node=a.node, restart=a.restart, max_restarts=a.max_restarts,
                      exit_code=a.exit_code, signal=a.signal, log=a.log, log_offset=a.log_offset, started=a.started)
    print(RESTART if d.exit_code is None else d.exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())

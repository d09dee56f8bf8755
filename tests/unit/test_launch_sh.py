"""launch.sh's restart loop and signal path, run by bash with a stand-in for the launcher command (no torch)."""
from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from launcher.exitcodes import EXIT_INTERRUPTED
from launcher.plan import NodeCommand, build_plan
from launcher.rundir import RunDir, read_events
from tests.support import compose, facts, signals_as_in_a_terminal

#: the stand-in rank: records its restart env, then fails on attempt 0 and succeeds on attempt 1 (by default)
FAKE = textwrap.dedent("""
    import os, signal, sys, time
    run = sys.argv[1]
    restart = os.environ["LAUNCHER_RESTART"]
    with open(f"{run}/seen", "a") as f:
        f.write(f"{restart} {os.environ.get('LAUNCHER_RESUME', '-')}\\n")
    got = []
    def on_signal(signum, frame):
        got.append(signum)
        with open(f"{run}/signals", "a") as f:
            f.write(f"{signum}\\n")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    mode = open(f"{run}/mode").read().strip()
    if mode == "wait":
        open(f"{run}/ready", "w").close()
        while not got:
            time.sleep(0.05)
        time.sleep(0.5)  # a second copy of the signal would arrive now
        if os.path.exists(f"{run}/save"):
            open(f"{run}/interrupted.json", "w").write('{"step": 3, "time": %f}' % time.time())
        sys.exit(0)
    sys.exit(0 if mode == "ok" or (mode == "once" and restart != "0") else 3)
""")


def launch_sh(tmp_path: Path, *overrides: str) -> Path:
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "gpus=1", *overrides)
    plan = build_plan(cfg, facts(cfg, python=sys.executable), str(tmp_path))
    (tmp_path / "fake.py").write_text(FAKE)
    plan = dataclasses.replace(plan, commands=(NodeCommand(0, (sys.executable, str(tmp_path / "fake.py"),
                                                                str(tmp_path))),))
    (tmp_path / "logs").mkdir()
    path = tmp_path / "launch.sh"
    path.write_text(plan.to_shell(cwd=str(Path.cwd())))
    return path


def run_sh(path: Path, mode: str) -> subprocess.CompletedProcess:
    (path.parent / "mode").write_text(mode)
    return subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=60)


def test_a_failed_attempt_restarts_with_resume_and_is_recorded(tmp_path):
    r = run_sh(launch_sh(tmp_path, "max_restarts=2"), "once")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "seen").read_text().splitlines() == ["0 -", "1 1"]
    exits = [(e["restart"], e["exit_code"], e["reason"], e["restarting"]) for e in read_events(RunDir(tmp_path))]
    assert exits == [(0, 3, "rank failed", True), (1, 0, "finished", False)]
    assert "a rank (exit code 3) failed; restart 1 of at most 2" in r.stderr


def test_restarts_are_bounded_by_max_restarts(tmp_path):
    r = run_sh(launch_sh(tmp_path, "max_restarts=1"), "fail")
    assert r.returncode == 3
    assert (tmp_path / "seen").read_text().splitlines() == ["0 -", "1 1"]
    assert "not restarting: max_restarts=1 used up" in r.stderr
    zero = tmp_path / "zero"
    zero.mkdir()
    r = run_sh(launch_sh(zero, "max_restarts=0"), "fail")
    assert r.returncode == 3 and (zero / "seen").read_text().splitlines() == ["0 -"]


def signalled(tmp_path: Path, sig: int, save: bool) -> tuple[int, list[str]]:
    path = launch_sh(tmp_path, "max_restarts=3")
    (tmp_path / "mode").write_text("wait")
    if save:
        (tmp_path / "save").touch()
    proc = subprocess.Popen(["bash", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=signals_as_in_a_terminal)
    deadline = time.monotonic() + 30
    while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    return proc.wait(timeout=30), (tmp_path / "signals").read_text().splitlines()


def test_a_signal_reaches_the_rank_once_and_ends_the_loop(tmp_path):
    rc, got = signalled(tmp_path, signal.SIGTERM, save=False)
    assert rc == 128 + signal.SIGTERM and got == [str(int(signal.SIGTERM))]
    assert (tmp_path / "seen").read_text().splitlines() == ["0 -"]  # no restart after a signal
    (event,) = read_events(RunDir(tmp_path))
    assert event["reason"] == "signal" and event["restarting"] is False


def test_ranks_that_saved_after_a_signal_end_with_75(tmp_path):
    rc, got = signalled(tmp_path, signal.SIGINT, save=True)
    assert rc == EXIT_INTERRUPTED and got == [str(int(signal.SIGINT))]

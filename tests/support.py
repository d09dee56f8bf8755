"""Helpers for tests: compose a config, hand-made Facts, run `launch` as a user would."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from launcher import cli  # also registers the schema and the project_root resolver
from launcher import PROJECT_ROOT
from launcher.facts import Facts, RunDirFacts, gather_data_facts, read_hostfile, read_json_file
from launcher.zero import GIB

TINY_MODEL = PROJECT_ROOT / "assets" / "tiny_llama"
DEMO_DATA = PROJECT_ROOT / "data" / "demo" / "alpaca_demo.json"


def compose(*overrides: str):
    return cli.compose(cli.quote_numeric_choices(overrides))


def facts(cfg=None, **kw) -> Facts:
    """Facts of a healthy machine for cfg (its datasets, ds config and hostfile read for real), changed by kw."""
    data = gather_data_facts(cfg.data) if cfg is not None else None
    ds = {cfg.zero.config: read_json_file(cfg.zero.config)} if cfg is not None and cfg.zero.config else {}
    hostfile = read_hostfile(cfg.hostfile) if cfg is not None and cfg.hostfile else None
    base = dict(python="/usr/bin/python3", hostname="testhost", cpu_count=8, visible_gpus=8, paths={},
                output_dir=RunDirFacts(), ds_configs=ds, hostfile=hostfile,
                host_memory_total=64 * GIB, free_port=41000,
                deepspeed_version="0.19.8", cxx_toolchain=True, **({"data": data} if data else {}))
    base.update(kw)
    return Facts(**base)


def problems_of(cfg, f: Facts | None = None, *, gather=facts, typed: frozenset[str] = frozenset(), **facts_kw):
    """validate() of a composed cfg with Facts f (default: gather(cfg, **facts_kw), hand-made healthy ones)."""
    from launcher.validate import validate

    return validate(cfg, f if f is not None else gather(cfg, **facts_kw), typed)


def errors_of(cfg, f: Facts | None = None, **kw) -> list:
    return [p for p in problems_of(cfg, f, **kw) if p.error]


def only_error_of(cfg, f: Facts | None = None, **kw):
    """The one error validate() finds in cfg (the assertion lists them all otherwise)."""
    errs = errors_of(cfg, f, **kw)
    assert len(errs) == 1, [str(e) for e in errs]
    return errs[0]


def problems(*overrides: str, base: tuple[str, ...] = (), **kw) -> list:
    """validate() of compose(*base, *overrides); kw as for problems_of (gather, typed, facts' keywords)."""
    return problems_of(compose(*base, *overrides), **kw)


def errors(*overrides: str, base: tuple[str, ...] = (), **kw) -> list:
    return errors_of(compose(*base, *overrides), **kw)


def warnings(*overrides: str, base: tuple[str, ...] = (), **kw) -> list:
    return [p for p in problems(*overrides, base=base, **kw) if not p.error]


def only_error(*overrides: str, base: tuple[str, ...] = (), **kw):
    return only_error_of(compose(*base, *overrides), **kw)


def worker_training_kwargs(run_dir: Path, *overrides: str) -> dict:
    """The TrainingArguments kwargs the worker builds for a launch of overrides (device=cpu, gpus=2), planned
    into run_dir: what every stage's trainer receives."""
    import yaml

    from launcher.plan import build_plan
    from launcher.worker.train import Worker

    cfg = compose("device=cpu", "gpus=2", *overrides)
    plan = build_plan(cfg, facts(cfg), str(run_dir))
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "config.yaml").write_text(yaml.safe_dump(dict(plan.config)))
    worker = Worker(str(run_dir))
    worker.precision = "fp32"
    return worker.training_kwargs()


def fake_sbatch(tmp_path: Path, body: str) -> dict:
    """A stand-in `sbatch` (a shell script running body) first on PATH: the env for run_launch."""
    import stat

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "sbatch"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def run_launch(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    return subprocess.run([sys.executable, "-m", "launcher.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def run_module(module: str, *args: str, cwd: Path | None = None, timeout: float = 300):
    """`python -m MODULE ARGS` (launch-export, launch-chat) as a user would run it."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def signals_as_in_a_terminal(ignored: tuple[int, ...] = ()) -> None:
    """preexec_fn of a process a test signals: the stop signals as a command typed in a terminal has them, not as
    the suite inherited them (a script's background job ignores SIGINT), except those asked to be ignored."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN if sig in ignored else signal.SIG_DFL)


def signal_set(pid: int, field: str) -> set[int]:
    """The signals pid ignores (field SigIgn) or catches (SigCgt), from /proc/PID/status."""
    mask = int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith(f"{field}:")), 16)
    return {sig for sig in range(1, 65) if mask >> (sig - 1) & 1}


def start_training(run: Path, *overrides: str, cwd: Path, ignored: tuple[int, ...] = ()) -> subprocess.Popen:
    """`launch` (2 CPU ranks of the tiny LoRA recipe, a practically endless run) in the background, returned once
    both ranks train. ignored: stop signals it starts with ignored (as under nohup)."""
    import pytest

    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "recipe=tiny_sft_lora", "device=cpu", "gpus=2",
                             f"output_dir={run}", "train.num_train_epochs=1000", "train.save_steps=100000",
                             *overrides], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signals_as_in_a_terminal(ignored))
    if not wait_until_training(run, ranks=2, timeout=120):
        proc.kill()
        pytest.fail("ranks did not start training within 120 s")
    return proc


def wait_until_training(run: Path, ranks: int, timeout: float) -> bool:
    """True once every rank's log shows it trained on rows (False after timeout seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = [run / f"logs/rank{r}.log" for r in range(ranks)]
        if all(p.exists() and "launcher.rows" in p.read_text() for p in logs):
            return True
        time.sleep(0.5)
    return False


def processes_mentioning(needle: str) -> list[int]:
    """Live processes whose command line contains needle (e.g. a run dir)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def rank_pids(run: Path) -> dict[int, int]:
    """{rank: pid} of the worker processes of run (they have RANK and LOCAL_RANK in their environment; the
    launchers that start them have no LOCAL_RANK)."""
    ranks = {}
    for pid in processes_mentioning(str(run)):
        try:
            env = dict(v.split(b"=", 1) for v in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in v)
        except OSError:
            continue
        if b"LOCAL_RANK" in env and b"RANK" in env:
            ranks[int(env[b"RANK"])] = pid
    return ranks


def rank_pid(run: Path, rank: int) -> int | None:
    return rank_pids(run).get(rank)


def shm_buffers_left(run: Path) -> list[str]:
    """DeepSpeed's /dev/shm all-reduce buffers (launcher.shm_buffers) left under any port run's attempts used."""
    import re

    from launcher.shm_buffers import PREFIX, SHM_DIR

    base = int(re.search(r"^BASE_PORT=(\d+)$", (run / "launch.sh").read_text(), re.M).group(1))
    ports = {str(base + restart) for restart in range(10)}
    return sorted(p.name for p in SHM_DIR.glob(f"{PREFIX}_{os.getuid()}_*") if p.name.split("_")[-2] in ports)

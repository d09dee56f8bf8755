"""launcher.shm_buffers: DeepSpeed's /dev/shm all-reduce buffers are removed by their rank once mapped, and
swept by the node after an attempt; nothing of another port or user is touched."""
from __future__ import annotations

import os
import subprocess
import sys

from launcher import shm_buffers
from launcher.plan import build_plan
from tests.support import compose, facts

UID = os.getuid()


def touch(d, *names):
    for name in names:
        (d / name).write_bytes(b"x")


def test_a_rank_unlinks_exactly_its_own_buffer(tmp_path):
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"}
    touch(tmp_path, f"deepspeed_allreduce_buffer_{UID}_127.0.0.1_29511_0",
          f"deepspeed_allreduce_buffer_{UID}_127.0.0.1_29511_1")
    assert shm_buffers.release_own(1, env, shm_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"deepspeed_allreduce_buffer_{UID}_127.0.0.1_29511_0"]
    assert not shm_buffers.release_own(1, env, shm_dir=tmp_path)  # none (a GPU run, ranks on several nodes)


def test_the_sweep_removes_the_ports_buffers_only(tmp_path):
    ours = [f"deepspeed_allreduce_buffer_{UID}_127.0.0.1_29511_{r}" for r in range(3)]
    others = [f"deepspeed_allreduce_buffer_{UID}_127.0.0.1_129511_0",  # another port that ends alike
              f"deepspeed_allreduce_buffer_{UID}_127.0.0.1_2951_0", f"deepspeed_allreduce_buffer_{UID + 1}_h_29511_0",
              f"deepspeed_allreduce_buffer_{UID}_127.0.0.1_29511_0.tmp", "other_29511_0"]
    touch(tmp_path, *ours, *others)
    assert sorted(p.name for p in shm_buffers.sweep("29511", shm_dir=tmp_path)) == ours
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)
    assert shm_buffers.sweep("29511", shm_dir=tmp_path) == []


def test_launch_sh_has_the_node_sweep_its_deepspeed_port_after_each_attempt(tmp_path):
    def restarts_line(*overrides):
        cfg = compose("recipe=tiny_sft_lora", "device=cpu", "gpus=2", *overrides)
        sh = build_plan(cfg, facts(cfg), "/runs/r1").to_shell(cwd="/work")
        return next(line for line in sh.splitlines() if "--started" in line)

    assert restarts_line("zero=2", "backend=deepspeed").endswith('--started "$STARTED" --port "$PORT")" || NEXT="$rc"')
    assert "--port" not in restarts_line("zero=2", "backend=torchrun")  # no shm buffers without the ds launcher
    # launcher.restarts removes them (the real /dev/shm; port 99999 is never a rendezvous port)
    left = shm_buffers.SHM_DIR / f"deepspeed_allreduce_buffer_{UID}_127.0.0.1_99999_1"
    left.write_bytes(b"x")
    (tmp_path / "run").mkdir()
    try:
        args = ["--node", "0", "--restart", "0", "--max-restarts", "0", "--exit-code", "0", "--log",
                str(tmp_path / "log"), "--started", "0", "--port", "99999"]
        out = subprocess.run([sys.executable, "-m", "launcher.restarts", str(tmp_path / "run"), *args],
                             capture_output=True, text=True)
        assert (out.returncode, out.stdout) == (0, "0\n"), out.stderr
        assert not left.exists()
    finally:
        left.unlink(missing_ok=True)

"""cluster=slurm with a container: launch.sh's interpreter is cluster.python, and validate says what to set when
the interpreter or the project/run dirs would not exist inside the container."""
from __future__ import annotations

from functools import partial

import pytest

from launcher.backends.slurm import script_for
from launcher.plan import build_plan
from launcher.validate.container import container_runtime, same_path_mounts
from tests import support
from tests.support import compose, facts, run_launch

SLURM = ("recipe=tiny_sft_lora", "device=cpu", "gpus=2", "cluster=slurm", "cluster.time=01:00:00")
IMAGE = "--container-image=nvcr.io#nvidia/pytorch:24.05-py3"


def srun_args(*args: str) -> str:
    return "cluster.srun_args=[" + ",".join(f"'{a}'" for a in args) + "]"


problems = partial(support.problems, base=SLURM, sbatch="/usr/bin/sbatch", python="/home/u/venv/bin/python",
                   cwd="/work/proj")


@pytest.mark.parametrize("args, runtime, mounts", [
    ([IMAGE, "--container-mounts=/work:/work,/data:/mnt/data:ro"], "pyxis", ["/work"]),
    (["--container-image", "img.sqsh", "--container-mounts", "/scratch"], "pyxis", ["/scratch"]),
    (["apptainer", "exec", "--nv", "-B", "/work,/home/u:/home/u", "img.sif"], "apptainer", ["/work", "/home/u"]),
    (["/usr/bin/singularity", "exec", "--bind=/work", "img.sif"], "singularity", ["/work"]),
    (["enroot", "start", "--mount", "/work:/work", "pytorch"], "enroot", ["/work"]),
    (["--exclusive"], None, None),
])
def test_runtime_and_same_path_mounts(args, runtime, mounts):
    assert container_runtime(args) == runtime
    if runtime:
        assert same_path_mounts(args, runtime) == mounts


def test_a_container_without_cluster_python_is_an_error_naming_the_key():
    found = problems(srun_args(IMAGE, "--container-mounts=/work/proj:/work/proj"))
    [e] = [p for p in found if p.error]
    assert e.key == "cluster.python" and "/home/u/venv/bin/python" in e.fix and "cluster.python=python3" in e.fix
    assert not [p for p in found if p.key == "cluster.srun_args"]  # project and run dir (outputs/) are mounted


def test_an_interpreter_on_a_mount_needs_no_cluster_python():
    found = problems(srun_args(IMAGE, "--container-mounts=/home/u:/home/u,/work/proj:/work/proj"))
    assert not [p for p in found if p.key.startswith("cluster.")]


def test_unmounted_project_and_run_dirs_are_a_warning_with_the_mounts_to_add():
    found = problems(srun_args(IMAGE), "cluster.python=python3", "output_dir=/scratch/runs/a")
    [w] = [p for p in found if p.key == "cluster.srun_args"]
    assert not w.error and "--container-mounts=/work/proj:/work/proj,/scratch/runs/a:/scratch/runs/a" in w.fix
    assert not [p for p in found if p.error]


def test_no_container_no_problem():
    assert not [p for p in problems(srun_args("--exclusive")) if p.key.startswith("cluster.")]


def test_cluster_python_is_launch_sh_interpreter():
    cfg = compose(*SLURM, srun_args(IMAGE, "--container-mounts=/work:/work"), "cluster.python=/opt/conda/bin/python")
    plan = build_plan(cfg, facts(cfg), "/work/runs/r")
    assert plan.commands[0].argv[0] == "/opt/conda/bin/python"
    shell = plan.to_shell("/work")
    assert "exec /opt/conda/bin/python -m launcher.pdeathsig /opt/conda/bin/python -m torch.distributed.run" in shell
    assert "$(/opt/conda/bin/python -m launcher.restarts" in shell and facts(cfg).python not in shell
    assert "--container-image=nvcr.io#nvidia/pytorch:24.05-py3" in script_for([plan], cwd="/work", output="o")
    single = compose(*SLURM, "gpus=1", "cluster.python=python3")
    assert build_plan(single, facts(single), "/r").commands[0].argv[:3] == ("python3", "-m", "launcher.worker")


def test_cli_exits_2_and_writes_nothing(tmp_path):
    r = run_launch(*SLURM, srun_args(IMAGE), "dry_run=true", cwd=tmp_path)
    assert r.returncode == 2 and "error: cluster.python=None: launch.sh runs inside the pyxis container" in r.stderr
    assert "Traceback" not in r.stderr and list(tmp_path.iterdir()) == []

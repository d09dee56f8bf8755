"""cluster=slurm with a container (pyxis' --container-image, or apptainer/singularity/enroot in srun_args):
launch.sh runs inside it, so its interpreter and the paths it uses must exist there.

Pure: the mounts are read from cluster.srun_args. Only mounts at the same path inside count (launch.sh names
the host's paths). Whether a site mounts more by default (pyxis' home, apptainer's $HOME and cwd) is not
known here: the missing mounts are warnings; an interpreter that cannot be there is an error.
"""
from __future__ import annotations

import posixpath
from typing import Any, Iterator, Optional, Sequence

from launcher.facts import Facts
from launcher.schema import ClusterType
from launcher.validate.problem import Problem

#: words of srun_args that start a container runtime around launch.sh, and their mount options
RUNTIME_MOUNT_FLAGS = {"apptainer": ("--bind", "-B"), "singularity": ("--bind", "-B"), "enroot": ("--mount", "-m")}
PYXIS_IMAGE, PYXIS_MOUNTS = "--container-image", "--container-mounts"


def container_runtime(srun_args: Sequence[str]) -> Optional[str]:
    """pyxis, apptainer, singularity, enroot, or None when launch.sh runs on the node itself."""
    for arg in srun_args:
        if arg == PYXIS_IMAGE or arg.startswith(PYXIS_IMAGE + "="):
            return "pyxis"
        if posixpath.basename(arg) in RUNTIME_MOUNT_FLAGS:
            return posixpath.basename(arg)
    return None


def same_path_mounts(srun_args: Sequence[str], runtime: str) -> list[str]:
    """Host directories mounted at the same path inside (SRC, SRC:SRC or SRC:SRC:FLAGS entries)."""
    flags = (PYXIS_MOUNTS,) if runtime == "pyxis" else RUNTIME_MOUNT_FLAGS[runtime]
    values, args = [], list(srun_args)
    for i, arg in enumerate(args):
        for flag in flags:
            if arg.startswith(flag + "="):
                values.append(arg[len(flag) + 1:])
            elif arg == flag and i + 1 < len(args):
                values.append(args[i + 1])
    mounts = []
    for entry in (e for v in values for e in v.split(",") if e):
        src, _, rest = entry.partition(":")
        dst = rest.partition(":")[0] or src
        if posixpath.normpath(src) == posixpath.normpath(dst):
            mounts.append(posixpath.normpath(src))
    return mounts


def is_under(path: str, mounts: Sequence[str]) -> bool:
    path = posixpath.normpath(path)
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def check_container(cfg: Any, facts: Facts) -> Iterator[Problem]:
    c = cfg.cluster
    if c.name != ClusterType.slurm:
        return
    runtime = container_runtime(list(c.srun_args))
    if runtime is None:
        return
    mounts = same_path_mounts(list(c.srun_args), runtime)
    flag = PYXIS_MOUNTS if runtime == "pyxis" else RUNTIME_MOUNT_FLAGS[runtime][0]
    if c.python is None and not is_under(facts.python, mounts):
        yield Problem("cluster.python", None, f"launch.sh runs inside the {runtime} container, where this launch's "
                      f"interpreter {facts.python} is not mounted; set cluster.python to the container's "
                      "interpreter (with this project and its packages installed there), e.g. cluster.python=python3")
    run_dir = cfg.output_dir or cfg.output_root
    dirs = [(what, posixpath.normpath(posixpath.join(facts.cwd, str(d)))) for what, d in
            (("the project dir (launch.sh cds there)", facts.cwd), ("the run dir", run_dir)) if d and facts.cwd]
    missing = [(what, d) for what, d in dirs if not is_under(d, mounts)]
    if missing:
        yield Problem("cluster.srun_args", list(c.srun_args), f"{' and '.join(w + ' ' + d for w, d in missing)} "
                      f"must exist at the same path inside the {runtime} container; add {flag}="
                      f"{','.join(f'{d}:{d}' for _, d in missing)} (unless your site mounts it already)", error=False)

"""Facts that belong to the machine the ranks run on: host memory for ZeRO offload, a C++ compiler and ninja
for DeepSpeed's JIT-built ops, the flash-attn and bitsandbytes packages.

node_problems(cfg, facts) is the one source of these messages. validate calls it with the launching host's
facts: errors for a local run; warnings on a Slurm submit, where the login node's answer says nothing about
the compute node. The worker calls it again on the node before the model loads (facts.node_facts) and ends
with the same message in a "fatal" event. Pure: no torch.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterator, Mapping, Optional

from launcher import zero
from launcher.facts import Facts
from launcher.schema import AdapterType, Attention, ClusterType, Device
from launcher.validate.model import FROZEN_BASE
from launcher.validate.problem import Problem
#: what a Slurm submit adds to these warnings
ON_THE_NODE = "this is the login node's answer; each rank checks again on the compute node before the model loads"


def node_problems(cfg: Any, facts: Facts) -> list[Problem]:
    """Problems with the facts of the host described by `facts`; error=True where a local run must stop."""
    return [*_flash_attn(cfg, facts), *_bitsandbytes(cfg, facts), *_offload(cfg, facts)]


def check_node(cfg: Any, facts: Facts) -> Iterator[Problem]:
    """validate's view: the same problems, warnings (with ON_THE_NODE) when the ranks run elsewhere (Slurm)."""
    for p in node_problems(cfg, facts):
        if cfg.cluster.name == ClusterType.slurm:
            yield replace(p, error=False, fix=f"{p.fix} ({ON_THE_NODE})")
        else:
            yield p


def _flash_attn(cfg: Any, facts: Facts) -> Iterator[Problem]:
    if cfg.model.attn == Attention.flash_attention_2 and cfg.device == Device.cuda \
            and facts.packages.get("flash-attn") is None:
        yield Problem("model.attn", cfg.model.attn, "the flash-attn package is not installed; `pip install "
                      "flash-attn --no-build-isolation`, or use model.attn=sdpa", error=not cfg.dry_run)


def _bitsandbytes(cfg: Any, facts: Facts) -> Iterator[Problem]:
    a = cfg.adapter
    if a.quantization_bit is None or a.name not in FROZEN_BASE or cfg.device != Device.cuda:
        return  # a missing bit count, a trained base and the CPU are refused by validate.model
    if facts.packages.get("bitsandbytes") is None:
        key, value = ("adapter", a.name) if a.name == AdapterType.qlora else ("adapter.quantization_bit",
                                                                               a.quantization_bit)
        yield Problem(key, value, "the bitsandbytes package is not installed; `pip install bitsandbytes`, or "
                      "use adapter=lora", error=not cfg.dry_run)


def ds_config(cfg: Any, facts: Facts) -> Optional[Mapping[str, Any]]:
    """The ZeRO config when it is there and readable (validate.ds reports it otherwise)."""
    if cfg.zero.name == "none" or not cfg.zero.config:
        return None
    f = facts.ds_configs.get(cfg.zero.config)
    return f.content if f is not None and f.exists and not f.error and isinstance(f.content, dict) else None


def _offload(cfg: Any, facts: Facts) -> Iterator[Problem]:
    ds = ds_config(cfg, facts)
    if ds is None or (zero.offload_device(ds, "optimizer") == "none" and zero.offload_device(ds, "param") == "none"):
        return
    if ds.get("zero_force_ds_cpu_optimizer") is True and not facts.cxx_toolchain and "optimizer" not in ds:
        yield Problem("zero.config", cfg.zero.config, "zero_force_ds_cpu_optimizer=true needs DeepSpeedCPUAdam, "
                      f"which needs a C++ compiler and ninja to build on {facts.hostname}; install them, or set it "
                      "to false")
    est = zero.estimate(ds, zero.model_size(cfg, facts), cfg.gpus, cfg.nodes)
    # DeepSpeed's estimate counts optimizer states for every parameter: only full fine-tuning is bound by it.
    if cfg.adapter.name != AdapterType.full or est is None or not facts.host_memory_total:
        return
    if est.cpu_bytes_per_node > facts.host_memory_total:
        yield Problem("zero", cfg.zero.name, f"offload needs about {est.cpu_bytes_per_node / zero.GIB:.1f} GiB of host "
                      f"memory per node for {est.total_params / 1e9:.2f}B params (DeepSpeed's {est.function}) but "
                      f"{facts.hostname} has {facts.host_memory_total / zero.GIB:.1f} GiB; use more nodes, a smaller "
                      "model, adapter=lora, or keep the states on the GPUs (zero=3)", error=not cfg.dry_run)

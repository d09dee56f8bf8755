"""Keys typed on the command line that the run would drop: two typed keys that disagree (an error naming
both), or a typed key this run does not read (a warning). See launcher/typed.py for the typed-key-wins rule."""
from __future__ import annotations

from typing import Any, Iterator

from omegaconf import OmegaConf

from launcher.facts import Facts
from launcher.schema import ClusterType, Device, LoggerConfig
from launcher.topology import world_size
from launcher.validate.problem import Problem, show

#: the adapters that read each adapter.* key (another adapter ignores it)
ADAPTER_KEYS = {
    "freeze_trainable_layers": ("freeze",), "freeze_trainable_modules": ("freeze",),
    "freeze_extra_modules": ("freeze",),
    **{k: ("lora", "qlora") for k in ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "additional_target",
                                      "use_rslora", "use_dora")},
    "adapter_name_or_path": ("lora", "qlora", "prefix"), "create_new_adapter": ("lora", "qlora", "prefix"),
    **{k: ("lora", "qlora", "prefix") for k in ("quantization_bit", "quantization_type", "double_quantization")},
    **{k: ("prefix",) for k in ("pre_seq_len", "prefix_projection", "prefix_hidden_size")},
}
#: top-level keys of a multi-node launch without a cluster (Slurm gives the nodes their rank and address)
LOCAL_NODE_KEYS = ("node_rank", "master_addr", "hostfile")


def check_typed(cfg: Any, facts: Facts, typed: frozenset[str]) -> Iterator[Problem]:
    if not typed:
        return
    yield from _check_batch_keys(cfg, typed)
    adapter = show(cfg.adapter.name)
    for k, adapters in ADAPTER_KEYS.items():
        if f"adapter.{k}" in typed and adapter not in adapters:
            yield Problem(f"adapter.{k}", getattr(cfg.adapter, k), f"adapter={adapter} does not read it (only "
                          f"{', '.join(adapters)}); drop it or pick such an adapter", error=False)
    slurm = cfg.cluster.name == ClusterType.slurm
    for key in sorted(k for k in typed if k.startswith("cluster.")):
        if not slurm:
            yield Problem(key, OmegaConf.select(cfg, key), "cluster=local does not read cluster.* keys; add "
                          "cluster=slurm or drop it",
                          error=False)
    if slurm and "cluster.gpus_per_node" in typed and cfg.device == Device.cpu:
        yield Problem("cluster.gpus_per_node", cfg.cluster.gpus_per_node, "device=cpu requests no GPU; drop it or "
                      "use device=cuda", error=False)
    if slurm and "master_port" in typed:
        yield Problem("master_port", cfg.master_port, "on Slurm each job's port comes from its job id, so jobs "
                      "sharing a node do not collide; drop master_port")
    for key in LOCAL_NODE_KEYS:
        if slurm and key in typed:
            yield Problem(key, getattr(cfg, key), "Slurm gives each node its rank and the first host's address; "
                          "drop it", error=False)
    if "wandb" not in cfg.logger.report_to:
        for k in ("project", "wandb_mode"):
            if f"logger.{k}" in typed and getattr(cfg.logger, k) != getattr(LoggerConfig(), k):
                yield Problem(f"logger.{k}", getattr(cfg.logger, k), "only wandb reads it; add logger=wandb or "
                              "drop it", error=False)
    if "train.optim" in typed and cfg.zero.name != "none":
        # (under optimizer offload, validate/ds.py checks train.optim against DeepSpeedCPUAdam)
        ds = facts.ds_configs.get(cfg.zero.config) if cfg.zero.config else None
        if ds is not None and isinstance(ds.content, dict) and "optimizer" in ds.content:
            yield Problem("train.optim", cfg.train.optim, f"the ds config {cfg.zero.config} has its own optimizer "
                          "section, which replaces it; drop train.optim, or the ds config's optimizer section",
                          error=False)


def _check_batch_keys(cfg: Any, typed: frozenset[str]) -> Iterator[Problem]:
    """global_batch_size derives gradient_accumulation_steps: both typed must agree."""
    accum = "train.gradient_accumulation_steps"
    if not ({accum, "global_batch_size"} <= typed) or cfg.global_batch_size is None:
        return
    t = cfg.train
    world = world_size(cfg)
    if t.per_device_train_batch_size * t.gradient_accumulation_steps * world != cfg.global_batch_size:
        yield Problem("global_batch_size", cfg.global_batch_size, f"and {accum}={t.gradient_accumulation_steps} "
                      f"were both typed and disagree: {t.per_device_train_batch_size} x "
                      f"{t.gradient_accumulation_steps} x world {world} = "
                      f"{t.per_device_train_batch_size * t.gradient_accumulation_steps * world}; type one of them")

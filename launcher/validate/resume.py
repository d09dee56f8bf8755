"""What output_dir may hold, resume=true|false|auto, and what a resume may change of the run's config.

Pure: facts.py read the run dir (its newest complete checkpoint, its config.yaml). A resume whose config
differs from the run's lists every difference as dotted keys: the ones a checkpoint cannot be loaded into
(another model, adapter shape, stage, ZeRO stage, a world size that ZeRO shards were not written for) stop
the launch; the rest are warnings, recorded by the launch in attempts/N/config_changes.json.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from launcher.facts import Facts
from launcher.validate.problem import Problem

#: keys that differ between launches of one run by nature: where the run dir is, how this launch behaves,
#: where this node sits. train.gradient_accumulation_steps is skipped too when global_batch_size derives it.
IGNORED = frozenset({"output_dir", "output_root", "resume", "overwrite_output_dir", "dry_run", "prepare_only",
                     "wait", "node_rank", "master_addr", "master_port", "hostfile"})

#: adapter keys that decide the trained parameters' shape or the base they train on, per adapter: a checkpoint
#: loads only into the same ones
_BASE = ("quantization_bit", "adapter_name_or_path", "create_new_adapter")
_LORA = ("lora_rank", "lora_target", "additional_target", "use_dora", *_BASE)
SHAPE_KEYS: Mapping[str, tuple[str, ...]] = {
    "lora": _LORA, "qlora": _LORA,
    "prefix": ("pre_seq_len", "prefix_projection", "prefix_hidden_size", *_BASE),
    "freeze": ("freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules", *_BASE),
    "full": _BASE,
}

CHOICES = ("use resume=true (continue from the newest complete checkpoint; an error if there is none), "
           "resume=auto (continue if there is one, start fresh otherwise) or resume=false (start fresh)")


def resume_mode(value: Any) -> Optional[str]:
    """"true", "false" or "auto"; None for anything else (Hydra gives bools for true/false, a string for auto)."""
    if value is True or value is False:
        return str(value).lower()
    return "auto" if value == "auto" else None


def resumes_from(cfg: Any, facts: Facts) -> Optional[str]:
    """The checkpoint this launch continues from: resume=true|auto and a complete checkpoint there; else None."""
    if resume_mode(cfg.resume) in ("true", "auto") and cfg.output_dir and not cfg.overwrite_output_dir:
        return facts.output_dir.last_checkpoint
    return None


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any
    #: why a checkpoint cannot be resumed with this change; None: it can (a warning)
    refused: Optional[str] = None

    def record(self) -> dict[str, Any]:
        """As config_changes.json and the launch event list it (a recorded change is never a refused one)."""
        return {"key": self.key, "old": self.old, "new": self.new}


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, Mapping) and v:
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _zero_stage(name: Any) -> str:
    # 2 and 2_offload write the same checkpoint; offloading is where the optimizer state lives while training
    return str(name).removesuffix("_offload")


def _world(config: Mapping[str, Any]) -> Optional[int]:
    try:
        return int(config["gpus"]) * int(config["nodes"])
    except (KeyError, TypeError, ValueError):
        return None


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any], zero_shards: bool = False) -> list[Change]:
    """Every difference between a run's config.yaml and a resume's resolved config, refused or not."""
    a, b = flatten(old), flatten(new)
    refused = {
        "model.model_name_or_path": "the checkpoint holds weights trained from the old model",
        "adapter.name": "the checkpoint holds the old adapter's parameters",
        "stage.name": "the checkpoint holds the old stage's trainer state (model head, optimizer)",
        **{f"adapter.{k}": "the checkpoint's adapter has the old shape or base"
           for k in SHAPE_KEYS.get(str(b.get("adapter.name")), ())},
    }
    skip = IGNORED | ({"train.gradient_accumulation_steps"} if b.get("global_batch_size") is not None else set())
    old_world, new_world = _world(old), _world(new)
    changes = []
    for key in sorted(a.keys() | b.keys()):
        o, n = a.get(key), b.get(key)
        if key in skip or o == n:
            continue
        why = refused.get(key)
        if key == "zero.name" and _zero_stage(o) != _zero_stage(n):
            why = "the checkpoint's optimizer and weights are saved for the old ZeRO stage"
        if key in ("gpus", "nodes") and zero_shards and old_world != new_world:
            why = (f"the checkpoint's ZeRO shards load only into world size {old_world} (gpus x nodes), "
                   f"this launch has {new_world}")
        changes.append(Change(key, o, n, why))
    return changes


def resolved(cfg: Any) -> Optional[dict[str, Any]]:
    try:
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except OmegaConfBaseException:  # a missing value: check_schema reports it
        return None


def resume_changes(cfg: Any, facts: Facts) -> list[Change]:
    """The changes of a launch that resumes (none when it starts fresh or the run has no config.yaml)."""
    old = facts.output_dir.config
    if old is None or resumes_from(cfg, facts) is None:
        return []
    new = resolved(cfg)
    return config_changes(old, new, facts.output_dir.zero_shards) if new is not None else []


def _no_checkpoint_detail(facts: Facts) -> str:
    out = facts.output_dir
    if not out.exists:
        return "the directory does not exist"
    if out.incomplete_checkpoints:
        names = out.incomplete_checkpoints
        return (f"{', '.join(names)} {'has' if len(names) == 1 else 'have'} no completion marker: a save cut off "
                "midway, or written by a launcher before markers")
    return "no checkpoints/checkpoint-N in it"


def check_output(cfg: Any, facts: Facts) -> Iterator[Problem]:
    mode = resume_mode(cfg.resume)
    if mode is None:
        yield Problem("resume", cfg.resume, CHOICES)
        return
    if mode != "false" and cfg.overwrite_output_dir:
        yield Problem("overwrite_output_dir", True, f"contradicts resume={mode}; pick one")
        return
    if mode == "true" and not cfg.output_dir:
        yield Problem("resume", "true", "needs the run to continue; set output_dir=RUN_DIR")
        return
    out = facts.output_dir
    if mode == "true" and not out.last_checkpoint:
        yield Problem("resume", "true", f"{cfg.output_dir} has no complete checkpoint to continue from "
                      f"({_no_checkpoint_detail(facts)}); use resume=auto to continue when there is one and start "
                      "fresh otherwise, or resume=false")
    elif mode != "true" and not cfg.overwrite_output_dir and out.exists:
        if out.finished:
            auto = "resume=auto does not train a finished run further; " if mode == "auto" else ""
            yield Problem("output_dir", cfg.output_dir, f"already holds a finished run (summary.json); {auto}use "
                          "overwrite_output_dir=true to replace it, resume=true to train it further, or another "
                          "output_dir")
        elif out.has_checkpoints and mode == "false":
            yield Problem("output_dir", cfg.output_dir, "holds checkpoints of an unfinished run; use resume=true "
                          "(or resume=auto) to continue it, or overwrite_output_dir=true to start over")
    for c in resume_changes(cfg, facts):
        if c.refused:
            yield Problem(c.key, c.new, f"was {c.old} in this run, and {c.refused}: it cannot resume; use "
                          f"{c.key}={c.old} to continue the run, or start a new one (another output_dir, or "
                          "overwrite_output_dir=true)")
        else:
            yield Problem(c.key, c.new, f"was {c.old} in this run; resuming with the new value (recorded in "
                          f"attempts/{out.next_attempt}/config_changes.json)", error=False)

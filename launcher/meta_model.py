"""A local model's module names, from its config.json alone: the model is built on the meta device (no
weight is read or allocated) and the names are cached by a hash of config.json, so a repeated dry run does
not import torch again. Called by facts.gather_facts only, and only when the config names modules."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

#: where the module lists are cached (LAUNCHER_MODULE_CACHE overrides, e.g. in tests)
DEFAULT_CACHE = "~/.cache/launcher/modules"


@dataclass(frozen=True)
class ModuleFacts:
    #: (qualified name, class name) of every module, in model order
    modules: tuple[tuple[str, str], ...] = ()
    #: qualified names of the parameters
    params: tuple[str, ...] = ()
    #: why the model could not be built on the meta device (names then go unchecked), or None
    error: Optional[str] = None


def cache_dir() -> Path:
    return Path(os.environ.get("LAUNCHER_MODULE_CACHE") or DEFAULT_CACHE).expanduser()


def cache_key(config_json: bytes, sequence_classifier: bool, transformers_version: Optional[str]) -> str:
    h = hashlib.sha256(config_json)
    h.update(f"|seqcls={sequence_classifier}|transformers={transformers_version}".encode())
    return h.hexdigest()[:32]


def module_facts(model_dir: str, *, trust_remote_code: bool, sequence_classifier: bool,
                 transformers_version: Optional[str]) -> ModuleFacts:
    config_path = Path(model_dir).expanduser() / "config.json"
    try:
        key = cache_key(config_path.read_bytes(), sequence_classifier, transformers_version)
    except OSError as e:
        return ModuleFacts(error=f"cannot read {config_path} ({e})")
    cached = cache_dir() / f"{key}.json"
    try:
        data = json.loads(cached.read_text())
        return ModuleFacts(tuple(map(tuple, data["modules"])), tuple(data["params"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    facts = build_on_meta(model_dir, trust_remote_code=trust_remote_code, sequence_classifier=sequence_classifier)
    if facts.error is None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"modules": facts.modules, "params": facts.params}))
            tmp.replace(cached)
        except OSError:
            pass  # an unwritable cache only costs the next dry run the build
    return facts


def build_on_meta(model_dir: str, *, trust_remote_code: bool, sequence_classifier: bool) -> ModuleFacts:
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        auto = AutoModelForCausalLM
        if sequence_classifier:  # stage=rm trains a one-output score head in place of lm_head
            auto, config.num_labels = AutoModelForSequenceClassification, 1
        with torch.device("meta"):
            model = auto.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as e:  # any library's refusal: the names then go unchecked, with a warning
        return ModuleFacts(error=f"{type(e).__name__}: {e}".splitlines()[0][:300])
    return ModuleFacts(tuple((name, type(m).__name__) for name, m in model.named_modules() if name),
                       tuple(name for name, _ in model.named_parameters()))

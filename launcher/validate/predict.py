"""Predict with generation (train.do_predict, train.do_train=false), the generation keys, ChatGLM2's
max_source_length/max_target_length, and remote model code the installed transformers cannot run."""
from __future__ import annotations

from typing import Any, Iterator

from launcher.facts import Facts, is_local_path
from launcher.schema import AdapterType, GenerationConfig
from launcher.validate.model import release
from launcher.validate.problem import Problem, show

#: why a stage cannot predict with generation (predict scores an answer against a row's one reference answer)
NO_PREDICT = {
    "pt": "pt rows are plain text with no prompt/answer split",
    "rm": "a reward model scores answers, it does not generate them",
    "dpo": "its rows hold a chosen and a rejected answer, not one reference answer to score against",
    "kto": "its rows hold answers labelled good or bad, not one reference answer to score against",
    "ppo": "its rows are prompts without a reference answer to score against",
    "grpo": "its rows are prompts without a reference answer to score against",
    "rloo": "its rows are prompts without a reference answer to score against",
}
#: generation keys used only when sampling
SAMPLING_KEYS = ("temperature", "top_p", "top_k")

#: remote modeling code (config.json auto_map, trust_remote_code) known not to run on newer transformers:
#: model_type -> (module file, the first transformers (major, minor) it fails on, why, what works)
REMOTE_CODE_LIMITS = {
    "chatglm": ("modeling_chatglm.py", (4, 42),
                "its ChatGLMForConditionalGeneration._update_model_kwargs_for_generation calls "
                "GenerationMixin._extract_past_from_model_output(outputs, standardize_cache_format=...), whose "
                "argument transformers 4.42 dropped and whose method later releases removed, and it keeps its cache "
                "as past_key_values where transformers 5 generation passes `cache`, so generate() fails at its "
                "first step",
                "it runs on transformers 4.30-4.41 (ChatGLM2's requirements pin 4.30.2), which this launcher does "
                "not support (it needs transformers >= 5.24); use a model transformers implements itself, e.g. "
                "THUDM/glm-4-9b-chat-hf (model_type glm), with its own template"),
}


def check_predict(cfg: Any, facts: Facts) -> Iterator[Problem]:
    t, d, stage = cfg.train, cfg.data, show(cfg.stage.name)
    if not t.do_train and not t.do_predict:
        yield Problem("train.do_train", False, "nothing to do: set train.do_predict=true to predict with the model "
                      "(and adapter.adapter_name_or_path), or train.do_train=true")
        return
    yield from _check_lengths(cfg, stage)
    if not t.do_predict:
        changed = [k for k in _generation_keys() if getattr(cfg.generation, k) != getattr(GenerationConfig(), k)]
        if changed:
            yield Problem(f"generation.{changed[0]}", getattr(cfg.generation, changed[0]), "only train.do_predict "
                          "generates; set train.do_predict=true, or drop the generation keys", error=False)
        return
    if stage in NO_PREDICT:
        yield Problem("train.do_predict", True, f"stage={stage} cannot predict with generation: {NO_PREDICT[stage]}; "
                      "predict with a stage=sft run (a policy trained by this stage predicts as stage=sft on sft "
                      "data: launch-predict RUN_DIR stage=sft data=alpaca_demo)")
        return
    if d.packing:
        yield Problem("data.packing", True, "predict generates for each eval row alone, and packing joins rows; "
                      "set data.packing=false (or train.do_predict=false)")
    if d.streaming:
        yield Problem("data.streaming", True, "predict reads a materialized set of rows; set data.streaming=false")
    has_split = bool(d.val_size) or getattr(d, "eval_dataset", None) is not None
    if t.do_train and not has_split:
        yield Problem("train.do_predict", True, "predict after training generates for the eval rows, and there are "
                      "none: set data.eval_dataset (e.g. adgen_demo_dev) or data.val_size (e.g. 0.1)")
    if not t.do_train:
        yield from _check_predict_only(cfg)
    yield from _check_generation(cfg.generation)


def _generation_keys() -> list[str]:
    from dataclasses import fields

    return [f.name for f in fields(GenerationConfig)]


def _check_predict_only(cfg: Any) -> Iterator[Problem]:
    a = cfg.adapter
    if cfg.zero.name != "none":
        yield Problem("zero", cfg.zero.name, "predict without training runs with every rank holding the whole model: "
                      "set zero=none (or predict after training in the same launch, where ZeRO-3 generates in step)")
    if cfg.train.eval_strategy != "no":
        yield Problem("train.eval_strategy", cfg.train.eval_strategy, "nothing trains (train.do_train=false), so "
                      "nothing evaluates while training; set train.eval_strategy=no", error=False)
    if not a.adapter_name_or_path and a.name == AdapterType.prefix:
        yield Problem("adapter.adapter_name_or_path", None, "an untrained prefix predicts noise: give the trained "
                      "one, e.g. adapter.adapter_name_or_path=RUN_DIR/final (or launch-predict RUN_DIR)")
    elif not a.adapter_name_or_path and a.name in (AdapterType.lora, AdapterType.qlora):
        yield Problem("adapter.adapter_name_or_path", None, "no adapter: the base model predicts (a new LoRA "
                      "changes nothing); give a trained one, e.g. RUN_DIR/final, or launch-predict RUN_DIR",
                      error=False)


def _check_generation(g: Any) -> Iterator[Problem]:
    default = GenerationConfig()
    if g.num_beams > 1 and g.do_sample:
        yield Problem("generation.num_beams", g.num_beams, "beam search does not sample: set generation.do_sample="
                      "false for beam search, or generation.num_beams=1 to sample")
    if not g.do_sample:
        for k in SAMPLING_KEYS:
            if getattr(g, k) != getattr(default, k):
                yield Problem(f"generation.{k}", getattr(g, k), "used only when sampling; with generation.do_sample="
                              "false decoding is greedy (or beam search) and ignores it: set generation.do_sample=true "
                              "to sample", error=False)
    if g.num_beams == 1 and g.length_penalty != default.length_penalty:
        yield Problem("generation.length_penalty", g.length_penalty, "used by beam search only: set "
                      "generation.num_beams > 1, or drop it", error=False)


def _check_lengths(cfg: Any, stage: str) -> Iterator[Problem]:
    d = cfg.data
    given = {k: getattr(d, k) for k in ("max_source_length", "max_target_length") if getattr(d, k) is not None}
    if not given:
        return
    if stage != "sft":
        key = next(iter(given))
        yield Problem(f"data.{key}", given[key], f"only stage=sft rows are cut by it (stage={stage} reads "
                      "data.cutoff_len); drop it", error=False)
    elif len(given) == 2 and sum(given.values()) > d.cutoff_len:
        yield Problem("data.cutoff_len", d.cutoff_len, f"caps every row below max_source_length + "
                      f"max_target_length = {sum(given.values())} (rows are cut to both, then to cutoff_len); raise "
                      f"data.cutoff_len to {sum(given.values())} to keep whole answers", error=False)


def check_remote_code(cfg: Any, facts: Facts) -> Iterator[Problem]:
    """Remote modeling code the installed transformers cannot run (pure over the model dir's facts)."""
    m = cfg.model
    version = facts.packages.get("transformers")
    if not m.trust_remote_code or not version:
        return
    installed = release(version)
    d = facts.model_dir
    if d is not None:
        limit = REMOTE_CODE_LIMITS.get(str(facts.model_config.get("model_type")))
        if limit and limit[0] in d.remote_code and installed >= limit[1]:
            module, first, why, works = limit
            yield Problem("model.model_name_or_path", m.model_name_or_path, f"its remote code {module} (config.json "
                          f"auto_map) cannot run on the installed transformers {version}: {why}; {works}")
    elif not is_local_path(str(m.model_name_or_path)):
        for model_type, (module, first, why, works) in REMOTE_CODE_LIMITS.items():
            if model_type in str(m.model_name_or_path).lower().replace("-", "") and installed >= first:
                yield Problem("model.model_name_or_path", m.model_name_or_path, f"a hub model, so its remote code is "
                              f"not checked before the run downloads it; if it is {module} (ChatGLM2/3), it cannot "
                              f"run on the installed transformers {version}: {why}; {works}", error=False)

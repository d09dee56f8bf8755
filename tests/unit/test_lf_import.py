"""LLaMA-Factory import: yamls in the style of LLaMA-Factory's examples/ map onto our overrides, unsupported keys
are refused in one list, and the written recipe composes to the same config as the overrides."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from launcher import PROJECT_ROOT
from launcher.cli import quote_numeric_choices
from launcher.lf_import import load_yaml, recipe_text, translate
from launcher.validate import validate
from tests.support import TINY_MODEL, compose, facts, run_launch, run_module, worker_training_kwargs

LORA_SFT = f"""\
### model
model_name_or_path: {TINY_MODEL}
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_alpha: 16
lora_dropout: 0.05
lora_target: q_proj,v_proj

### dataset
dataset: alpaca_demo
dataset_dir: {PROJECT_ROOT}/data
template: llama3
cutoff_len: 256
max_samples: 64
overwrite_cache: true
preprocessing_num_workers: 2
dataloader_num_workers: 0

### output
output_dir: saves/tiny/lora/sft
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none  # choices: [none, wandb, tensorboard, swanlab, mlflow]

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null

### eval
val_size: 0.1
per_device_eval_batch_size: 1
eval_strategy: steps
eval_steps: 500
"""

FULL_DS_Z3 = f"""\
model_name_or_path: {TINY_MODEL}
stage: sft
do_train: true
finetuning_type: full
deepspeed: examples/deepspeed/ds_z3_config.json
dataset: alpaca_demo
template: llama3
cutoff_len: 256
output_dir: saves/tiny/full/sft
per_device_train_batch_size: 1
gradient_accumulation_steps: 2
learning_rate: 1.0e-5
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
"""

FREEZE = f"""\
model_name_or_path: {TINY_MODEL}
stage: sft
do_train: true
finetuning_type: freeze
freeze_trainable_layers: 1
freeze_trainable_modules: all
dataset: alpaca_demo
output_dir: saves/tiny/freeze/sft
learning_rate: 1.0e-4
"""

QLORA = f"""\
model_name_or_path: {TINY_MODEL}
quantization_bit: 4
quantization_method: bnb
double_quantization: false
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 16
lora_target: all
use_rslora: true
use_dora: false
additional_target: embed_tokens
dataset: alpaca_demo
learning_rate: 2e-4
flash_attn: sdpa
rope_scaling: linear
"""

DPO = f"""\
model_name_or_path: {TINY_MODEL}
stage: dpo
do_train: true
finetuning_type: lora
lora_target: all
pref_beta: 0.1
pref_loss: sigmoid  # choices: [sigmoid (dpo), orpo, simpo]
pref_ftx: 0.5
dataset: dpo_demo
learning_rate: 5.0e-6
adapter_name_or_path: saves/tiny/lora/sft
create_new_adapter: true
"""

KTO = f"""\
model_name_or_path: {TINY_MODEL}
stage: kto
do_train: true
finetuning_type: lora
pref_beta: 0.2
kto_chosen_weight: 1.5
kto_rejected_weight: 0.5
dataset: polite_kto_demo
learning_rate: 5.0e-6
"""

PPO = f"""\
model_name_or_path: {TINY_MODEL}
reward_model: saves/tiny/lora/reward
reward_model_type: lora
stage: ppo
do_train: true
finetuning_type: lora
lora_target: all
dataset: alpaca_demo
ppo_buffer_size: 2
ppo_epochs: 2
ppo_score_norm: true
ppo_whiten_rewards: true
ppo_target: 6.0
max_new_tokens: 64
top_k: 0
top_p: 0.9
learning_rate: 1.0e-5
"""

PT = f"""\
model_name_or_path: {TINY_MODEL}
stage: pt
do_train: true
finetuning_type: lora
dataset: c4_demo
packing: true
neat_packing: true
mix_strategy: interleave_under
interleave_probs: 0.5,0.5
streaming: false
buffer_size: 128
fp16: true
report_to: [tensorboard, wandb]
"""

EXAMPLES = {"lora_sft": LORA_SFT, "full_ds_z3": FULL_DS_Z3, "freeze": FREEZE, "qlora": QLORA, "dpo": DPO,
            "kto": KTO, "ppo": PPO, "pt": PT}


def _write(tmp_path: Path, text: str, name: str = "train.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_lora_sft_maps_every_key(tmp_path):
    m = translate(load_yaml(_write(tmp_path, LORA_SFT)))
    assert m.unsupported == []
    assert m.overrides[:4] == ["stage=sft", "adapter=lora", "precision=bf16", "logger=none"]
    for o in ("adapter.lora_target='q_proj,v_proj'", "train.learning_rate=0.0001", "train.warmup_ratio=0.1",
              "train.ddp_timeout=180000000", "data.val_size=0.1", "train.eval_strategy=steps",
              "output_dir=saves/tiny/lora/sft", "overwrite_output_dir=true", "model.template=llama3"):
        assert o in m.overrides
    # one line per key of the file (bf16 on the precision line), none silently dropped, and one per default
    # of LLaMA-Factory's the file leaves out (here disable_gradient_checkpointing)
    given = [line for line in m.lines if not line.endswith("(unset: LLaMA-Factory's default)")]
    assert len(given) == len(load_yaml(tmp_path / "train.yaml")) == len(m.lines) - 1
    assert "learning_rate=0.0001 -> train.learning_rate=0.0001" in m.lines


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    assert load_yaml(_write(tmp_path, "learning_rate: 2e-5\nlr2: 1.0e-4\nname: 1e-x\nb: .e5\nc: -3E+2\n")) == \
        {"learning_rate": 2e-5, "lr2": 1e-4, "name": "1e-x", "b": ".e5", "c": -300.0}


def test_deepspeed_example_file_is_our_zero_group_other_file_is_custom(tmp_path):
    assert "zero=3" in translate(load_yaml(_write(tmp_path, FULL_DS_Z3))).overrides
    m = translate({"deepspeed": "my/ds.json"})
    assert {"zero=custom", "zero.config=my/ds.json"} <= set(m.overrides)
    assert "deepspeed=my/ds.json -> zero=custom zero.config=my/ds.json" in m.lines


def test_qlora_ppo_pt_specific_keys(tmp_path):
    q = translate(load_yaml(_write(tmp_path, QLORA)))
    assert {"adapter=qlora", "adapter.quantization_bit=4", "adapter.double_quantization=false",
            "adapter.use_rslora=true", "model.attn=sdpa", "model.rope_scaling=linear"} <= set(q.overrides)
    p = translate(load_yaml(_write(tmp_path, PPO)))
    assert {"stage=ppo", "stage.ppo_num_mini_batches=2", "stage.max_completion_length=64", "stage.top_p=0.9",
            "stage.reward_model=saves/tiny/lora/reward"} <= set(p.overrides)
    t = translate(load_yaml(_write(tmp_path, PT)))
    assert {"stage=pt", "adapter.lora_target=all", "precision=fp16", "logger=both", "data.packing=true",
            "data.interleave_probs='0.5,0.5'"} <= set(t.overrides)


def test_unsupported_keys_are_all_listed():
    m = translate({"stage": "sft", "finetuning_type": "oft", "pref_loss": "orpo", "quantization_method": "hqq",
                   "resume_from_checkpoint": "saves/x/checkpoint-100", "save_only_model": True,
                   "enable_liger_kernel": True, "use_badam": True, "learning_rate": 1e-4,
                   "predict_with_generate": False, "plot_loss": False})
    keys = sorted(u.split("=")[0] for u in m.unsupported)
    assert keys == ["enable_liger_kernel", "finetuning_type", "predict_with_generate", "pref_loss",
                    "quantization_method", "resume_from_checkpoint", "save_only_model", "use_badam"]


def _compose_recipe(recipe_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="launch", overrides=quote_numeric_choices(
            [f"hydra.searchpath=[file://{recipe_dir}]", "recipe=lf_imported", *overrides]))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_overrides_and_written_recipe_compose_to_the_same_config(tmp_path, name):
    m = translate(load_yaml(_write(tmp_path, EXAMPLES[name])))
    assert m.unsupported == []
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "lf_imported.yaml").write_text(recipe_text(m, "train.yaml"))
    from_overrides = OmegaConf.to_container(compose(*m.overrides), resolve=True)
    from_recipe = OmegaConf.to_container(_compose_recipe(tmp_path), resolve=True)
    for key in ("model", "stage", "adapter", "precision", "data", "zero", "logger", "train", "output_dir",
                "overwrite_output_dir"):
        assert from_overrides[key] == from_recipe[key], key
    lf = load_yaml(tmp_path / "train.yaml")
    assert from_recipe["train"]["learning_rate"] == lf.get("learning_rate", 5e-5)
    assert from_recipe["model"]["model_name_or_path"] == lf["model_name_or_path"]


def test_command_line_overrides_win_over_the_file(tmp_path):
    from launcher.lf_import import expand_lf_args

    path = _write(tmp_path, LORA_SFT)
    args = expand_lf_args([f"lf={path}", "adapter=full", "train.learning_rate=0.5"], echo=lambda _: None)
    cfg = compose(*args)
    assert cfg.adapter.name.value == "full" and cfg.train.learning_rate == 0.5 and cfg.train.warmup_ratio == 0.1
    custom = _write(tmp_path, "stage: sft\ndeepspeed: my_ds.json\n", "ds.yaml")
    cfg = compose(*expand_lf_args([f"lf={custom}", "zero=2"], echo=lambda _: None))
    assert cfg.zero.name == "2" and cfg.zero.config.endswith("ds_z2_config.json")


def test_keys_left_out_take_llama_factory_defaults_where_ours_differ():
    m = translate({"stage": "ppo", "finetuning_type": "lora", "dataset": "alpaca_demo"})
    assert {"adapter.lora_target=all", "data.cutoff_len=2048", "train.per_device_train_batch_size=8",
            "train.lr_scheduler_type=linear", "train.logging_steps=500", "stage.ppo_target=6.0"} <= set(m.overrides)
    assert "cutoff_len=2048 -> data.cutoff_len=2048  (unset: LLaMA-Factory's default)" in m.lines
    full = translate({"stage": "sft", "finetuning_type": "full", "packing": False, "neat_packing": True})
    assert not any(o.startswith(("adapter.lora_target", "stage.ppo_target")) for o in full.overrides)
    assert "data.packing=true" in full.overrides and "data.packing=false" not in full.overrides


def test_lora_alpha_and_dropout_left_out_are_llama_factorys():
    """LLaMA-Factory: lora_alpha 2 x lora_rank, lora_dropout 0 (our lora group: 16 and 0.05)."""
    m = translate({"stage": "sft", "finetuning_type": "lora", "lora_rank": 32, "dataset": "alpaca_en_demo"})
    assert {"adapter.lora_alpha=null", "adapter.lora_dropout=0.0"} <= set(m.overrides)
    cfg = compose(*m.overrides, "device=cpu")
    assert (cfg.adapter.lora_rank, cfg.adapter.lora_alpha, cfg.adapter.lora_dropout) == (32, None, 0.0)
    from launcher.worker.adapters.lora import lora_kwargs

    assert (lora_kwargs(cfg.adapter)["lora_alpha"], lora_kwargs(cfg.adapter)["lora_dropout"]) == (64, 0.0)
    given = translate({"stage": "sft", "finetuning_type": "lora", "lora_alpha": 8, "lora_dropout": 0.1})
    assert {"adapter.lora_alpha=8", "adapter.lora_dropout=0.1"} <= set(given.overrides)
    assert not any(o.startswith("adapter.lora_") for o in translate({"finetuning_type": "full"}).overrides)


def test_precision_keys_one_line_even_when_all_false():
    m = translate({"bf16": False, "fp16": False})
    assert "bf16=false fp16=false -> (our default, precision=auto)" in m.lines
    assert not any(o.startswith("precision=") for o in m.overrides)


def test_launch_lf_dry_run_prints_the_mapping(tmp_path):
    path = _write(tmp_path, LORA_SFT.replace("bf16: true", "bf16: false").replace("save_steps: 500",
                                                                                    "save_steps: 5"))
    # llama3's template needs tokens the tiny tokenizer lacks: our override after lf= wins
    r = run_launch(f"lf={path}", "device=cpu", "gpus=2", "dry_run=true", f"output_dir={tmp_path / 'run'}",
                   "model.template=auto", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "lora_target=q_proj,v_proj -> adapter.lora_target='q_proj,v_proj'" in r.stdout
    assert "learning_rate=0.0001 -> train.learning_rate=0.0001" in r.stdout


def test_launch_lf_unsupported_keys_exit_2_nothing_written(tmp_path):
    path = _write(tmp_path, LORA_SFT + "use_galore: true\nenable_liger_kernel: true\n")
    r = run_launch(f"lf={path}", "device=cpu", f"output_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert r.returncode == 2
    assert "use_galore=true" in r.stderr and "enable_liger_kernel=true" in r.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "outputs").exists()
    out = tmp_path / "recipes" / "x.yaml"
    r = run_module("launcher.lf_import", str(path), "-o", str(out), cwd=tmp_path)
    assert r.returncode == 2 and "use_galore" in r.stderr and not out.exists()


def test_the_yaml_trains_with_the_same_training_arguments_and_lora_config_as_our_command_line(tmp_path):
    """LLaMA-Factory's lora sft example, and the same run typed in our names: what the worker hands transformers'
    TrainingArguments and peft's LoraConfig is identical."""
    from launcher.worker.adapters.lora import lora_kwargs

    m = translate(load_yaml(_write(tmp_path, LORA_SFT)))
    ours = (f"model.model_name_or_path={TINY_MODEL}", "model.trust_remote_code=true", "stage=sft", "adapter=lora",
            "adapter.lora_rank=8", "adapter.lora_alpha=16", "adapter.lora_dropout=0.05",
            "adapter.lora_target='q_proj,v_proj'", "data.dataset=alpaca_demo", "data.template=llama3",
            "data.cutoff_len=256", "data.max_samples=64", "data.overwrite_cache=true",
            "data.preprocessing_num_workers=2", "train.dataloader_num_workers=0", "train.logging_steps=10",
            "train.save_steps=500", "train.per_device_train_batch_size=1", "train.gradient_accumulation_steps=8",
            "train.learning_rate=1e-4", "train.num_train_epochs=3.0", "train.lr_scheduler_type=cosine",
            "train.warmup_ratio=0.1", "precision=bf16", "train.ddp_timeout=180000000", "data.val_size=0.1",
            "train.per_device_eval_batch_size=1", "train.eval_strategy=steps",
            "train.eval_steps=500", "train.gradient_checkpointing=true")  # LLaMA-Factory's default
    from_yaml = worker_training_kwargs(tmp_path / "lf", *m.overrides)
    from_ours = worker_training_kwargs(tmp_path / "ours", *ours)
    assert from_yaml.pop("output_dir") != from_ours.pop("output_dir")  # each run dir's own checkpoints/
    assert from_yaml == from_ours
    assert from_yaml["learning_rate"] == 1e-4 and from_yaml["gradient_accumulation_steps"] == 8
    assert from_yaml["activation_checkpointing"] is True
    assert lora_kwargs(compose(*m.overrides).adapter) == lora_kwargs(compose(*ours).adapter) == {
        "r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"],
        "modules_to_save": None, "use_rslora": False, "use_dora": False}


def test_evaluation_keys_map_onto_ours():
    m = translate({"stage": "sft", "finetuning_type": "lora", "eval_dataset": "identity,alpaca_en_demo",
                   "compute_accuracy": True, "load_best_model_at_end": True, "metric_for_best_model": "eval_accuracy",
                   "greater_is_better": True, "early_stopping_steps": 3})
    assert m.unsupported == [] and "data.eval_dataset='identity,alpaca_en_demo'" in m.overrides
    cfg = compose(*m.overrides)
    assert cfg.data.eval_dataset == "identity,alpaca_en_demo"
    t = cfg.train
    assert (t.compute_accuracy, t.load_best_model_at_end, t.metric_for_best_model, t.greater_is_better,
            t.early_stopping_steps) == (True, True, "eval_accuracy", True, 3)


def test_predict_keys_map_to_do_predict_and_generation():
    m = translate({"stage": "sft", "do_train": False, "do_predict": True, "predict_with_generate": True,
                   "adapter_name_or_path": "saves/lora", "eval_dataset": "identity", "temperature": 0.5,
                   "num_beams": 1, "max_source_length": 64, "max_target_length": 128})
    assert not m.unsupported
    assert {"train.do_train=false", "train.do_predict=true", "generation.temperature=0.5", "generation.num_beams=1",
            "data.max_source_length=64", "data.max_target_length=128",
            # LLaMA-Factory samples 1024 tokens unless told otherwise; we decode greedily 128
            "generation.do_sample=true", "generation.max_new_tokens=1024"} <= set(m.overrides)
    assert translate({"stage": "sft", "predict_with_generate": False}).unsupported
    assert "stage.temperature=0.5" in translate({"stage": "ppo", "temperature": 0.5}).overrides


LORA_EVAL = """\
### model
model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct
adapter_name_or_path: saves/llama3-8b/lora/sft
trust_remote_code: true

### method
finetuning_type: lora

### dataset
task: mmlu_test  # choices: [mmlu_test, ceval_validation, cmmlu_test]
template: fewshot
lang: en
n_shot: 5

### output
save_dir: saves/llama3-8b/lora/eval

### eval
batch_size: 4
"""


def test_llama_factory_eval_yaml_is_stage_eval_with_lm_evals_task(tmp_path):
    """LLaMA-Factory's examples/train_lora/llama3_lora_eval.yaml (v0.9.3; v0.9.4 removed `llamafactory-cli eval`)."""
    m = translate(load_yaml(_write(tmp_path, LORA_EVAL)))
    assert m.unsupported == []
    assert m.overrides[:2] == ["stage=eval", "adapter=lora"]
    assert {"eval.task=mmlu", "eval.n_shot=5", "eval.batch_size=4", "output_dir=saves/llama3-8b/lora/eval",
            "adapter.adapter_name_or_path=saves/llama3-8b/lora/sft"} <= set(m.overrides)
    # no training default of LLaMA-Factory's is added: stage=eval refuses training keys
    assert not [o for o in m.overrides if o.startswith(("train.", "data."))]
    assert len(m.lines) == len(load_yaml(tmp_path / "train.yaml"))
    assert translate({"task": "ceval_validation"}).overrides[-1] == "eval.task=ceval-valid"
    assert [u.split("=")[0] for u in translate({"task": "mmlu_test", "task_dir": "evaluation"}).unsupported] == \
        ["task_dir"]


def _gc_overrides(m) -> list[str]:
    return [o for o in m.overrides if o.startswith("train.gradient_checkpointing=")]


def _problems(m) -> list[str]:
    cfg = compose(*m.overrides)
    return [str(p) for p in validate(cfg, facts(cfg))]


@pytest.mark.parametrize("disable", [True, False])
def test_disable_gradient_checkpointing_is_ours_negated(disable):
    m = translate({"model_name_or_path": str(TINY_MODEL), "stage": "sft", "dataset": "alpaca_demo",
                   "disable_gradient_checkpointing": disable})
    assert _gc_overrides(m) == [f"train.gradient_checkpointing={'false' if disable else 'true'}"]
    assert f"disable_gradient_checkpointing={str(disable).lower()} -> {_gc_overrides(m)[0]}" in m.lines
    assert compose(*m.overrides).train.gradient_checkpointing is not disable
    assert _problems(m) == []


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_unset_checkpointing_is_llama_factorys_default_on_where_ours_accepts_it(tmp_path, name):
    """LLaMA-Factory checkpoints every model it trains; ppo's TRL trainer does not checkpoint (our validate warns),
    so there it stays off and the line says why."""
    m = translate(load_yaml(_write(tmp_path, EXAMPLES[name])))
    line = next(line for line in m.lines if line.startswith("disable_gradient_checkpointing=false -> "))
    assert line.endswith("  (unset: LLaMA-Factory's default)")
    if name == "ppo":
        assert _gc_overrides(m) == [] and "TRL's PPOTrainer does not checkpoint" in line
    else:
        assert _gc_overrides(m) == ["train.gradient_checkpointing=true"]
    cfg = compose(*m.overrides)
    assert cfg.train.gradient_checkpointing is (name != "ppo")
    assert not [p for p in _problems(m) if "gradient_checkpointing" in p]
    if name in ("lora_sft", "full_ds_z3", "freeze", "kto"):  # the others name files this test has not made
        assert _problems(m) == []


def test_unset_checkpointing_on_for_rm_off_where_nothing_trains(tmp_path):
    rm = translate({"model_name_or_path": str(TINY_MODEL), "stage": "rm", "dataset": "dpo_demo"})
    assert _gc_overrides(rm) == ["train.gradient_checkpointing=true"] and _problems(rm) == []
    # predict only (LLaMA-Factory's is_trainable is do_train) and eval yamls: nothing trained, nothing set
    predict = translate({"model_name_or_path": str(TINY_MODEL), "stage": "sft", "do_train": False,
                         "do_predict": True, "eval_dataset": "alpaca_demo"})
    evaluation = translate(load_yaml(_write(tmp_path, LORA_EVAL)))
    for m in (predict, evaluation):
        assert _gc_overrides(m) == [] and not [line for line in m.lines if "checkpointing" in line]
    assert compose(*predict.overrides).train.gradient_checkpointing is False
    explicit = translate({"stage": "sft", "do_train": False, "disable_gradient_checkpointing": False})
    assert _gc_overrides(explicit) == []
    assert "disable_gradient_checkpointing=false -> (nothing is trained: no activations to checkpoint)" in \
        explicit.lines


def test_gradient_checkpointing_with_disable_as_llama_factory_runs_it():
    """prepare_model_for_training skips enabling for disable_gradient_checkpointing, but the Trainer enables it for
    TrainingArguments' gradient_checkpointing: true; `gradient_checkpointing: false` alone turns nothing off."""
    base = {"model_name_or_path": str(TINY_MODEL), "stage": "sft", "dataset": "alpaca_demo"}
    both = translate({**base, "gradient_checkpointing": True, "disable_gradient_checkpointing": True})
    assert _gc_overrides(both) == ["train.gradient_checkpointing=true"]
    line = next(line for line in both.lines if "checkpointing" in line)
    assert line.startswith("disable_gradient_checkpointing=true gradient_checkpointing=true -> "
                           "train.gradient_checkpointing=true (as LLaMA-Factory: ")
    off = translate({**base, "gradient_checkpointing": False, "disable_gradient_checkpointing": True})
    assert _gc_overrides(off) == ["train.gradient_checkpointing=false"]
    alone = translate({**base, "gradient_checkpointing": False})
    assert _gc_overrides(alone) == ["train.gradient_checkpointing=true"]
    assert "turns nothing off" in next(line for line in alone.lines if "checkpointing" in line)
    asked = translate({**base, "gradient_checkpointing": True})
    assert _gc_overrides(asked) == ["train.gradient_checkpointing=true"]
    assert not [line for line in asked.lines if line.startswith("disable_gradient_checkpointing")]
    for m in (both, off, alone, asked):
        assert m.unsupported == [] and _problems(m) == []
    # ppo: ours does not checkpoint, so false stays false; true is passed on (and our validate warns)
    ppo = translate({"stage": "ppo", "gradient_checkpointing": False})
    assert _gc_overrides(ppo) == ["train.gradient_checkpointing=false"]


def test_stage_and_adapter_typed_after_the_file_decide_its_checkpointing_default(tmp_path):
    """`lf=FILE adapter=prefix` (prefix refuses checkpointing) or `stage=ppo` (TRL's does not checkpoint): no
    LLaMA-Factory default is set that our validate would then refuse; adapter=qlora keeps lora's defaults."""
    from launcher.lf_import import expand_lf_args

    path = _write(tmp_path, LORA_SFT)
    lines: list[str] = []
    for typed, why in (("adapter=prefix", "peft's prefix tuning"), ("stage=ppo", "TRL's PPOTrainer")):
        lines.clear()
        args = expand_lf_args([f"lf={path}", typed, "model.template=auto"], echo=lines.append)
        assert not [a for a in args if a.startswith("train.gradient_checkpointing")], typed
        assert any(line.startswith("  disable_gradient_checkpointing=false -> (") and why in line for line in lines)
        cfg = compose(*args)
        assert cfg.train.gradient_checkpointing is False
        assert not [p for p in validate(cfg, facts(cfg)) if p.key == "train.gradient_checkpointing"]
    args = expand_lf_args([f"lf={_write(tmp_path, FREEZE, 'freeze.yaml')}", "adapter=qlora"], echo=lines.append)
    assert {"adapter.lora_target=all", "train.gradient_checkpointing=true"} <= set(args)


def test_use_reentrant_gc_is_accepted_we_checkpoint_non_reentrant():
    for value in (True, False):
        m = translate({"stage": "sft", "use_reentrant_gc": value})
        assert m.unsupported == [] and not any("reentrant" in o for o in m.overrides)
        assert any(line.startswith(f"use_reentrant_gc={str(value).lower()} -> (we always checkpoint non-reentrant")
                   for line in m.lines)

"""stage=eval without running a model: validate's messages, the task dir facts, the launch-eval arguments, the
results table and average."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from launcher import PROJECT_ROOT
from launcher.benchmark import launch_args, run_overrides, summarize, table
from launcher.facts import EvalTaskFacts, scan_eval_tasks
from launcher.plan import build_plan
from launcher.schema import typed
from launcher.typed import typed_keys
from tests import support
from tests.support import compose, facts, problems_of, run_launch, run_module

TASKS = PROJECT_ROOT / "evaluation" / "tasks"
TINY = EvalTaskFacts(task_dir_exists=True, local=("tiny_mmlu",))


def errors(*overrides: str, tasks: EvalTaskFacts = TINY) -> list[str]:
    return [str(p) for p in support.errors(*overrides, base=("device=cpu", "stage=eval", "adapter=full"),
                                           typed=typed_keys(overrides), eval_tasks=tasks)]


def test_the_shipped_task_validates():
    assert errors("eval.task=tiny_mmlu") == []


def test_unknown_task_lists_the_known_ones():
    (e,) = errors("eval.task='tiny_mmlu,nope'", tasks=EvalTaskFacts(True, ("tiny_mmlu",), harness={"nope": False}))
    assert e.startswith("error: eval.task=nope: unknown task") and "(tiny_mmlu)" in e and "lm-eval's own" in e


def test_harness_task_whose_name_lm_eval_knows_is_accepted():
    assert errors("eval.task=arc_easy", tasks=EvalTaskFacts(True, ("tiny_mmlu",), harness={"arc_easy": True})) == []


def test_no_task_and_no_task_dir():
    assert errors(tasks=EvalTaskFacts())[0].startswith("error: eval.task_dir=")
    (e,) = errors()
    assert e.startswith("error: eval.task=None: name the benchmark tasks") and "eval.task=tiny_mmlu" in e


def test_negative_n_shot_names_the_range():
    (e,) = errors("eval.task=tiny_mmlu", "eval.n_shot=-1")
    assert e.startswith("error: eval.n_shot=-1:") and ">= 0" in e


def test_training_keys_typed_with_stage_eval_are_refused():
    found = errors("eval.task=tiny_mmlu", "train.learning_rate=1e-4", "data.dataset=alpaca_demo", "zero=2",
                   "backend=torchrun")
    assert any(e.startswith("error: train.learning_rate=0.0001: stage=eval trains nothing") for e in found)
    assert any(e.startswith("error: data.dataset=alpaca_demo: stage=eval trains nothing") for e in found)
    assert any(e.startswith("error: zero=2: stage=eval runs one whole copy") for e in found)
    assert len(found) == 3, found


def test_prefix_needs_its_trained_prefix():
    (e,) = errors("eval.task=tiny_mmlu", "adapter=prefix")
    assert e.startswith("error: adapter.adapter_name_or_path=None: adapter=prefix with stage=eval needs")


def test_eval_keys_with_a_training_stage_are_a_warning():
    cfg = compose("device=cpu", "eval.n_shot=3")
    found = [str(p) for p in problems_of(cfg, typed=typed_keys(["eval.n_shot=3"]))]
    assert found == ["warning: eval.n_shot=3: stage=sft does not read eval.* keys (benchmarks run with stage=eval, "
                     "or launch-eval RUN_DIR); drop it"]


def test_task_dir_facts_name_a_missing_data_file(tmp_path):
    shutil.copy(TASKS / "tiny_mmlu" / "tiny_mmlu.yaml", tmp_path)
    shutil.copy(TASKS / "tiny_mmlu" / "tiny_mmlu.jsonl", tmp_path)
    found = scan_eval_tasks(str(tmp_path), ["tiny_mmlu"])
    assert found.local == ("tiny_mmlu",) and found.harness == {}
    assert found.missing_files == {"tiny_mmlu": {"dev": str(tmp_path / "tiny_mmlu_dev.jsonl")}}
    (e,) = errors("eval.task=tiny_mmlu", tasks=found)
    assert e == (f"error: eval.task=tiny_mmlu: its data file for split dev is missing: {tmp_path}/tiny_mmlu_dev.jsonl;"
                 " put it there (paths in a task yaml are relative to the yaml) or fix dataset_kwargs.data_files")
    assert scan_eval_tasks(str(TASKS), ["tiny_mmlu"]).missing_files == {}


def test_launch_refuses_before_starting_anything(tmp_path):
    r = run_launch("stage=eval", "eval.task=tiny_mmlu", "eval.n_shot=-1", "device=cpu", f"output_dir={tmp_path / 'r'}",
                   cwd=tmp_path)
    assert r.returncode == 2 and "error: eval.n_shot=-1" in r.stderr and not (tmp_path / "r").exists()


def test_plan_runs_the_eval_stage_offline():
    cfg = compose("device=cpu", "gpus=2", "stage=eval", "adapter=full", "eval.task=tiny_mmlu")
    env = build_plan(cfg, facts(cfg), "/runs/eval").commands[0].env
    assert (env["HF_DATASETS_OFFLINE"], env["HF_HUB_OFFLINE"]) == ("1", "1")
    cfg = compose("device=cpu", "gpus=2")
    assert "HF_HUB_OFFLINE" not in build_plan(cfg, facts(cfg), "/runs/sft").commands[0].env


@pytest.mark.parametrize("adapter, earlier, create_new, wanted", [
    ("lora", None, False, "adapter.adapter_name_or_path='/r/final'"),
    # the run merged /a and trained on /b: the evaluation merges /a and loads what /b became
    ("lora", "/a,/b", False, "adapter.adapter_name_or_path='/a,/r/final'"),
    ("lora", "/a,/b", True, "adapter.adapter_name_or_path='/a,/b,/r/final'"),
    ("prefix", None, False, "adapter.adapter_name_or_path='/r/final'"),
])
def test_a_run_is_evaluated_with_its_trained_adapter(adapter, earlier, create_new, wanted):
    paths = [f"adapter.adapter_name_or_path='{earlier}'"] if earlier else []
    cfg = typed(compose(f"adapter={adapter}", *paths, f"adapter.create_new_adapter={str(create_new).lower()}"))
    args = run_overrides(cfg, Path("/r/final"))
    assert args[:2] == [f"adapter={adapter}", wanted]
    assert f"model.model_name_or_path='{cfg.model.model_name_or_path}'" in args


def test_a_full_run_is_its_final_model():
    args = run_overrides(typed(compose("adapter=freeze")), Path("/r/final"))
    assert args[0] == "adapter=full" and "model.model_name_or_path='/r/final'" in args


def test_launch_eval_shorthands_and_typed_keys_win():
    assert launch_args("/m", ["task=a,b", "n_shot=0", "gpus=2"], None, None) == [
        "stage=eval", "adapter=full", "model.model_name_or_path='/m'", "name=m_eval", "eval.task=a,b", "eval.n_shot=0",
        "gpus=2"]
    assert launch_args("/m", ["adapter.adapter_name_or_path=/p", "task=a"], None, "PREFIX_TUNING")[:2] == [
        "stage=eval", "adapter=prefix"]
    assert launch_args("/m", ["adapter=lora", "task=a"], None, None)[:2] == [
        "stage=eval", "model.model_name_or_path='/m'"]


def lm_eval_results(**tasks) -> dict:
    """The parts of lm-eval's simple_evaluate() output that summarize reads."""
    return {"results": {t: {"acc,none": acc, "acc_stderr,none": se} for t, (acc, se, _) in tasks.items()},
            "n-shot": {t: 5 for t in tasks}, "n-samples": {t: {"original": n, "effective": n}
                                                          for t, (_, _, n) in tasks.items()}}


def test_average_is_weighted_by_rows_with_pooled_stderr():
    s = summarize(lm_eval_results(a=(1.0, 0.0, 10), b=(0.5, 0.1, 30)), ["a", "b"])
    assert s["tasks"]["b"] == {"n_shot": 5, "samples": 30, "acc": 0.5, "acc_stderr": 0.1}
    assert s["average"] == {"samples": 40, "acc": 0.625, "acc_stderr": pytest.approx(0.075)}
    assert table(s) == ("| task | n_shot | samples | acc (%) | acc_norm (%) |\n|---|---|---|---|---|\n"
                        "| a | 5 | 10 | 100.00 ± 0.00 | - |\n| b | 5 | 30 | 50.00 ± 10.00 | - |\n"
                        "| average |  | 40 | 62.50 ± 7.50 | - |\n")


@pytest.mark.parametrize("stage, wanted", [("sft", "final does not exist: the run has not finished"),
                                           ("eval", "is a stage=eval run (benchmark results, no model)")])
def test_launch_eval_refuses_a_run_without_a_model(tmp_path, stage, wanted):
    from omegaconf import OmegaConf

    OmegaConf.save(compose("device=cpu", f"stage={stage}"), tmp_path / "config.yaml", resolve=True)
    r = run_module("launcher.benchmark", str(tmp_path), "task=tiny_mmlu", cwd=tmp_path)
    assert r.returncode == 2 and wanted in r.stderr and r.stderr.startswith("launch-eval: error: ")

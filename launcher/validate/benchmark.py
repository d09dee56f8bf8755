"""stage=eval (lm-evaluation-harness benchmarks): the tasks exist with their data, and nothing asks for training."""
from __future__ import annotations

from typing import Any, Iterator

from omegaconf import OmegaConf

from launcher.facts import EvalTaskFacts, Facts
from launcher.schema import split_list
from launcher.validate.problem import Problem, show

#: keys that only training reads: typed with stage=eval they would be silently dropped
TRAINING_KEYS = ("train.", "data.", "global_batch_size", "resume", "adapter.create_new_adapter")


def check_eval(cfg: Any, facts: Facts, typed: frozenset[str]) -> Iterator[Problem]:
    stage = show(cfg.stage.name)
    if stage != "eval":
        for key in sorted(k for k in typed if k.startswith("eval.")):
            yield Problem(key, OmegaConf.select(cfg, key), f"stage={stage} does not read eval.* keys (benchmarks "
                          "run with stage=eval, or launch-eval RUN_DIR); drop it", error=False)
        return
    for key in sorted(k for k in typed if k.startswith(TRAINING_KEYS)):
        yield Problem(key, OmegaConf.select(cfg, key), "stage=eval trains nothing and reads no training data: drop "
                      "it (the benchmark's rows come from eval.task; its batch is eval.batch_size)")
    if cfg.zero.name != "none":
        yield Problem("zero", cfg.zero.name, "stage=eval runs one whole copy of the model per rank (data-parallel "
                      "requests): set zero=none")
    if show(cfg.adapter.name) == "prefix" and not cfg.adapter.adapter_name_or_path:
        yield Problem("adapter.adapter_name_or_path", None, "adapter=prefix with stage=eval needs the trained prefix: "
                      "give adapter.adapter_name_or_path=RUN_DIR/final (or launch-eval RUN_DIR)")
    tasks = split_list(cfg.eval.task)
    found = facts.eval_tasks or EvalTaskFacts()
    if not found.task_dir_exists:
        yield Problem("eval.task_dir", cfg.eval.task_dir, "no such directory; give the directory of the lm-eval task "
                      "yamls (the project's: evaluation/tasks)")
    known = ", ".join(found.local) or "none"
    if not tasks:
        yield Problem("eval.task", cfg.eval.task, f"name the benchmark tasks, comma-separated: e.g. "
                      f"eval.task={found.local[0] if found.local else 'tiny_mmlu'} (in eval.task_dir: {known})")
    for name in tasks:
        if name not in found.local and not found.harness.get(name):
            yield Problem("eval.task", name, f"unknown task: not in eval.task_dir={cfg.eval.task_dir} ({known}) "
                          "nor among lm-eval's own tasks; pick one of those or add its yaml to eval.task_dir")
        for split, path in found.missing_files.get(name, {}).items():
            yield Problem("eval.task", name, f"its data file for split {split} is missing: {path}; put it there "
                          "(paths in a task yaml are relative to the yaml) or fix dataset_kwargs.data_files")

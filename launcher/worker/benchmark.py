"""stage=eval on every rank: the worker's model (base + adapter, loaded for inference as launch-chat loads a run:
launcher.worker.model.load_for_eval) scored by lm-evaluation-harness.

The model is handed to lm-eval's HFLM already loaded, so every adapter loads by the project's own code. HFLM's
own data parallelism needs CUDA and `accelerate launch`; here the ranks are torchrun's (gloo on CPU, NCCL on
GPUs), so each rank tells HFLM its rank and world size and the harness's evaluator does the rest: each rank
scores every world_size-th row of a task, and the per-row results are gathered on rank 0, which writes
eval_results.json, summary.json (and eval_samples.jsonl with eval.log_samples).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from launcher.benchmark import summarize, table, with_data_files
from launcher.schema import split_list

log = logging.getLogger("launcher.worker")


def task_specs(names: list[str], task_dir: Path):
    """(TaskManager, specs): a task of task_dir as its config with its data files made absolute; any other name
    as is (lm-eval's own tasks: indexed only when one is asked for, which takes seconds)."""
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    if any(n not in manager.task_index for n in names):
        manager = TaskManager(include_path=str(task_dir))
    specs: list[Any] = []
    for name in names:
        entry = manager.task_index.get(name)
        if entry is not None and entry.kind == Kind.TASK and entry.yaml_path is not None \
                and Path(entry.yaml_path).is_relative_to(task_dir):
            specs.append(with_data_files(load_yaml(entry.yaml_path), Path(entry.yaml_path).parent))
        else:
            specs.append(name)
    return manager, specs


def harness_model(worker):
    """lm-eval's HFLM around the worker's model, told this rank's place in the world."""
    from lm_eval.models.huggingface import HFLM

    cfg = worker.cfg
    model = worker.model.eval()
    if cfg.adapter.quantization_bit is None:  # a quantized base is already on its GPU (device_map)
        model.to(worker.args.device)
    # HFLM warns that a loaded model means "single process": this module gives it its rank below
    hf_log = logging.getLogger("lm_eval.models.huggingface")
    level = hf_log.level
    hf_log.setLevel(logging.ERROR)
    lm = HFLM(pretrained=model, tokenizer=worker.tokenizer, batch_size=cfg.eval.batch_size)
    hf_log.setLevel(level)
    if worker.world_size > 1:
        from accelerate import Accelerator

        # what HFLM sets up itself under `accelerate launch` (gather with the existing process group)
        lm._rank, lm._world_size = worker.rank, worker.world_size
        lm.accelerator = Accelerator(cpu=cfg.device.value == "cpu")
    return lm


def sample_rows(results: dict) -> list[dict]:
    """One row per task row: its prompt, the continuations scored, the model's responses and the row's metrics."""
    rows = []
    for task, samples in results.get("samples", {}).items():
        for s in sorted(samples, key=lambda s: s["doc_id"]):
            args = s["arguments"]
            rows.append({
                "task": task, "doc_id": s["doc_id"], "prompt": args[0][0],
                "continuations": [a[1] for a in args if isinstance(a[1], str)], "target": s["target"],
                # loglikelihood requests: (loglikelihood, is_greedy) per continuation; generation: the text
                "responses": s["filtered_resps"],
                **{m: s[m] for m in s.get("metrics", []) if m in s}})
    return rows


def evaluate(worker) -> None:
    from lm_eval import evaluator

    cfg, run, e = worker.cfg, worker.run, worker.cfg.eval
    started = time.time()
    names = split_list(e.task)
    manager, specs = task_specs(names, Path(e.task_dir).expanduser().resolve())
    lm = harness_model(worker)
    seed = cfg.seed if e.seed is None else e.seed
    log.info("eval: tasks %s, %d-shot, limit %s, batch %d per rank, %d rank(s)", ",".join(names), e.n_shot,
             e.limit, e.batch_size, worker.world_size)
    try:
        results = evaluator.simple_evaluate(
            model=lm, tasks=specs, num_fewshot=e.n_shot, limit=e.limit, task_manager=manager, log_samples=True,
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    except (ConnectionError, FileNotFoundError) as err:  # a task's data, read on every rank before any collective
        from launcher.data.registry import DataError

        raise DataError(f"eval.task={e.task}: a task's data is not on this machine, and nothing is downloaded at run "
                        f"time ({err}); put its dataset in the Hugging Face cache, or use a task of eval.task_dir "
                        "with local data files") from err
    if worker.rank != 0:  # the evaluator returns the gathered results on rank 0 only
        return
    summary = summarize(results, list(results["configs"]))
    record = {"n_shot": e.n_shot, "limit": e.limit, "world_size": worker.world_size, **summary,
              "lm_eval_version": results.get("lm_eval_version")}
    run.eval_results.write_text(json.dumps(record, indent=2) + "\n")
    if e.log_samples:
        with run.eval_samples.open("w") as f:
            for row in sample_rows(results):
                f.write(json.dumps(row, default=str) + "\n")
    text = table(summary)
    (run.root / "eval_results.md").write_text(text)
    run.summary.write_text(json.dumps({
        "stage": "eval", "adapter": cfg.adapter.name.value, "precision": worker.precision,
        "world_size": worker.world_size, "model": cfg.model.model_name_or_path,
        "adapter_name_or_path": cfg.adapter.adapter_name_or_path, "eval": record,
        "total_params": worker.total,
        "wall_time_s": round(time.time() - worker.started, 3), "eval_time_s": round(time.time() - started, 3),
    }, indent=2) + "\n")
    print(f"\n{text}eval results: {run.eval_results}", flush=True)

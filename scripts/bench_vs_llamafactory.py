#!/usr/bin/env python
"""Side-by-side benchmark on CPU: this launcher vs LLaMA-Factory on the same work -> docs/benchmarks.md.

Builds everything locally and deterministically (nothing downloaded but LLaMA-Factory's own packages): a
5.2M-parameter Llama (hidden 256, 4 layers, vocab 4,000, random weights) with a BPE tokenizer trained on the
generated rows, 2,000 alpaca rows for training and 20,000 for tokenization. Then runs both tools interleaved on
the same work (sft, LoRA q_proj/v_proj r 8, cutoff 256, global batch 8, 30 steps, fp32, CPU, gradient
checkpointing on and LoRA dropout 0: LLaMA-Factory's defaults, ours set to match), 1 process and 2 ranks,
without and with packing on both sides, and measures from outside, the same way for both tools:

- command -> first optimizer step: from starting the command to the first log row of step 1 appearing
  (our metrics.jsonl, LLaMA-Factory's trainer_log.jsonl; both log every step from the first);
- total wall: the command's whole run;
- trained tokens/s: non-pad tokens (the Trainer's num_input_tokens_seen, "non_padding") / train runtime;
- peak RSS per rank: the high-water mark (VmHWM in /proc) of each rank's process, polled;
- tokenization rows/s: each tool's own data pipeline in a fresh process, raw json file -> tokenized rows,
  timed around the call only (fresh datasets cache, so nothing is read from an earlier run);
- dry-run latency: `launch ... dry_run=true` vs a bare Hydra compose of the same config (both whole processes).

LLaMA-Factory goes into its own virtualenv (default ~/.cache/launcher-bench/lf-venv), never ours: torch is pinned
by a constraint file to the local CPU build, and torchvision/torchaudio are left out (their wheels here are CUDA
builds for other torch versions); LLaMA-Factory imports torchaudio at module level, so the venv gets a stand-in
module that only raises if something uses it (text-only SFT never does).

    python scripts/bench_vs_llamafactory.py            # full: 3 repeats, writes docs/benchmarks.md + .json
    python scripts/bench_vs_llamafactory.py --quick    # 1 repeat, tiny sizes, writes under the work dir
    python scripts/bench_vs_llamafactory.py --same-libs   # LLaMA-Factory on our library versions

--same-libs gives LLaMA-Factory's venv (default ~/.cache/launcher-bench/lf-same) our versions of the libraries
both tools train with (SAME_LIBS) instead of its pins, and trl 0.24, so the ratios measure the tools, not the
library versions each installs; the rest of the venv is LLaMA-Factory's own requirements, as in the published
run. Checkpointing is off on both sides there: LLaMA-Factory 0.9.5's checkpointing hook fails on our transformers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LF_VERSION = "0.9.5"
DEFAULT_WORK = Path("~/.cache/launcher-bench").expanduser()
POLL_S = 0.2  # a /proc scan per poll: cheap enough not to load the 2 shared cores
TOOLS = ("ours", "lf")
# --same-libs: the libraries LLaMA-Factory's venv gets at our versions, and its trl: 0.9.5 imports from trl a class
# that trl 1.x no longer has (0.24 is the newest it accepts)
SAME_LIBS = ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers", "safetensors",
             "huggingface_hub")
SAME_LIBS_TRL = "trl==0.24.0"
# and its failure with checkpointing on our transformers, said in the report
SAME_LIBS_GC_ERROR = "AttributeError: 'function' object has no attribute '__self__'"
FULL = {"repeats": 3, "rows": 2000, "tok_rows": 20000, "steps": 30}
QUICK = {"repeats": 1, "rows": 200, "tok_rows": 1000, "steps": 4}
# the model of the issue: 5.2M parameters (2.0M of them the untied embeddings and head)
MODEL = {"vocab": 4000, "hidden": 256, "intermediate": 688, "layers": 4, "heads": 4, "kv_heads": 4}
TORCHAUDIO_STANDIN = '''"""Stand-in torchaudio (launcher's benchmark venv): LLaMA-Factory imports torchaudio at module
level, but no torchaudio build here matches the CPU torch; text-only SFT never uses it."""


def __getattr__(name):
    raise AttributeError(f"torchaudio.{name}: this venv has a stand-in torchaudio (text-only benchmark)")
'''


# ---------------------------------------------------------------------------------------------- arguments
def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def rank_list(text: str) -> list[int]:
    try:
        ranks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma list of process counts like 1,2; got {text!r}") from None
    if not ranks or ranks[0] < 1 or 8 % ranks[-1]:
        raise argparse.ArgumentTypeError(f"process counts must be >= 1 and divide the global batch 8; got {text!r}")
    return ranks


def stop_time(text: str) -> datetime:
    """Today's (or, if past, tomorrow's) HH:MM UTC."""
    try:
        hour, minute = (int(x) for x in text.split(":"))
        when = datetime.now(timezone.utc).replace(hour=hour, minute=minute, second=0, microsecond=0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a UTC time as HH:MM, e.g. 23:10; got {text!r}") from None
    return when


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--quick", action="store_true",
                        help="1 repeat, 200 training rows, 1,000 tokenization rows, 4 steps; writes under --work")
    parser.add_argument("--repeats", type=positive, help="samples of each case (default 3; --quick 1)")
    parser.add_argument("--rows", type=positive, help="training rows (default 2000)")
    parser.add_argument("--tok-rows", type=positive, help="rows of the tokenization case (default 20000)")
    parser.add_argument("--steps", type=positive, help="optimizer steps per training run (default 30)")
    parser.add_argument("--ranks", type=rank_list, default=[1, 2], help="process counts, comma list (default 1,2)")
    parser.add_argument("--only", choices=["dryrun", "tokenize", "train"], action="append",
                        help="run only these parts (repeatable; default all)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK,
                        help="model, data, runs and LLaMA-Factory's venv (default ~/.cache/launcher-bench)")
    parser.add_argument("--same-libs", action="store_true",
                        help="LLaMA-Factory's venv with our versions of the libraries both train with (WORK/lf-same), "
                        "both without checkpointing; writes docs/benchmarks-same-libs.md")
    parser.add_argument("--lf-venv", type=Path,
                        help="LLaMA-Factory's virtualenv (default WORK/lf-venv; --same-libs: WORK/lf-same)")
    parser.add_argument("--out", type=Path, help="markdown report (default docs/benchmarks.md; --same-libs: "
                        "docs/benchmarks-same-libs.md; --quick: WORK/quick.md)")
    parser.add_argument("--note", default="", help="a line added to the report (e.g. the machine's load; "
                        "with --from-json, added to the run's own)")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="run nothing: write the report again from the samples of an earlier run's json")
    parser.add_argument("--stop-by", type=stop_time, metavar="HH:MM",
                        help="UTC time after which no new sample starts; the report then has the samples so far")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rows < args.steps * 8 // 4:  # a packed epoch must still hold the steps' batches several times
        parser.error(f"--rows {args.rows} is too few for --steps {args.steps}; use at least {args.steps * 2}")
    args.work = args.work.expanduser().resolve()
    args.lf_venv = (args.lf_venv or args.work / ("lf-same" if args.same_libs else "lf-venv")).expanduser().resolve()
    args.out_given = args.out is not None
    args.out = args.out or default_out(args)
    args.parts = args.only or ["dryrun", "tokenize", "train"]
    return args


def default_out(args: argparse.Namespace) -> Path:
    if args.quick:
        return args.work / "quick.md"
    return ROOT / "docs" / ("benchmarks-same-libs.md" if args.same_libs else "benchmarks.md")


# ------------------------------------------------------------------------------------- model, data, venv
WORDS_SEED = 16


def lexicon(rng) -> list[str]:
    """3,000 pronounceable made-up words: enough distinct text for a 4,000-entry BPE vocabulary."""
    onsets = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "st",
              "tr", "pl", "gr", "ch", "sh", "th", "br"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou", "ea", "io"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "ck", "st"]
    words: set[str] = set()
    while len(words) < 3000:
        words.add("".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                          for _ in range(rng.choice([1, 1, 2, 2, 2, 3]))))
    return sorted(words)


def alpaca_rows(n: int, seed: int = WORDS_SEED) -> list[dict]:
    """n alpaca rows of made-up words (Zipf-like), lengths spread so that some exceed a cutoff of 256 tokens."""
    import random

    rng = random.Random(seed)
    words = lexicon(rng)
    weights = [1 / (i + 1) for i in range(len(words))]

    def sentence(k: int) -> str:
        picked = rng.choices(words, weights, k=k)
        return (" ".join(picked).capitalize() + rng.choice([".", ".", "?", "!"])) if picked else ""

    rows = []
    for _ in range(n):
        out_words = min(int(rng.lognormvariate(3.6, 0.8)) + 3, 400)
        rows.append({"instruction": sentence(rng.randint(4, 20)),
                     "input": sentence(rng.randint(3, 40)) if rng.random() < 0.4 else "",
                     "output": " ".join(sentence(rng.randint(5, 15)) for _ in range(max(1, out_words // 10)))})
    return rows


def build_inputs(args: argparse.Namespace) -> dict:
    """The data files and the model dir under WORK (rebuilt only when missing)."""
    data = args.work / "data"
    data.mkdir(parents=True, exist_ok=True)
    tok_file, train_file = data / f"alpaca_{args.tok_rows}.json", data / f"alpaca_{args.rows}.json"
    corpus_file = data / f"alpaca_{max(FULL['tok_rows'], args.tok_rows)}.json"
    for path, n in ((corpus_file, max(FULL["tok_rows"], args.tok_rows)), (tok_file, args.tok_rows),
                    (train_file, args.rows)):
        if not path.is_file():
            path.write_text(json.dumps(alpaca_rows(n), ensure_ascii=False))
    # LLaMA-Factory reads data by name from a dataset_info.json
    info = {p.stem: {"file_name": p.name} for p in (tok_file, train_file)}
    (data / "dataset_info.json").write_text(json.dumps(info, indent=2))
    model = args.work / "model_h{hidden}_l{layers}_v{vocab}".format(**MODEL)
    if not (model / "model.safetensors").is_file():
        cmd = [sys.executable, str(ROOT / "scripts/make_tiny_model.py"), str(model), "--corpus", str(corpus_file),
               *[f"--{k.replace('_', '-')}={v}" for k, v in MODEL.items()]]
        subprocess.run(cmd, check=True)
    config = json.loads((model / "config.json").read_text())
    return {"data_dir": data, "train_file": train_file, "tok_file": tok_file, "model": model,
            "model_config": {k: config[k] for k in ("vocab_size", "hidden_size", "intermediate_size",
                                                      "num_hidden_layers", "num_attention_heads")}}


def param_count(model: Path) -> int:
    from math import prod

    from safetensors import safe_open

    with safe_open(str(model / "model.safetensors"), "np") as f:
        return sum(prod(f.get_slice(k).get_shape()) for k in f.keys())


def lf_requirements(python: Path) -> list[str]:
    """LLaMA-Factory's own requirements, less torch/torchvision/torchaudio (we pin torch, skip the others)."""
    from importlib.metadata import PathDistribution

    site = next((python.parent.parent / "lib").glob("python3*/site-packages"))
    dist = PathDistribution(next(site.glob(f"llamafactory-{LF_VERSION}.dist-info")))
    keep = []
    for req in dist.requires or []:
        name = req.split(";")[0].strip()
        if requirement_name(name) not in ("torch", "torchvision", "torchaudio") and "extra ==" not in req:
            keep.append(name)
    return keep


def requirement_name(req: str) -> str:
    """'transformers>=4.49.0,<=5.6.0' -> 'transformers', 'huggingface_hub' -> 'huggingface-hub' (PEP 503)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    return canonicalize_name(Requirement(req).name)


def pins(names) -> list[str]:
    """name==version of this environment's install of each (torch: here the CPU build 2.13.0+cpu)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in names]


def torch_pin() -> str:
    """This environment's torch: LLaMA-Factory's venv gets the same one."""
    return pins(["torch"])[0]


def ensure_lf_venv(venv: Path, same_libs: bool = False) -> Path:
    """LLaMA-Factory LF_VERSION in its own venv; returns its python. Idempotent (a marker file). same_libs: with
    our versions of SAME_LIBS and SAME_LIBS_TRL in place of its pins of them."""
    python, marker = venv / "bin/python", venv / ".launcher-bench-ready"
    ready = f"{LF_VERSION} same-libs" if same_libs else LF_VERSION
    if marker.is_file() and marker.read_text().strip() == ready:
        return python
    print(f"installing LLaMA-Factory {LF_VERSION} into {venv} (once)", flush=True)
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    ours = pins(SAME_LIBS) if same_libs else [torch_pin()]
    constraints = venv / "constraints.txt"
    constraints.write_text("\n".join(ours) + "\n")
    pip = [str(python), "-m", "pip", "install", "-q", "-c", str(constraints)]
    subprocess.run([*pip, torch_pin()], check=True)
    subprocess.run([*pip, "--no-deps", f"llamafactory=={LF_VERSION}"], check=True)
    requirements = lf_requirements(python)
    if same_libs:  # its pins of these give way to ours (it was installed --no-deps: pip only warns)
        replaced = {requirement_name(name) for name in (*SAME_LIBS, "trl")}
        requirements = [r for r in requirements if requirement_name(r) not in replaced] + ours + [SAME_LIBS_TRL]
    subprocess.run([*pip, *requirements], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    if not (site / "torchaudio").exists():
        (site / "torchaudio").mkdir()
        (site / "torchaudio/__init__.py").write_text(TORCHAUDIO_STANDIN)
    subprocess.run([str(python), "-c", "import llamafactory.data.mm_plugin, llamafactory.train.tuner"], check=True,
                   env={**os.environ, "DISABLE_VERSION_CHECK": "1"} if same_libs else None)
    marker.write_text(ready + "\n")
    return python


# ------------------------------------------------------------------------------------------ measuring
def proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, cmdline) of every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        table[int(entry.name)] = (ppid, cmd)
    return table


def descendants(root: int, table: dict[int, tuple[int, str]]) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += [p for p, (ppid, _) in table.items() if ppid == pid]
    return out


def hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def is_rank(cmdline: str, marker: str) -> bool:
    """A python process running marker, not the torchrun or shell that has it on its command line too."""
    argv = cmdline.split()
    return bool(argv) and Path(argv[0]).name.startswith("python") and marker in cmdline \
        and not any(x in cmdline for x in ("torchrun", "torch.distributed.run"))


def run_measured(cmd: list[str], env: dict, cwd: Path, log: Path, rank_marker: str | None,
                 first_step_file: Path | None) -> dict:
    """Run cmd, polling its process tree: wall, time to the first line of first_step_file, and the peak
    resident set of each process whose command line holds rank_marker (else of the root process)."""
    peaks: dict[int, int] = {}
    names: dict[int, str] = {}
    first_step = None
    with open(log, "w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            table = proc_table()
            for pid in descendants(proc.pid, table):
                kb = hwm_kb(pid)
                if kb is not None:
                    peaks[pid] = max(peaks.get(pid, 0), kb)
                    names[pid] = table.get(pid, (0, ""))[1]
            if first_step is None and first_step_file is not None and first_step_file.is_file() \
                    and first_step_file.read_text().strip():
                first_step = time.perf_counter() - started
            time.sleep(POLL_S)
        wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                         + "\n".join(log.read_text().splitlines()[-40:]))
    ranks = [pid for pid in peaks if rank_marker and is_rank(names[pid], rank_marker)] or [proc.pid]
    return {"wall_s": round(wall, 3), "first_step_s": round(first_step, 3) if first_step else None,
            "peak_rss_mb_per_rank": sorted(round(peaks.get(pid, 0) / 1024, 1) for pid in ranks)}


def base_env(work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled",
               TOKENIZERS_PARALLELISM="false", HF_HOME=str(work / "hf_home"))
    return env


def ours_overrides(inputs: dict, run: Path, args, ranks: int, packing: bool, train_file: Path) -> list[str]:
    return ["recipe=tiny_sft_lora", "device=cpu", f"gpus={ranks}", f"model.model_name_or_path={inputs['model']}",
            "model.template=auto", f"data.dataset=[{train_file}]", "data.cutoff_len=256",
            f"data.packing={str(packing).lower()}", f"data.cache_dir={run}_cache", "global_batch_size=8",
            f"train.per_device_train_batch_size={8 // ranks}", f"train.max_steps={args.steps}",
            "train.learning_rate=1e-4", "train.warmup_steps=2", "train.logging_steps=1", "train.save_steps=100000",
            "adapter.lora_rank=8", "adapter.lora_alpha=16", "adapter.lora_target='q_proj,v_proj'",
            "precision=fp32", "seed=42", f"output_dir={run}",
            # LLaMA-Factory's defaults where ours differ, so both do the same work: it checkpoints activations
            # (unless disable_gradient_checkpointing; not with --same-libs) and its LoRA has no dropout (ours: 0.05)
            f"train.gradient_checkpointing={str(not args.same_libs).lower()}", "adapter.lora_dropout=0"]


def lf_config(inputs: dict, run: Path, args, ranks: int, packing: bool) -> dict:
    return {"model_name_or_path": str(inputs["model"]), "stage": "sft", "do_train": True, "finetuning_type": "lora",
            "lora_target": "q_proj,v_proj", "lora_rank": 8, "lora_alpha": 16, "dataset": inputs["train_file"].stem,
            "dataset_dir": str(inputs["data_dir"]), "cutoff_len": 256, "overwrite_cache": True, "packing": packing,
            "output_dir": str(run), "overwrite_output_dir": True, "per_device_train_batch_size": 8 // ranks,
            "gradient_accumulation_steps": 1, "max_steps": args.steps, "learning_rate": 1e-4,
            "lr_scheduler_type": "cosine", "warmup_steps": 2, "logging_steps": 1, "logging_first_step": True,
            "save_strategy": "no", "report_to": "none", "plot_loss": False, "seed": 42, "bf16": False,
            "use_cpu": True, "include_num_input_tokens_seen": "non_padding", "ddp_timeout": 1800,
            "disable_gradient_checkpointing": args.same_libs}


def train_sample(tool: str, ranks: int, packing: bool, inputs: dict, args, lf_python: Path, n: int) -> dict:
    name = f"{tool}-{ranks}p-{'pack' if packing else 'nopack'}-{n}"
    run = args.work / "runs" / name
    for stale in (run, Path(f"{run}_cache"), Path(f"{run}_hf")):
        shutil.rmtree(stale, ignore_errors=True)
    env = base_env(args.work)
    env["HF_DATASETS_CACHE"] = f"{run}_hf"  # fresh: no Arrow cache of an earlier run
    if tool == "ours":
        env["PYTHONPATH"] = str(ROOT)
        cmd = [sys.executable, "-m", "launcher.cli", *ours_overrides(inputs, run, args, ranks, packing,
                                                                     inputs["train_file"])]
        marker, first = "launcher.worker", run / "metrics.jsonl"
    else:
        run.mkdir(parents=True)
        import yaml  # (0.9.5's .json config reading is broken: json.load of a Path)

        cfg = run.parent / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump(lf_config(inputs, run, args, ranks, packing), sort_keys=False))
        env["PATH"] = f"{lf_python.parent}{os.pathsep}{env['PATH']}"
        if args.same_libs:  # it refuses our transformers otherwise
            env["DISABLE_VERSION_CHECK"] = "1"
        if ranks > 1:
            env.update(FORCE_TORCHRUN="1", NPROC_PER_NODE=str(ranks))
        cmd = [str(lf_python.parent / "llamafactory-cli"), "train", str(cfg)]
        marker, first = ("llamafactory/launcher.py" if ranks > 1 else None), run / "trainer_log.jsonl"
    sample = run_measured(cmd, env, args.work, args.work / "runs" / f"{name}.log", marker, first)
    if tool == "ours":
        summary = json.loads((run / "summary.json").read_text())
        tokens, runtime, steps = summary["trained_tokens"], summary["train_runtime_s"], summary["steps"]
        loss = summary["final_loss"]
    else:
        state = json.loads((run / "trainer_state.json").read_text())
        results = json.loads((run / "train_results.json").read_text())
        tokens, runtime, steps = state["num_input_tokens_seen"], results["train_runtime"], state["global_step"]
        loss = next((h["loss"] for h in reversed(state["log_history"]) if "loss" in h), None)
    for stale in (run, Path(f"{run}_cache"), Path(f"{run}_hf")):  # keep the log, not the weights
        shutil.rmtree(stale, ignore_errors=True)
    return {"tool": tool, "ranks": ranks, "packing": packing, "repeat": n, **sample, "trained_tokens": tokens,
            "train_runtime_s": round(runtime, 3), "tokens_per_s": round(tokens / runtime, 1), "steps": steps,
            "final_loss": loss}


OURS_TOKENIZE = """
import json, sys, time
import datasets  # noqa: F401  (before the timer, as LLaMA-Factory's data loader imports it with the module)
from hydra import compose, initialize_config_dir
import launcher.cli  # noqa: F401  (the schema and the project_root resolver)
from launcher.data import pipeline
from launcher.data.registry import resolve_all
from launcher.worker.model import load_tokenizer
overrides, hf_cache = json.loads(sys.argv[1]), sys.argv[2]
with initialize_config_dir(config_dir=sys.argv[3], version_base="1.3"):
    cfg = compose(config_name="launch", overrides=overrides)
tokenizer = load_tokenizer(cfg)
attrs = resolve_all(cfg.data.dataset, cfg.data.dataset_dir)
started = time.perf_counter()
built = pipeline.build(cfg.data, "sft", cfg.seed, tokenizer, attrs, hf_cache)
seconds = time.perf_counter() - started
lengths = pipeline.lengths_of(built.train) + (pipeline.lengths_of(built.eval) if built.eval is not None else [])
print("RESULT " + json.dumps({"rows": built.stats["rows_tokenized"], "seconds": seconds, "tokens": sum(lengths)}))
"""

LF_TOKENIZE = """
import json, sys, time
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer
model_args, data_args, training_args, finetuning_args, _ = get_train_args(json.loads(sys.argv[1]))
tokenizer_module = load_tokenizer(model_args)
template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
started = time.perf_counter()
module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
seconds = time.perf_counter() - started
train = module["train_dataset"]
print("RESULT " + json.dumps({"rows": len(train), "seconds": seconds,
                              "tokens": sum(len(x) for x in train["input_ids"])}))
"""


def tokenize_sample(tool: str, inputs: dict, args, lf_python: Path, n: int) -> dict:
    """Each tool's own pipeline on the tokenization rows (no packing), timed around the call in a fresh process."""
    name = f"tok-{tool}-{n}"
    scratch = args.work / "runs" / name
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    env = base_env(args.work)
    env["HF_DATASETS_CACHE"] = str(scratch / "hf")
    if tool == "ours":
        env["PYTHONPATH"] = str(ROOT)
        overrides = ours_overrides(inputs, scratch / "run", args, 1, False, inputs["tok_file"])
        cmd = [sys.executable, "-c", OURS_TOKENIZE, json.dumps(overrides), str(scratch / "hf"), str(ROOT / "conf")]
    else:
        cfg = {**lf_config(inputs, scratch / "run", args, 1, False), "dataset": inputs["tok_file"].stem}
        cmd = [str(lf_python), "-c", LF_TOKENIZE, json.dumps(cfg)]
        if args.same_libs:
            env["DISABLE_VERSION_CHECK"] = "1"
    r = subprocess.run(cmd, env=env, cwd=scratch, capture_output=True, text=True)
    shutil.rmtree(scratch, ignore_errors=True)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    if r.returncode or line is None:
        raise SystemExit(f"tokenization ({tool}) failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    result = json.loads(line[len("RESULT "):])
    return {"tool": tool, "repeat": n, "rows": result["rows"], "seconds": round(result["seconds"], 3),
            "rows_per_s": round(result["rows"] / result["seconds"], 1), "tokens": result["tokens"]}


BARE_COMPOSE = """
import sys
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from launcher import PROJECT_ROOT, schema
OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
schema.register()
with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
    cfg = compose(config_name="launch", overrides=sys.argv[2:])
OmegaConf.to_yaml(cfg, resolve=True)
"""


def dryrun_sample(kind: str, inputs: dict, args, n: int) -> dict:
    """`launch ... dry_run=true` (compose, validate, plan, print) vs a bare Hydra compose of the same overrides."""
    run = args.work / "runs" / f"dry-{n}"
    overrides = ours_overrides(inputs, run, args, 2, True, inputs["train_file"])
    env = {**base_env(args.work), "PYTHONPATH": str(ROOT)}
    cmd = ([sys.executable, "-m", "launcher.cli", *overrides, "dry_run=true"] if kind == "launch dry_run"
           else [sys.executable, "-c", BARE_COMPOSE, str(ROOT / "conf"), *overrides])
    started = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=args.work, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if r.returncode:
        raise SystemExit(f"{kind} failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return {"kind": kind, "repeat": n, "seconds": round(seconds, 3)}


# --------------------------------------------------------------------------------------------- report
def stat(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(s: dict, digits: int = 1) -> str:
    if s["median"] is None:
        return "n/a"
    if s["n"] == 1 or s["min"] == s["max"]:
        return f"{s['median']:,.{digits}f}"
    return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f}-{s['max']:,.{digits}f})"


def paired(ours: list[dict], theirs: list[dict], value) -> dict:
    """Ratios ours/theirs of the samples of the same round (run back to back, so under the same load)."""
    mine = {s["repeat"]: value(s) for s in ours}
    return stat([mine[s["repeat"]] / value(s) for s in theirs
                 if s["repeat"] in mine and mine[s["repeat"]] and value(s)])


def ratio(r: dict) -> str:
    if r["median"] is None:
        return "n/a"
    return f"{r['median']:.2f}x" if r["n"] == 1 else f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"


def verdict(r: dict, goal: str) -> str:
    """'<= 0.6x: met' for a goal like '<= 0.6x' on the median paired ratio ('' without a goal)."""
    if not goal:
        return ""
    if r["median"] is None:
        return f"{goal}: n/a"
    op, bound = goal.split()
    bound = float(bound.rstrip("x"))
    return f"{goal}: {'met' if (r['median'] <= bound if op == '<=' else r['median'] >= bound) else 'NOT met'}"


def versions(lf_python: Path | None) -> dict:
    mods = ["torch", "transformers", "datasets", "peft", "trl", "accelerate", "tokenizers"]
    code = ("import importlib.metadata as m, json, sys; print(json.dumps({k: m.version(k) for k in sys.argv[1:]}))")
    ours = json.loads(subprocess.run([sys.executable, "-c", code, *mods], capture_output=True, text=True,
                                     check=True).stdout)
    theirs = json.loads(subprocess.run([str(lf_python), "-c", code, "llamafactory", *mods], capture_output=True,
                                       text=True, check=True).stdout) if lf_python else {}
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip() or "(not a git checkout; see the note)"
    return {"launcher_git": sha, "ours": ours, "llamafactory_venv": theirs, "python": platform.python_version()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def render(result: dict, args) -> str:
    meta, samples = result["meta"], result["samples"]
    same = args.same_libs
    work = ("gradient checkpointing off and LoRA dropout 0 on both sides (ours `train.gradient_checkpointing=false "
            "adapter.lora_dropout=0`; LLaMA-Factory `disable_gradient_checkpointing: true`, since with checkpointing "
            f"0.9.5 fails on our transformers: \"{SAME_LIBS_GC_ERROR}\")" if same else
            "gradient checkpointing on and LoRA dropout 0 on both sides (LLaMA-Factory's defaults; ours "
            "`train.gradient_checkpointing=true adapter.lora_dropout=0`, where our defaults are off and 0.05)")
    lines = [
        "# Benchmarks: both tools on the same libraries" if same else "# Benchmarks", "",
        (f"## CPU: this launcher vs LLaMA-Factory {LF_VERSION}, both on our library versions" if same else
         f"## CPU: this launcher vs LLaMA-Factory {LF_VERSION}"), "",
        *([f"LLaMA-Factory's venv here has our versions of {', '.join(SAME_LIBS)} in place of its pins, and "
           f"{SAME_LIBS_TRL} (its version check off), so the ratios measure the two tools, not the library "
           "versions each installs; the rest of its venv is its own requirements. The published comparison, with "
           "LLaMA-Factory on its own pins, is [benchmarks.md](benchmarks.md).", ""] if same else []),
        f"Measured {meta['date']} on {meta['cpu']} ({meta['cores']} cores), Python {meta['versions']['python']}, "
        f"launcher at `{meta['versions']['launcher_git']}`. Load averages (1/5/15 min) before: {meta['load_before']}, "
        f"after: {meta['load_after']}. {meta['load_note']}", "",
        f"Same work on both sides: a {meta['params'] / 1e6:.1f}M-parameter Llama built locally with random weights "
        f"(hidden {meta['model']['hidden_size']}, {meta['model']['num_hidden_layers']} layers, vocab "
        f"{meta['model']['vocab_size']:,}), {args.rows:,} generated alpaca rows, sft, LoRA q_proj/v_proj rank 8, "
        f"cutoff 256, global batch 8, {args.steps} steps, fp32, CPU, {work}; runs interleaved (ours, "
        "LLaMA-Factory, ours, ...), "
        f"{args.repeats} sample(s) each: median (min-max). Ratios are paired: ours / LLaMA-Factory of the two "
        "samples of the same round (run back to back, so under about the same load), median (min-max) over "
        "the rounds; a goal is met when that median meets it. LLaMA-Factory's template is parsed from the tokenizer's "
        "chat template (no `template:` key), ours is `template=auto` (the same chat template). "
        "\"LF default\" is LLaMA-Factory without packing (for sft `packing` defaults to off and `neat_packing` "
        "to false); \"LF packing\" is its `packing: true` (not `neat_packing`, whose block-diagonal attention "
        "masks are not 0/1, so the Trainer's non-pad token count would not mean the same there).", ""]
    if "dryrun" in args.parts:
        dry = {k: [s for s in samples["dryrun"] if s["kind"] == k] for k in ("launch dry_run", "bare compose")}
        d = {k: stat([s["seconds"] for s in v]) for k, v in dry.items()}
        lines += ["### Dry-run latency (whole processes, seconds)", "",
                  "| `launch ... dry_run=true` | bare Hydra compose of the same overrides | ratio |", "|---|---|---|",
                  f"| {fmt(d['launch dry_run'], 2)} | {fmt(d['bare compose'], 2)} | "
                  f"{ratio(paired(dry['launch dry_run'], dry['bare compose'], lambda s: s['seconds']))} |", "",
                  "The dry run composes, validates (every rule, the facts of the machine), plans and prints the "
                  "launch script; the bare compose only imports Hydra and the schema and composes.", ""]
    if "tokenize" in args.parts:
        tok = {tool: [s for s in samples["tokenize"] if s["tool"] == tool] for tool in TOOLS}
        t = {tool: stat([s["rows_per_s"] for s in tok[tool]]) for tool in TOOLS}
        tr = paired(tok["ours"], tok["lf"], lambda s: s["rows_per_s"])
        sec = {tool: stat([s["seconds"] for s in samples["tokenize"] if s["tool"] == tool]) for tool in TOOLS}
        tokens = {tool: next((s["tokens"] for s in samples["tokenize"] if s["tool"] == tool), None) for tool in TOOLS}
        lines += [f"### Tokenization: {args.tok_rows:,} rows, raw json -> tokenized rows (goal: ours >= 1.5x)", "",
                  "| | ours | LLaMA-Factory | ratio ours/LF | goal |", "|---|---|---|---|---|",
                  f"| rows/s | {fmt(t['ours'], 0)} | {fmt(t['lf'], 0)} | {ratio(tr)} | {verdict(tr, '>= 1.5x')} |",
                  f"| seconds | {fmt(sec['ours'], 2)} | {fmt(sec['lf'], 2)} | | |",
                  f"| tokens in the rows | {tokens['ours'] or 0:,} | {tokens['lf'] or 0:,} | | |", "",
                  "Each tool's own pipeline (ours: `launcher.data.pipeline.build`; LLaMA-Factory: "
                  "`llamafactory.data.get_dataset`) in a fresh process with its defaults (workers included), a fresh "
                  "datasets cache, timed around that call only (imports and tokenizer loading excluded: both import the "
                  "datasets library before the timer). Our default for a set this large is 2 tokenizing processes "
                  "(one per 10,000 rows, at most one per core); LLaMA-Factory's is 1 (its "
                  "`preprocessing_num_workers` is unset).", ""]
    if "train" in args.parts:
        lines += ["### Training: command -> first optimizer step, wall, trained tokens/s, peak RSS", "",
                  "| ranks | packing | metric | ours | LLaMA-Factory | ratio ours/LF | goal |",
                  "|---|---|---|---|---|---|---|"]
        train = samples["train"]
        for ranks in args.ranks:
            for packing in (False, True):
                pick = {tool: [s for s in train if s["tool"] == tool and s["ranks"] == ranks
                               and s["packing"] == packing] for tool in TOOLS}
                if not all(pick.values()):
                    continue
                rows = [("command -> first step (s)", "first_step_s", 2, "<= 0.6x"),
                        ("total wall (s)", "wall_s", 2, ""),
                        ("trained tokens/s", "tokens_per_s", 0, ">= 1.0x" if packing else ""),
                        ("peak RSS per rank, max rank (MiB)", "rss", 0, "<= 1.0x"),
                        ("trained tokens (non-pad)", "trained_tokens", 0, "")]
                for label, key, digits, goal in rows:
                    def value(s, key=key):
                        return max(s["peak_rss_mb_per_rank"]) if key == "rss" else s[key]

                    vals = {tool: stat([value(s) for s in pick[tool]]) for tool in TOOLS}
                    r = paired(pick["ours"], pick["lf"], value)
                    lines.append(f"| {ranks} | {'on' if packing else 'off'} | {label} | {fmt(vals['ours'], digits)} | "
                                 f"{fmt(vals['lf'], digits)} | {ratio(r)} | {verdict(r, goal)} |")
            ours_pack = [s for s in train if s["tool"] == "ours" and s["ranks"] == ranks and s["packing"]]
            lf_default = [s for s in train if s["tool"] == "lf" and s["ranks"] == ranks and not s["packing"]]
            if ours_pack and lf_default:
                r = paired(ours_pack, lf_default, lambda s: s["tokens_per_s"])
                lines.append(f"| {ranks} | ours on, LF off | trained tokens/s | "
                             f"{fmt(stat([s['tokens_per_s'] for s in ours_pack]), 0)} | "
                             f"{fmt(stat([s['tokens_per_s'] for s in lf_default]), 0)} | {ratio(r)} | "
                             f"{verdict(r, '>= 1.3x')} |")
        lines += ["", "Trained tokens differ between the tools where the rows do (packing: how the rows are "
                  "filled; each counts its own non-pad tokens), so tokens/s, not time, is the speed to compare.",
                  ""]
    v = meta["versions"]
    lines += ["### Versions", "",
              f"| | launcher's environment | LLaMA-Factory's venv{' (our core libraries)' if same else ''} |",
              "|---|---|---|"]
    for mod in ["llamafactory", "torch", "transformers", "datasets", "peft", "trl", "accelerate", "tokenizers"]:
        lines.append(f"| {mod} | {v['ours'].get(mod, '-')} | {v['llamafactory_venv'].get(mod, '-')} |")
    flag, page = (" --same-libs", "benchmarks-same-libs") if same else ("", "benchmarks")
    venv = (f"`~/.cache/launcher-bench/lf-same` (its own virtualenv as below, but with our versions of "
            f"{', '.join(SAME_LIBS)} pinned by a constraint file and {SAME_LIBS_TRL} in place of its pins of them; "
            "a stand-in `torchaudio` module)" if same else
            f"`~/.cache/launcher-bench/lf-venv` (its own virtualenv: `{torch_pin()}` (ours) pinned by a constraint "
            "file, LLaMA-Factory's other requirements as it states them, torchvision/torchaudio left out and a "
            "stand-in `torchaudio` module, since LLaMA-Factory imports it at module level and no torchaudio wheel "
            "here matches the CPU torch)")
    lines += ["", "### Reproduce", "", "```",
              f"python scripts/bench_vs_llamafactory.py{flag}    # all of the above (--quick: 1 small repeat)",
              f"python scripts/bench_vs_llamafactory.py{flag} --from-json docs/{page}.json   # this page again, "
              "no runs",
              "```", "",
              f"This run took {meta.get('wall_min', '?')} min of wall time.", "",
              f"It installs LLaMA-Factory {LF_VERSION} once into {venv}, builds the model "
              "(`scripts/make_tiny_model.py ... --vocab 4000 --hidden 256 --intermediate 688 --layers 4 --heads 4 "
              "--kv-heads 4`, tokenizer trained on the generated rows) and the data (seeded), runs every case, and "
              f"writes this section and `docs/{page}.json` (every sample). The peak RSS is each rank process's "
              "VmHWM polled every 0.2 s (LLaMA-Factory's 1-process run trains in the `llamafactory-cli` process "
              "itself; ours in the worker the `launch` process starts; ours' 1-process samples also list the data "
              "process that rank forks to tokenize while it loads, copy-on-write and gone before training). 2 ranks: "
              "ours `launch ... gpus=2` (torchrun, "
              "gloo); LLaMA-Factory `FORCE_TORCHRUN=1 NPROC_PER_NODE=2 llamafactory-cli train`.", ""]
    return "\n".join(lines)


def write_report(result: dict, args) -> None:
    section = render(result, args)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    gpu_marker = "\n## GPU"
    keep = ""
    if out.is_file() and gpu_marker in out.read_text():  # gpu_check.sh owns the GPU section: keep it
        keep = out.read_text()[out.read_text().index(gpu_marker):]
    elif out == ROOT / "docs/benchmarks.md":
        keep = GPU_PENDING
    out.write_text(section + keep.rstrip("\n") + "\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {out} and {out.with_suffix('.json')}")


GPU_PENDING = textwrap.dedent("""
    ## GPU

    Pending: no GPU was available to this work. `scripts/gpu_check.sh` (see its header; it installs from a
    wheelhouse made by `scripts/wheelhouse.sh`) runs the GPU checks in under 8 minutes on one GPU and replaces this
    section with its figures, the date and the device.
    """)


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.from_json:
        result = json.loads(args.from_json.read_text())
        args.same_libs = False  # runs from before --same-libs have no such setting
        for key, value in result["meta"]["settings"].items():  # the sizes (and mode) that run had
            setattr(args, key, value)
        args.out = args.out if args.out_given else default_out(args)
        args.parts = [part for part in ("dryrun", "tokenize", "train") if result["samples"][part]]
        if args.note:
            result["meta"]["load_note"] = (result["meta"]["load_note"] + " " + args.note).strip()
        write_report(result, args)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    load_before = load()
    lf_python = ensure_lf_venv(args.lf_venv, args.same_libs) if {"tokenize", "train"} & set(args.parts) else None
    inputs = build_inputs(args)
    params = param_count(inputs["model"])
    samples: dict[str, list] = {"dryrun": [], "tokenize": [], "train": []}
    started = {"load_before": load_before, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "clock": time.monotonic()}
    if "dryrun" in args.parts:  # unrecorded: the first start after a change compiles .pyc files
        for kind in ("launch dry_run", "bare compose"):
            dryrun_sample(kind, inputs, args, -1)
    for n in range(args.repeats):
        for part, tool, ranks, packing in plan_round(args, n):
            if args.stop_by and datetime.now(timezone.utc) > args.stop_by:
                print(f"--stop-by {args.stop_by:%H:%M} UTC passed: no new samples", flush=True)
                write_report(result_of(samples, started, inputs, params, lf_python, args, argv, stopped=True), args)
                return
            if part == "dryrun":
                sample = dryrun_sample(tool, inputs, args, n)
            elif part == "tokenize":
                sample = tokenize_sample(tool, inputs, args, lf_python, n)
            else:
                sample = train_sample(tool, ranks, packing, inputs, args, lf_python, n)
            samples[part].append(sample)
            print(json.dumps(sample), flush=True)
        # after every round: a report even if a later round is cut short
        write_report(result_of(samples, started, inputs, params, lf_python, args, argv), args)


def plan_round(args: argparse.Namespace, n: int) -> list[tuple]:
    """One round of samples, the tools alternating who goes first from round to round."""
    tools = TOOLS if n % 2 == 0 else TOOLS[::-1]
    order = []
    if "dryrun" in args.parts:
        order += [("dryrun", kind, None, None) for kind in ("launch dry_run", "bare compose")]
    if "tokenize" in args.parts:
        order += [("tokenize", tool, None, None) for tool in tools]
    if "train" in args.parts:
        order += [("train", tool, ranks, packing)
                  for ranks in args.ranks for packing in (False, True) for tool in tools]
    return order


def result_of(samples: dict, started: dict, inputs: dict, params, lf_python, args, argv, stopped: bool = False):
    meta = {"date": started["date"], "cpu": cpu_model(), "cores": os.cpu_count(), "load_before": started["load_before"],
            "load_after": load(), "load_note": args.note + (" Cut short by --stop-by: fewer samples than asked for "
                                                           "(see n in docs/benchmarks.json)." if stopped else ""),
            "params": params, "model": inputs["model_config"], "versions": versions(lf_python),
            "wall_min": round((time.monotonic() - started["clock"]) / 60, 1),
            "settings": {k: getattr(args, k)
                         for k in ("quick", "repeats", "rows", "tok_rows", "steps", "ranks", "same_libs")},
            "command": " ".join(["python scripts/bench_vs_llamafactory.py",
                                 *(argv if argv is not None else sys.argv[1:])])}
    return {"meta": meta, "samples": samples}


if __name__ == "__main__":
    main()

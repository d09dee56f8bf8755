"""Facts about the machine and the files a config names: the only I/O before validate and plan.

gather_facts() reads; validate() and build_plan() are pure functions of (config, Facts), so they are
tested with hand-made Facts and never start a process. No torch import: a dry run on a login node
stays fast.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from launcher.data.templates import special_markers
from launcher.data.registry import DataError, PathInfo, dataset_names, local_paths, probe_path, read_registry
from launcher.checkpoints import all_checkpoints, is_complete, last_complete_checkpoint
from launcher.rundir import RunDir, find_run_root
from launcher.runlock import process_start, read_raw
from launcher.schema import split_list
from launcher.envinfo import package_version
from launcher.meta_model import ModuleFacts, module_facts
from launcher.modules import configured_names

#: rows of a data file whose keys are kept for validation (bounded so huge files validate quickly)
SCANNED_ROWS = 10_000
#: packages whose presence or version validate checks (read from metadata: nothing is imported)
CHECKED_PACKAGES = ("transformers", "peft", "bitsandbytes", "flash-attn")
#: keys of a local model's config.json that validate uses
MODEL_CONFIG_KEYS = ("model_type", "num_hidden_layers", "hidden_size", "max_position_embeddings")


@dataclass(frozen=True)
class GpuFacts:
    name: str
    #: CUDA compute capability, e.g. 8.0 (A100), 7.0 (V100)
    compute_capability: float


@dataclass(frozen=True)
class DataFileFacts:
    exists: bool
    #: a parse error naming the file and line, or None
    error: Optional[str] = None
    rows: int = 0
    #: the first SCANNED_ROWS rows as parsed: validate converts them with the worker's own code
    sample: tuple = ()


@dataclass(frozen=True)
class DataFacts:
    """What data.dataset refers to: the registry of data.dataset_dir, the paths named, their files."""
    #: dataset_info.json of data.dataset_dir, parsed; None when absent
    registry: Optional[Mapping] = None
    #: why dataset_info.json could not be read (file, line), or None
    registry_error: Optional[str] = None
    paths: Mapping[str, PathInfo] = field(default_factory=dict)
    files: Mapping[str, DataFileFacts] = field(default_factory=dict)


@dataclass(frozen=True)
class LockFacts:
    """RUN_DIR/launch.lock and whether its holder is alive (judged by launcher.validate.lock)."""
    #: the lock's exact content (what a stale-lock takeover compares); None: no lock
    raw: Optional[str] = None
    #: the parsed lock {pid, host, pid_start, time, slurm_job}; None when absent or unreadable
    holder: Optional[Mapping[str, Any]] = None
    #: the holder's pid runs on this host (with the recorded start time); None: not checked (another host)
    pid_alive: Optional[bool] = None
    #: the holder's Slurm job state from scontrol (RUNNING, PENDING, COMPLETED, ...); "" = unknown to Slurm;
    #: None = not asked, or Slurm could not be asked (slurm_error says why)
    slurm_state: Optional[str] = None
    slurm_error: Optional[str] = None


@dataclass(frozen=True)
class RunDirFacts:
    exists: bool = False
    finished: bool = False  # holds summary.json
    #: any checkpoint-N directory, complete or not
    has_checkpoints: bool = False
    #: the newest complete checkpoint (launcher.checkpoints), what a resume continues from
    last_checkpoint: Optional[str] = None
    #: checkpoint-N directories without their completion marker (cut off mid-save)
    incomplete_checkpoints: tuple[str, ...] = ()
    #: last_checkpoint holds ZeRO shards (global_step*/): they load only into the same world size
    zero_shards: bool = False
    #: the run's config.yaml (the current attempt's); None when absent
    config: Optional[Mapping[str, Any]] = None
    #: the number the next attempts/N/ gets
    next_attempt: int = 0
    lock: LockFacts = field(default_factory=LockFacts)


@dataclass(frozen=True)
class JsonFileFacts:
    exists: bool
    #: a parse error naming the file and line, or None
    error: Optional[str] = None
    content: Any = None


@dataclass(frozen=True)
class HostfileFacts:
    exists: bool
    error: Optional[str] = None
    #: (host, slots) in file order, as DeepSpeed's runner reads them
    hosts: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class ModelSize:
    total_params: int
    #: parameters of the largest single module (DeepSpeed's largest_layer_params)
    largest_layer_params: int


@dataclass(frozen=True)
class RunRefFacts:
    """An earlier run named by a later stage (adapter_name_or_path=RUN_DIR/final, reward_model=RUN_DIR, ...):
    what its config.yaml says. run_dir None: the path is not in a run dir (a plain model or adapter dir)."""
    exists: bool = False
    run_dir: Optional[str] = None
    stage: Optional[str] = None
    adapter: Optional[str] = None
    #: its model.model_name_or_path (resolved, as written in its config.yaml)
    base_model: Optional[str] = None
    #: its final/ is there (the run finished)
    has_final: bool = False
    #: its summary.json records the reward's statistics (an rm run; what ppo_score_norm standardises with)
    reward_stats: bool = False


@dataclass(frozen=True)
class ModelDirFacts:
    """What a local model directory holds: the files from_pretrained needs."""
    config: bool = False
    #: tokenizer files found (tokenizer.json, tokenizer.model, vocab files, ...)
    tokenizer: tuple[str, ...] = ()
    #: weight files found (*.safetensors, *.bin, or their index)
    weights: tuple[str, ...] = ()
    #: shards a weight index names that are not there
    missing_shards: tuple[str, ...] = ()
    #: the model's own code files its config.json auto_map names (e.g. modeling_chatglm.py; trust_remote_code)
    remote_code: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvalTaskFacts:
    """stage=eval: what eval.task_dir defines (lm-eval's own index of its yamls) and what the requested tasks need."""
    task_dir_exists: bool = False
    #: task, group and tag names the yamls in task_dir define
    local: tuple[str, ...] = ()
    #: requested names not in task_dir -> whether lm-eval's own tasks have them (looked up only then: ~10 s)
    harness: Mapping[str, bool] = field(default_factory=dict)
    #: local task -> its data files (split -> path) that are not there
    missing_files: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Facts:
    python: str = sys.executable
    hostname: str = "localhost"
    cpu_count: int = 1
    visible_gpus: int = 0
    #: local paths named by the config -> exists
    paths: Mapping[str, bool] = field(default_factory=dict)
    data: DataFacts = field(default_factory=DataFacts)
    output_dir: RunDirFacts = field(default_factory=RunDirFacts)
    #: path of sbatch, when this host can submit Slurm jobs
    sbatch: Optional[str] = None
    #: the visible GPUs, from nvidia-smi; empty when unknown (no nvidia-smi, e.g. a login node)
    gpus: tuple[GpuFacts, ...] = ()
    #: installed version of each of CHECKED_PACKAGES, None when not installed
    packages: Mapping[str, Optional[str]] = field(default_factory=dict)
    #: a local model's config.json (MODEL_CONFIG_KEYS); empty for a hub id
    model_config: Mapping[str, Any] = field(default_factory=dict)
    #: adapter_name_or_path entries -> peft_type of their adapter_config.json (None: no adapter there)
    adapters: Mapping[str, Optional[str]] = field(default_factory=dict)
    #: DeepSpeed JSON configs named by the config (zero.config)
    ds_configs: Mapping[str, JsonFileFacts] = field(default_factory=dict)
    hostfile: Optional[HostfileFacts] = None
    #: counted from a local model's safetensors headers (no weights read), or None
    model_size: Optional[ModelSize] = None
    #: this host's memory (/proc/meminfo MemTotal), bytes; 0 = unknown
    host_memory_total: int = 0
    #: a TCP port free on this host now (the rendezvous port of a one-node deepspeed launch)
    free_port: int = 29500
    deepspeed_version: Optional[str] = None
    #: a C++ compiler and ninja: DeepSpeed can JIT-build its CPU ops (DeepSpeedCPUAdam)
    cxx_toolchain: bool = False
    #: CUDA_VISIBLE_DEVICES as set when launching, or None
    cuda_visible_devices: Optional[str] = None
    #: paths naming earlier runs (adapter_name_or_path entries, stage.reward_model, stage.ref_model) -> their facts
    runs: Mapping[str, RunRefFacts] = field(default_factory=dict)
    #: the files of a local model directory; None for a hub id or a missing directory
    model_dir: Optional[ModelDirFacts] = None
    #: a local model's modules, built from config.json on the meta device; None when the config names none
    model_modules: Optional[ModuleFacts] = None
    #: data.template's special-token markers -> whether a local model's tokenizer.json holds each
    template_tokens: Mapping[str, bool] = field(default_factory=dict)
    #: logger=wandb with wandb_mode=online: a WANDB_API_KEY or a netrc entry for the wandb host exists
    #: (None: not needed); the value itself is never read into the facts
    wandb_credentials: Optional[bool] = None
    #: the directory `launch` runs in (launch.sh cds there); "" = unknown
    cwd: str = ""
    #: stage=eval's tasks; None for the other stages
    eval_tasks: Optional[EvalTaskFacts] = None


def is_local_path(name: str) -> bool:
    """A model name is a local path when it looks like one (absolute, ./, ../, ~) or exists; else a hub id."""
    return name.startswith(("/", "./", "../", "~")) or Path(name).exists()


def count_visible_gpus(env: Mapping[str, str]) -> int:
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def parse_gpu_query(out: str, visible: Optional[str] = None) -> tuple[GpuFacts, ...]:
    """`nvidia-smi --query-gpu=index,name,compute_cap --format=csv,noheader` -> the GPUs CUDA_VISIBLE_DEVICES
    selects (by index; UUIDs or no selection: all)."""
    gpus = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            try:
                gpus[parts[0]] = GpuFacts(parts[1], float(parts[2]))
            except ValueError:
                continue
    chosen = [d.strip() for d in (visible or "").split(",") if d.strip()]
    if visible is not None and chosen and all(d.isdigit() for d in chosen):
        return tuple(gpus[d] for d in chosen if d in gpus)
    return tuple(gpus.values())


def query_gpus(env: Mapping[str, str]) -> tuple[GpuFacts, ...]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return ()
    try:
        out = subprocess.run([smi, "--query-gpu=index,name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return parse_gpu_query(out, env.get("CUDA_VISIBLE_DEVICES"))


def package_versions(names: tuple[str, ...] = CHECKED_PACKAGES) -> dict[str, Optional[str]]:
    return {name: package_version(name) for name in names}


def read_model_config(path: str) -> dict[str, Any]:
    p = Path(path).expanduser() / "config.json"
    try:
        config = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    # multimodal configs keep the language model's numbers in text_config
    text = config.get("text_config") or {}
    return {k: config.get(k, text.get(k)) for k in MODEL_CONFIG_KEYS if k in config or k in text}


#: files that make a tokenizer: fast (tokenizer.json), sentencepiece, BPE/WordPiece vocabularies, tiktoken
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json",
                   "vocab.txt", "merges.txt")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def scan_model_dir(path: str) -> ModelDirFacts:
    d = Path(path).expanduser()
    names = sorted(p.name for p in d.iterdir()) if d.is_dir() else []
    tokenizer = tuple(n for n in names if n in TOKENIZER_FILES or n.endswith(".tiktoken"))
    weights = tuple(n for n in names if n.endswith((".safetensors", ".bin")) or n in WEIGHT_INDEXES)
    missing: list[str] = []
    for index in (n for n in WEIGHT_INDEXES if n in names):
        try:
            shards = set(json.loads((d / index).read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        missing += sorted(s for s in shards if s not in names)
    return ModelDirFacts(config="config.json" in names, tokenizer=tokenizer, weights=weights,
                         missing_shards=tuple(missing), remote_code=remote_code_files(d))


def remote_code_files(model_dir: Path) -> tuple[str, ...]:
    """The .py files config.json's auto_map names ("modeling_chatglm.ChatGLMForConditionalGeneration" ->
    modeling_chatglm.py; a "repo--module.Class" entry names another repo's file)."""
    try:
        auto_map = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("auto_map") or {}
    except (OSError, ValueError, AttributeError):
        return ()
    refs = [r for v in auto_map.values() for r in (v if isinstance(v, list) else [v]) if isinstance(r, str)]
    return tuple(sorted({r.split("--")[-1].rpartition(".")[0] + ".py" for r in refs if "." in r}))


def tokenizer_holds(model_dir: str, tokens: list[str]) -> dict[str, bool]:
    """Which of tokens a local tokenizer.json has as single tokens (added tokens or vocabulary); {} when the
    directory has no tokenizer.json (a sentencepiece-only tokenizer is not read here)."""
    if not tokens:
        return {}
    try:
        data = json.loads((Path(model_dir).expanduser() / "tokenizer.json").read_text(encoding="utf-8"))
        vocab = data.get("model", {}).get("vocab") or {}
        known = {a.get("content") for a in data.get("added_tokens") or []}
        known |= set(vocab) if isinstance(vocab, dict) else {v[0] for v in vocab if isinstance(v, list) and v}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}
    return {t: t in known for t in tokens}


def has_wandb_credentials(env: Mapping[str, str], netrc_path: Optional[str] = None) -> bool:
    """WANDB_API_KEY set, or a netrc entry (`wandb login` writes one) for the wandb host; the value is not kept."""
    if env.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse

    host = urlparse(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = netrc_path or env.get("NETRC") or str(Path(env.get("HOME") or Path.home()) / ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def read_adapter_type(path: str) -> Optional[str]:
    try:
        return json.loads((Path(path).expanduser() / "adapter_config.json").read_text(encoding="utf-8"))["peft_type"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def scan_data_file(path: str) -> DataFileFacts:
    p = Path(path).expanduser()
    if not p.is_file():
        return DataFileFacts(exists=False)
    try:
        if p.suffix == ".parquet":
            return _scan_parquet(p)
        if p.suffix == ".csv":
            return _scan_csv(p)
        rows: list[Any] = []
        if p.suffix == ".jsonl":
            with p.open(encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            return DataFileFacts(True, f"{p}: line {lineno}: invalid JSON ({e.msg})")
        else:
            parsed = read_json_file(path)
            if parsed.error:
                return DataFileFacts(True, parsed.error)
            rows = parsed.content
            if not isinstance(rows, list):
                return DataFileFacts(True, f"{p}: expected a JSON list of rows, got {type(rows).__name__}")
    except (OSError, UnicodeDecodeError) as e:
        return DataFileFacts(True, f"{p}: cannot read ({e})")
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        return DataFileFacts(True, f"{p}: row {bad} is {type(rows[bad]).__name__}, not an object of columns")
    return DataFileFacts(exists=True, rows=len(rows), sample=tuple(rows[:SCANNED_ROWS]))


def _scan_parquet(p: Path) -> DataFileFacts:
    import pyarrow.parquet as pq  # not torch: a dry run stays light

    try:
        f = pq.ParquetFile(p)
        head = next(f.iter_batches(batch_size=SCANNED_ROWS), None)
    except Exception as e:  # pyarrow raises several types for a broken file
        return DataFileFacts(True, f"{p}: not a readable parquet file ({e})")
    return DataFileFacts(True, rows=f.metadata.num_rows, sample=tuple(head.to_pylist() if head is not None else ()))


def _scan_csv(p: Path) -> DataFileFacts:
    import csv

    with p.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        sample, rows = [], 0
        for row in reader:
            rows += 1
            if rows <= SCANNED_ROWS:
                sample.append(row)
    return DataFileFacts(True, rows=rows, sample=tuple(sample))


def gather_data_facts(d: Any) -> DataFacts:
    """Facts of the data config `d`: data.dataset's and data.eval_dataset's names (resolved and scanned alike)."""
    dataset_dir = d.dataset_dir
    names = dataset_names(d.dataset) + (dataset_names(d.eval_dataset) if d.eval_dataset else [])
    registry, error = None, None
    try:
        registry = read_registry(dataset_dir)
    except DataError as e:
        error = str(e)
    paths = {p: probe_path(p) for p in local_paths(names, registry, dataset_dir)}
    files = {f: scan_data_file(f) for info in paths.values() for f in info.files}
    return DataFacts(registry=registry, registry_error=error, paths=paths, files=files)


def pid_alive(pid: int, start: Optional[int]) -> bool:
    """pid runs on this host and, when its start time was recorded, is the same process (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    return start is None or process_start(pid) in (start, None)


def slurm_job_state(job_id: str) -> tuple[Optional[str], Optional[str]]:
    """(state, error) of a Slurm job from scontrol: state "" when Slurm does not know the job (it ended long
    ago, or never existed), None with an error when Slurm could not be asked."""
    from launcher.backends.slurm import SlurmError, job_states

    try:
        states = job_states(job_id)
    except FileNotFoundError:
        return None, "scontrol is not installed here"
    except SlurmError as e:
        return ("", None) if "invalid job id" in str(e).lower() else (None, str(e))
    mine = [s for s in states if s.job_id == job_id] or states
    return (mine[0].state if mine else ""), None


def read_lock(lock: Path, hostname: str) -> LockFacts:
    raw = read_raw(lock)
    if raw is None:
        return LockFacts()
    try:
        holder = json.loads(raw)
    except ValueError:
        holder = None
    if not isinstance(holder, dict):
        return LockFacts(raw=raw)
    if holder.get("slurm_job"):
        state, error = slurm_job_state(str(holder["slurm_job"]))
        return LockFacts(raw=raw, holder=holder, slurm_state=state, slurm_error=error)
    alive = pid_alive(int(holder["pid"]), holder.get("pid_start")) \
        if holder.get("host") == hostname and isinstance(holder.get("pid"), int) else None
    return LockFacts(raw=raw, holder=holder, pid_alive=alive)


def read_config(path: Path) -> Optional[Mapping[str, Any]]:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def scan_run_dir(path: Optional[str], hostname: str = "") -> RunDirFacts:
    if not path:
        return RunDirFacts()
    run = RunDir(Path(path).expanduser())
    last = last_complete_checkpoint(run.checkpoints)
    attempts = [int(d.name) for d in run.attempts.glob("*") if d.name.isdigit()] if run.attempts.is_dir() else []
    return RunDirFacts(
        exists=run.root.exists(),
        finished=run.summary.is_file(),
        has_checkpoints=bool(all_checkpoints(run.checkpoints)),
        last_checkpoint=str(last) if last else None,
        incomplete_checkpoints=tuple(p.name for p in all_checkpoints(run.checkpoints) if not is_complete(p)),
        zero_shards=bool(last and any(p.is_dir() for p in last.glob("global_step*"))),
        config=read_config(run.config),
        next_attempt=max(attempts, default=-1) + 1,
        lock=read_lock(run.lock, hostname),
    )


def read_json_file(path: str) -> JsonFileFacts:
    p = Path(path).expanduser()
    if not p.is_file():
        return JsonFileFacts(exists=False)
    try:
        return JsonFileFacts(exists=True, content=json.loads(p.read_text(encoding="utf-8")))
    except json.JSONDecodeError as e:
        return JsonFileFacts(True, f"{p}: line {e.lineno} column {e.colno}: invalid JSON ({e.msg})")
    except (OSError, UnicodeDecodeError) as e:
        return JsonFileFacts(True, f"{p}: cannot read ({e})")


def read_hostfile(path: str) -> HostfileFacts:
    """A DeepSpeed hostfile, parsed by the rules of deepspeed.launcher.runner (`HOST slots=N`, # comments)."""
    p = Path(path).expanduser()
    if not p.is_file():
        return HostfileFacts(exists=False)
    hosts: dict[str, int] = {}
    for lineno, line in enumerate(p.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(\S+)\s+slots=(\d+)", line)
        if not m:
            return HostfileFacts(True, f"{p}: line {lineno}: expected `HOST slots=N`, got {line!r}")
        if m.group(1) in hosts:
            return HostfileFacts(True, f"{p}: line {lineno}: host {m.group(1)} is listed twice")
        hosts[m.group(1)] = int(m.group(2))
    if not hosts:
        return HostfileFacts(True, f"{p}: no `HOST slots=N` line")
    return HostfileFacts(exists=True, hosts=tuple(hosts.items()))


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    # The format's header: 8 bytes little-endian length, then JSON {name: {dtype, shape, data_offsets}}.
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def count_model_params(model_dir: str) -> Optional[ModelSize]:
    """Total parameters and the largest module's (as DeepSpeed's model_to_params counts them), from the
    safetensors headers of a local model: exact for any architecture, and no weight is read."""
    d = Path(model_dir).expanduser()
    index = d / "model.safetensors.index.json"
    try:
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        elif (d / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            return None
        shapes: dict[str, list[int]] = {}
        for name in files:
            shapes |= _safetensors_shapes(d / name)
    except (OSError, ValueError, KeyError, struct.error):
        return None
    per_module: dict[str, int] = {}
    for name, shape in shapes.items():
        numel = 1
        for n in shape:
            numel *= n
        module = name.rpartition(".")[0]
        per_module[module] = per_module.get(module, 0) + numel
    return ModelSize(sum(per_module.values()), max(per_module.values(), default=0))


def read_mem_total(path: str = "/proc/meminfo") -> int:
    """MemTotal in bytes; 0 where /proc/meminfo is missing or unreadable."""
    try:
        for line in Path(path).read_text().splitlines():
            key, _, rest = line.partition(":")
            if key == "MemTotal":
                return int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def find_free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def scan_run_ref(path: str) -> RunRefFacts:
    """A run dir (holding config.yaml) or a directory inside one (RUN_DIR/final, a checkpoint)."""
    if not Path(path).expanduser().exists():
        return RunRefFacts()
    run = find_run_root(path)
    if run is None:
        return RunRefFacts(exists=True)
    config = read_config(RunDir(run).config) or {}
    try:
        summary = json.loads(RunDir(run).summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    section = lambda key: config.get(key) if isinstance(config.get(key), dict) else {}  # noqa: E731
    return RunRefFacts(exists=True, run_dir=str(run), stage=section("stage").get("name"),
                       adapter=section("adapter").get("name"), base_model=section("model").get("model_name_or_path"),
                       has_final=RunDir(run).final.is_dir(),
                       reward_stats=isinstance(summary, dict) and "reward_std" in summary)


def run_refs(cfg: Any) -> list[str]:
    """The paths a config names that may be earlier runs."""
    s = cfg.stage
    return [*split_list(cfg.adapter.adapter_name_or_path),
            *(p for p in (s.reward_model, s.ref_model) if p and is_local_path(str(p)))]


def gather_facts(cfg: Any, env: Optional[Mapping[str, str]] = None) -> Facts:
    env = os.environ if env is None else env
    model = str(cfg.model.model_name_or_path)
    local_model = is_local_path(model)
    paths = {model: Path(model).expanduser().exists()} if local_model else {}
    zero = cfg.zero.name != "none"
    hostname = socket.gethostname()
    model_dir = scan_model_dir(model) if paths.get(model) else None
    return Facts(
        python=sys.executable,
        hostname=hostname,
        cpu_count=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        visible_gpus=count_visible_gpus(env) if cfg.device == "cuda" else 0,
        paths=paths,
        data=gather_data_facts(cfg.data),
        output_dir=scan_run_dir(cfg.output_dir, hostname),
        sbatch=shutil.which("sbatch") if cfg.cluster.name == "slurm" else None,
        gpus=query_gpus(env) if cfg.device == "cuda" else (),
        packages=package_versions(),
        model_config=read_model_config(model) if paths.get(model) else {},
        adapters={p: read_adapter_type(p) for p in split_list(cfg.adapter.adapter_name_or_path)},
        ds_configs={cfg.zero.config: read_json_file(cfg.zero.config)} if cfg.zero.config else {},
        hostfile=read_hostfile(cfg.hostfile) if cfg.hostfile else None,
        model_size=count_model_params(model) if zero and local_model else None,
        host_memory_total=read_mem_total(),
        free_port=find_free_port(),
        deepspeed_version=package_version("deepspeed") if zero else None,
        cxx_toolchain=has_cxx_toolchain(),
        cuda_visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
        runs={p: scan_run_ref(str(p)) for p in run_refs(cfg)},
        model_dir=model_dir,
        model_modules=module_facts(model, trust_remote_code=bool(cfg.model.trust_remote_code),
                                   sequence_classifier=str(getattr(cfg.stage.name, "value", cfg.stage.name)) == "rm",
                                   transformers_version=package_version("transformers"))
        if model_dir and model_dir.config and configured_names(cfg.adapter) else None,
        template_tokens=tokenizer_holds(model, special_markers(str(cfg.data.template))) if model_dir else {},
        cwd=os.getcwd(),
        wandb_credentials=has_wandb_credentials(env) if "wandb" in cfg.logger.report_to
        and cfg.logger.wandb_mode == "online" else None,
        eval_tasks=scan_eval_tasks(cfg.eval.task_dir, split_list(cfg.eval.task))
        if str(getattr(cfg.stage.name, "value", cfg.stage.name)) == "eval" else None,
    )


def scan_eval_tasks(task_dir: str, wanted: list[str]) -> EvalTaskFacts:
    """Index eval.task_dir with lm-eval's own indexer (yaml only: no torch, no dataset read)."""
    from launcher.benchmark import data_files

    root = Path(task_dir).expanduser()
    if not root.is_dir():
        return EvalTaskFacts()
    from lm_eval.tasks._index import Kind, TaskIndex

    index = TaskIndex.build([root])
    missing = {}
    for name, entry in index.items():
        if entry.kind == Kind.TASK and entry.yaml_path is not None:
            absent = {k: p for k, p in data_files(entry.cfg or {}, Path(entry.yaml_path).parent).items()
                      if not Path(p).exists()}
            if absent:
                missing[name] = absent
    elsewhere = [w for w in wanted if w not in index]
    harness: dict[str, bool] = {}
    if elsewhere:
        import lm_eval.tasks

        known = TaskIndex.build([Path(lm_eval.tasks.__file__).parent])
        harness = {w: w in known for w in elsewhere}
    return EvalTaskFacts(task_dir_exists=True, local=tuple(sorted(index)), harness=harness, missing_files=missing)


def node_facts(cfg: Any, ds_config_path: Optional[str] = None) -> Facts:
    """On the node a rank runs on (the worker, before the model loads): the facts launcher.validate.node judges.
    ds_config_path: the ds config the worker hands the Trainer (the run dir's), read as cfg.zero.config."""
    model = str(cfg.model.model_name_or_path)
    zero = cfg.zero.name != "none"
    return Facts(
        hostname=socket.gethostname(),
        packages=package_versions(),
        host_memory_total=read_mem_total(),
        cxx_toolchain=has_cxx_toolchain(),
        ds_configs={cfg.zero.config: read_json_file(ds_config_path or cfg.zero.config)}
        if zero and cfg.zero.config else {},
        model_size=count_model_params(model) if zero and is_local_path(model) else None,
    )


def has_cxx_toolchain() -> bool:
    """A C++ compiler and ninja on PATH: what DeepSpeed's JIT op builds need."""
    return bool((shutil.which("c++") or shutil.which("g++")) and shutil.which("ninja"))

"""Which datasets a config names: LLaMA-Factory's dataset_info.json registry, local files and directories,
and datasets-library datasets, resolved to DatasetAttr (where the rows are and how their columns map).

The resolution is pure (registry dict and path facts in, DatasetAttr out) so validate() runs it without
I/O; read_registry() and probe_path() are the I/O, called by gather_facts() and by the worker.
No torch, transformers or datasets import.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

REGISTRY_FILE = "dataset_info.json"
#: data files a local dataset may consist of, and the datasets-library builder for each
DATA_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
FORMATTINGS = ("alpaca", "sharegpt")
#: LLaMA-Factory's column roles and their defaults (alpaca reads system and history when present)
COLUMN_DEFAULTS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
               "history": "history"},
    "sharegpt": {"messages": "conversations", "system": "system"},
}
COLUMN_ROLES = ("prompt", "query", "response", "history", "messages", "system", "chosen", "rejected", "kto_tag")
TAG_DEFAULTS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
#: the same tags for OpenAI-style messages (role/content)
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system"}
ENTRY_KEYS = ("file_name", "hf_hub_url", "formatting", "ranking", "columns", "tags", "subset", "split")
#: LLaMA-Factory keys this launcher does not handle: refused with a clear message, never ignored
UNSUPPORTED_KEYS = ("ms_hub_url", "om_hub_url", "script_url", "cloud_file_name", "num_samples", "folder")
UNSUPPORTED_COLUMNS = ("tools", "images", "videos", "audios")


class DataError(ValueError):
    """A dataset that cannot be used as configured (a user mistake: exit 2)."""


@dataclass(frozen=True)
class PathInfo:
    """What is at a local path: a data file, a directory of data files, a `save_to_disk` dataset, or nothing."""
    kind: str  # file | dir | disk | missing
    #: the data files (a file: itself; a directory: its data files, sorted)
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetAttr:
    name: str
    #: file: local data file(s), read by the datasets library's json/parquet/csv builder
    #: disk: a `Dataset.save_to_disk` directory;  hub: `datasets.load_dataset(path)` (hub id or local script/dir)
    source: str
    path: str
    #: alpaca | sharegpt | auto (a path given directly: decided from its first row, see detect())
    formatting: str = "auto"
    ranking: bool = False
    columns: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    subset: Optional[str] = None
    split: str = "train"
    files: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """conversation (sft/pt rows) | pairwise (chosen/rejected) | kto (completion + label)."""
        if self.ranking:
            return "pairwise"
        return "kto" if "kto_tag" in self.columns else "conversation"

    def record(self) -> dict[str, Any]:
        """A JSON-able description (run dir, cache key)."""
        return {"name": self.name, "source": self.source, "path": self.path, "formatting": self.formatting,
                "ranking": self.ranking, "columns": dict(self.columns), "tags": dict(self.tags),
                "subset": self.subset, "split": self.split, "files": list(self.files)}


def dataset_names(value: Any) -> list[str]:
    """`data.dataset` as a list: a comma string ('a,b') or a list ([a,b])."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, Sequence) or hasattr(value, "__iter__"):
        items = [str(v) for v in value]
    else:
        items = [str(value)]
    return [s.strip() for s in items if s and s.strip()]


def split_floats(value: Any) -> list[float]:
    """`data.interleave_probs` as floats: a comma string or a list. Raises ValueError on a non-number."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [float(v) for v in items if str(v).strip()]


def looks_like_path(name: str) -> bool:
    return "/" in name or name.startswith(("~", ".")) or Path(name).suffix in DATA_SUFFIXES


def registry_path(dataset_dir: str) -> str:
    return str(Path(dataset_dir).expanduser() / REGISTRY_FILE)


def local_paths(names: Sequence[str], registry: Optional[Mapping], dataset_dir: str) -> list[str]:
    """The local paths the names may refer to (what gather_facts must look at)."""
    out = []
    for name in names:
        entry = (registry or {}).get(name)
        if isinstance(entry, Mapping) and entry.get("file_name"):
            out.append(str(Path(dataset_dir).expanduser() / str(entry["file_name"])))
        elif isinstance(entry, Mapping) and entry.get("hf_hub_url") and looks_like_path(str(entry["hf_hub_url"])):
            out.append(str(Path(str(entry["hf_hub_url"])).expanduser()))
        elif entry is None:
            out.append(str(Path(name).expanduser()))
    return out


def resolve(name: str, registry: Optional[Mapping], dataset_dir: str, paths: Mapping[str, PathInfo]) -> DatasetAttr:
    """One dataset name -> DatasetAttr. Pure: `paths` holds probe_path() of every local_paths() entry."""
    entry = (registry or {}).get(name)
    if entry is None:
        path = str(Path(name).expanduser())
        info = paths.get(path, PathInfo("missing"))
        if info.kind == "missing":
            if looks_like_path(name):
                raise DataError(f"no such file or directory; give a .json, .jsonl, .parquet or .csv file, a "
                                f"directory of them, or a name from {registry_path(dataset_dir)}")
            known = ", ".join(sorted(registry or {})) or "none"
            raise DataError(f"unknown dataset name; known in {registry_path(dataset_dir)}: {known} "
                            f"(or give a path to a data file or directory)")
        return _local_attr(name, path, info, "auto", {}, {})
    if not isinstance(entry, Mapping):
        raise DataError(f"{registry_path(dataset_dir)}: entry {name!r} must be an object, got {type(entry).__name__}")
    _check_entry(name, entry, dataset_dir)
    formatting = str(entry.get("formatting", "alpaca"))
    columns = {**COLUMN_DEFAULTS[formatting], **dict(entry.get("columns") or {})}
    tags = {**TAG_DEFAULTS, **dict(entry.get("tags") or {})} if formatting == "sharegpt" else {}
    common = dict(ranking=bool(entry.get("ranking", False)), subset=entry.get("subset"),
                  split=str(entry.get("split", "train")))
    if entry.get("file_name"):
        path = str(Path(dataset_dir).expanduser() / str(entry["file_name"]))
        info = paths.get(path, PathInfo("missing"))
        if info.kind == "missing":
            raise DataError(f"file_name {entry['file_name']!r} of {registry_path(dataset_dir)} is not in "
                            f"{dataset_dir}; fix file_name or data.dataset_dir")
        return replace(_local_attr(name, path, info, formatting, columns, tags), **common)
    hub = str(entry["hf_hub_url"])
    info = paths.get(str(Path(hub).expanduser()), PathInfo("missing"))
    source = "disk" if info.kind == "disk" else "hub"
    return DatasetAttr(name, source, str(Path(hub).expanduser()) if info.kind != "missing" else hub,
                       formatting=formatting, columns=columns, tags=tags, files=info.files, **common)


def _local_attr(name: str, path: str, info: PathInfo, formatting: str, columns: dict, tags: dict) -> DatasetAttr:
    if info.kind in ("file", "dir") and not info.files:
        raise DataError(f"{path} holds no .json, .jsonl, .parquet or .csv file")
    if info.kind == "dir" and len({DATA_SUFFIXES[Path(f).suffix] for f in info.files}) > 1:
        raise DataError(f"{path} mixes file types ({', '.join(sorted({Path(f).suffix for f in info.files}))}); "
                        "keep one type per directory")
    source = "disk" if info.kind == "disk" else "file"
    return DatasetAttr(name, source, path, formatting=formatting, columns=columns, tags=tags, files=info.files)


def _check_entry(name: str, entry: Mapping, dataset_dir: str) -> None:
    where = f"{registry_path(dataset_dir)}: {name!r}"
    unsupported = [k for k in entry if k in UNSUPPORTED_KEYS]
    if unsupported:
        raise DataError(f"{where}: {', '.join(unsupported)} not supported; give file_name (a local file or "
                        "directory under data.dataset_dir) or hf_hub_url (a datasets-library dataset)")
    unknown = [k for k in entry if k not in ENTRY_KEYS]
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(ENTRY_KEYS)}")
    if not entry.get("file_name") and not entry.get("hf_hub_url"):
        raise DataError(f"{where}: needs file_name or hf_hub_url")
    if entry.get("formatting", "alpaca") not in FORMATTINGS:
        raise DataError(f"{where}: formatting {entry.get('formatting')!r} unknown; use one of {', '.join(FORMATTINGS)}")
    columns = entry.get("columns") or {}
    bad = [c for c in columns if c not in COLUMN_ROLES]
    if bad:
        why = "not supported" if set(bad) <= set(UNSUPPORTED_COLUMNS) else "unknown"
        raise DataError(f"{where}: columns {', '.join(bad)} {why}; known column roles: {', '.join(COLUMN_ROLES)}")
    tags = entry.get("tags") or {}
    bad = [t for t in tags if t not in TAG_DEFAULTS]
    if bad:
        raise DataError(f"{where}: tags {', '.join(bad)} unknown; known: {', '.join(TAG_DEFAULTS)}")
    if entry.get("ranking") and not {"chosen", "rejected"} <= set(columns):
        raise DataError(f"{where}: ranking datasets map columns chosen and rejected")


def detect(attr: DatasetAttr, first_row: Mapping[str, Any]) -> DatasetAttr:
    """Formatting and columns of a dataset given by path, from its first row (columns with a value):
    conversations/messages -> sharegpt (from/value or role/content tags); else alpaca, with a `text`
    column as the prompt (plain text for pt) and TRL's prompt/completion names understood; chosen +
    rejected -> pairwise; label/kto_tag -> kto. A registry entry is taken as written."""
    if attr.formatting != "auto":
        return attr
    keys = {k for k, v in first_row.items() if v is not None}
    columns: dict[str, str] = {}
    conv = next((c for c in ("conversations", "messages") if c in keys), None)
    if conv:
        formatting = "sharegpt"
        columns = {"messages": conv, "system": "system"}
        turns = first_row[conv]
        first = turns[0] if isinstance(turns, list) and turns and isinstance(turns[0], Mapping) else {}
        tags = dict(OPENAI_TAGS if "role" in first else TAG_DEFAULTS)
    else:
        formatting, tags = "alpaca", {}
        columns = dict(COLUMN_DEFAULTS["alpaca"])
        if "instruction" not in keys:
            for alt in ("text", "prompt"):
                if alt in keys:
                    columns["prompt"] = alt
                    break
        if "output" not in keys and "completion" in keys:
            columns["response"] = "completion"
    ranking = {"chosen", "rejected"} <= keys
    if ranking:
        columns |= {"chosen": "chosen", "rejected": "rejected"}
    for tag in ("kto_tag", "label"):
        if tag in keys and not ranking:
            columns["kto_tag"] = tag
            break
    return replace(attr, formatting=formatting, ranking=ranking, columns=columns, tags=tags)


# ---- I/O: what gather_facts() and the worker read ---------------------------------------------------------

def read_registry(dataset_dir: str) -> Optional[dict]:
    """dataset_info.json as a dict; None when the directory has none. Raises DataError naming the line."""
    path = Path(registry_path(dataset_dir))
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno} column {e.colno}: invalid JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object of name -> entry, got {type(data).__name__}")
    return data


def probe_path(path: str) -> PathInfo:
    p = Path(path).expanduser()
    if p.is_file():
        return PathInfo("file", (str(p),) if p.suffix in DATA_SUFFIXES else ())
    if p.is_dir():
        if (p / "state.json").is_file() or (p / "dataset_dict.json").is_file():
            return PathInfo("disk")
        files = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix in DATA_SUFFIXES
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))
        return PathInfo("dir", tuple(files))
    return PathInfo("missing")


def resolve_all(dataset: Any, dataset_dir: str, key: str = "data.dataset") -> list[DatasetAttr]:
    """The worker's (and prepare_only's) resolution: the same pure resolve() over freshly read facts."""
    names = dataset_names(dataset) if dataset is not None else []
    registry = read_registry(dataset_dir)
    paths = {p: probe_path(p) for p in local_paths(names, registry, dataset_dir)}
    out = []
    for name in names:
        try:
            out.append(resolve(name, registry, dataset_dir, paths))
        except DataError as e:
            raise DataError(f"{key}={name}: {e}") from None
    return out

"""Rows as users bring them (alpaca, sharegpt; plain text; pairwise; kto) -> the shapes the stages take.

The shapes are TRL's dataset formats, so the preference stages can hand them to TRL's trainers as is:
  conversation (sft)   {"messages": [{"role", "content"}, ...]}              (conversational LM)
  text (pt)            {"text": str}                                          (standard LM)
  pairwise (rm, dpo)   {"prompt": [...messages], "chosen": [assistant msg], "rejected": [assistant msg]}
  kto                  {"prompt": [...messages], "completion": [assistant msg], "label": bool}
  prompt (ppo, grpo, rloo) {"prompt": [...messages], "answer": str}   (prompt-only; answer: the reference, or "")
Roles are system, user, assistant and tool (a sharegpt `observation`); a sharegpt `function_call` turn is
an assistant turn. Pure: validate() converts the scanned rows with the same code the worker runs.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from launcher.data.registry import DatasetAttr

#: the dataset kinds (DatasetAttr.kind) each stage trains on
STAGE_KINDS = {"pt": ("conversation",), "sft": ("conversation",), "rm": ("pairwise",), "dpo": ("pairwise",),
               "kto": ("kto",), "ppo": ("conversation",), "grpo": ("conversation",), "rloo": ("conversation",)}
#: stages that sample answers to prompts (online RL)
ONLINE_STAGES = ("ppo", "grpo", "rloo")
#: what a kind is, for messages naming a dataset's format
KIND_NAMES = {"conversation": "conversation (alpaca or sharegpt rows)", "pairwise": "pairwise (chosen/rejected rows)",
              "kto": "kto (rows with a boolean label)"}


class RowError(ValueError):
    """One row that cannot be converted: its message completes 'row N ...'."""


def convert(row: Mapping[str, Any], attr: DatasetAttr, stage: str) -> Optional[dict]:
    """One row -> the stage's shape; None for a row filtered out (empty text or response)."""
    if attr.kind == "pairwise":
        return to_pairwise(row, attr)
    if attr.kind == "kto":
        return to_kto(row, attr)
    if stage in ONLINE_STAGES:
        return to_prompt(row, attr)
    messages = to_messages(row, attr, complete=stage != "pt")
    if stage == "pt":
        text = next(m["content"] for m in messages if m["role"] != "system")
        return {"text": text} if text.strip() else None
    return {"messages": messages} if messages[-1]["content"].strip() else None


def to_messages(row: Mapping[str, Any], attr: DatasetAttr, complete: bool = True) -> list[dict[str, str]]:
    """[system], user, assistant, ...; complete: ending with an assistant turn (pt reads the first turn)."""
    if attr.formatting == "sharegpt":
        system, turns = _sharegpt_turns(row, attr, complete)
    else:
        system, turns = _alpaca_turns(row, attr, with_response=complete)
    return _with_system(system, turns)


def to_pairwise(row: Mapping[str, Any], attr: DatasetAttr) -> dict:
    if attr.formatting == "sharegpt":
        system, prompt = _sharegpt_turns(row, attr, complete=False)
        if len(prompt) % 2 == 0:
            raise RowError(f"the prompt of a ranking row must end with a {attr.tags['user_tag']!r} turn; "
                           "chosen and rejected hold the answers")
    else:
        system, prompt = _alpaca_turns(row, attr, with_response=False)
    chosen, rejected = (_answer(row, attr, c) for c in ("chosen", "rejected"))
    return {"prompt": _with_system(system, prompt), "chosen": [chosen], "rejected": [rejected]}


def to_prompt(row: Mapping[str, Any], attr: DatasetAttr) -> Optional[dict]:
    """The conversation up to its last user (or tool) turn, and the answer after it ("" when the row has none),
    which reward functions may compare with; None when nothing is asked."""
    c = attr.columns
    with_response = attr.formatting == "alpaca" and row.get(c.get("response")) is not None
    messages = to_messages(row, attr, complete=with_response)
    answer = messages.pop()["content"] if messages[-1]["role"] == "assistant" else ""
    return {"prompt": messages, "answer": answer} if messages[-1]["content"].strip() else None


def to_kto(row: Mapping[str, Any], attr: DatasetAttr) -> dict:
    messages = to_messages(row, attr, complete=True)
    col = attr.columns["kto_tag"]
    _require(row, [col])
    label = row[col]
    if isinstance(label, str) and label.lower() in ("true", "false"):  # csv files hold text
        label = label.lower() == "true"
    if not isinstance(label, bool):
        raise RowError(f"column {col} must be true or false (the kto label), got {label!r}")
    return {"prompt": messages[:-1], "completion": messages[-1:], "label": label}


def _with_system(system: str, turns: list[dict]) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + turns


def _alpaca_turns(row: Mapping[str, Any], attr: DatasetAttr, with_response: bool) -> tuple[str, list[dict]]:
    c = attr.columns
    _require(row, [c["prompt"]] + ([c["response"]] if with_response else []))
    turns: list[dict] = []
    history = row.get(c["history"]) if c.get("history") else None
    if history:
        if not isinstance(history, list) or not all(isinstance(h, (list, tuple)) and len(h) == 2
                                                    and all(isinstance(x, str) for x in h) for h in history):
            raise RowError(f"column {c['history']} must be a list of [instruction, response] pairs")
        for user, answer in history:
            turns += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    query = _text(row, c.get("query"), optional=True)
    turns.append({"role": "user", "content": _text(row, c["prompt"]) + ("\n" + query if query else "")})
    if with_response:
        turns.append({"role": "assistant", "content": _text(row, c["response"])})
    return _text(row, c.get("system"), optional=True), turns


def _sharegpt_turns(row: Mapping[str, Any], attr: DatasetAttr, complete: bool) -> tuple[str, list[dict]]:
    """(system, turns) with the order checked: user/tool turns at even positions, assistant turns at odd
    ones; complete: ending on an assistant turn."""
    c, t = attr.columns, attr.tags
    _require(row, [c["messages"]])
    raw = row[c["messages"]]
    if not isinstance(raw, list) or not raw:
        raise RowError(f"column {c['messages']} must be a non-empty list of messages")
    roles = {t["user_tag"]: "user", t["observation_tag"]: "tool", t["assistant_tag"]: "assistant",
             t["function_tag"]: "assistant", t["system_tag"]: "system"}
    for i, m in enumerate(raw):
        if not isinstance(m, Mapping) or t["role_tag"] not in m or t["content_tag"] not in m:
            raise RowError(f"message {i} needs keys {t['role_tag']!r} and {t['content_tag']!r} "
                           "(set tags in dataset_info.json if yours differ)")
        if m[t["role_tag"]] not in roles:
            raise RowError(f"message {i} has role {m[t['role_tag']]!r}; known: {', '.join(roles)} "
                           "(set tags in dataset_info.json if yours differ)")
        if not isinstance(m[t["content_tag"]], str):
            raise RowError(f"message {i} content must be text, got {type(m[t['content_tag']]).__name__}")
    system = _text(row, c.get("system"), optional=True)
    first = 0
    if roles[raw[0][t["role_tag"]]] == "system":
        system, first = raw[0][t["content_tag"]], 1
    turns = []
    for i, m in enumerate(raw[first:], first):
        tag = m[t["role_tag"]]
        prompt_turn = (i - first) % 2 == 0
        if (roles[tag] in ("user", "tool")) != prompt_turn or roles[tag] == "system":
            expected = f"{t['user_tag']!r} or {t['observation_tag']!r}" if prompt_turn else \
                f"{t['assistant_tag']!r} or {t['function_tag']!r}"
            raise RowError(f"roles out of order: message {i} is {tag!r}, expected {expected}")
        turns.append({"role": roles[tag], "content": m[t["content_tag"]]})
    if complete and len(turns) % 2:
        raise RowError(f"conversation ends with {raw[-1][t['role_tag']]!r}; it must end with an "
                       f"{t['assistant_tag']!r} turn")
    return system, turns


def _answer(row: Mapping[str, Any], attr: DatasetAttr, role: str) -> dict:
    col = attr.columns[role]
    _require(row, [col])
    value = row[col]
    if attr.formatting == "sharegpt" and isinstance(value, Mapping):
        value = value.get(attr.tags["content_tag"])
    if not isinstance(value, str):
        raise RowError(f"column {col} must be text (or a message with {attr.tags.get('content_tag', 'content')!r})")
    return {"role": "assistant", "content": value}


def _require(row: Mapping[str, Any], cols: list[str]) -> None:
    missing = [c for c in cols if row.get(c) is None]
    if missing:
        raise RowError(f"lacks {', '.join(missing)}")


def _text(row: Mapping[str, Any], col: Optional[str], optional: bool = False) -> str:
    value = row.get(col) if col else None
    if value is None:
        if optional:
            return ""
        raise RowError(f"lacks {col}")
    if not isinstance(value, str):
        raise RowError(f"column {col} must be text, got {type(value).__name__} {value!r:.40}")
    return value

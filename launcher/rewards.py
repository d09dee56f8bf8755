"""Reward functions for grpo and rloo, by name: `stage.reward_funcs=[digit_ratio,match]`.

Each takes TRL's reward-function arguments (prompts, completions, completion_ids, and every other column
of the prompt rows as keyword lists: `answer` holds the row's reference answer, "" when it has none) and
returns one float per completion. Dense rewards (a fraction, a distance) let a small model learn; a
sparse one (1 when a keyword appears) gives every completion of a group the same reward, so zero advantage.

Your own: `stage.reward_funcs=[my_package.rewards:polite]` imports `polite` from `my_package.rewards`
(importable on every node), or decorate it with `@register("polite")` in a module that module imports.
Pure Python: validate() reads the names without importing torch.
"""
from __future__ import annotations

import importlib
import re
from collections import Counter
from typing import Callable

RewardFunc = Callable[..., list[float]]
REWARDS: dict[str, RewardFunc] = {}
_WORD = re.compile(r"\w+")


def register(name: str) -> Callable[[RewardFunc], RewardFunc]:
    def add(func: RewardFunc) -> RewardFunc:
        REWARDS[name] = func
        return func
    return add


def is_import_path(name: str) -> bool:
    """module.path:function, the form for a user's own reward function."""
    return re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", name) is not None


def resolve(name: str) -> RewardFunc:
    """A registered name, or module:function imported now (raises ValueError saying what is wrong)."""
    if name in REWARDS:
        return REWARDS[name]
    if not is_import_path(name):
        raise ValueError(f"unknown reward function {name!r}; registered: {', '.join(sorted(REWARDS))}, "
                         "or give module.path:function")
    module, _, attr = name.partition(":")
    try:
        func = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"reward function {name}: {e}") from None
    if not callable(func):
        raise ValueError(f"reward function {name}: {type(func).__name__} is not callable")
    return func


@register("digit_ratio")
def digit_ratio(completions: list[str], **kwargs) -> list[float]:
    """Share of the non-space characters that are digits (answers that are numbers)."""
    out = []
    for text in completions:
        chars = [c for c in text if not c.isspace()]
        out.append(sum(c.isdigit() for c in chars) / len(chars) if chars else 0.0)
    return out


@register("distinct_words")
def distinct_words(completions: list[str], **kwargs) -> list[float]:
    """Share of distinct words among the words: penalises repetition loops (0 for no word)."""
    out = []
    for text in completions:
        words = _WORD.findall(text.lower())
        out.append(len(set(words)) / len(words) if words else 0.0)
    return out


@register("match")
def match(completions: list[str], answer: list[str] | None = None, **kwargs) -> list[float]:
    """Word-overlap F1 between the completion and the row's reference answer (SQuAD's token F1)."""
    answers = answer or [""] * len(completions)
    out = []
    for text, ref in zip(completions, answers):
        got, want = Counter(_WORD.findall(text.lower())), Counter(_WORD.findall((ref or "").lower()))
        common = sum((got & want).values())
        if not common:
            out.append(0.0)
            continue
        precision, recall = common / sum(got.values()), common / sum(want.values())
        out.append(2 * precision * recall / (precision + recall))
    return out

"""Chat templates: how the turns of a conversation become tokens, and which tokens carry labels.

A conversation renders to segments (text, is_response). Each segment is tokenized on its own and the
ids are concatenated, so the prompt/response boundary is exact (no re-tokenization across it). Prompt
segments (system, user turns, headers) are masked out of the labels unless train_on_prompt.

`auto` reads the tokenizer's own chat_template; the named ones follow the model families' formats.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

IGNORE_INDEX = -100


class TemplateError(ValueError):
    """A template name or a conversation that cannot be rendered (a user mistake: exit 2)."""


@dataclass(frozen=True)
class Template:
    name: str
    #: before the first turn ({bos}/{eos} are the tokenizer's tokens)
    prefix: str
    #: the system turn, {content}; unused when system_in_user is set
    system: str
    #: a user turn including the assistant header that follows it ({idx}: the round, from 1)
    user: str
    #: an assistant turn including its end-of-turn marker
    assistant: str
    default_system: str = ""
    #: folds the system text into the first user turn ({system}, {content}), as Llama-2 and Mistral do
    system_in_user: Optional[str] = None
    #: a tool result (sharegpt `observation`) including the assistant header; default: the user format
    tool: Optional[str] = None
    #: put before every user or tool turn but the first
    separator: str = ""
    #: {eos} ends the conversation only, not every assistant turn (ChatGLM)
    efficient_eos: bool = False

    def segments(self, messages: Sequence[dict], bos: str, eos: str) -> list[tuple[str, bool]]:
        system, turns = split_conversation(messages)
        system = system or self.default_system
        fill = lambda fmt, content, idx=0: fmt.format(content=content, bos=bos, eos=eos, idx=idx)  # noqa: E731
        out: list[tuple[str, bool]] = []
        for i, (role, user, answer) in enumerate(turns):
            prompt = ""
            if i == 0:
                prompt += self.prefix.format(bos=bos, eos=eos)
                if system and self.system_in_user:
                    user = self.system_in_user.format(system=system, content=user)
                elif system:
                    prompt += fill(self.system, system)
            else:
                prompt += self.separator
            fmt = self.tool if role == "tool" and self.tool else self.user
            response = fill(self.assistant, answer)
            if self.efficient_eos and i == len(turns) - 1:
                response += eos
            out += [(prompt + fill(fmt, user, i + 1), False), (response, True)]
        return out


TEMPLATES = {t.name: t for t in [
    Template("default", prefix="{bos}", system="System: {content}\n", user="Human: {content}\nAssistant: ",
             assistant="{content}{eos}\n"),
    Template("alpaca", prefix="{bos}", system="{content}\n\n",
             user="### Instruction:\n{content}\n\n### Response:\n", assistant="{content}{eos}\n\n",
             default_system="Below is an instruction that describes a task. "
                            "Write a response that appropriately completes the request."),
    Template("llama2", prefix="", system="", user="{bos}[INST] {content} [/INST]", assistant=" {content} {eos}",
             system_in_user="<<SYS>>\n{system}\n<</SYS>>\n\n{content}"),
    Template("mistral", prefix="{bos}", system="", user="[INST] {content}[/INST]", assistant=" {content}{eos}",
             system_in_user="{system}\n\n{content}"),
    Template("llama3", prefix="{bos}", system="<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
             user="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n",
             assistant="{content}<|eot_id|>",
             tool="<|start_header_id|>ipython<|end_header_id|>\n\n{content}<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    Template("chatml", prefix="", system="<|im_start|>system\n{content}<|im_end|>\n",
             user="<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n", assistant="{content}<|im_end|>\n"),
    Template("qwen", prefix="", system="<|im_start|>system\n{content}<|im_end|>\n",
             user="<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n", assistant="{content}<|im_end|>\n",
             tool="<|im_start|>user\n<tool_response>\n{content}\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
             default_system="You are a helpful assistant."),
    # ChatGLM2's own build_prompt: numbered rounds separated by a blank line; no system turn of its own.
    Template("chatglm2", prefix="[gMASK]sop", system="{content}\n\n", user="[Round {idx}]\n\n问：{content}\n\n答：",
             assistant="{content}", separator="\n\n", efficient_eos=True),
    # No formatting (LLaMA-Factory's `empty`): the prompt as written, e.g. a benchmark's own prompt text.
    Template("empty", prefix="", system="{content}\n", user="{content}", assistant="{content}{eos}"),
    Template("chatglm3", prefix="[gMASK]sop", system="<|system|>\n{content}", user="<|user|>\n{content}<|assistant|>",
             assistant="\n{content}", tool="<|observation|>\n{content}<|assistant|>", efficient_eos=True),
]}
TEMPLATE_NAMES = ("auto", *TEMPLATES)
#: special-token markers written in a template's formats (<|im_end|>, <|eot_id|>, [gMASK], ...)
_MARKER = re.compile(r"<\|[^|<>\s]+\|>|\[gMASK\]")


def special_markers(template: str) -> list[str]:
    """The special tokens a named template writes, which the tokenizer must hold as single tokens (else they
    are split into pieces and generation never sees its end-of-turn token); [] for auto or an unknown name."""
    t = TEMPLATES.get(template)
    if t is None:
        return []
    text = "".join(str(v) for v in (t.prefix, t.system, t.user, t.assistant, t.system_in_user, t.tool, t.separator))
    return list(dict.fromkeys(_MARKER.findall(text)))
#: roles that open a turn (a user message, or a tool's result handed back to the model)
PROMPT_ROLES = ("user", "tool")


def split_conversation(messages: Sequence[dict]) -> tuple[str, list[tuple[str, str, str]]]:
    """(system, [(prompt role, prompt, answer), ...]) from role/content messages, checking the order:
    an optional system message, then pairs of a user (or tool) message and an assistant message."""
    system = ""
    rest = list(messages)
    if rest and rest[0]["role"] == "system":
        system = rest.pop(0)["content"]
    if not rest or len(rest) % 2:
        raise TemplateError("a conversation needs user/assistant pairs, got roles "
                            f"{[m['role'] for m in messages]}")
    turns = []
    for i, (user, answer) in enumerate(zip(rest[::2], rest[1::2])):
        if user["role"] not in PROMPT_ROLES or answer["role"] != "assistant":
            raise TemplateError(f"roles out of order at turn {i + 1}: expected user (or tool) then assistant, "
                                f"got {user['role']} then {answer['role']}")
        turns.append((user["role"], user["content"], answer["content"]))
    return system, turns


def auto_segments(tokenizer: Any, conversations: Sequence[Sequence[dict]]) -> list[list[tuple[str, bool]]]:
    """Segments of each conversation from the tokenizer's chat_template: each rendered prefix must extend the
    previous one. One apply_chat_template call renders turn k of every conversation (each is rendered on its
    own, as by one call apiece)."""
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError("template=auto needs a tokenizer with a chat_template; this one has none. "
                            f"Set data.template to one of {', '.join(TEMPLATES)}")
    split = [split_conversation(messages) for messages in conversations]
    render = chat_renderer(tokenizer, conversations)
    histories: list[list[dict]] = [[{"role": "system", "content": system}] if system else [] for system, _ in split]
    rendered = [""] * len(split)
    out: list[list[tuple[str, bool]]] = [[] for _ in split]
    for k in range(max((len(turns) for _, turns in split), default=0)):
        live = [i for i, (_, turns) in enumerate(split) if len(turns) > k]
        for i in live:
            role, user, _ = split[i][1][k]
            histories[i].append({"role": role, "content": user})
        prompts = render([histories[i] for i in live], add_generation_prompt=True)
        for i in live:
            histories[i].append({"role": "assistant", "content": split[i][1][k][2]})
        fulls = render([histories[i] for i in live], add_generation_prompt=False)
        for i, prompt, full in zip(live, prompts, fulls):
            if not (prompt.startswith(rendered[i]) and full.startswith(prompt)):
                raise TemplateError("the tokenizer's chat_template does not render a conversation as a prefix of "
                                    f"its continuation; set data.template to one of {', '.join(TEMPLATES)}")
            out[i] += [(prompt[len(rendered[i]):], False), (full[len(prompt):], True)]
            rendered[i] = full
    return out


def chat_renderer(tokenizer: Any, conversations: Sequence[Sequence[dict]]):
    """render(histories, add_generation_prompt) -> texts: apply_chat_template(tokenize=False) of each history.

    For messages of plain strings (what the converter gives) the compiled template is rendered directly, as
    transformers renders it after its message normalisation, which for such messages changes nothing
    (no None values to drop, no objects to turn into dicts, no reasoning fields to alias) yet costs as much
    as the rendering itself. Anything else goes through apply_chat_template."""
    try:  # transformers' cached compile of a chat template (the sandboxed environment apply_chat_template uses)
        from transformers.utils.chat_template_utils import _REASONING_FIELDS, _compile_jinja_template
    except ImportError:  # renamed in another version: apply_chat_template renders every history
        _REASONING_FIELDS, _compile_jinja_template = (), None
    plain = all(type(v) is str and k not in _REASONING_FIELDS for c in conversations for m in c for k, v in m.items())
    template = tokenizer.get_chat_template() if plain and _compile_jinja_template else None
    if template is None:
        return lambda histories, add_generation_prompt: tokenizer.apply_chat_template(
            histories, tokenize=False, add_generation_prompt=add_generation_prompt)
    compiled, specials = _compile_jinja_template(template), dict(tokenizer.special_tokens_map)
    return lambda histories, add_generation_prompt: [
        compiled.render(messages=h, tools=None, documents=None, add_generation_prompt=add_generation_prompt, **specials)
        for h in histories]


def render_segments(template: str, tokenizer: Any, messages: Sequence[dict]) -> list[tuple[str, bool]]:
    return render_many(template, tokenizer, [messages])[0]


def render_many(template: str, tokenizer: Any, conversations: Sequence[Sequence[dict]]) -> list[list[tuple[str, bool]]]:
    """render_segments() of each conversation; a TemplateError names none of them (render_segments() each,
    in order, to find the first that fails)."""
    if template == "auto":
        return auto_segments(tokenizer, conversations)
    if template not in TEMPLATES:
        raise TemplateError(f"data.template={template}: unknown template; use one of {', '.join(TEMPLATE_NAMES)}")
    t, bos, eos = TEMPLATES[template], tokenizer.bos_token or "", tokenizer.eos_token or ""
    return [t.segments(messages, bos, eos) for messages in conversations]


def budget(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """Truncation policy (LLaMA-Factory's): a short response is kept whole and the prompt is cut;
    otherwise both are cut in proportion to their lengths. Prompts keep their beginning."""
    if target_len * 2 < cutoff_len:
        max_target = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target = cutoff_len - source_len
    else:
        max_target = int(cutoff_len * target_len / (source_len + target_len))
    new_target = min(max_target, target_len)
    return min(max(cutoff_len - new_target, 0), source_len), new_target


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def token_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """_ids() of each text, in one tokenizer call: a text's ids do not depend on the others in the call, and
    one call per batch of rows costs a fraction of one per segment."""
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []


def encode(tokenizer: Any, template: str, messages: Sequence[dict], cutoff_len: int,
           train_on_prompt: bool = False, mask_history: bool = False, max_source_length: Optional[int] = None,
           max_target_length: Optional[int] = None) -> tuple[list[int], list[int]]:
    """input_ids and labels for one conversation, at most cutoff_len tokens (see encode_ids)."""
    ids, labels, _ = encode_split(tokenizer, template, messages, cutoff_len, train_on_prompt, mask_history,
                                  max_source_length, max_target_length)
    return ids, labels


def encode_split(tokenizer: Any, template: str, messages: Sequence[dict], cutoff_len: int,
                 train_on_prompt: bool = False, mask_history: bool = False, max_source_length: Optional[int] = None,
                 max_target_length: Optional[int] = None) -> tuple[list[int], list[int], int]:
    """encode_ids() of one conversation (pipeline.py does a batch of rows in one tokenizer call)."""
    segs = render_segments(template, tokenizer, messages)
    return encode_ids(token_ids(tokenizer, [text for text, _ in segs]), cutoff_len, train_on_prompt, mask_history,
                      max_source_length, max_target_length)


def encode_ids(segment_ids: Sequence[list[int]], cutoff_len: int, train_on_prompt: bool = False,
               mask_history: bool = False, max_source_length: Optional[int] = None,
               max_target_length: Optional[int] = None) -> tuple[list[int], list[int], int]:
    """input_ids, labels and the prompt's length (the tokens before the last answer kept: what predict
    generates from) from the ids of a conversation's segments (prompt, answer, prompt, answer, ...), at most
    cutoff_len tokens. Each segment is tokenized on its own, so the prompt/answer boundary is exact.

    ChatGLM2's max_source_length/max_target_length, when set, first cut each turn's prompt and answer (their
    beginnings kept; the answer's end-of-turn token counts); cutoff_len then caps the whole row as always.
    Turns are budgeted in order, so the last turns are the ones cut. With mask_history only the last
    answer carries labels, and it is budgeted first (kept whole where it fits), as in LLaMA-Factory."""
    pairs = [(p[:max_source_length], a[:max_target_length]) for p, a in zip(segment_ids[::2], segment_ids[1::2])]
    order = list(range(len(pairs)))[::-1] if mask_history else list(range(len(pairs)))
    kept: dict[int, tuple[list[int], list[int]]] = {}
    used = 0
    for i in order:
        if cutoff_len - used <= 0:
            break
        src, tgt = pairs[i]
        n_src, n_tgt = budget(len(src), len(tgt), cutoff_len - used)
        kept[i] = src[:n_src], tgt[:n_tgt]
        used += n_src + n_tgt
    input_ids: list[int] = []
    labels: list[int] = []
    last = len(pairs) - 1
    for i in sorted(kept):
        src, tgt = kept[i]
        input_ids += src + tgt
        labels += src if train_on_prompt else [IGNORE_INDEX] * len(src)
        labels += tgt if i == last or not mask_history else [IGNORE_INDEX] * len(tgt)
    prompt_len = len(input_ids) - len(kept[max(kept)][1]) if kept else 0
    return input_ids, labels, prompt_len


def prompt_segments(tokenizer: Any, template: str, messages: Sequence[dict]) -> list[str]:
    """The texts that ask for the next assistant turn: the conversation (ending with a user turn) rendered with
    an empty answer, whose segment is dropped. An answer never changes how the turns before it render."""
    return prompt_segments_many(tokenizer, template, [messages])[0]


def prompt_segments_many(tokenizer: Any, template: str, conversations: Sequence[Sequence[dict]]) -> list[list[str]]:
    segs = render_many(template, tokenizer, [[*m, {"role": "assistant", "content": ""}] for m in conversations])
    return [[text for text, _ in s[:-1]] for s in segs]


def encode_prompt(tokenizer: Any, template: str, messages: Sequence[dict]) -> list[int]:
    """input_ids that ask for the next assistant turn (generation), tokenized exactly as training does."""
    return [i for seg in token_ids_grouped(tokenizer, prompt_segments_many(tokenizer, template, [messages]))[0]
            for i in seg]


def encode_answers(tokenizer: Any, template: str, prompt: Sequence[dict], answers: Sequence[str],
                   cutoff_len: int) -> tuple[list[int], list[list[int]]]:
    """Preference rows: the prompt's ids and each answer's ids (its rendered assistant turn, end-of-turn
    included), tokenized as encode() tokenizes the same conversation. Truncated as LLaMA-Factory's pairwise
    rows: budget() of the prompt and the longest answer, each answer cut to at most that length."""
    return encode_answers_many(tokenizer, template, [prompt], [answers], cutoff_len)[0]


def encode_answers_many(tokenizer: Any, template: str, prompts: Sequence[Sequence[dict]],
                        answers: Sequence[Sequence[str]], cutoff_len: int) -> list[tuple[list[int], list[list[int]]]]:
    """encode_answers() of each row (prompts[j], answers[j]), with one tokenizer call for all."""
    rendered = iter(render_many(template, tokenizer, [[*p, {"role": "assistant", "content": a}]
                                                      for p, row in zip(prompts, answers) for a in row]))
    answer_texts = [[next(rendered)[-1][0] for _ in row] for row in answers]
    ids = token_ids_grouped(tokenizer, prompt_segments_many(tokenizer, template, prompts) + answer_texts)
    out = []
    for prompt_segs, answer_ids in zip(ids[:len(prompts)], ids[len(prompts):]):
        prompt_ids = [i for seg in prompt_segs for i in seg]
        n_prompt, n_answer = budget(len(prompt_ids), max(len(a) for a in answer_ids), cutoff_len)
        out.append((prompt_ids[:n_prompt], [a[:n_answer] for a in answer_ids]))
    return out


def token_ids_grouped(tokenizer: Any, groups: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """token_ids() of each group of texts, all groups in one tokenizer call."""
    flat = iter(token_ids(tokenizer, [text for group in groups for text in group]))
    return [[next(flat) for _ in group] for group in groups]


def stop_token_ids(tokenizer: Any, template: str) -> list[int]:
    """Tokens that end an assistant turn: eos and the special tokens of the template's end-of-turn marker
    (<|im_end|>, <|eot_id|>, ...)."""
    segs = render_segments(template, tokenizer, [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}])
    marker = _ids(tokenizer, segs[-1][0])
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return ids + [i for i in marker if i in special and i not in ids]

"""Chat templates: the exact rendered text, and which tokens carry labels."""
from __future__ import annotations

import pytest

from launcher.data.templates import IGNORE_INDEX, TemplateError, budget, encode, encode_split, render_segments

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Add 2 and 3"},
    {"role": "assistant", "content": "5"},
]

RENDERED = {
    "auto": "<s><|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello!</s>\n<|user|>\nAdd 2 and 3\n"
            "<|assistant|>\n5</s>\n",
    "default": "<s>System: Be brief.\nHuman: Hi\nAssistant: Hello!</s>\nHuman: Add 2 and 3\nAssistant: 5</s>\n",
    "alpaca": "<s>Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello!</s>\n\n### Instruction:\nAdd 2 and 3\n\n"
              "### Response:\n5</s>\n\n",
    "llama2": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Add 2 and 3 [/INST] 5 </s>",
    "mistral": "<s>[INST] Be brief.\n\nHi[/INST] Hello!</s>[INST] Add 2 and 3[/INST] 5</s>",
    "llama3": "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user"
              "<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nAdd 2 and 3<|eot_id|><|start_header_id|>assistant"
              "<|end_header_id|>\n\n5<|eot_id|>",
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
              "Hello!<|im_end|>\n<|im_start|>user\nAdd 2 and 3<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n",
    "qwen": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
            "Hello!<|im_end|>\n<|im_start|>user\nAdd 2 and 3<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n",
    "chatglm2": "[gMASK]sopBe brief.\n\n[Round 1]\n\n问：Hi\n\n答：Hello!\n\n[Round 2]\n\n问：Add 2 and 3\n\n答：5</s>",
    "chatglm3": "[gMASK]sop<|system|>\nBe brief.<|user|>\nHi<|assistant|>\nHello!<|user|>\nAdd 2 and 3<|assistant|>\n5</s>",
    "empty": "Be brief.\nHiHello!</s>Add 2 and 35</s>",
}
RESPONSES = {
    "auto": ["Hello!</s>\n", "5</s>\n"], "default": ["Hello!</s>\n", "5</s>\n"],
    "alpaca": ["Hello!</s>\n\n", "5</s>\n\n"], "llama2": [" Hello! </s>", " 5 </s>"],
    "mistral": [" Hello!</s>", " 5</s>"], "llama3": ["Hello!<|eot_id|>", "5<|eot_id|>"],
    "chatml": ["Hello!<|im_end|>\n", "5<|im_end|>\n"], "qwen": ["Hello!<|im_end|>\n", "5<|im_end|>\n"],
    # ChatGLM: one eos, at the end of the conversation (LLaMA-Factory's efficient_eos)
    "chatglm2": ["Hello!", "5</s>"], "chatglm3": ["\nHello!", "\n5</s>"],
    "empty": ["Hello!</s>", "5</s>"],
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.mark.parametrize("template", sorted(RENDERED))
def test_rendered_text_and_labelled_tokens(tokenizer, template):
    segments = render_segments(template, tokenizer, CONVERSATION)
    assert "".join(text for text, _ in segments) == RENDERED[template]
    assert [text for text, is_response in segments if is_response] == RESPONSES[template]

    ids, labels = encode(tokenizer, template, CONVERSATION, cutoff_len=1024)
    assert len(ids) == len(labels)
    assert tokenizer.decode(ids) == RENDERED[template]
    # Labels are exactly the response tokens; every prompt position is masked.
    labelled = [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
    assert tokenizer.decode([ids[i] for i in labelled]) == "".join(RESPONSES[template])
    assert all(labels[i] == ids[i] for i in labelled)
    n_prompt_0 = len(tokenizer(segments[0][0], add_special_tokens=False)["input_ids"])
    assert labelled[0] == n_prompt_0


def test_train_on_prompt_labels_every_token(tokenizer):
    ids, labels = encode(tokenizer, "default", CONVERSATION, cutoff_len=1024, train_on_prompt=True)
    assert labels == ids


def test_default_system_is_used_when_the_row_has_none(tokenizer):
    segments = render_segments("qwen", tokenizer, CONVERSATION[1:3])
    assert segments[0][0].startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")


def test_roles_out_of_order_are_rejected(tokenizer):
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(TemplateError, match="roles out of order"):
        render_segments("default", tokenizer, bad)


def test_unknown_template_names_the_choices(tokenizer):
    with pytest.raises(TemplateError, match="data.template=nope: unknown template; use one of auto, default"):
        render_segments("nope", tokenizer, CONVERSATION)


def test_cutoff_keeps_a_short_response_whole(tokenizer):
    long_prompt = [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "ok"}]
    ids, labels = encode(tokenizer, "default", long_prompt, cutoff_len=64)
    assert len(ids) == 64
    assert tokenizer.decode([t for t in labels if t != IGNORE_INDEX]) == "ok</s>\n"


def test_source_and_target_lengths_cut_each_side_then_cutoff_len_caps(tokenizer):
    row = [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "yes " * 300}]
    ids, labels, prompt_len = encode_split(tokenizer, "default", row, cutoff_len=1024, max_source_length=20,
                                           max_target_length=7)
    assert (len(ids), prompt_len) == (27, 20) and labels == [IGNORE_INDEX] * 20 + ids[20:]
    source = encode_split(tokenizer, "default", row[:1] + [{"role": "assistant", "content": ""}], 1024)
    assert ids[:20] == source[0][:20]  # the prompt keeps its beginning
    ids, _, prompt_len = encode_split(tokenizer, "default", row, cutoff_len=16, max_source_length=20,
                                      max_target_length=7)
    assert (len(ids), prompt_len) == (16, 9)  # cutoff_len's budget after both cuts: 7 answer tokens kept


def test_prompt_len_is_where_the_last_answer_starts(tokenizer):
    ids, labels, prompt_len = encode_split(tokenizer, "default", CONVERSATION, cutoff_len=1024)
    assert tokenizer.decode(ids[prompt_len:]) == "5</s>\n"
    assert ids == encode(tokenizer, "default", CONVERSATION, cutoff_len=1024)[0]


def test_budget_splits_in_proportion_when_both_are_long():
    assert budget(10, 3, 64) == (10, 3)
    assert budget(300, 5, 64) == (59, 5)
    assert budget(100, 100, 64) == (32, 32)


TOOL_CONVERSATION = [
    {"role": "user", "content": "Capital of Peru?"},
    {"role": "assistant", "content": '{"name": "lookup", "arguments": {"country": "Peru"}}'},
    {"role": "tool", "content": '{"capital": "Lima"}'},
    {"role": "assistant", "content": "Lima."},
]


@pytest.mark.parametrize("template, rendered", [
    ("qwen", "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nCapital of Peru?"
             "<|im_end|>\n<|im_start|>assistant\n{call}<|im_end|>\n<|im_start|>user\n<tool_response>\n"
             "{result}\n</tool_response><|im_end|>\n<|im_start|>assistant\nLima.<|im_end|>\n"),
    ("chatglm3", "[gMASK]sop<|user|>\nCapital of Peru?<|assistant|>\n{call}<|observation|>\n{result}"
                 "<|assistant|>\nLima.</s>"),
    ("default", "<s>Human: Capital of Peru?\nAssistant: {call}</s>\nHuman: {result}\nAssistant: Lima.</s>\n"),
])
def test_tool_turns_are_prompts_and_tool_calls_are_answers(tokenizer, template, rendered):
    call, result = TOOL_CONVERSATION[1]["content"], TOOL_CONVERSATION[2]["content"]
    segments = render_segments(template, tokenizer, TOOL_CONVERSATION)
    assert "".join(t for t, _ in segments) == rendered.format(call=call, result=result)
    answers = [t for t, is_response in segments if is_response]
    assert call in answers[0] and "Lima." in answers[1]
    assert not any(result in t for t, is_response in segments if is_response)


def test_mask_history_labels_the_last_answer_only(tokenizer):
    ids, labels = encode(tokenizer, "default", CONVERSATION, cutoff_len=1024, mask_history=True)
    assert tokenizer.decode(ids) == RENDERED["default"]
    assert tokenizer.decode([t for t in labels if t != IGNORE_INDEX]) == "5</s>\n"


def test_mask_history_keeps_the_last_turn_when_cutting(tokenizer):
    long_history = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok " * 200},
                    {"role": "user", "content": "Add 2 and 3"}, {"role": "assistant", "content": "5"}]
    ids, labels = encode(tokenizer, "default", long_history, cutoff_len=64, mask_history=True)
    assert len(ids) <= 64 and tokenizer.decode([t for t in labels if t != IGNORE_INDEX]) == "5</s>\n"
    ids, labels = encode(tokenizer, "default", long_history, cutoff_len=64)
    assert "Add 2 and 3" not in tokenizer.decode(ids)  # without it, the first turns fill the budget


# ---- a batch of rows at once (the data pipeline) == each row alone, each segment alone ------------------------

MIXED = [CONVERSATION, TOOL_CONVERSATION, CONVERSATION[1:3],
         [{"role": "user", "content": "Tell a long story " * 12}, {"role": "assistant", "content": "Once " * 40}],
         [{"role": "system", "content": "Use French."}, *TOOL_CONVERSATION[:2], *CONVERSATION[3:]]]


def reference_segments(tokenizer, template, messages):
    """The per-row renderer as it was: one apply_chat_template call per prompt and per conversation."""
    if template != "auto":
        return render_segments(template, tokenizer, messages)
    system, rest = ([messages[0]], messages[1:]) if messages[0]["role"] == "system" else ([], messages)
    rendered, out = "", []
    for i in range(0, len(rest), 2):
        prompt = tokenizer.apply_chat_template(system + rest[:i + 1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(system + rest[:i + 2], tokenize=False)
        out += [(prompt[len(rendered):], False), (full[len(prompt):], True)]
        rendered = full
    return out


def reference_ids(tokenizer, texts):
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


@pytest.mark.parametrize("template", sorted(RENDERED))
def test_a_batch_tokenizes_as_each_row_and_segment_alone(tokenizer, template):
    from launcher.data.pipeline import _tokenize_batch
    from launcher.data.templates import encode_ids

    for cutoff_len, train_on_prompt, mask_history in [(1024, False, False), (40, True, False), (56, False, True)]:
        got = _tokenize_batch({"messages": MIXED}, list(range(len(MIXED))), tokenizer, "sft", template, cutoff_len,
                              train_on_prompt, mask_history)
        expected = [encode_ids(reference_ids(tokenizer, [t for t, _ in reference_segments(tokenizer, template, m)]),
                               cutoff_len, train_on_prompt, mask_history) for m in MIXED]
        expected_kept = [(i, e) for i, e in enumerate(expected) if any(lab != IGNORE_INDEX for lab in e[1])]
        assert got["row_id"] == [i for i, _ in expected_kept]
        assert list(zip(got["input_ids"], got["labels"], got["prompt_len"])) == [e for _, e in expected_kept]
    prompts = [m[:-1] for m in MIXED]
    answers = [m[-1]["content"] for m in MIXED]
    dpo = _tokenize_batch({"prompt": prompts, "chosen": [[{"role": "assistant", "content": a}] for a in answers],
                           "rejected": [[{"role": "assistant", "content": "No."}]] * len(MIXED)},
                          list(range(len(MIXED))), tokenizer, "dpo", template, 64, False, False)
    for j, prompt in enumerate(prompts):
        prompt_ids = [i for ids in reference_ids(tokenizer, [t for t, _ in reference_segments(
            tokenizer, template, [*prompt, {"role": "assistant", "content": ""}])[:-1]]) for i in ids]
        chosen, rejected = (reference_ids(tokenizer, [reference_segments(
            tokenizer, template, [*prompt, {"role": "assistant", "content": a}])[-1][0]])[0]
            for a in (answers[j], "No."))
        n_prompt, n_answer = budget(len(prompt_ids), max(len(chosen), len(rejected)), 64)
        assert (dpo["prompt_ids"][j], dpo["chosen_ids"][j], dpo["rejected_ids"][j]) == \
            (prompt_ids[:n_prompt], chosen[:n_answer], rejected[:n_answer])


# ---- template=auto renders the compiled chat template directly: the same text as apply_chat_template -----------

CHAT_TEMPLATES = {  # the shapes of real ones: trim filters, a default system, raise_exception, tojson, loop state
    "llama3": "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
              "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
              "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
              "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
    "qwen2": "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
             "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
             "{%- endif %}{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
             "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
             "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
    "gemma": "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
             "{% endif %}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
             "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + "
             "message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}"
             "{{ '<start_of_turn>model\\n' }}{% endif %}",
    "json": "{% for message in messages %}{{ message | tojson }}{% if loop.last %}{{ eos_token }}{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}[{{ messages | length }}]{% endif %}",
}
HISTORIES = [CONVERSATION[1:2], CONVERSATION[1:3], CONVERSATION, CONVERSATION[:2],
             [{"role": "user", "content": "  spaced  \n"}, {"role": "assistant", "content": " {{ not jinja }} "}]]


@pytest.mark.parametrize("name", sorted(CHAT_TEMPLATES))
def test_direct_rendering_equals_apply_chat_template(tiny_model, name, monkeypatch):
    import jinja2
    from transformers import AutoTokenizer

    from launcher.data.templates import chat_renderer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = CHAT_TEMPLATES[name]
    histories = [h for h in HISTORIES if h[0]["role"] != "system"] if name == "gemma" else HISTORIES
    expected = {flag: tokenizer.apply_chat_template(histories, tokenize=False, add_generation_prompt=flag)
                for flag in (True, False)}
    monkeypatch.setattr(tokenizer, "apply_chat_template", None)  # the direct path does not call it
    render = chat_renderer(tokenizer, histories)
    assert {flag: render(histories, flag) for flag in (True, False)} == expected
    if name == "gemma":  # the template's own error, as apply_chat_template raises it
        with pytest.raises(jinja2.exceptions.TemplateError, match="System role not supported"):
            chat_renderer(tokenizer, [CONVERSATION])([CONVERSATION], False)


def test_messages_that_are_not_plain_strings_go_through_apply_chat_template(tokenizer):
    from launcher.data.templates import chat_renderer

    odd = [[{"role": "user", "content": "Hi", "name": None}, {"role": "assistant", "content": "Yo"}],
           [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo", "reasoning_content": "think"}]]
    assert chat_renderer(tokenizer, odd)(odd, False) == tokenizer.apply_chat_template(odd, tokenize=False)

"""Rows for the TRL stages, for real (datasets library, the tiny tokenizer): each stage gets its trainer's
tokenized format, with exactly the token ids sft would train on for the same conversation; reward functions."""
from __future__ import annotations

import json

import pytest

from launcher import PROJECT_ROOT, rewards
from launcher.data.cache import prepare
from launcher.data.formats import to_prompt
from launcher.data.registry import DataError, DatasetAttr, detect
from launcher.data.templates import encode, encode_prompt
from tests.support import compose


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from launcher.worker.model import load_tokenizer

    return load_tokenizer(compose("recipe=tiny_sft_lora", "device=cpu"))


def prepared(tmp_path, tokenizer, recipe, *overrides):
    return prepare(compose(f"recipe={recipe}", "device=cpu", f"data.cache_dir={tmp_path}/cache", *overrides),
                   tokenizer)


def source_rows(name: str) -> list[dict]:
    return json.loads((PROJECT_ROOT / "data" / f"{name}.json").read_text())


def conversation(src: dict, answer: str) -> list[dict]:
    return [{"role": "user", "content": f"{src['instruction']}\n{src['input']}"},
            {"role": "assistant", "content": answer}]


def test_dpo_rows_are_sft_tokens_split_at_the_answer(tmp_path, tokenizer):
    data = prepared(tmp_path, tokenizer, "tiny_dpo_lora")
    rows = source_rows("polite_demo")
    assert data.train.column_names == ["prompt_ids", "chosen_ids", "rejected_ids", "row_id"]
    assert len(data.train) == len(rows) == 64 and data.record["inputs"]["stage"] == "dpo"
    for row in data.train:
        src = rows[row["row_id"]]
        for answer in ("chosen", "rejected"):
            ids, labels = encode(tokenizer, "auto", conversation(src, src[answer]), 128)
            assert row["prompt_ids"] + row[f"{answer}_ids"] == ids  # what sft trains on, token for token
            assert row[f"{answer}_ids"] == [t for t in labels if t != -100]
        assert tokenizer.decode(row["chosen_ids"]) == src["chosen"] + "</s>\n"


def test_rm_rows_are_whole_sequences(tmp_path, tokenizer):
    data = prepared(tmp_path, tokenizer, "tiny_rm")
    rows = source_rows("polite_demo")
    assert data.train.column_names == ["chosen_ids", "rejected_ids", "row_id"]
    row = data.train[0]
    src = rows[row["row_id"]]
    assert row["chosen_ids"] == encode(tokenizer, "auto", conversation(src, src["chosen"]), 128)[0]
    assert tokenizer.decode(row["rejected_ids"]).startswith("<s><|user|>\n" + src["instruction"])


def test_kto_rows_keep_the_label(tmp_path, tokenizer):
    data = prepared(tmp_path, tokenizer, "tiny_kto_lora")
    rows = source_rows("polite_kto_demo")
    assert data.train.column_names == ["label", "prompt_ids", "completion_ids", "row_id"]
    for row in data.train:
        src = rows[row["row_id"]]
        assert row["label"] is src["label"]
        assert row["prompt_ids"] + row["completion_ids"] == encode(tokenizer, "auto", conversation(src, src["output"]),
                                                                   128)[0]


def test_pairwise_rows_are_cut_as_llama_factory_cuts_them(tmp_path, tokenizer):
    data = prepared(tmp_path, tokenizer, "tiny_dpo_lora", "data.cutoff_len=24")
    for row in data.train:
        longest = max(len(row["chosen_ids"]), len(row["rejected_ids"]))
        assert len(row["prompt_ids"]) + longest <= 24 and row["chosen_ids"] and row["rejected_ids"]


def test_ppo_prompts_are_generation_prompts(tmp_path, tokenizer):
    data = prepared(tmp_path, tokenizer, "tiny_ppo_lora")
    rows = source_rows("demo/alpaca_demo")
    assert data.train.column_names == ["input_ids", "row_id"] and len(data.train) == len(rows)
    row = data.train[3]
    src = rows[row["row_id"]]
    user = {"role": "user", "content": f"{src['instruction']}\n{src['input']}" if src["input"] else src["instruction"]}
    assert row["input_ids"] == encode_prompt(tokenizer, "auto", [user])
    assert tokenizer.decode(row["input_ids"]).endswith("<|assistant|>\n")


def test_grpo_prompts_are_rendered_text_with_the_reference_answer(tmp_path, tokenizer):
    data = prepared(tmp_path, tokenizer, "tiny_grpo_lora")
    rows = source_rows("demo/alpaca_demo")
    assert data.train.column_names == ["prompt", "answer", "row_id"]
    for row in data.train.select(range(8)):
        src = rows[row["row_id"]]
        assert row["answer"] == src["output"]
        assert row["prompt"].startswith("<s><|user|>\n" + src["instruction"]) and row["prompt"].endswith(
            "<|assistant|>\n")
    ppo = prepared(tmp_path, tokenizer, "tiny_ppo_lora")  # the same prompts, tokenized: no text is lost
    assert tokenizer(data.train[0]["prompt"], add_special_tokens=False)["input_ids"] == ppo.train[0]["input_ids"]


def test_prompts_longer_than_cutoff_are_dropped_not_cut(tmp_path, tokenizer):
    full = prepared(tmp_path, tokenizer, "tiny_ppo_lora")
    short = prepared(tmp_path, tokenizer, "tiny_ppo_lora", "data.cutoff_len=16")
    assert 0 < len(short.train) < len(full.train) and short.record["dropped_by_cutoff"] == \
        len(full.train) - len(short.train)
    assert max(len(ids) for ids in short.train["input_ids"]) <= 16


def test_a_dataset_of_another_kind_stops_the_worker_too(tmp_path, tokenizer):
    # validate checks local files; a hub or save_to_disk dataset is only seen by the pipeline
    with pytest.raises(DataError, match="dataset alpaca_demo is conversation .* stage=dpo takes pairwise"):
        prepared(tmp_path, tokenizer, "tiny_dpo_lora", "data.dataset=alpaca_demo")


def test_to_prompt_splits_off_the_last_answer():
    attr = detect(DatasetAttr("x", "file", "x.json"), {"conversations": [{"from": "human", "value": "hi"}]})
    row = {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"},
                             {"from": "human", "value": "and 3+3?"}, {"from": "gpt", "value": "6"}]}
    assert to_prompt(row, attr) == {"prompt": [{"role": "user", "content": "2+2?"},
                                               {"role": "assistant", "content": "4"},
                                               {"role": "user", "content": "and 3+3?"}], "answer": "6"}
    row["conversations"] = row["conversations"][:3]
    assert to_prompt(row, attr)["answer"] == ""
    alpaca = detect(DatasetAttr("y", "file", "y.json"), {"instruction": "x"})
    assert to_prompt({"instruction": "Name a color."}, alpaca) == {
        "prompt": [{"role": "user", "content": "Name a color."}], "answer": ""}


def test_reward_functions():
    assert rewards.digit_ratio(["12 34", "ab", "a1", ""]) == [1.0, 0.0, 0.5, 0.0]
    assert rewards.distinct_words(["a a a a", "a b c", ""]) == [0.25, 1.0, 0.0]
    # "paris" and "is" in common: precision 2/4, recall 2/3
    assert rewards.match(["The capital is Paris", "Rome", "x"], answer=["Paris is big", "Paris", ""]) == \
        [pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3)), 0.0, 0.0]
    assert rewards.resolve("match") is rewards.match
    assert rewards.resolve("launcher.rewards:digit_ratio") is rewards.digit_ratio
    with pytest.raises(ValueError, match="registered: digit_ratio, distinct_words, match"):
        rewards.resolve("digits")
    with pytest.raises(ValueError, match="no_such_module"):
        rewards.resolve("no_such_module:f")

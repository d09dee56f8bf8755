"""Rows as users bring them -> the shapes the stages take (TRL's dataset formats). Pure: no tokenizer."""
from __future__ import annotations

import json

import pytest

from launcher import PROJECT_ROOT
from launcher.data.formats import RowError, convert, to_messages
from launcher.data.registry import DatasetAttr, detect, read_registry, resolve_all

DATA = PROJECT_ROOT / "data"
ALPACA = DatasetAttr("a", "file", "a.json", formatting="alpaca", columns={
    "prompt": "instruction", "query": "input", "response": "output", "system": "system", "history": "history"})


def attr_for(name: str) -> DatasetAttr:
    (attr,) = resolve_all(name, str(DATA))
    return attr


def rows_of(attr: DatasetAttr) -> list[dict]:
    path = attr.files[0]
    text = open(path, encoding="utf-8").read()
    return [json.loads(line) for line in text.splitlines()] if path.endswith(".jsonl") else json.loads(text)


def test_alpaca_rows_become_messages():
    row = {"instruction": "Add", "input": "2 and 3", "output": "5", "system": "S", "history": [["q", "a"]]}
    assert to_messages(row, ALPACA) == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
        {"role": "user", "content": "Add\n2 and 3"}, {"role": "assistant", "content": "5"},
    ]
    assert convert(row, ALPACA, "sft") == {"messages": to_messages(row, ALPACA)}


def test_alpaca_missing_columns_name_them():
    with pytest.raises(RowError, match="lacks instruction, output"):
        convert({"question": "q"}, ALPACA, "sft")
    with pytest.raises(RowError, match="column history must be a list of"):
        convert({"instruction": "q", "output": "a", "history": "nope"}, ALPACA, "sft")


def test_sharegpt_multi_turn_with_system_and_tool_turns():
    attr = attr_for("sharegpt_demo")
    tool_row = next(r for r in rows_of(attr) if r["conversations"][0]["from"] == "system")
    messages = convert(tool_row, attr, "sft")["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[2]["content"].startswith('{"name": "lookup_capital"')  # function_call: an assistant turn
    assert messages[3]["content"].startswith('{"capital"')  # observation: a tool turn (a prompt)


def test_sharegpt_system_column_and_openai_style_tags_are_detected():
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "system": "S"}
    attr = detect(DatasetAttr("m", "file", "m.json"), row)
    assert attr.formatting == "sharegpt" and attr.tags["role_tag"] == "role"
    assert convert(row, attr, "sft")["messages"] == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"}]


@pytest.mark.parametrize("turns, message", [
    ([("human", "a"), ("human", "b")], "roles out of order: message 1 is 'human', expected 'gpt' or 'function_call'"),
    ([("gpt", "a"), ("human", "b")], "roles out of order: message 0 is 'gpt', expected 'human' or 'observation'"),
    ([("human", "a"), ("gpt", "b"), ("human", "c")], "conversation ends with 'human'"),
    ([("human", "a"), ("bot", "b")], "message 1 has role 'bot'"),
])
def test_sharegpt_roles_out_of_order_are_rejected(turns, message):
    attr = attr_for("sharegpt_demo")
    row = {"conversations": [{"from": f, "value": v} for f, v in turns]}
    with pytest.raises(RowError, match=message):
        convert(row, attr, "sft")


def test_plain_text_for_pt():
    attr = attr_for("c4_demo")
    rows = rows_of(attr)
    assert convert(rows[0], attr, "pt") == {"text": rows[0]["text"]}
    assert convert({"text": "  "}, attr, "pt") is None  # filtered out: nothing to train on
    # a path given directly: a `text` column is found on its own
    assert detect(DatasetAttr("t", "file", "t.jsonl"), {"text": "x"}).columns["prompt"] == "text"


def test_empty_responses_are_filtered_out():
    assert convert({"instruction": "q", "output": ""}, ALPACA, "sft") is None


def test_pairwise_rows_become_trl_conversational_preference_rows():
    attr = attr_for("dpo_demo")
    assert attr.kind == "pairwise"
    row = rows_of(attr)[0]
    out = convert(row, attr, "dpo")
    assert out == {"prompt": [{"role": "user", "content": row["conversations"][0]["value"]}],
                   "chosen": [{"role": "assistant", "content": row["chosen"]["value"]}],
                   "rejected": [{"role": "assistant", "content": row["rejected"]["value"]}]}
    alpaca = detect(DatasetAttr("p", "file", "p.json"),
                    {"instruction": "Q", "chosen": "good", "rejected": "bad", "system": "S"})
    assert convert({"instruction": "Q", "chosen": "good", "rejected": "bad", "system": "S"}, alpaca, "dpo") == {
        "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
        "chosen": [{"role": "assistant", "content": "good"}], "rejected": [{"role": "assistant", "content": "bad"}]}


def test_kto_rows_become_trl_unpaired_preference_rows():
    attr = attr_for("kto_demo")
    assert attr.kind == "kto"
    rows = rows_of(attr)
    out = [convert(r, attr, "kto") for r in rows]
    assert {o["label"] for o in out} == {True, False}
    assert out[0] == {"prompt": rows[0]["messages"][:1], "completion": rows[0]["messages"][1:],
                      "label": rows[0]["label"]}
    with pytest.raises(RowError, match="must be true or false"):
        convert({**rows[0], "label": "maybe"}, attr, "kto")
    csv_attr = detect(DatasetAttr("k", "file", "k.csv"), {"instruction": "Q", "output": "A", "label": "true"})
    assert convert({"instruction": "Q", "output": "A", "label": "true"}, csv_attr, "kto")["label"] is True


def test_every_demo_dataset_converts_for_its_kind():
    stage = {"conversation": "sft", "pairwise": "dpo", "kto": "kto"}
    for name in read_registry(str(DATA)):
        attr = attr_for(name)
        if attr.source == "hub":  # adgen_train/adgen_eval: the hub's AdvertiseGen, read by the worker only
            continue
        shaped = [convert(r, detect(attr, rows_of(attr)[0]), "pt" if name == "c4_demo" else stage[attr.kind])
                  for r in rows_of(attr)]
        assert shaped and all(s is not None for s in shaped), name

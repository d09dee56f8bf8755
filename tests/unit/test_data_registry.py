"""Dataset names -> DatasetAttr: dataset_info.json entries, files, directories, datasets-library paths."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from launcher import PROJECT_ROOT
from launcher.data.registry import DataError, dataset_names, resolve_all, split_floats

DATA = str(PROJECT_ROOT / "data")


def test_names_from_a_comma_string_or_a_list():
    assert dataset_names("alpaca_en_demo,identity") == ["alpaca_en_demo", "identity"]
    assert dataset_names(" a , b ,") == ["a", "b"]
    assert dataset_names(OmegaConf.create({"d": ["a", "b"]}).d) == ["a", "b"]
    assert split_floats("0.7,0.3") == [0.7, 0.3] and split_floats([0.5, 0.5]) == [0.5, 0.5]


def test_registry_entries_map_columns_and_tags():
    alpaca, sharegpt, c4 = resolve_all("alpaca_en_demo,sharegpt_demo,c4_demo", DATA)
    assert alpaca.formatting == "alpaca" and alpaca.columns["response"] == "output"
    assert alpaca.files == (f"{DATA}/alpaca_en_demo.json",)
    assert sharegpt.formatting == "sharegpt" and sharegpt.columns["messages"] == "conversations"
    assert sharegpt.tags["user_tag"] == "human" and sharegpt.tags["observation_tag"] == "observation"
    assert c4.columns["prompt"] == "text"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(DataError, match="data.dataset=alpaka: unknown dataset name; known in .*dataset_info.json: "
                                        "adgen_demo_dev, adgen_demo_train, adgen_eval, adgen_train, alpaca_demo, "
                                        "alpaca_en_demo, c4_demo"):
        resolve_all("alpaka", DATA)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        resolve_all(str(tmp_path / "nope.json"), DATA)


def test_a_directory_of_files_and_a_save_to_disk_directory(tmp_path):
    (tmp_path / "d").mkdir()
    for i in range(2):
        (tmp_path / "d" / f"part{i}.jsonl").write_text('{"instruction": "q", "output": "a"}\n')
    (tmp_path / "d" / ".hidden.json").write_text("[]")
    (attr,) = resolve_all(str(tmp_path / "d"), DATA)
    assert attr.source == "file" and [p.rsplit("/", 1)[1] for p in attr.files] == ["part0.jsonl", "part1.jsonl"]
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "state.json").write_text("{}")
    (attr,) = resolve_all(str(tmp_path / "saved"), DATA)
    assert attr.source == "disk"
    (tmp_path / "d" / "x.csv").write_text("instruction,output\nq,a\n")
    with pytest.raises(DataError, match="mixes file types"):
        resolve_all(str(tmp_path / "d"), DATA)


@pytest.mark.parametrize("entry, message", [
    ({"file_name": "x.json", "formatting": "openai"}, "formatting 'openai' unknown"),
    ({"file_name": "x.json", "columns": {"prompt": "q", "answer": "a"}}, "columns answer unknown"),
    ({"file_name": "x.json", "columns": {"images": "img"}}, "columns images not supported"),
    ({"ms_hub_url": "org/x"}, "ms_hub_url not supported"),
    ({"file_name": "x.json", "ranking": True}, "ranking datasets map columns chosen and rejected"),
    ({"formatting": "alpaca"}, "needs file_name or hf_hub_url"),
    ({"file_name": "missing.json"}, "file_name 'missing.json' .* is not in"),
])
def test_bad_registry_entries(tmp_path, entry, message):
    (tmp_path / "x.json").write_text("[]")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mine": entry}))
    with pytest.raises(DataError, match=message):
        resolve_all("mine", str(tmp_path))


def test_malformed_registry_names_file_and_line(tmp_path):
    (tmp_path / "dataset_info.json").write_text('{\n  "a": {"file_name": "a.json"},\n  "b": \n}')
    with pytest.raises(DataError, match=r"dataset_info.json: line 4 column 1: invalid JSON"):
        resolve_all("a", str(tmp_path))


def test_hub_entries_and_local_dataset_paths(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "hub": {"hf_hub_url": "org/name", "subset": "en", "split": "validation"},
        "local": {"hf_hub_url": str(tmp_path / "ds")}}))
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "train.parquet").write_bytes(b"")
    hub, local = resolve_all("hub,local", str(tmp_path))
    assert (hub.source, hub.path, hub.subset, hub.split) == ("hub", "org/name", "en", "validation")
    assert local.source == "hub" and local.files == (str(tmp_path / "ds" / "train.parquet"),)

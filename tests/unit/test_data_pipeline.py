"""The data pipeline for real (datasets library, the tiny tokenizer), in this process: formats x stages,
max_samples, val_size, interleaving, packing (and its loss equivalence on the tiny model), the cache."""
from __future__ import annotations

import json
import random

import pytest

from launcher.data.cache import prepare
from launcher.data.packing import best_fit_bins, chunk_table, non_pad_share, pack_rows
from launcher.data.pipeline import shape
from launcher.data.registry import DataError
from launcher.data.templates import IGNORE_INDEX
from tests.support import DEMO_DATA, compose


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from launcher.worker.model import load_tokenizer

    return load_tokenizer(compose("recipe=tiny_sft_lora", "device=cpu"))


def config(tmp_path, *overrides):
    return compose("recipe=tiny_sft_lora", "device=cpu", f"data.cache_dir={tmp_path}/cache", *overrides)


def labelled_text(tokenizer, row) -> str:
    return tokenizer.decode([t for t in row["labels"] if t != IGNORE_INDEX])


def source_rows(name: str) -> list[dict]:
    from launcher import PROJECT_ROOT

    return json.loads((PROJECT_ROOT / "data" / f"{name}.json").read_text())


# ---- formats x stages ----------------------------------------------------------------------------------------

def test_alpaca_sft_rows_parse_and_only_responses_carry_labels(tmp_path, tokenizer):
    data = prepare(config(tmp_path, "data.dataset=alpaca_en_demo"), tokenizer)
    rows = source_rows("alpaca_en_demo")
    assert len(data.train) == len(rows) == data.record["train_rows"]
    for row in data.train:
        src = rows[row["row_id"]]
        answers = [a for _, a in src.get("history", [])] + [src["output"]]  # every answer, history's too
        assert labelled_text(tokenizer, row) == "".join(a + "</s>\n" for a in answers)
        assert src["instruction"] in tokenizer.decode(row["input_ids"])
        assert len(row["input_ids"]) == len(row["labels"]) <= 256


def test_sharegpt_sft_rows_label_every_assistant_turn_but_not_tool_results(tmp_path, tokenizer):
    data = prepare(config(tmp_path, "data.dataset=sharegpt_demo"), tokenizer)
    rows = source_rows("sharegpt_demo")
    for row in data.train:
        turns = rows[row["row_id"]]["conversations"]
        answers = [t["value"] for t in turns if t["from"] in ("gpt", "function_call")]
        assert labelled_text(tokenizer, row) == "".join(a + "</s>\n" for a in answers)
        for t in turns:
            if t["from"] in ("observation", "human", "system"):
                assert t["value"] not in labelled_text(tokenizer, row)


def test_train_on_prompt_and_mask_history(tmp_path, tokenizer):
    everything = prepare(config(tmp_path, "data.dataset=sharegpt_demo", "data.train_on_prompt=true"), tokenizer)
    assert all(r["labels"] == r["input_ids"] for r in everything.train)
    last = prepare(config(tmp_path, "data.dataset=sharegpt_demo", "data.mask_history=true"), tokenizer)
    rows = source_rows("sharegpt_demo")
    for row in last.train:
        assert labelled_text(tokenizer, row) == rows[row["row_id"]]["conversations"][-1]["value"] + "</s>\n"


@pytest.mark.parametrize("packing", [False, True])
def test_pt_concatenates_documents_into_cutoff_len_rows(tmp_path, tokenizer, packing):
    cfg = compose("recipe=tiny_pt_lora", "device=cpu", f"data.cache_dir={tmp_path}/cache", f"data.packing={packing}")
    data = prepare(cfg, tokenizer)
    lengths = [len(r["input_ids"]) for r in data.train]
    assert all(n == 128 for n in lengths[:-1]) and 0 < lengths[-1] <= 128
    eos = tokenizer.eos_token_id
    for row in data.train:
        ids, labels = row["input_ids"], row["labels"]
        if not packing:
            assert labels == ids and "position_ids" not in row
            continue
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        assert starts[0] == 0 and all(ids[s - 1] == eos for s in starts[1:])  # a new document after each eos
        assert all(labels[s] == IGNORE_INDEX for s in starts)  # nothing predicts a document's first token
        assert len(starts) == len(row["row_id"])


def test_max_samples_applies_per_dataset_not_to_the_mixture(tmp_path, tokenizer):
    data = prepare(config(tmp_path, "data=demo_mix", "data.max_samples=5"), tokenizer)
    assert data.record["train_rows"] == 15
    assert {k: v["taken"] for k, v in data.record["datasets"].items()} == \
        {"alpaca_en_demo": 5, "identity": 5, "sharegpt_demo": 5}


@pytest.mark.parametrize("val_size, n_eval", [(0.1, 10), (7, 7)])
def test_val_size_splits_off_an_eval_set(tmp_path, tokenizer, val_size, n_eval):
    data = prepare(config(tmp_path, "data=demo_mix", f"data.val_size={val_size}"), tokenizer)
    assert (len(data.train), len(data.eval)) == (100 - n_eval, n_eval)
    assert set(data.train["row_id"]).isdisjoint(data.eval["row_id"])


def test_eval_dataset_is_the_eval_set_tokenized_like_training_and_cached(tmp_path, tokenizer):
    cfg = config(tmp_path, "data.dataset=alpaca_en_demo", "data.eval_dataset=[identity,sharegpt_demo]",
                 "data.max_samples=20", "data.cutoff_len=64")
    data = prepare(cfg, tokenizer)
    assert data.record["train_rows"] == 20 and data.record["eval_rows"] == len(data.eval) <= 12 + 20
    assert {k: v["taken"] for k, v in data.record["eval_datasets"].items()} == {"identity": 12, "sharegpt_demo": 20}
    # the same template and cutoff: the eval rows are what training on those datasets would see
    alone = prepare(config(tmp_path, "data.dataset=[identity,sharegpt_demo]", "data.max_samples=20",
                           "data.cutoff_len=64"), tokenizer).train
    assert data.eval["input_ids"] == alone["input_ids"] and data.eval["labels"] == alone["labels"]
    assert max(len(ids) for ids in data.eval["input_ids"]) <= 64
    again = prepare(cfg, tokenizer).record
    assert again["cache_hit"] and again["cache_path"] == data.record["cache_path"]
    other = prepare(config(tmp_path, "data.dataset=alpaca_en_demo", "data.eval_dataset=identity",
                           "data.max_samples=20", "data.cutoff_len=64"), tokenizer)
    assert other.record["cache_path"] != data.record["cache_path"] and len(other.eval) == 12


def test_an_unknown_eval_dataset_name_stops_the_worker_naming_the_key(tmp_path, tokenizer):
    with pytest.raises(DataError, match="data.eval_dataset=nope: unknown dataset name"):
        prepare(config(tmp_path, "data.eval_dataset=nope"), tokenizer)


def test_worker_processes_give_the_same_rows(tmp_path, tokenizer):
    one = prepare(config(tmp_path, "data=demo_mix"), tokenizer).train
    two = prepare(config(tmp_path / "2", "data=demo_mix", "data.preprocessing_num_workers=2"), tokenizer).train
    assert one["row_id"] == two["row_id"] and one["input_ids"] == two["input_ids"]


def test_large_sets_tokenize_in_several_processes_unless_workers_are_set(tmp_path, tokenizer, monkeypatch):
    import os

    from launcher.data import pipeline

    cores = len(os.sched_getaffinity(0))
    assert pipeline.auto_workers(pipeline.ROWS_PER_WORKER - 1) is None
    assert pipeline.auto_workers(pipeline.ROWS_PER_WORKER * 2) == (2 if cores > 1 else None)
    assert pipeline.auto_workers(pipeline.ROWS_PER_WORKER * 100) == min(cores, pipeline.MAX_AUTO_WORKERS)
    one = prepare(config(tmp_path, "data=demo_mix"), tokenizer)
    monkeypatch.setattr(pipeline, "ROWS_PER_WORKER", 10)  # the demo mix is then "large"
    auto = prepare(config(tmp_path / "auto", "data=demo_mix"), tokenizer)
    pinned = prepare(config(tmp_path / "pinned", "data=demo_mix", "data.preprocessing_num_workers=1"), tokenizer)
    assert (one.record["tokenize_processes"], auto.record["tokenize_processes"],
            pinned.record["tokenize_processes"]) == (1, min(cores, pipeline.MAX_AUTO_WORKERS), 1)
    assert one.train["input_ids"] == auto.train["input_ids"] == pinned.train["input_ids"]


def test_one_process_tokenizes_with_the_tokenizer_threads_then_turns_them_off(monkeypatch):
    import os

    from launcher.data.pipeline import several, tokenizer_threads

    # preprocessing_num_workers=1 is this process (datasets would turn the threads off for a "pool" of one)
    assert (several(None), several(1), several(2)) == (None, None, 2)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # as plan.py sets it for ranks
    with tokenizer_threads(None):
        assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
    with tokenizer_threads(2):  # worker processes fork from this one: no threads before that
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    monkeypatch.delenv("TOKENIZERS_PARALLELISM")
    with tokenizer_threads(1):
        assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
    assert "TOKENIZERS_PARALLELISM" not in os.environ


def test_interleave_probabilities_are_honoured(tmp_path, tokenizer):
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"instruction": f"{name} {i}", "output": "ok"}) + "\n" for i in range(600)))
    cfg = config(tmp_path, f"data.dataset=[{tmp_path}/a.jsonl,{tmp_path}/b.jsonl]",
                 "data.mix_strategy=interleave_under", "data.interleave_probs='0.8,0.2'")
    counts = {k: v["in_mixture"] for k, v in prepare(cfg, tokenizer).record["datasets"].items()}
    a, b = counts[f"{tmp_path}/a.jsonl"], counts[f"{tmp_path}/b.jsonl"]
    assert a == 600  # interleave_under stops when the first dataset runs out
    assert abs(b / (a + b) - 0.2) < 0.04, counts


def test_parquet_directory_csv_file_and_saved_dataset(tmp_path, tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(12)]
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:6]), tmp_path / "pq" / "part0.parquet")
    pq.write_table(pa.Table.from_pylist(rows[6:]), tmp_path / "pq" / "part1.parquet")
    (tmp_path / "rows.csv").write_text("instruction,output\n" + "".join(f"q{i},a{i}\n" for i in range(5)))
    Dataset.from_list(rows[:3]).save_to_disk(str(tmp_path / "saved"))
    cfg = config(tmp_path, f"data.dataset=[{tmp_path}/pq,{tmp_path}/rows.csv,{tmp_path}/saved]")
    data = prepare(cfg, tokenizer)
    assert {k: v["rows"] for k, v in data.record["datasets"].items()} == \
        {f"{tmp_path}/pq": 12, f"{tmp_path}/rows.csv": 5, f"{tmp_path}/saved": 3}
    assert len(data.train) == 20


def test_streaming_tokenizes_lazily_and_splits_off_the_first_rows(tmp_path, tokenizer):
    data = prepare(config(tmp_path, "data.streaming=true", "train.max_steps=3", "data.val_size=4",
                          "data.buffer_size=8"), tokenizer)
    assert data.record["cache_path"] is None and list((tmp_path / "cache").glob("*/meta.json")) == []
    assert sorted(data.eval["row_id"]) == [0, 1, 2, 3]
    first = [r["row_id"] for r, _ in zip(data.train, range(20))]
    assert min(first) >= 4 and first != sorted(first)  # shuffled within the buffer
    assert all(isinstance(r["input_ids"], list) for r, _ in zip(data.train, range(3)))


# ---- packing ---------------------------------------------------------------------------------------------

def test_best_fit_bins_fill_rows_without_overflow():
    rng = random.Random(0)
    lengths = [rng.randint(5, 120) for _ in range(500)]
    bins = best_fit_bins(lengths, 256)
    assert sorted(i for b in bins for i in b) == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 256 for b in bins)
    assert sum(lengths) / (256 * len(bins)) > 0.97
    # the fullest bin that fits, the first opened among equals
    assert best_fit_bins([5, 5, 3, 3, 2, 6], 8) == [[4, 5], [0, 2], [1, 3]]
    assert best_fit_bins([4, 6, 2, 3], 8) == [[1, 2], [0, 3]]
    with pytest.raises(ValueError, match="more than the row capacity"):
        best_fit_bins([300], 256)


def packed_rows_of(rows: list[dict], bins: list[list[int]]) -> list[dict]:
    import pyarrow as pa

    return pack_rows(pa.Table.from_pylist(rows), bins).to_pylist()


def test_packed_rows_restart_positions_and_mask_first_labels():
    examples = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3], "row_id": 7},
                {"input_ids": [4, 5], "labels": [-100, 5], "row_id": 9},
                {"input_ids": [6, 7, 8, 9], "labels": [6, 7, 8, 9], "row_id": 4}]
    want = [{"input_ids": [1, 2, 3, 4, 5], "labels": [-100, 2, 3, -100, 5], "position_ids": [0, 1, 2, 0, 1],
             "row_id": [7, 9]},
            {"input_ids": [6, 7, 8, 9], "labels": [-100, 7, 8, 9], "position_ids": [0, 1, 2, 3], "row_id": [4]}]
    assert packed_rows_of(examples, [[0, 1], [2]]) == want
    assert packed_rows_of(examples, []) == []


def test_documents_are_chunked_into_rows_and_isolated_when_packing():
    import pyarrow as pa

    docs = pa.table({"input_ids": [[1, 2, 3, 4, 5], [], [6, 7], [8, 9, 10, 11, 12, 13, 14, 15, 16]],
                     "row_id": [0, 1, 2, 3]})
    isolated = chunk_table(docs, block=4, isolate=True).to_pylist()
    assert [r["input_ids"] for r in isolated] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]
    assert isolated[1] == {"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, -100], "row_id": [0, 2, 3],
                           "position_ids": [0, 0, 1, 0]}  # the empty document is in no row
    assert isolated[2]["position_ids"] == [0, 1, 2, 3] and isolated[2]["labels"] == [-100, 10, 11, 12]
    assert [r["row_id"] for r in isolated] == [[0], [0, 2, 3], [3], [3]]
    joined = chunk_table(docs, block=6, isolate=False).to_pylist()
    assert joined == [{"input_ids": [1, 2, 3, 4, 5, 6], "labels": [1, 2, 3, 4, 5, 6], "row_id": [0, 2]},
                      {"input_ids": [7, 8, 9, 10, 11, 12], "labels": [7, 8, 9, 10, 11, 12], "row_id": [2, 3]},
                      {"input_ids": [13, 14, 15, 16], "labels": [13, 14, 15, 16], "row_id": [3]}]
    assert chunk_table(docs.slice(1, 1), block=4, isolate=True).num_rows == 0


def test_packing_a_shuffled_view_packs_its_rows_and_keeps_the_id_type():
    from datasets import Dataset, Features, List, Value

    rng = random.Random(1)
    rows = [{"input_ids": [rng.randint(0, 99) for _ in range(rng.randint(1, 40))], "row_id": k, "prompt_len": 1}
            for k in range(30)]
    for r in rows:
        r["labels"] = [rng.choice([IGNORE_INDEX, 5]) for _ in r["input_ids"]]
    features = Features({"input_ids": List(Value("int32")), "row_id": Value("int64"), "prompt_len": Value("int64"),
                         "labels": List(Value("int64"))})
    view = Dataset.from_list(rows, features=features).shuffle(seed=3).select(range(20))  # an indices mapping
    out = shape(view, "sft", True, 64)
    assert out.features["input_ids"] == List(Value("int32")) and out.column_names == \
        ["input_ids", "labels", "position_ids", "row_id"]
    assert sorted(i for r in out["row_id"] for i in r) == sorted(view["row_id"])
    for row in out:
        parts = [rows[i] for i in row["row_id"]]
        assert row["input_ids"] == [t for p in parts for t in p["input_ids"]] and len(row["input_ids"]) <= 64
        assert row["labels"] == [t for p in parts for t in [IGNORE_INDEX] + p["labels"][1:]]
        assert row["position_ids"] == [t for p in parts for t in range(len(p["input_ids"]))]


def test_more_tokens_than_one_packed_table_holds_is_a_data_error(monkeypatch):
    from datasets import Dataset

    rows = Dataset.from_list([{"input_ids": [1, 2, 3], "labels": [1, 2, 3], "row_id": k} for k in range(4)])
    monkeypatch.setattr("launcher.data.pipeline.MAX_TABLE_TOKENS", 11)
    with pytest.raises(DataError, match=r"data.packing=true: the tokenized rows hold 12 tokens, more than one packed "
                                        r"table holds \(11\); use data.packing=false, data.streaming=true"):
        shape(rows, "sft", True, 8)
    with pytest.raises(DataError, match=r"stage=pt: .* 12 tokens"):
        shape(rows, "pt", False, 8)
    assert shape(rows, "sft", False, 8) is rows  # unpacked rows stay as they are, however many
    monkeypatch.setattr("launcher.data.pipeline.MAX_TABLE_TOKENS", 12)
    assert len(shape(rows, "sft", True, 8)) == 2 and len(shape(rows, "pt", False, 8)) == 2


def test_packing_reaches_95_percent_real_tokens_on_the_demo_data(tmp_path, tokenizer):
    shares = {}
    for data in ("alpaca_demo", "demo_mix"):
        for packing in (False, True):
            record = prepare(config(tmp_path, f"data={data}", f"data.packing={packing}"), tokenizer).record
            shares[data, packing] = record["non_pad_share"]
    assert shares["alpaca_demo", True] >= 0.95 and shares["demo_mix", True] >= 0.95, shares
    assert shares["demo_mix", False] < 0.8 < shares["demo_mix", True]
    assert non_pad_share([10, 10, 5, 5], batch_size=2, seed=0) in (0.75, 1.0)


def test_packed_rows_give_the_same_per_token_loss_as_unpacked_rows(tmp_path, tokenizer):
    import torch

    from launcher.data.collator import PaddingCollator
    from launcher.worker.model import load_model

    cfg = config(tmp_path, "data=demo_mix", "data.train_on_prompt=true")  # every token counts
    examples = list(prepare(cfg, tokenizer).train.select(range(6)))
    model = load_model(cfg, "fp32").eval()
    collate = PaddingCollator(tokenizer.pad_token_id)

    def token_losses(batch):
        with torch.no_grad():
            out = model(**batch)
        logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                               reduction="none")
        return ce, out.loss

    unpacked, loss_unpacked = token_losses(collate(examples))
    packed_rows = packed_rows_of(examples, [[0, 1, 2, 3], [4, 5]])  # two packed rows, padded in one batch
    packed, loss_packed = token_losses(collate(packed_rows))
    for k, ex in enumerate(examples):
        n = len(ex["input_ids"])
        row, start = (0, sum(len(e["input_ids"]) for e in examples[:k])) if k < 4 else \
            (1, sum(len(e["input_ids"]) for e in examples[4:k]))
        torch.testing.assert_close(packed[row, start:start + n - 1], unpacked[k, :n - 1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_packed, loss_unpacked, atol=1e-5, rtol=1e-5)


# ---- the cache -------------------------------------------------------------------------------------------

def test_second_prepare_tokenizes_nothing_and_changes_rebuild(tmp_path, tokenizer):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rows = json.loads(DEMO_DATA.read_text())
    (data_dir / "rows.json").write_text(json.dumps(rows))
    cfg = config(tmp_path, f"data.dataset={data_dir}/rows.json")
    first = prepare(cfg, tokenizer).record
    assert first["rows_tokenized_here"] == 116 and not first["cache_hit"]
    again = prepare(cfg, tokenizer).record
    assert again["rows_tokenized_here"] == 0 and again["cache_hit"] and again["cache_path"] == first["cache_path"]

    rows[3]["output"] += "!"
    (data_dir / "rows.json").write_text(json.dumps(rows))
    changed = prepare(cfg, tokenizer).record
    assert changed["rows_tokenized_here"] == 116 and changed["cache_path"] != first["cache_path"]
    for override in ("data.cutoff_len=128", "data.packing=true", "data.max_samples=50", "data.template=chatml"):
        rebuilt = prepare(config(tmp_path, f"data.dataset={data_dir}/rows.json", override), tokenizer).record
        assert rebuilt["rows_tokenized_here"] > 0 and rebuilt["cache_path"] != changed["cache_path"], override
    forced = prepare(config(tmp_path, f"data.dataset={data_dir}/rows.json", "data.overwrite_cache=true"),
                     tokenizer).record
    assert forced["rows_tokenized_here"] == 116 and forced["cache_path"] == changed["cache_path"]
    # the same bytes elsewhere are the same cache
    (tmp_path / "moved").mkdir()
    (tmp_path / "moved" / "rows.json").write_bytes((data_dir / "rows.json").read_bytes())
    moved = prepare(config(tmp_path, f"data.dataset={tmp_path}/moved/rows.json"), tokenizer).record
    assert moved["cache_path"] == changed["cache_path"] and moved["rows_tokenized_here"] == 0


def test_other_ranks_wait_for_local_rank_0_and_time_out_clearly(tmp_path, tokenizer):
    cfg = config(tmp_path, "data.cache_timeout_s=2")
    with pytest.raises(DataError, match="rank 1 waited 2 s for local rank 0 to tokenize into .* prepare_only=true"):
        prepare(cfg, tokenizer, local_rank=1, rank=1)
    built = prepare(cfg, tokenizer).record
    waited = prepare(cfg, tokenizer, local_rank=1, rank=1).record
    assert waited["rows_tokenized_here"] == 0 and waited["cache_path"] == built["cache_path"]


def test_a_failed_build_leaves_nothing_in_the_cache(tmp_path, tokenizer):
    rows = [{"instruction": "q", "output": "a"}] * 3 + [{"instruction": "q"}]  # prepare() alone: no validate
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    cfg = config(tmp_path, f"data.dataset={tmp_path}/rows.json")
    with pytest.raises(DataError, match="row 3 lacks output"):
        prepare(cfg, tokenizer)
    left = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert [n for n in left if not n.endswith(".lock") and n != "hf"] == []

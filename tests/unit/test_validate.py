"""validate(): every user mistake is reported at once, naming key, value and fix; the CLI exits 2."""
from __future__ import annotations

import json

import pytest

from launcher.facts import RunDirFacts, scan_data_file
from tests.support import compose, facts, problems_of, run_launch
from tests.support import errors_of as errors, only_error_of as only_error


def test_a_good_config_has_no_problem():
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "gpus=2")
    assert problems_of(cfg) == []


def test_gpus_below_one():
    e = only_error(compose("recipe=tiny_sft_lora", "device=cpu", "gpus=0", "global_batch_size=null"))
    assert e.key == "gpus" and e.value == 0 and "gpus=1" in e.fix


def test_fp16_on_cpu():
    e = only_error(compose("recipe=tiny_sft_lora", "device=cpu", "precision=fp16"))
    assert e.key == "precision" and "precision=fp32" in e.fix and "fp16" in str(e)


def test_more_gpus_than_visible_is_an_error_for_a_real_run():
    cfg = compose("recipe=llama2_sft_lora", "gpus=4")
    e = only_error(cfg, facts(cfg, visible_gpus=2))
    assert e.key == "gpus" and e.value == 4 and "2 CUDA GPU(s) visible" in e.fix and "gpus<=2" in e.fix


def test_more_gpus_than_visible_is_a_warning_in_dry_run():
    cfg = compose("recipe=llama2_sft_lora", "gpus=4", "dry_run=true")
    problems = problems_of(cfg, visible_gpus=0)
    assert len(problems) == 1 and not problems[0].error and problems[0].key == "gpus"


def test_missing_local_model_directory():
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "model.model_name_or_path=/nonexistent/llama")
    e = only_error(cfg, facts(cfg, paths={"/nonexistent/llama": False}))
    assert e.key == "model.model_name_or_path" and e.value == "/nonexistent/llama"


def test_missing_data_file(tmp_path):
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", f"data.dataset={tmp_path}/nope.json")
    e = only_error(cfg)
    assert e.key == "data.dataset" and "no such file" in e.fix


def test_rows_missing_columns(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c"}, {"question": "d", "answer": "e"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", f"data.dataset={path}")
    e = only_error(cfg)
    assert e.key == "data.dataset"
    assert "row 1 lacks output" in e.fix and "row 2 lacks instruction, output" in e.fix


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n')
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", f"data.dataset={path}")
    e = only_error(cfg)
    assert f"{path}: line 2" in e.fix


def test_global_batch_not_divisible_names_numbers_and_fixes():
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "gpus=3", "global_batch_size=20",
                  "train.per_device_train_batch_size=2")
    e = only_error(cfg)
    assert e.key == "global_batch_size" and e.value == 20
    assert "2 x 3 = 6" in e.fix
    assert "global_batch_size=18 or global_batch_size=24" in e.fix


def test_finished_run_in_output_dir_needs_resume_or_overwrite():
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "output_dir=/runs/old")
    e = only_error(cfg, facts(cfg, output_dir=RunDirFacts(exists=True, finished=True)))
    assert e.key == "output_dir" and "overwrite_output_dir=true" in e.fix
    finished = RunDirFacts(exists=True, finished=True, has_checkpoints=True,
                           last_checkpoint="/runs/old/checkpoints/checkpoint-6")
    for ok in ("overwrite_output_dir=true", "resume=true"):
        cfg = compose("recipe=tiny_sft_lora", "device=cpu", "output_dir=/runs/old", ok)
        assert errors(cfg, facts(cfg, output_dir=finished)) == []


def test_unfinished_run_in_output_dir_suggests_resume():
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "output_dir=/runs/old")
    e = only_error(cfg, facts(cfg, output_dir=RunDirFacts(exists=True, has_checkpoints=True)))
    assert "resume=true" in e.fix


def test_every_problem_is_reported_at_once(tmp_path):
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "gpus=3", "precision=fp16", "global_batch_size=10",
                  f"data.dataset={tmp_path}/nope.json", "adapter.lora_rank=0")
    assert {e.key for e in errors(cfg)} == {"precision", "global_batch_size", "data.dataset", "adapter.lora_rank"}


def test_backend_single_with_several_gpus():
    e = only_error(compose("recipe=llama2_sft_lora", "gpus=2", "backend=single"))
    assert e.key == "backend" and "backend=torchrun" in e.fix


def test_unknown_logger():
    e = only_error(compose("recipe=tiny_sft_lora", "device=cpu", "logger.report_to=[tensorbored]"))
    assert e.key == "logger.report_to" and "tensorbored" in e.fix


@pytest.mark.parametrize("args, key", [
    (["gpus=0", "global_batch_size=null"], "gpus=0"),
    (["precision=fp16"], "precision=fp16"),
    (["global_batch_size=10", "gpus=3"], "global_batch_size=10"),
    (["data.dataset=/nonexistent.json"], "data.dataset=/nonexistent.json"),
    (["data.dataset=alpaka_demo"], "data.dataset=alpaka_demo"),
    (["data.template=chatgml3"], "data.template=chatgml3"),
    (["model.model_name_or_path=/nonexistent/model"], "model.model_name_or_path=/nonexistent/model"),
])
def test_cli_reports_problems_and_exits_2_starting_nothing(tmp_path, args, key):
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", *args, cwd=tmp_path)
    assert r.returncode == 2
    assert f"error: {key}:" in r.stderr
    assert "nothing was started" in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_cuda_gpus_not_visible_exits_2(tmp_path):
    r = run_launch("recipe=tiny_sft_lora", "gpus=2", cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 2 and "error: gpus=2: 0 CUDA GPU(s) visible" in r.stderr and "device=cpu" in r.stderr


def test_cli_finished_run_dir_is_protected(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text("{}")
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", f"output_dir={run}", cwd=tmp_path)
    assert r.returncode == 2 and "already holds a finished run" in r.stderr
    assert [p.name for p in run.iterdir()] == ["summary.json"]


def test_scan_counts_rows(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "b"}] * 3))
    f = scan_data_file(str(path))
    assert f.exists and f.rows == 3 and f.error is None


def write_rows(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_dataset_names_from_the_registry_as_a_comma_string_or_a_list():
    for value in ("'alpaca_en_demo,identity,sharegpt_demo'", "[alpaca_en_demo,identity,sharegpt_demo]"):
        cfg = compose("recipe=tiny_sft_lora", "device=cpu", f"data.dataset={value}")
        assert errors(cfg) == []


def test_unknown_dataset_name_lists_the_known_ones():
    e = only_error(compose("recipe=tiny_sft_lora", "device=cpu", "data.dataset='alpaca_en_demo,identiti'"))
    assert (e.key, e.value) == ("data.dataset", "identiti")
    assert "unknown dataset name" in e.fix and "identity" in e.fix


def test_unknown_template_lists_the_known_ones():
    e = only_error(compose("recipe=tiny_sft_lora", "device=cpu", "data.template=chatgml3"))
    assert e.key == "data.template" and "chatglm3" in e.fix and "auto" in e.fix


def test_sharegpt_roles_out_of_order(tmp_path):
    good = {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}
    bad = {"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}
    path = write_rows(tmp_path / "chat.jsonl", [good, bad])
    e = only_error(compose("recipe=tiny_sft_lora", "device=cpu", f"data.dataset={path}"))
    assert e.key == "data.dataset" and "row 1 roles out of order: message 1 is 'human'" in e.fix


def test_empty_after_filtering(tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", [{"instruction": "a", "output": ""}] * 3)
    e = only_error(compose("recipe=tiny_sft_lora", "device=cpu", f"data.dataset={path}"))
    assert "empty after filtering: all 3 rows have an empty response" in e.fix


def test_empty_file(tmp_path):
    (tmp_path / "rows.json").write_text("[]")
    e = only_error(compose("recipe=tiny_sft_lora", "device=cpu", f"data.dataset={tmp_path}/rows.json"))
    assert "holds no rows" in e.fix


def test_malformed_registry_names_file_and_line(tmp_path):
    (tmp_path / "dataset_info.json").write_text('{"a": {"file_name": "a.json"},\n "b": }')
    e = only_error(compose("recipe=tiny_sft_lora", "device=cpu", "data.dataset=a", f"data.dataset_dir={tmp_path}"))
    assert e.key == "data.dataset_dir" and "dataset_info.json: line 2" in e.fix


def test_preference_rows_are_not_for_sft():
    e = only_error(compose("recipe=tiny_sft_lora", "device=cpu", "data.dataset=dpo_demo"))
    assert "holds pairwise (chosen/rejected rows); stage=sft takes conversation" in e.fix


def test_pt_takes_plain_text():
    assert errors(compose("recipe=tiny_pt_lora", "device=cpu")) == []


@pytest.mark.parametrize("args, key, fix", [
    (["data.mix_strategy=interleave_under", "data.interleave_probs='0.5,0.5'"], "data.interleave_probs",
     "2 probabilities for 3 datasets"),
    (["data.mix_strategy=interleave_under", "data.interleave_probs=[0.5,0.2,0.2]"], "data.interleave_probs",
     "sum to 1 (they sum to 0.9)"),
    (["data.interleave_probs='0.5,0.2,0.3'"], "data.interleave_probs", "set data.mix_strategy=interleave_under"),
    (["data.streaming=true"], "data.streaming", "set train.max_steps"),
    (["data.streaming=true", "train.max_steps=5", "data.packing=true"], "data.packing", "cannot pack a stream"),
    (["data.streaming=true", "train.max_steps=5", "data.val_size=0.1"], "data.val_size", "give a row count"),
    (["train.eval_strategy=steps"], "train.eval_strategy", "set data.val_size"),
    (["train.eval_strategy=always", "data.val_size=0.1"], "train.eval_strategy", "use one of no, steps, epoch"),
    (["data.val_size=2.5"], "data.val_size", "a whole row count"),
    (["data.val_size=100"], "data.val_size", "the datasets hold 100 rows"),
    (["data.max_samples=0"], "data.max_samples", "rows per dataset"),
])
def test_data_settings(args, key, fix):
    e = only_error(compose("recipe=tiny_sft_lora", "device=cpu", "data=demo_mix", *args))
    assert e.key == key and fix in e.fix, str(e)


def test_max_samples_counts_per_dataset_for_val_size():
    # 3 datasets x 5 rows = 15: a val_size of 14 still leaves a training row
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "data=demo_mix", "data.max_samples=5", "data.val_size=14")
    assert errors(cfg) == []


def test_parquet_and_csv_files_are_scanned(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"instruction": "a", "output": "b"}, {"instruction": "c"}]),
                   tmp_path / "rows.parquet")
    e = only_error(compose("recipe=tiny_sft_lora", "device=cpu", f"data.dataset={tmp_path}/rows.parquet"))
    assert "row 1 lacks output" in e.fix
    (tmp_path / "rows.csv").write_text("instruction,output\na,b\n")
    assert errors(compose("recipe=tiny_sft_lora", "device=cpu", f"data.dataset={tmp_path}/rows.csv")) == []


@pytest.fixture
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("userdata")


@pytest.mark.parametrize("rows, needle", [
    ([{"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]}],
     "row 0 roles out of order"),
    ([{"instruction": "a", "output": " "}], "empty after filtering"),
    ([{"instruction": "a"}], "row 0 lacks output"),
    ('{"instruction": "a", "output": "b"}\n{"instruction": \n', "rows.jsonl: line 2: invalid JSON"),
])
def test_cli_bad_rows_exit_2_starting_nothing(tmp_path, data_dir, rows, needle):
    path = data_dir / "rows.jsonl"
    path.write_text(rows) if isinstance(rows, str) else write_rows(path, rows)
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", f"data.dataset={path}", "prepare_only=true", cwd=tmp_path)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []

"""LLaMA-Factory's spelling on our command line: an unquoted comma list for a comma-string key is that string."""
from __future__ import annotations

from launcher import schema
from launcher.cli import quote_comma_lists
from tests.support import run_launch


def test_comma_keys_are_marked_in_the_schema():
    keys = set(schema.comma_keys())
    assert {"model.lora_target", "adapter.lora_target", "adapter.additional_target", "adapter.adapter_name_or_path",
            "adapter.freeze_trainable_modules", "adapter.freeze_extra_modules", "data.dataset"} <= keys
    assert "adapter.lora_rank" not in keys


def test_an_unquoted_comma_list_is_quoted_for_a_comma_key():
    assert quote_comma_lists(["adapter.lora_target=q_proj,v_proj", "data.dataset=a,b", "+adapter.lora_target=x,y"]) \
        == ["adapter.lora_target='q_proj,v_proj'", "data.dataset='a,b'", "+adapter.lora_target='x,y'"]


def test_everything_else_keeps_hydras_grammar():
    args = ["adapter.lora_target=q_proj", "adapter.lora_target='q,v'", "data.dataset=[a,b]", "adapter.lora_rank=4,8",
            "data.dataset=${oc.env:X,a}", "data.dataset=choice(a,b)", "recipe=tiny_sft_lora", "--cfg", "job"]
    assert quote_comma_lists(args) == args


def test_under_multirun_a_comma_stays_a_sweep():
    for flag in ("-m", "--multirun", "hydra.mode=MULTIRUN"):
        args = [flag, "adapter.lora_target=q_proj,v_proj"]
        assert quote_comma_lists(args) == args


def test_cli_takes_an_unquoted_lora_target(tmp_path):
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", "adapter.lora_target=q_proj,v_proj,o_proj", "--cfg", "job",
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "lora_target: q_proj,v_proj,o_proj" in r.stdout
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", "dry_run=true", "adapter.lora_target=q_proj,v_proj",
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "# dry run" in r.stdout

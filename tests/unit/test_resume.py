"""Honest resume: resume=true|false|auto, what an output_dir may hold, what a resume may change (pure), and the
CLI's refusals (exit 2, nothing written)."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from launcher.checkpoints import mark_complete
from launcher.facts import RunDirFacts, scan_run_dir
from launcher.validate.resume import config_changes, resume_mode, resumes_from
from tests import support
from tests.support import compose, facts, run_launch

RUN = "/runs/r"
CKPT = f"{RUN}/checkpoints/checkpoint-6"
BASE = ("recipe=tiny_sft_lora", "device=cpu", f"output_dir={RUN}")


def resolved(*overrides):
    return OmegaConf.to_container(compose("recipe=tiny_sft_lora", "device=cpu", *overrides), resolve=True,
                                  enum_to_str=True)


def problems(*overrides, **run):
    return support.problems(*overrides, base=BASE, output_dir=RunDirFacts(**run))


def errors(*overrides, **run):
    return support.errors(*overrides, base=BASE, output_dir=RunDirFacts(**run))


RESUMABLE = dict(exists=True, has_checkpoints=True, last_checkpoint=CKPT)


@pytest.mark.parametrize("value, mode", [(True, "true"), (False, "false"), ("auto", "auto"), ("yes", None),
                                         (1, None), ("true", None)])
def test_resume_is_true_false_or_auto(value, mode):
    assert resume_mode(value) == mode


def test_any_other_resume_value_names_the_choices():
    [e] = errors("resume=maybe")
    assert e.key == "resume" and e.value == "maybe"
    assert all(choice in e.fix for choice in ("resume=true", "resume=auto", "resume=false"))


def test_resume_true_without_a_complete_checkpoint_names_the_run_dir():
    [e] = errors("resume=true", exists=True, has_checkpoints=True, incomplete_checkpoints=("checkpoint-9",))
    assert e.key == "resume" and RUN in e.fix and "checkpoint-9 has no completion marker" in e.fix
    assert "resume=auto" in e.fix
    [e] = errors("resume=true")
    assert "does not exist" in e.fix


def test_resume_auto_resumes_when_it_can_and_starts_fresh_otherwise():
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", f"output_dir={RUN}", "resume=auto")
    assert resumes_from(cfg, facts(cfg, output_dir=RunDirFacts(**RESUMABLE))) == CKPT
    assert resumes_from(cfg, facts(cfg, output_dir=RunDirFacts(exists=True, has_checkpoints=True))) is None
    assert errors("resume=auto") == []
    assert errors("resume=auto", **RESUMABLE) == []
    # only torn checkpoints: auto starts fresh (resume=false would be refused: the dir holds checkpoints)
    assert errors("resume=auto", exists=True, has_checkpoints=True, incomplete_checkpoints=("checkpoint-3",)) == []
    [e] = errors(exists=True, has_checkpoints=True)
    assert e.key == "output_dir" and "resume=auto" in e.fix


def test_resume_auto_does_not_train_a_finished_run_further():
    [e] = errors("resume=auto", finished=True, **RESUMABLE)
    assert e.key == "output_dir" and "overwrite_output_dir=true" in e.fix and "resume=true" in e.fix
    assert errors("resume=true", finished=True, **RESUMABLE) == []


def test_resume_auto_contradicts_overwrite():
    [e] = errors("resume=auto", "overwrite_output_dir=true")
    assert e.key == "overwrite_output_dir" and "resume=auto" in e.fix


def test_a_changed_learning_rate_is_warned_and_a_changed_model_refused():
    old = resolved()
    found = problems("resume=true", "train.learning_rate=1e-3", "model.model_name_or_path=/other/model",
                     config=old, next_attempt=2, **RESUMABLE)
    by_key = {p.key: p for p in found}
    lr = by_key["train.learning_rate"]
    assert not lr.error and f"was {old['train']['learning_rate']}" in lr.fix
    assert "attempts/2/config_changes.json" in lr.fix
    model = by_key["model.model_name_or_path"]
    assert model.error and f"model.model_name_or_path={old['model']['model_name_or_path']}" in model.fix


def test_changes_are_not_checked_when_the_launch_starts_fresh():
    fresh = problems("resume=auto", "model.model_name_or_path=/other/model", config=resolved(), exists=True)
    assert not [p for p in fresh if p.key.startswith(("model.", "train."))]


def test_config_changes_refuse_what_a_checkpoint_cannot_load_into():
    old = resolved()

    def diff(*overrides, shards=False):
        return {c.key: c for c in config_changes(old, resolved(*overrides), zero_shards=shards)}

    assert diff() == {}
    assert diff("adapter.lora_rank=4")["adapter.lora_rank"].refused
    assert diff("adapter.lora_target=all")["adapter.lora_target"].refused
    assert diff("stage=dpo")["stage.name"].refused
    assert diff("adapter=full")["adapter.name"].refused
    assert diff("adapter.lora_dropout=0.1")["adapter.lora_dropout"].refused is None
    # a key of an adapter not in use changes no shape
    assert diff("adapter.pre_seq_len=4")["adapter.pre_seq_len"].refused is None
    assert diff("zero=3")["zero.name"].refused
    two = resolved("zero=2")
    offload = {c.key: c.refused for c in config_changes(two, resolved("zero=2_offload"))}
    assert offload == {"zero.name": None, "zero.config": None}  # same stage, the optimizer state lives elsewhere


def test_a_world_size_change_is_refused_only_when_zero_shards_must_load():
    old = resolved("gpus=2")
    [c] = [c for c in config_changes(old, resolved("gpus=4"), zero_shards=True) if c.key == "gpus"]
    assert "world size 2" in c.refused and "4" in c.refused
    # without shards it resumes; the gradient accumulation that global_batch_size derives differs by nature
    assert [(c.key, c.refused) for c in config_changes(old, resolved("gpus=4"))] == [("gpus", None)]


def test_what_differs_between_launches_by_nature_is_not_a_change():
    old = resolved(f"output_dir={RUN}")
    new = resolved("output_dir=/elsewhere", "resume=auto", "dry_run=true", "node_rank=0", "master_port=1234",
                   "train.gradient_accumulation_steps=7")  # derived from global_batch_size in the written config
    assert config_changes(old, new) == []


def test_scan_run_dir_finds_the_newest_complete_checkpoint_and_the_next_attempt(tmp_path):
    run = tmp_path / "run"
    for step, complete in ((2, True), (4, True), (6, False)):
        d = run / "checkpoints" / f"checkpoint-{step}"
        (d / "global_step4").mkdir(parents=True)
        if complete:
            mark_complete(d, {"step": step})
    (run / "attempts" / "0").mkdir(parents=True)
    (run / "attempts" / "1").mkdir()
    (run / "config.yaml").write_text("train:\n  learning_rate: 0.01\n")
    f = scan_run_dir(str(run))
    assert f.last_checkpoint == str(run / "checkpoints" / "checkpoint-4")
    assert f.incomplete_checkpoints == ("checkpoint-6",) and f.zero_shards and f.next_attempt == 2
    assert f.config == {"train": {"learning_rate": 0.01}} and f.lock.raw is None
    assert scan_run_dir(str(tmp_path / "none")) == RunDirFacts(exists=False)


def snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_resume_true_without_a_complete_checkpoint_exits_2_writing_nothing(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "checkpoint-3").mkdir(parents=True)  # torn: no marker
    before = snapshot(run)
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", f"output_dir={run}", "resume=true", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "error: resume=true" in r.stderr and str(run) in r.stderr and "checkpoint-3" in r.stderr
    assert snapshot(run) == before and sorted(p.name for p in run.iterdir()) == ["checkpoints"]


def test_cli_resume_with_another_model_exits_2_writing_nothing(tmp_path, tiny_model):
    run = tmp_path / "run"
    run.mkdir()
    old = resolved(f"output_dir={run}")
    (run / "config.yaml").write_text(json.dumps(old))  # JSON is YAML
    ckpt = run / "checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    mark_complete(ckpt, {"step": 2})
    other = tmp_path / "other_model"
    other.symlink_to(tiny_model)
    before = snapshot(run)
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", f"output_dir={run}", "resume=true",
                   f"model.model_name_or_path={other}", "train.learning_rate=1e-3", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"error: model.model_name_or_path={other}: was {tiny_model}" in r.stderr
    assert "warning: train.learning_rate=0.001" in r.stderr
    assert snapshot(run) == before

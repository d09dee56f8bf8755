"""launch-predict's arguments (pure): the run's typed overrides, the prediction's, then the user's, which win."""
from __future__ import annotations

from pathlib import Path

from launcher.inference import TrainedRun
from launcher.predict import predict_args
from launcher.rundir import RunDir
from tests.support import compose


def trained(*overrides: str) -> TrainedRun:
    return TrainedRun(RunDir(Path("/runs/a")), compose(*overrides), Path("/runs/a/final"))


def test_adapter_run_predicts_with_its_final_adapter_and_user_overrides_win():
    typed = ["recipe=tiny_adgen_ptuning", "device=cpu", "gpus=2", "zero=3", "output_dir=/runs/a", "resume=auto",
             "train.max_steps=5"]
    args = predict_args(trained("recipe=tiny_adgen_ptuning"), typed, ["gpus=1", "generation.max_new_tokens=8"],
                        "/runs/a/predict")
    assert args == ["recipe=tiny_adgen_ptuning", "device=cpu", "train.max_steps=5", "train.do_train=false",
                    "train.do_predict=true", "zero=none", "output_dir=/runs/a/predict", "overwrite_output_dir=true",
                    "adapter.adapter_name_or_path='/runs/a/final'", "gpus=1", "generation.max_new_tokens=8"]


def test_lora_run_that_merged_adapters_first_merges_them_again():
    run = trained("adapter.adapter_name_or_path='/x/final,/y/final'")
    args = predict_args(run, [], [], "/runs/a/predict")
    assert "adapter.adapter_name_or_path='/x/final,/runs/a/final'" in args
    run = trained("adapter.adapter_name_or_path='/x/final'", "adapter.create_new_adapter=true")
    assert "adapter.adapter_name_or_path='/x/final,/runs/a/final'" in predict_args(run, [], [], "/p")


def test_full_run_predicts_with_its_saved_model():
    args = predict_args(trained("adapter=freeze"), ["adapter=freeze", "device=cpu"], [], "/runs/a/predict")
    assert "model.model_name_or_path=/runs/a/final" in args and "adapter=full" in args  # a group is chosen once
    assert "adapter=freeze" not in args and "device=cpu" in args

"""Preflight decisions (pure): a GPU that is missing or taken, a disk too small for the planned checkpoints."""
from __future__ import annotations

from launcher.worker.preflight import checkpoint_bytes, device_problem, disk_problem

GIB = 2**30


def test_a_cpu_rank_has_no_device_to_check():
    assert device_problem("cpu", local_rank=3, gpu_count=0) is None


def test_a_missing_gpu_and_a_taken_one_are_named():
    assert device_problem("cuda", 2, 2, visible="0,1") == ("local rank 2 was given GPU 2, but this node sees 2 GPU(s) "
                                                         "(CUDA_VISIBLE_DEVICES=0,1); ask for at most 2 per node (gpus=)")
    assert "GPU 1 has 512.0 MiB free of 80.0 GiB" in device_problem("cuda", 1, 2, free=GIB // 2, total=80 * GIB)
    assert "GPU 0 has 4.0 GiB free of 80.0 GiB" in device_problem("cuda", 0, 1, free=4 * GIB, total=80 * GIB)
    assert device_problem("cuda", 0, 1, free=70 * GIB, total=80 * GIB) is None


def test_planned_checkpoints_grow_with_the_model_and_save_total_limit():
    params = 7 * 10**9
    # full: 16-bit weights + Adam's two fp32 moments per checkpoint, 3 kept + the one being written, + final/
    assert checkpoint_bytes(params, "full", "bf16", 3) == params * (2 + 8) * 4 + params * 2
    # freeze saves the whole model, its optimizer state is small; no limit = at least one kept
    assert checkpoint_bytes(params, "freeze", "fp32", None) == params * 4 * 2 + params * 4
    # an adapter's checkpoints are a few MB; an unknown size is not guessed
    assert checkpoint_bytes(params, "lora", "bf16", 3) == 0
    assert checkpoint_bytes(None, "full", "bf16", 3) == 0


def test_too_little_disk_names_the_path_sizes_and_fixes():
    msg = disk_problem("/runs/x", free=10 * GIB, needed=300 * GIB)
    assert msg.startswith("/runs/x has 10.0 GiB free, the planned checkpoints and final/ need about 300.0 GiB")
    assert "output_dir" in msg and "train.save_total_limit" in msg
    assert disk_problem("/runs/x", free=300 * GIB, needed=300 * GIB) is None

"""Argument handling of the benchmark and GPU scripts (scripts/bench_vs_llamafactory.py, gpu_check.sh,
wheelhouse.sh). The suite never runs a benchmark, installs LLaMA-Factory or needs a GPU."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from launcher import PROJECT_ROOT

SCRIPTS = PROJECT_ROOT / "scripts"


def script_module(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = script_module("bench_vs_llamafactory")


def test_bench_defaults_are_the_published_run(tmp_path):
    args = bench.parse_args(["--work", str(tmp_path)])
    assert (args.repeats, args.rows, args.tok_rows, args.steps, args.ranks) == (3, 2000, 20000, 30, [1, 2])
    assert args.out == PROJECT_ROOT / "docs/benchmarks.md"
    assert args.lf_venv == tmp_path / "lf-venv" and args.parts == ["dryrun", "tokenize", "train"]


def test_bench_quick_is_one_small_repeat_written_outside_docs(tmp_path):
    args = bench.parse_args(["--quick", "--work", str(tmp_path)])
    assert (args.repeats, args.rows, args.tok_rows, args.steps) == (1, 200, 1000, 4)
    assert args.out == tmp_path / "quick.md"
    mixed = bench.parse_args(["--quick", "--repeats", "2", "--only", "train", "--ranks", "2", "--work", str(tmp_path)])
    assert (mixed.repeats, mixed.parts, mixed.ranks) == (2, ["train"], [2])


def test_bench_same_libs_has_its_own_venv_page_and_no_checkpointing_on_either_side(tmp_path):
    args = bench.parse_args(["--same-libs", "--work", str(tmp_path)])
    assert args.lf_venv == tmp_path / "lf-same" and args.out == PROJECT_ROOT / "docs/benchmarks-same-libs.md"
    inputs = {"model": tmp_path / "m", "train_file": tmp_path / "d/train.json", "data_dir": tmp_path / "d"}
    ours = bench.ours_overrides(inputs, tmp_path / "run", args, 1, False, inputs["train_file"])
    assert "train.gradient_checkpointing=false" in ours
    assert bench.lf_config(inputs, tmp_path / "run", args, 1, False)["disable_gradient_checkpointing"] is True
    published = bench.parse_args(["--work", str(tmp_path)])  # LLaMA-Factory's default: both checkpoint
    assert "train.gradient_checkpointing=true" in bench.ours_overrides(inputs, tmp_path / "run", published, 1,
                                                                       False, inputs["train_file"])
    assert bench.lf_config(inputs, tmp_path / "run", published, 1, False)["disable_gradient_checkpointing"] is False


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "0"], "must be >= 1, got 0"),
    (["--ranks", "3"], "divide the global batch 8"),
    (["--ranks", "one"], "a comma list of process counts"),
    (["--rows", "10"], "use at least 60"),
    (["--only", "gpu"], "invalid choice: 'gpu'"),
])
def test_bench_bad_arguments_exit_2_with_the_fix(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        bench.parse_args(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_bench_data_is_deterministic_alpaca():
    rows = bench.alpaca_rows(40)
    assert rows == bench.alpaca_rows(40) and len(rows) == 40
    assert all(set(r) == {"instruction", "input", "output"} and r["output"] for r in rows)


def test_bench_report_gives_ratios_and_keeps_the_gpu_section(tmp_path):
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nold CPU figures\n\n## GPU\n\nH200 figures\n")
    args = bench.parse_args(["--work", str(tmp_path), "--out", str(out), "--only", "tokenize", "--repeats", "2"])
    meta = {"date": "d", "cpu": "cpu", "cores": 2, "load_before": "1", "load_after": "2", "load_note": "",
            "params": 5.2e6, "model": {"hidden_size": 256, "num_hidden_layers": 4, "vocab_size": 4000},
            "versions": {"python": "3", "launcher_git": "abc", "ours": {}, "llamafactory_venv": {}}}
    tok = [{"tool": t, "repeat": n, "rows": 100, "seconds": 1, "rows_per_s": r, "tokens": 9}
           for t, n, r in [("ours", 0, 300), ("lf", 0, 100), ("ours", 1, 500), ("lf", 1, 300)]]
    bench.write_report({"meta": meta, "samples": {"dryrun": [], "tokenize": tok, "train": []}}, args)
    text = out.read_text()
    # the ratio pairs the samples of a round: 300/100 and 500/300
    assert "| rows/s | 400 (300-500) | 200 (100-300) | 2.33x (1.67-3.00) | >= 1.5x: met |" in text
    assert "old CPU figures" not in text and text.endswith("## GPU\n\nH200 figures\n")
    assert json.loads(out.with_suffix(".json").read_text())["samples"]["tokenize"] == tok


def test_bench_from_json_of_a_same_libs_run_rewrites_its_own_page(tmp_path, monkeypatch):
    out = tmp_path / "docs/benchmarks-same-libs.md"
    monkeypatch.setattr(bench, "ROOT", tmp_path)  # where the default pages go
    meta = {"date": "d", "cpu": "cpu", "cores": 2, "load_before": "1", "load_after": "2", "load_note": "",
            "params": 5.2e6, "model": {"hidden_size": 256, "num_hidden_layers": 4, "vocab_size": 4000},
            "versions": {"python": "3", "launcher_git": "abc", "ours": {"trl": "1.12.0"},
                         "llamafactory_venv": {"trl": "0.24.0"}},
            "settings": {"quick": False, "repeats": 1, "rows": 2000, "tok_rows": 20000, "steps": 30, "ranks": [1],
                         "same_libs": True}}
    train = [{"tool": t, "ranks": 1, "packing": False, "repeat": 0, "wall_s": w, "first_step_s": f,
              "peak_rss_mb_per_rank": [r], "trained_tokens": 100, "train_runtime_s": 1, "tokens_per_s": 100}
             for t, w, f, r in [("ours", 5, 4, 900), ("lf", 9, 8, 1000)]]
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"meta": meta, "samples": {"dryrun": [], "tokenize": [], "train": train}}))
    bench.main(["--from-json", str(saved), "--work", str(tmp_path)])
    text = out.read_text()
    assert text.startswith("# Benchmarks: both tools on the same libraries")
    assert "disable_gradient_checkpointing: true" in text and "--same-libs --from-json" in text
    assert "| 1 | off | command -> first step (s) | 4.00 | 8.00 | 0.50x | <= 0.6x: met |" in text
    assert "## GPU" not in text and not (tmp_path / "docs/benchmarks.md").exists()
    # the run's mode decides, not the flag: a run from before --same-libs is the published kind
    del meta["settings"]["same_libs"]
    saved.write_text(json.dumps({"meta": meta, "samples": {"dryrun": [], "tokenize": [], "train": train}}))
    bench.main(["--same-libs", "--from-json", str(saved), "--work", str(tmp_path)])
    assert (tmp_path / "docs/benchmarks.md").read_text().startswith("# Benchmarks\n")


def run_script(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*argv], capture_output=True, text=True, timeout=timeout, cwd=PROJECT_ROOT)


def test_script_help_needs_nothing_installed():
    assert "--quick" in run_script(sys.executable, str(SCRIPTS / "bench_vs_llamafactory.py"), "--help").stdout
    shown = run_script("bash", str(SCRIPTS / "gpu_check.sh"), "--help")
    assert shown.returncode == 0 and "--wheelhouse DIR" in shown.stdout
    shown = run_script("bash", str(SCRIPTS / "wheelhouse.sh"), "--help")
    assert shown.returncode == 0 and "--python-version" in shown.stdout
    bad = run_script("bash", str(SCRIPTS / "wheelhouse.sh"), "--python-version", "312")
    assert bad.returncode == 2 and "give MAJOR.MINOR, e.g. 3.12" in bad.stderr


def test_gpu_check_dry_run_prints_the_launches_without_a_gpu(tmp_path):
    shown = run_script("bash", str(SCRIPTS / "gpu_check.sh"), "--dry-run", "--work", str(tmp_path), "--steps", "5")
    assert shown.returncode == 0, shown.stderr
    launches = [line for line in shown.stdout.splitlines() if "-m launcher.cli" in line]
    assert len(launches) == 5 and all("device=cuda" in x and "precision=auto" in x and "train.max_steps=5" in x
                                      for x in launches)
    for case in ("adapter=lora", "model.attn=flash_attention_2", "adapter=qlora", "zero=3 ", "zero=3_offload"):
        assert any(case in x + " " for x in launches), case
    assert not any(tmp_path.iterdir())  # nothing built or written


def test_gpu_check_refuses_clearly_without_cuda(tmp_path):
    out = tmp_path / "benchmarks.md"
    refused = run_script("bash", str(SCRIPTS / "gpu_check.sh"), "--venv", str(tmp_path / "venv"),
                         "--out", str(out), timeout=120)
    assert refused.returncode == 2 and "no CUDA device is visible" in refused.stderr and "--dry-run" in refused.stderr
    assert not out.exists() and not (tmp_path / "venv").exists()


def test_gpu_check_report_replaces_only_the_gpu_section(tmp_path):
    gpu = script_module("gpu_check")
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nCPU figures\n\n## GPU\n\nPending.\n")
    meta = {"date": "d", "device": "NVIDIA H200", "peak": "989 TFLOP/s", "torch": "2.11.0", "cuda": "12.8",
            "git": "abc", "steps": 8, "micro_batch": 2, "auto_precision": "bf16", "wall_min": 7.5}
    rows = [{"case": "LoRA, sdpa, precision=auto", "model": "llama7b", "params": gpu.params_of(gpu.SHAPES["llama7b"]),
             "tokens_per_s": 12000.0, "peak_memory_gib": 40.0, "final_loss": 10.1,
             "mfu": 6 * gpu.params_of(gpu.SHAPES["llama7b"]) * 12000 / gpu.peak_flops("NVIDIA H200", None)},
            {"case": "LoRA, flash_attention_2", "model": "llama7b", "params": 1,
             "skipped": "flash_attn does not import"}]
    gpu.write_section(out, gpu.render(rows, meta))
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nCPU figures\n\n## GPU\n") and "Pending" not in text
    assert "| LoRA, sdpa, precision=auto | llama7b (6.74B) | 12,000 | 40.0 | 49.1% | 10.100 |" in text
    assert "flash_attn does not import" in text and "picked **bf16**" in text

"""A Slurm sweep validates every job before writing any run dir: one bad job refuses the whole sweep.

sbatch is a stand-in script on PATH that records its calls: the refusal happens before any submission, and
the accepted sweep's submission is only recorded (no Slurm is started here; tests/integration/test_slurm.py
submits to a real one)."""
from __future__ import annotations


from tests.support import fake_sbatch, run_launch


def recording_sbatch(tmp_path):
    """A stand-in sbatch that records its arguments and answers job 4242."""
    log = tmp_path / "sbatch_calls"
    return fake_sbatch(tmp_path, f'echo "$@" >> {log}\necho 4242'), log


def run_dirs(root):
    return sorted(p.parent for p in root.glob("*/*/config.yaml"))


def test_one_bad_job_refuses_the_sweep_and_nothing_is_written(tmp_path):
    env, log = recording_sbatch(tmp_path)
    root = tmp_path / "outputs"
    r = run_launch("-m", "recipe=tiny_sft_lora", "device=cpu", "cluster=slurm", "train.learning_rate=1e-4,-1,2e-4",
                   f"output_root={root}", env=env)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "1 of 3 sweep job(s) have problems" in r.stderr and "train.learning_rate=-1" in r.stderr
    assert run_dirs(root) == [] and not log.exists()


def test_a_good_sweep_writes_every_run_dir_and_submits_one_array(tmp_path):
    env, log = recording_sbatch(tmp_path)
    root = tmp_path / "outputs"
    secret = "hf_sweepSECRETvalue"
    r = run_launch("-m", "recipe=tiny_sft_lora", "device=cpu", "cluster=slurm", "train.learning_rate=1e-4,2e-4",
                   f"output_root={root}", f"cluster.setup=['export HF_TOKEN={secret}']", env=env)
    assert r.returncode == 0, r.stderr
    written = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "multirun.yaml" for p in written)
    assert not [p for p in written if secret in p.read_text()]
    dirs = run_dirs(root)
    assert len(dirs) == 2 and len(log.read_text().splitlines()) == 1
    assert sorted((d / "slurm" / "job_ids").read_text().split() for d in dirs) == [["4242_0"], ["4242_1"]]
    assert "array of 2" in r.stdout


def test_a_sweep_over_resources_is_refused_before_writing(tmp_path):
    env, log = recording_sbatch(tmp_path)
    root = tmp_path / "outputs"
    r = run_launch("-m", "recipe=tiny_sft_lora", "device=cpu", "cluster=slurm", "gpus=1,2", f"output_root={root}",
                   env=env)
    assert r.returncode == 2 and "different resources" in r.stderr and "Traceback" not in r.stderr
    assert run_dirs(root) == [] and not log.exists()

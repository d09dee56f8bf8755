"""Secrets typed into a launch are redacted in every file of the run dir; the job still gets their values."""
from __future__ import annotations


from launcher.secrets import REDACTED, env_indirect, is_secret_name, redact, redact_config
from tests.support import fake_sbatch, run_launch

KEY, HF, PASS = "wandbsecret0123456789", "hf_secretTOKENvalue", "dbpass-42"


def test_secret_names():
    for name in ("HF_TOKEN", "WANDB_API_KEY", "+hub.token", "db_password", "AWS_SECRET_ACCESS_KEY", "--token", "auth"):
        assert is_secret_name(name), name
    for name in ("train.max_tokens", "data.cutoff_len", "model.tokenizer_dir", "monkey", "PATH", "--partition"):
        assert not is_secret_name(name), name


def test_redact_text_and_config():
    assert redact(f"export WANDB_API_KEY={KEY}") == f"export WANDB_API_KEY={REDACTED}"
    assert redact(f"huggingface-cli login --token {HF} --add-to-git-credential") == \
        f"huggingface-cli login --token {REDACTED} --add-to-git-credential"
    assert redact(f"git clone https://me:{PASS}@git.example.org/x.git") == \
        f"git clone https://me:{REDACTED}@git.example.org/x.git"
    assert redact("train.learning_rate=1e-4 cluster.partition=gpu") == "train.learning_rate=1e-4 cluster.partition=gpu"
    cfg = {"cluster": {"setup": [f"export HF_TOKEN='{HF}'"], "partition": "gpu"}, "hub_token": HF, "n": 3}
    assert redact_config(cfg) == {"cluster": {"setup": [f"export HF_TOKEN={REDACTED}"], "partition": "gpu"},
                                  "hub_token": REDACTED, "n": 3}


def test_env_indirect_keeps_the_value_in_the_environment():
    script, env = env_indirect(f"module load cuda\nexport HF_TOKEN='{HF}'\nlogin --password {PASS}\n")
    assert HF not in script and PASS not in script
    assert 'export HF_TOKEN="${HF_TOKEN}"' in script and env["HF_TOKEN"] == HF
    [(var, value)] = [(k, v) for k, v in env.items() if k != "HF_TOKEN"]
    assert value == PASS and f'--password "${{{var}}}"' in script


def test_cli_slurm_submission_writes_no_secret_and_passes_it_by_environment(tmp_path):
    seen = tmp_path / "sbatch_env"
    # records the values the job's environment would get, as sbatch --export=ALL passes them on
    path = fake_sbatch(tmp_path, f'echo "$WANDB_API_KEY $HF_TOKEN" > {seen}\necho 777')
    run = tmp_path / "run"
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", "cluster=slurm", f"output_dir={run}",
                   f"cluster.setup=['export WANDB_API_KEY={KEY}','huggingface-cli login --token {PASS}']",
                   f"+hydra.job.env_set.HF_TOKEN={HF}", env=path)
    assert r.returncode == 0, r.stderr
    written = [p for p in run.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"config.yaml", "overrides.yaml", "env.json", "launch.sh", "sbatch.sh"}
    for p in written:
        text = p.read_text()
        for secret in (KEY, HF, PASS):
            assert secret not in text, (p, secret)
    assert REDACTED in (run / "config.yaml").read_text() and REDACTED in (run / "env.json").read_text()
    assert 'export WANDB_API_KEY="${WANDB_API_KEY}"' in (run / "sbatch.sh").read_text()
    assert seen.read_text().split() == [KEY, HF]
    assert KEY not in r.stdout + r.stderr


def test_a_secret_in_a_problem_is_not_echoed():
    from launcher.validate.problem import Problem

    assert HF not in str(Problem("something.token", HF, "unknown key"))
    assert KEY not in str(Problem("cluster.setup", [f"export WANDB_API_KEY={KEY}"], "bad"))


def test_an_sbatch_export_that_drops_the_secrets_is_refused():
    from tests.support import compose, errors_of

    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "cluster=slurm", "dry_run=true",
                  f"cluster.setup=['export HF_TOKEN={HF}']", "+cluster.additional_parameters.export=NONE")
    [e] = errors_of(cfg)
    assert e.key == "cluster.additional_parameters.export" and "HF_TOKEN" in e.fix and HF not in str(e)
    ok = compose("recipe=tiny_sft_lora", "device=cpu", "cluster=slurm", "dry_run=true",
                 f"cluster.setup=['export HF_TOKEN={HF}']", "+cluster.additional_parameters.export='HF_TOKEN,PATH'")
    assert errors_of(ok) == []

"""Logger credentials for online modes, and a template's special tokens against the tokenizer."""
from __future__ import annotations

import os

from launcher.data.templates import special_markers
from launcher.facts import gather_facts, has_wandb_credentials
from tests.support import compose, errors_of, run_launch

SECRET = "0123456789abcdef-not-a-real-key"


def test_wandb_credentials_come_from_the_env_or_netrc(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert not has_wandb_credentials({"HOME": str(home)})
    assert has_wandb_credentials({"HOME": str(home), "WANDB_API_KEY": SECRET})
    (home / ".netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {SECRET}\n")
    os.chmod(home / ".netrc", 0o600)
    assert has_wandb_credentials({"HOME": str(home)})
    assert not has_wandb_credentials({"HOME": str(home), "WANDB_BASE_URL": "https://wandb.example.org"})


def test_online_wandb_without_credentials_is_an_error_offline_is_fine():
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "logger=wandb", "logger.wandb_mode=online")
    [e] = errors_of(cfg, wandb_credentials=False)
    assert e.key == "logger.wandb_mode" and "wandb login" in e.fix and "offline" in e.fix
    assert errors_of(cfg, wandb_credentials=True) == []
    offline = compose("recipe=tiny_sft_lora", "device=cpu", "logger=wandb")
    assert gather_facts(offline).wandb_credentials is None


def test_cli_refuses_online_wandb_without_credentials_and_never_shows_a_key(tmp_path):
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": "", "NETRC": str(tmp_path / "none")}
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", "logger=wandb", "logger.wandb_mode=online",
                   f"output_dir={tmp_path}/run", env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "wandb login" in r.stderr
    assert not (tmp_path / "run").exists()
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", "logger=wandb", "logger.wandb_mode=online", "dry_run=true",
                   env={"WANDB_API_KEY": SECRET})
    assert r.returncode == 0 and SECRET not in r.stdout + r.stderr


def test_template_markers():
    assert special_markers("chatml") == ["<|im_start|>", "<|im_end|>"]
    assert "<|eot_id|>" in special_markers("llama3") and special_markers("alpaca") == []
    assert special_markers("auto") == []


def test_a_template_whose_tokens_the_tokenizer_lacks_is_an_error(tiny_model):
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "data.template=chatml")
    [e] = errors_of(cfg, gather=gather_facts)
    assert e.key == "data.template" and "<|im_start|>, <|im_end|>" in e.fix
    # the tiny tokenizer holds chatglm3's role tokens but not [gMASK]
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "data.template=chatglm3")
    [e] = errors_of(cfg, gather=gather_facts)
    assert "[gMASK]" in e.fix and "<|user|>" not in e.fix
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "data.template=alpaca")
    assert errors_of(cfg, gather=gather_facts) == []

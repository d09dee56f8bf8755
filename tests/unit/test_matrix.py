"""The combination matrix: every stage x adapter x zero x precision x packing x backend cell is composed and
validated; refused cells are refused with the table's reason (one problem each), the others validate clean.
One Hydra compose per stage x adapter (plus one per zero option); the rest varies with OmegaConf."""
from __future__ import annotations

import itertools
import time

import pytest
from omegaconf import OmegaConf

from launcher import PROJECT_ROOT, matrix
from launcher.facts import RunRefFacts, read_json_file
from launcher.schema import BackendType, Precision
from launcher.validate import validate
from launcher.validate.matrix import zero_option
from tests.support import TINY_MODEL, compose, errors_of, facts, run_launch

RM_RUN = "/runs/rm"
#: a recipe per stage that validates clean as it is
RECIPES = {"pt": ["recipe=tiny_pt_lora"], "sft": ["recipe=tiny_sft_lora"], "rm": ["recipe=tiny_rm"],
           "dpo": ["recipe=tiny_dpo_lora"], "kto": ["recipe=tiny_kto_lora"],
           "ppo": ["recipe=tiny_ppo_lora", f"stage.reward_model={RM_RUN}"], "grpo": ["recipe=tiny_grpo_lora"],
           "rloo": ["recipe=tiny_grpo_lora", "stage=rloo"]}
RM = RunRefFacts(exists=True, run_dir=RM_RUN, stage="rm", adapter="lora", base_model=str(TINY_MODEL), has_final=True,
                 reward_stats=True)
#: a CUDA machine with what every cell may need (bitsandbytes for qlora); gpus=1 so backend=single is a cell
PACKAGES = {"bitsandbytes": "0.45.0", "flash-attn": None, "transformers": "5.25.0"}


def zero_groups() -> dict[str, dict]:
    return {z: OmegaConf.to_container(compose("recipe=tiny_sft_lora", f"zero={z}").zero, resolve=True) for z in
            matrix.DIMENSIONS["zero"]}


def test_every_cell_is_refused_with_the_tables_reason_or_validates_clean():
    started = time.monotonic()
    zeros = zero_groups()
    ds_configs = {z["config"]: read_json_file(z["config"]) for z in zeros.values() if z["config"]}
    checked = refused = 0
    for stage, adapter in [(s, a) for s in matrix.DIMENSIONS["stage"] for a in matrix.DIMENSIONS["adapter"]]:
        base = compose(*RECIPES[stage], f"adapter={adapter}", "gpus=1")
        f = facts(base, runs={RM_RUN: RM}, packages=PACKAGES, ds_configs=ds_configs)
        # Varied as the typed config (OmegaConf.to_object: 1000x faster to change and read than a DictConfig),
        # which validates exactly as the composed one does.
        cfg = OmegaConf.to_object(base)
        assert validate(cfg, f) == validate(base, f)
        for z, precision, packing, backend in itertools.product(
                *(matrix.DIMENSIONS[d] for d in ("zero", "precision", "data.packing", "backend"))):
            cfg.zero.name, cfg.zero.config = zeros[z]["name"], zeros[z]["config"]
            cfg.precision.name, cfg.data.packing, cfg.backend.name = Precision(precision), packing, \
                BackendType(backend)
            cell = {"stage": stage, "adapter": adapter, "zero": z, "precision": precision, "data.packing": packing,
                    "backend": backend}
            errors = errors_of(cfg, f)
            expected = [(r.key, r.message(cell)) for r in matrix.refusals(cell)]
            assert [(e.key, e.fix) for e in errors] == expected, (cell, [str(e) for e in errors])
            checked += 1
            refused += bool(expected)
    assert checked == len(list(matrix.cells())) and 0 < refused < checked
    assert time.monotonic() - started < 120


def test_every_refusal_names_two_keys_and_a_fix_and_covers_some_cell():
    for r in matrix.REFUSALS:
        assert len(r.when) >= 2 and r.key in r.when
        assert any(r.matches(c) for c in matrix.cells())
        assert "use " in r.reason or "set " in r.reason or "pick " in r.reason


@pytest.mark.parametrize("cell, key", [
    ({"stage": "rm", "adapter": "lora", "zero": "3"}, None),  # every rank joins the reward statistics
    ({"stage": "sft", "adapter": "prefix", "zero": "3"}, None),
    ({"stage": "sft", "adapter": "prefix", "data.packing": True}, "data.packing"),
    ({"stage": "sft", "adapter": "qlora", "zero": "3_offload"}, "adapter"),
    ({"stage": "sft", "adapter": "qlora", "zero": "2"}, None),
    ({"stage": "sft", "precision": "pure_bf16", "zero": "2"}, "precision"),
    ({"stage": "sft", "precision": "pure_bf16", "zero": "0"}, None),
    ({"stage": "dpo", "data.packing": True}, "data.packing"),
])
def test_known_cells(cell, key):
    full = {"stage": "sft", "adapter": "lora", "zero": "none", "precision": "auto", "data.packing": False,
            "backend": "auto", **cell}
    assert [r.key for r in matrix.refusals(full)] == ([key] if key else [])


def test_a_custom_ds_config_counts_as_the_option_it_amounts_to(tmp_path):
    import json

    path = tmp_path / "z3.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}}))
    cfg = compose("recipe=tiny_sft_lora", "zero=custom", f"zero.config={path}", "adapter=qlora", "gpus=2")
    f = facts(cfg, packages=PACKAGES)
    assert zero_option(cfg, f) == "3_offload"
    (e,) = errors_of(cfg, f)
    assert e.key == "adapter" and "cannot train under zero=custom" in e.fix


def test_lora_on_a_quantized_base_is_refused_under_zero3_like_qlora():
    cfg = compose("recipe=tiny_sft_lora", "zero=3", "adapter.quantization_bit=8", "gpus=2")
    (e,) = errors_of(cfg, packages=PACKAGES)
    assert e.key == "adapter.quantization_bit" and e.value == 8 and "device_map" in e.fix


def test_the_cli_refuses_qlora_under_zero3_before_anything_is_written(tmp_path):
    r = run_launch("recipe=llama2_sft_qlora", "zero=3", "gpus=2", "dry_run=true", f"output_dir={tmp_path}/run",
                   cwd=tmp_path)
    assert r.returncode == 2 and "error: adapter=qlora: a bitsandbytes-quantized base cannot train under zero=3" \
        in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_the_readme_table_is_the_rendered_matrix():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert matrix.readme_table(readme) == matrix.render_markdown(), \
        "README's combination matrix is stale: run `python -m launcher.matrix --readme README.md`"

"""Save the composed form as a recipe file: recipes/NAME.yaml, which `launch recipe=NAME` runs and the page's recipe
dropdown loads. A saved recipe is its base recipe's file with the typed groups and keys set in it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import yaml

from launcher import PROJECT_ROOT
from launcher.ui.forms import GROUPS

RECIPES_DIR = PROJECT_ROOT / "recipes"
#: keys of one launch, not of a recipe
PER_LAUNCH = ("recipe", "output_dir", "dry_run", "resume", "overwrite_output_dir", "prepare_only", "node_rank")
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class RecipeError(ValueError):
    pass


def recipe_text(name: str, overrides: Sequence[str], recipes_dir: Path = RECIPES_DIR) -> str:
    pairs = [o.partition("=")[::2] for o in overrides if "=" in o]
    base_name = next((v for k, v in pairs if k == "recipe"), None)
    base: dict[str, Any] = {}
    if base_name:
        base = yaml.safe_load((recipes_dir / f"{base_name}.yaml").read_text()) or {}
    defaults = {next(iter(d)): d[next(iter(d))] for d in base.pop("defaults", []) if isinstance(d, dict)}
    for key, value in pairs:
        key = key.lstrip("+")
        if key in GROUPS and key != "recipe":
            defaults[f"override /{key}"] = value.strip("'\"")
        elif key.split(".")[0] not in PER_LAUNCH:
            node = base
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = yaml.safe_load(value) if value else None
    base["name"] = name
    body = {"defaults": [{k: v} for k, v in defaults.items()], **base} if defaults else base
    header = ("# @package _global_\n# Saved by launch-ui" + (f" from recipe {base_name}" if base_name else "")
              + f".\n#   launch recipe={name}\n")
    return header + yaml.safe_dump(body, sort_keys=False)


def save(name: str, overrides: Sequence[str], overwrite: bool = False, recipes_dir: Path = RECIPES_DIR) -> Path:
    if not NAME.fullmatch(name or ""):
        raise RecipeError(f"recipe name {name!r}: use letters, digits, _ . - (it becomes recipes/NAME.yaml)")
    path = recipes_dir / f"{name}.yaml"
    if path.exists() and not overwrite:
        raise RecipeError(f"{path} exists; tick overwrite to replace it, or pick another name")
    text = recipe_text(name, overrides, recipes_dir)
    path.write_text(text)
    return path


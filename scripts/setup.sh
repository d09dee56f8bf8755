#!/usr/bin/env bash
# Set up this checkout on a fresh machine: CPU torch first (a bare `torch` requirement would pull a
# multi-GB CUDA build), then the package with its test extras, then the tiny local model.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e '.[test]'
[ -f assets/tiny_llama/model.safetensors ] || python3 scripts/make_tiny_model.py

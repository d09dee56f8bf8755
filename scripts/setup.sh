#!/usr/bin/env bash
# Set up this checkout on a fresh machine: CPU torch first (a bare `torch` requirement would pull a
# multi-GB CUDA build), then the package with its test extras, then the tiny local model.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e '.[test]'
[ -f assets/tiny_llama/model.safetensors ] || python3 scripts/make_tiny_model.py
# launch-ui's browser test drives Debian's chromium through chromium-driver (selenium); where they cannot be
# installed (no apt, not root), that one test skips and says why.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    if command -v apt-get >/dev/null && { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver; } >/tmp/launcher-chromium-apt.log 2>&1; then
        echo "setup: installed chromium + chromium-driver (launch-ui's browser test)"
    else
        echo "setup: chromium/chromium-driver not installed (see /tmp/launcher-chromium-apt.log); the browser test will skip" >&2
    fi
fi

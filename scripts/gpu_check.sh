#!/usr/bin/env bash
# GPU checks on one GPU, under 8 minutes on an H100/H200; figures into docs/benchmarks.md ('## GPU').
# For an offline GPU host with its own torch: installs this project's dependencies from a wheelhouse made by
# scripts/wheelhouse.sh (--no-index) into a virtualenv on top of the host's torch (--system-site-packages,
# torch pinned to the host's version), then runs scripts/gpu_check.py with our own `launch`:
# LoRA SFT of a Llama-2-7B-shaped model (random weights built on the GPU, bf16 via precision=auto, packing,
# sdpa, and flash_attention_2 if flash-attn imports), QLoRA 4-bit of the same, full fine-tuning of a
# 1.1B-shaped model under ZeRO-3 and ZeRO-3 offload: tokens/s, peak memory, MFU.
#
#   scripts/gpu_check.sh [--wheelhouse DIR] [--venv DIR] [--no-install] [--dry-run] [gpu_check.py options]
#
#   --wheelhouse DIR  wheels from scripts/wheelhouse.sh (default wheelhouse/; bitsandbytes from DIR/bitsandbytes)
#   --venv DIR        the virtualenv to install into (default .gpu-venv/)
#   --no-install      use the current python as it is (everything already installed)
#   --dry-run         print the commands it would run; needs no GPU and installs nothing
#   other options go to scripts/gpu_check.py: --steps N, --micro-batch N, --work DIR, --out FILE, --peak-tflops T
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHEELHOUSE=$ROOT/wheelhouse
VENV=$ROOT/.gpu-venv
INSTALL=1
DRY=0
PASS=()
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) WHEELHOUSE=$2; shift 2 ;;
    --venv) VENV=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --dry-run) DRY=1; PASS+=("$1"); shift ;;
    -h|--help) usage; exit 0 ;;
    *) PASS+=("$1"); shift ;;
  esac
done
cd "$ROOT"
if [ "$DRY" = 1 ]; then
  exec python3 scripts/gpu_check.py "${PASS[@]}"
fi
# before installing anything: a machine without a GPU stops here
python3 - <<'EOF' || exit $?
import sys
try:
    import torch
except ImportError:
    sys.exit("gpu_check: this python has no torch; the GPU host's own torch is what the checks run on")
if not torch.cuda.is_available():
    print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); run it on a GPU machine, "
          "or pass --dry-run to print the commands", file=sys.stderr)
    sys.exit(2)
EOF
PY=python3
if [ "$INSTALL" = 1 ]; then
  [ -d "$WHEELHOUSE" ] || { echo "gpu_check: no wheelhouse at $WHEELHOUSE; make one with scripts/wheelhouse.sh where the index is reachable, or pass --wheelhouse DIR (or --no-install)" >&2; exit 2; }
  TORCH=$(python3 -c 'import torch; print(torch.__version__)')
  [ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
  echo "torch==$TORCH" > "$VENV/constraints.txt"  # never replace the host's torch
  "$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELHOUSE" -c "$VENV/constraints.txt" \
    "$(ls "$WHEELHOUSE"/launcher-*.whl | tail -1)"
  if ! "$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELHOUSE/bitsandbytes" \
      --find-links "$WHEELHOUSE" -c "$VENV/constraints.txt" bitsandbytes; then
    echo "gpu_check: bitsandbytes did not install from $WHEELHOUSE/bitsandbytes; the QLoRA check will be skipped" >&2
  fi
  PY=$VENV/bin/python
  export PATH="$VENV/bin:$PATH"
fi
# the checkout's launcher (conf/, recipes/ and ds_configs/ live here), the installed dependencies
PYTHONPATH=$ROOT exec "$PY" scripts/gpu_check.py "${PASS[@]}"

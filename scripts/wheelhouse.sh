#!/usr/bin/env bash
# Fill a folder with wheels of everything this project needs beyond torch, for a GPU host that is offline and
# brings its own torch (scripts/gpu_check.sh installs from it with --no-index). Run where the index is reachable.
#
#   scripts/wheelhouse.sh [--python-version 3.12] [--torch 2.11.0] [--out wheelhouse] [--platform TAG]...
#
#   --python-version  the GPU host's Python (default: this python's); binary wheels are fetched for it
#   --torch           the GPU host's torch version (default 2.11.0): the resolver treats torch as that version
#                     and no torch (or CUDA library) wheel is fetched
#   --out             the folder (default wheelhouse/); bitsandbytes (QLoRA; ~43 MB) goes to OUT/bitsandbytes
#   --platform        wheel platform tags (repeatable; default the manylinux x86_64 tags up to glibc 2.28)
#
# How: our own wheel and the sdist-only packages (deepspeed, antlr4-python3-runtime; both pure Python, so
# py3-none-any wheels; deepspeed with DS_BUILD_OPS=0: its ops are JIT-built where used) are built here; then
# `pip download --only-binary=:all:` resolves the rest for the target Python, with a stand-in torch wheel
# (metadata only, version TORCH+wheelhouse) so that neither torch nor its CUDA libraries are fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
TORCH=2.11.0
OUT=wheelhouse
PLATFORMS=()
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) PYV=$2; shift 2 ;;
    --torch) TORCH=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --platform) PLATFORMS+=("$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "wheelhouse.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$PYV" =~ ^3\.[0-9]+$ ]] || { echo "wheelhouse.sh: --python-version $PYV: give MAJOR.MINOR, e.g. 3.12" >&2; exit 2; }
# default: what pip accepts on an x86_64 host with glibc 2.28 or newer (pip takes no implied older tags here)
if [ ${#PLATFORMS[@]} -eq 0 ]; then
  for minor in $(seq 28 -1 5); do PLATFORMS+=("manylinux_2_${minor}_x86_64"); done
  PLATFORMS+=(manylinux2014_x86_64 manylinux2010_x86_64 manylinux1_x86_64 linux_x86_64)
fi
ABI="cp${PYV/./}"
mkdir -p "$OUT/bitsandbytes"
OUT=$(cd "$OUT" && pwd)
STUB=$(mktemp -d)
trap 'rm -rf "$STUB"' EXIT

# 1. wheels built here: ours and the pure-Python sdist-only packages (no build isolation: nothing fetched
#    for the build, and deepspeed's setup.py imports torch, which must be this machine's)
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" .
DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" \
  "deepspeed==$(python3 -c 'import re,tomllib;d=tomllib.load(open("pyproject.toml","rb"))["project"]["dependencies"];print(next(re.split("==",x)[1] for x in d if x.startswith("deepspeed==")))')" \
  "antlr4-python3-runtime==4.9.3"

# 2. a stand-in torch: metadata only, so the resolver takes torch as present
python3 - "$STUB" "$TORCH" <<'EOF'
import base64, hashlib, sys, zipfile
out, version = sys.argv[1], sys.argv[2] + "+wheelhouse"
name = f"torch-{version}.dist-info"
files = {f"{name}/METADATA": f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n",
         f"{name}/WHEEL": "Wheel-Version: 1.0\nGenerator: wheelhouse.sh\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
record = "".join(f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b'=').decode()},{len(v)}\n"
                 for k, v in files.items()) + f"{name}/RECORD,,\n"
with zipfile.ZipFile(f"{out}/torch-{version}-py3-none-any.whl", "w") as z:
    for k, v in {**files, f"{name}/RECORD": record}.items():
        z.writestr(k, v)
EOF
echo "torch==${TORCH}+wheelhouse" > "$STUB/constraints.txt"

# 3. everything else, resolved for the target Python and platform, binary wheels only
TARGET=(--only-binary=:all: --python-version "$PYV" --implementation cp --abi "$ABI" --abi abi3 --abi none)
for p in "${PLATFORMS[@]}"; do TARGET+=(--platform "$p"); done
TARGET+=(--platform any)
python3 -m pip download -q "${TARGET[@]}" -d "$OUT" --find-links "$OUT" --find-links "$STUB" \
  -c "$STUB/constraints.txt" "$(ls "$OUT"/launcher-*.whl | tail -1)"
rm -f "$OUT"/torch-*+wheelhouse-*.whl
python3 -m pip download -q --no-deps "${TARGET[@]}" -d "$OUT/bitsandbytes" bitsandbytes

echo "wheelhouse: $(ls "$OUT"/*.whl | wc -l) wheels in $OUT ($(du -sh "$OUT" --exclude=bitsandbytes | cut -f1)), bitsandbytes in $OUT/bitsandbytes ($(du -sh "$OUT/bitsandbytes" | cut -f1)); Python $PYV, torch $TORCH (not included)"

#!/usr/bin/env bash
# The prepared GPU check of docs/benchmarks.md, for a session that is lent a GPU machine (H100/H200),
# whose image has torch, transformers, peft and accelerate but not diffusers. Here, once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl diffusers==0.42.1 importlib_metadata zipp
# then with the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=560)
# It installs the carried wheels into /tmp/site, puts this checkout on the path as `normguard`, and runs
#   1. benchmarks/real_arch.py: the diffusers backend (CLI path), at most 270 s;
#   2. benchmarks/comfyui_gpu.py: the ComfyUI path, NormGuardTrainLoRA and TrainLoraNode side by side,
#      at most 200 s -- when COMFYUI_PATH names a ComfyUI checkout whose python (COMFYUI_PYTHON, default
#      python3) imports what ComfyUI needs; otherwise it prints why it is skipped.
# Their tables land in $OUT. `--tiny` runs both on CPU with tiny shapes (CI does: tests/test_benchmarks.py);
# other arguments go to real_arch.py.
set -euo pipefail
out="${OUT:-.}"
tiny=()
for a in "$@"; do [ "$a" = --tiny ] && tiny=(--tiny); done
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
pkg=$(mktemp -d) && ln -s "$PWD" "$pkg/normguard"  # this checkout as `normguard`, whatever its folder's name
export PYTHONPATH="$pkg:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
fi
limits=(270 200)  # seconds: the device run stays under 8 minutes; --tiny on a busy CPU may take longer
[ ${#tiny[@]} -gt 0 ] && limits=(3600 3600)
timeout "${limits[0]}" python3 benchmarks/real_arch.py "$@" 2>&1 | tee "$out/real_arch.txt"
timeout "${limits[1]}" python3 benchmarks/comfyui_gpu.py "${tiny[@]}" --json "$out/comfyui_gpu.json" 2>&1 |
    tee "$out/comfyui_gpu.txt"

#!/usr/bin/env bash
# The prepared GPU check of docs/benchmarks.md, for a session that is lent a GPU machine (H100/H200),
# whose image has torch, transformers, peft and accelerate but not diffusers. Here, once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl diffusers==0.42.1 importlib_metadata zipp
# then with the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=560)
# It installs the carried wheels into /tmp/site, puts this checkout on the path as `normguard`, runs
# benchmarks/real_arch.py (extra arguments go to it, e.g. --tiny) and leaves its table in $OUT.
set -euo pipefail
out="${OUT:-.}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/normguard
export PYTHONPATH="/tmp/pkg:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
fi
timeout 500 python3 benchmarks/real_arch.py "$@" 2>&1 | tee "$out/real_arch.txt"

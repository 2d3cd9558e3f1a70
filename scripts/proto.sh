#!/usr/bin/env bash
# Generates every client and server stub from protos/ (never edit the output by hand):
#   Python messages, type stubs and gRPC stubs into sdk/python/treadle/v1/
#   the tinker SDK's messages (protos/tinker/) into services/gateway/treadle_gateway/
#   Go messages and gRPC stubs into sdk/go/treadlev1/
#   the Go client's loss table into sdk/go/client/losses_gen.go (from treadle.contract.losses)
# Usage: scripts/proto.sh [OUT_ROOT]   (OUT_ROOT defaults to the repository; tests pass a temp dir)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
py=${PYTHON:-$root/.venv/bin/python}
protos=(protos/treadle/v1/*.proto)
cd "$root"

mkdir -p "$out/sdk/python" "$out/sdk/go"
rm -f "$out"/sdk/python/treadle/v1/*_pb2*.py "$out"/sdk/python/treadle/v1/*_pb2*.pyi
"$py" -m grpc_tools.protoc -I protos \
  --python_out="$out/sdk/python" --pyi_out="$out/sdk/python" \
  --grpc_python_out="$out/sdk/python" \
  --plugin=protoc-gen-mypy_grpc="$(dirname "$py")/protoc-gen-mypy_grpc" \
  --mypy_grpc_out="$out/sdk/python" \
  "${protos[@]}"
rm -f "$out"/sdk/python/treadle/v1/common_pb2_grpc.py*  # common.proto has no services
touch "$out/sdk/python/treadle/v1/__init__.py"
# the official tinker SDK's messages, which the gateway reads and writes (no services)
gateway=services/gateway/treadle_gateway
mkdir -p "$out/$gateway"
rm -f "$out/$gateway"/tinker_public_pb2.py "$out/$gateway"/tinker_public_pb2.pyi
"$py" -m grpc_tools.protoc -I protos/tinker \
  --python_out="$out/$gateway" --pyi_out="$out/$gateway" protos/tinker/tinker_public.proto

if command -v protoc >/dev/null && command -v protoc-gen-go >/dev/null \
   && command -v protoc-gen-go-grpc >/dev/null; then
  rm -f "$out"/sdk/go/treadlev1/*.pb.go
  protoc -I protos --go_out="$out/sdk/go" --go_opt=module=treadle/sdk/go \
    --go-grpc_out="$out/sdk/go" --go-grpc_opt=module=treadle/sdk/go \
    "${protos[@]}"
  # the Go client's copy of the loss table (treadle.contract.losses)
  mkdir -p "$out/sdk/go/client"
  "$py" scripts/contract_go.py "$out/sdk/go/client/losses_gen.go"
else
  echo "proto.sh: protoc-gen-go/protoc-gen-go-grpc not found; Go code not generated" >&2
  exit 3
fi

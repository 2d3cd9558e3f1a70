"""The peer loop through the official tinker SDK and the gateway versus the Treadle SDK over gRPC.

The loop of sdk_step_time.py (tiny-llama, rank 8, 4 datums x 64 tokens, forward_backward and
optim_step submitted together, then awaited), once through the official tinker SDK (0.38.0 in
its own client venv, HTTP to the gateway) and once through the Treadle SDK (gRPC to the
scheduler), on the same mesh, in alternating rounds so that both see the same machine. Target:
the tinker SDK's ms/step <= 1.15x the Treadle SDK's. Also the submit-to-result latency of a
small forward (1 x 16 tokens) both ways: what HTTP, the gateway and the SDK's polling add. And
the same step as plain HTTP calls to the gateway (no SDK): how much of the difference is the
gateway's and how much the official SDK's own work in the client.

    PYTHONPATH=tests .venv/bin/python bench/gateway_step_time.py [--rounds 3 --steps 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

import torch
from local_mesh import local_mesh, write_results
from sdk_step_time import SMALL_INPUT, SMALL_TARGETS, TINY, sdk_ms, tokens

from fixtures.client_venvs import tinker_python
from treadle_runtime.launcher import UpConfig

TINKER = "0.38.0"

TINKER_LOOP = Path(__file__).with_name("tinker_loop.py")


def tinker_ms(python: Path, base_url: str, key: str, steps: int) -> tuple[float, float, float]:
    """(ms/step through the official SDK and the gateway, median ms of the small forward,
    ms/step of plain HTTP requests to the gateway)."""
    rows = tokens(4, 64).tolist()
    args = json.dumps([base_url, key, TINY, steps, rows, SMALL_INPUT, SMALL_TARGETS])
    done = subprocess.run(
        [str(python), str(TINKER_LOOP), args], capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError(f"tinker loop failed:\n{done.stderr[-4000:]}")
    step, latency, plain = json.loads(done.stdout.strip().splitlines()[-1])
    return float(step), float(latency), float(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and client")
    parser.add_argument(
        "--threads", type=int, default=UpConfig().worker_threads()[0], help="torch threads"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    python = tinker_python(TINKER)
    grpc: list[tuple[float, float]] = []
    http: list[tuple[float, float, float]] = []
    with local_mesh(TINY, 1, args.threads, gateway=True) as (mesh, keys):
        for round_ in range(args.rounds):
            grpc.append(sdk_ms(mesh.endpoint, keys[0], args.steps, 4, 64))
            http.append(tinker_ms(python, mesh.gateway_url, keys[0], args.steps))
            print(
                f"round {round_}: treadle {grpc[-1][0]:.1f} ms, tinker {http[-1][0]:.1f} ms, "
                f"plain HTTP {http[-1][2]:.1f} ms"
            )
    step_grpc = statistics.median(s for s, _ in grpc)
    step_http = statistics.median(s for s, _, _ in http)
    step_plain = statistics.median(p for _, _, p in http)
    small_grpc = statistics.median(latency for _, latency in grpc)
    small_http = statistics.median(latency for _, latency, _ in http)
    print("\nTraining step, tiny-llama rank 8, 4 x 64 tokens (median over rounds of ms/step)")
    print(f"  Treadle SDK over gRPC           {step_grpc:8.1f}")
    ratio = step_http / step_grpc
    print(f"  tinker {TINKER} over the gateway {step_http:8.1f}   ({ratio:.2f}x; target <= 1.15x)")
    plain_ratio = step_plain / step_grpc
    print(f"  plain HTTP to the gateway       {step_plain:8.1f}   ({plain_ratio:.2f}x)")
    print("\nSmall forward (1 x 16 tokens), submit to result (median ms)")
    print(f"  Treadle SDK over gRPC           {small_grpc:8.1f}")
    print(
        f"  tinker {TINKER} over the gateway {small_http:8.1f}   (+{small_http - small_grpc:.1f})"
    )
    path = write_results(
        "gateway_step_time",
        {
            "tinker_version": TINKER,
            "treadle_ms": step_grpc,
            "tinker_ms": step_http,
            "ratio": ratio,
            "plain_http_ms": step_plain,
            "plain_http_ratio": plain_ratio,
            "treadle_small_forward_ms": small_grpc,
            "tinker_small_forward_ms": small_http,
            "rounds": {"treadle": grpc, "tinker": http},
            "threads": args.threads,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

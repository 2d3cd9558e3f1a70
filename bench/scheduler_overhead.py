"""Scheduler overhead: the share of each cycle spent outside the trainer (planning, queueing,
gRPC) with 16 tenants keeping 8 requests each in flight, on a real trainer with a tiny model.

Measured from the scheduler's own histogram `treadle_scheduler_cycle_overhead_seconds` (time from
the moment a cycle could start, i.e. the previous CycleDone or work arriving at an empty queue, to
its own CycleDone, minus the trainer's busy time; summed, the wall time the trainer sat idle while
work waited) and the trainer's busy seconds.
Targets: p50 <= 2 ms per cycle and <= 5 % of cycle time.
"""

from __future__ import annotations

import argparse
import threading
import time

from local_mesh import histogram, local_mesh, quantile, scrape, write_results

import treadle
from treadle import types

TINY = "treadle/tiny-llama"


def tenant_loop(endpoint: str, key: str, in_flight: int, stop: threading.Event) -> None:
    with treadle.ServiceClient(base_url=endpoint, api_key=key) as service:
        training = service.create_lora_training_client(TINY, rank=8)
        datum = types.Datum(
            model_input=types.ModelInput.from_ints(list(range(10, 42))),
            loss_fn_inputs={"target_tokens": list(range(11, 43))},
        )
        pending = [training.forward([datum]) for _ in range(in_flight)]
        while not stop.is_set():
            pending.pop(0).result(timeout=120)
            pending.append(training.forward([datum]))
        for future in pending:
            future.result(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=16)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--trainer-threads",
        type=int,
        default=0,
        help="torch threads per trainer and sampler (0 = the cores shared equally)",
    )
    args = parser.parse_args()
    with local_mesh(TINY, args.tenants, args.trainer_threads) as (mesh, keys):
        stop = threading.Event()
        threads = [
            threading.Thread(target=tenant_loop, args=(mesh.endpoint, k, args.in_flight, stop))
            for k in keys
        ]
        for thread in threads:
            thread.start()
        time.sleep(5.0)  # warm up: every tenant has created its model and is submitting
        before = scrape(mesh, "scheduler")
        time.sleep(args.seconds)
        after = scrape(mesh, "scheduler")
        stop.set()
        for thread in threads:
            thread.join()
    name = "treadle_scheduler_cycle_overhead_seconds"
    b0, s0, c0 = histogram(before, name)
    b1, s1, c1 = histogram(after, name)
    window = [(le, n1 - n0) for (le, n1), (_, n0) in zip(b1, b0, strict=True)]
    cycles = c1 - c0
    busy = sum(
        v for k, v in after.items() if k.startswith("treadle_scheduler_trainer_busy_seconds_total")
    )
    busy -= sum(
        v for k, v in before.items() if k.startswith("treadle_scheduler_trainer_busy_seconds_total")
    )
    overhead = s1 - s0
    p50 = quantile(window, 0.5) * 1e3
    share = overhead / (overhead + busy)
    rows = [
        ("tenants x in flight", f"{args.tenants} x {args.in_flight}"),
        ("cycles", f"{cycles:.0f}"),
        ("mean cycle (ms)", f"{(overhead + busy) / cycles * 1e3:.1f}"),
        ("overhead p50 (ms)", f"{p50:.2f}  (target <= 2)"),
        ("overhead mean (ms)", f"{overhead / cycles * 1e3:.2f}"),
        ("overhead share", f"{share:.1%}  (target <= 5%)"),
    ]
    print("\nScheduler overhead per cycle")
    for label, value in rows:
        print(f"  {label:<22} {value}")
    path = write_results(
        "scheduler_overhead",
        {
            "tenants": args.tenants,
            "in_flight": args.in_flight,
            "cycles": cycles,
            "overhead_p50_ms": p50,
            "overhead_mean_ms": overhead / cycles * 1e3,
            "overhead_share": share,
            "mean_cycle_ms": (overhead + busy) / cycles * 1e3,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

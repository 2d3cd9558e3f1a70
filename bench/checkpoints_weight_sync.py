"""Weight-sync latency: save_weights_and_get_sampling_client to the first sampled token.

On a local mesh of real processes (tiny-llama, LoRA rank 32), each round takes one training step
(new weights), then times:
- save: save_weights_and_get_sampling_client (trainer exports the PEFT adapter, checkpoints
  service stores it, the client is bound to the new path);
- first token: one sample of max_tokens=1 with that client (the sampler fetches the adapter from
  the checkpoints service, loads it, and decodes);
and, side by side as the baseline, the same one-token sample again once the adapter is loaded.
The checkpoints service's own save and load histograms split the sync into the store's share
and the rest (trainer export, sampler adapter load, decode). Measured for each sampling engine
in `--engines` (vLLM, the default, and the torch engine), one mesh after the other. Target:
save + first token under 1 s (median).
"""

from __future__ import annotations

import argparse
import statistics
import time

from local_mesh import histogram, local_mesh, scrape, write_results

import treadle
from treadle import types
from treadle_runtime.launcher import LocalMesh

TINY = "treadle/tiny-llama"


def _store_seconds(mesh: LocalMesh) -> dict[str, float]:
    """Total seconds the checkpoints service has spent in successful saves and loads."""
    samples = scrape(mesh, "checkpoints")
    return {
        f"{kind}_seconds": histogram(samples, f"treadle_checkpoints_{kind}_seconds")[1]
        for kind in ("save", "load")
    }


def measure(engine: str, rounds: int, rank: int) -> dict[str, object]:
    """The medians and rounds of weight syncs on a mesh whose samplers run `engine`."""
    prompt = types.ModelInput.from_ints(list(range(100, 132)))
    datum = types.Datum(model_input=prompt, loss_fn_inputs={"target_tokens": list(range(101, 133))})
    one_token = types.SamplingParams(max_tokens=1, seed=0)
    rows = []
    with local_mesh(TINY, 1, sampler_engine=engine) as (mesh, keys):
        with treadle.ServiceClient(base_url=mesh.endpoint, api_key=keys[0]) as service:
            training = service.create_lora_training_client(TINY, rank=rank)
            store: dict[str, float] = {}
            for round_ in range(rounds + 1):  # round 0 warms every path up
                training.forward_backward([datum])
                training.optim_step(types.AdamParams(learning_rate=1e-3)).result(timeout=120)
                if round_ == 1:
                    store = _store_seconds(mesh)
                started = time.perf_counter()
                sampling = training.save_weights_and_get_sampling_client()
                saved = time.perf_counter()
                sampling.sample(prompt, 1, one_token).result(timeout=120)
                first = time.perf_counter()
                sampling.sample(prompt, 1, one_token).result(timeout=120)
                warm = time.perf_counter()
                if round_:
                    rows.append(
                        {
                            "save_s": saved - started,
                            "first_token_s": first - saved,
                            "sync_s": first - started,
                            "warm_sample_s": warm - first,
                        }
                    )
            after = _store_seconds(mesh)
    per_round = {key: (after[key] - store[key]) / len(rows) for key in after}
    median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    median |= {f"store_{key}_mean": value for key, value in per_round.items()}
    median["sync_over_warm"] = median["sync_s"] / median["warm_sample_s"]
    return {"median": median, "rounds": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--engines", default="vllm,torch", help="sampling engines, in order")
    args = parser.parse_args()
    engines = args.engines.split(",")
    results = {engine: measure(engine, args.rounds, args.rank) for engine in engines}
    print(f"weight sync, tiny-llama, LoRA rank {args.rank}, median of {args.rounds} rounds")
    print(
        f"{'engine':<7} {'save':>8} {'1st token':>10} {'sync total':>11} | {'warm sample':>11}"
        f" {'ratio':>6} | store save, load per sync"
    )
    for engine, result in results.items():
        m = result["median"]
        assert isinstance(m, dict)
        print(
            f"{engine:<7} {m['save_s'] * 1000:>6.0f}ms {m['first_token_s'] * 1000:>8.0f}ms "
            f"{m['sync_s'] * 1000:>9.0f}ms | {m['warm_sample_s'] * 1000:>9.0f}ms "
            f"{m['sync_over_warm']:>5.1f}x | {m['store_save_seconds_mean'] * 1000:.0f}ms, "
            f"{m['store_load_seconds_mean'] * 1000:.0f}ms"
        )
    met = all(r["median"]["sync_s"] < 1.0 for r in results.values())  # type: ignore[index]
    print(f"target sync < 1 s: {'met' if met else 'MISSED'}")
    path = write_results(
        "checkpoints_weight_sync",
        {"rank": args.rank, "engines": results, "target_s": 1.0, "target_met": met},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

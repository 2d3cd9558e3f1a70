"""tinker-cookbook 0.5.8's own sl_loop and rl_loop, unchanged, on SmolLM2 through the gateway.

A local mesh serves SmolLM2-135M-Instruct under a name the cookbook knows
(`meta-llama/Llama-3.2-1B`, role_colon renderer) with the gateway; each recipe runs as it ships
in the cookbook client venv (tests/fixtures/client_venvs.py), offline, with only its config set
and the no_robots- and gsm8k-shaped rows the cookbook ships (tests/fixtures/cookbook_loop.py).
Reports each recipe's per-step metrics as it logged them and its wall-clock time.

    PYTHONPATH=tests .venv/bin/python bench/tinker_cookbook_recipes.py [--sl-steps 8 --rl-steps 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from local_mesh import local_mesh, write_results

from fixtures.client_venvs import cookbook_python
from fixtures.cookbook_loop import offline_hf_home, run_loop

SHOWN = ("step", "train_mean_nll", "num_tokens", "reward/total", "time/total")
SERVED = "meta-llama/Llama-3.2-1B=HuggingFaceTB/SmolLM2-135M-Instruct"
NAME = SERVED.split("=")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sl-steps", type=int, default=8)
    parser.add_argument("--sl-batch", type=int, default=4)
    parser.add_argument("--rl-steps", type=int, default=3)
    parser.add_argument("--rl-batch", type=int, default=2)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    python = cookbook_python()
    results: dict[str, object] = {"served": SERVED, "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="treadle-cookbook-") as scratch:
        root = Path(scratch)
        hf_home = offline_hf_home(root / "hf-home", python, (SERVED,))
        with local_mesh(SERVED, 1, gateway=True) as (mesh, keys):
            runs = {
                "sl_loop": {
                    "batch_size": args.sl_batch,
                    "max_steps": args.sl_steps,
                    "config": {"learning_rate": 2e-4, "lora_rank": 16},
                },
                "rl_loop": {
                    "batch_size": args.rl_batch,
                    "max_steps": args.rl_steps,
                    "group_size": args.group,
                    "config": {"max_tokens": args.max_tokens, "lora_rank": 16},
                },
            }
            for recipe, settings in runs.items():
                started = time.monotonic()
                result = run_loop(
                    recipe,
                    python=python,
                    hf_home=hf_home,
                    base_url=mesh.gateway_url,
                    api_key=keys[0],
                    model_name=NAME,
                    log_path=root / recipe,
                    timeout=1800,
                    **settings,  # type: ignore[arg-type]
                ).check()
                seconds = time.monotonic() - started
                results[recipe] = {"seconds": seconds, "metrics": result.metrics}
                print(f"\n{recipe}: {len(result.metrics)} steps in {seconds:.0f} s")
                for step in result.metrics:
                    shown = {
                        k: round(v, 4) if isinstance(v, float) else v
                        for k, v in step.items()
                        if k in SHOWN
                    }
                    print(f"  {shown}")
    print(f"wrote {write_results('tinker_cookbook_recipes', results)}")


if __name__ == "__main__":
    main()

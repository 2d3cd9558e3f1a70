"""`make demo`: start the local mesh and teach SmolLM2-135M-Instruct arithmetic with RL.

This is the cookbook's math_rl recipe, run against a mesh started here: each step samples six
answers to each of eight addition problems (operands 0..19) from the current weights, rewards
correct, cleanly ended answers, centres the rewards per problem and trains a LoRA adapter with
the importance-sampling loss. The 69 held-out problems (never trained on) are answered greedily
before and after; the demo prints both accuracies, a few answers side by side, and the path of
the plot of the run's curves. Only the SDK talks to the mesh.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time

import treadle
from treadle_cookbook.completers import TreadleMessageCompleter
from treadle_cookbook.recipes import math_rl
from treadle_cookbook.renderers import get_renderer
from treadle_cookbook.rl.arithmetic_env import arithmetic_problems
from treadle_runtime.launcher import LocalMesh, UpConfig

EXAMPLES = 4


def show_examples(service: treadle.ServiceClient, recipe: argparse.Namespace, trained: str) -> None:
    """A few held-out questions answered greedily by the base model and by the trained adapter,
    rendered and cut as the recipe's evaluation does."""
    renderer = get_renderer(recipe.renderer, service.get_tokenizer(recipe.base_model))
    clients = [
        service.create_sampling_client(base_model=recipe.base_model),
        service.create_sampling_client(model_path=trained),
    ]
    before, after = (TreadleMessageCompleter(c, renderer, recipe.max_tokens, 0.0) for c in clients)
    held_out = arithmetic_problems("test", recipe.min_operand, recipe.max_operand, recipe.ops)
    print("\nheld-out examples (greedy):")
    for problem in held_out[:: max(1, len(held_out) // EXAMPLES)][:EXAMPLES]:
        question = [{"role": "user", "content": problem.question}]
        replies = [asyncio.run(c(question))["content"].strip() for c in (before, after)]
        print(
            f"  {f'{problem.a} {problem.op} {problem.b} = {problem.answer}':<13}"
            f"before: {replies[0]!r:24}  after: {replies[1]!r}"
        )


def main() -> int:
    """Start the mesh, run math_rl, print the result, stop the mesh."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--steps", type=int, default=12, help="RL steps")
    parser.add_argument("--log-dir", default="runs/demo", help="metrics, plot, report")
    parser.add_argument(
        "--sampler-engine", default=UpConfig.sampler_engine, choices=("vllm", "torch")
    )
    args = parser.parse_args()
    started = time.monotonic()
    recipe = math_rl.build_parser().parse_args(
        ["--base-model", args.base_model, "--steps", str(args.steps), "--log-dir", args.log_dir]
    )
    math_rl.check(recipe)
    with tempfile.TemporaryDirectory(prefix="treadle-demo-") as data_dir:
        config = UpConfig(
            base_model=args.base_model,
            port=0,
            gateway_port=-1,
            data_dir=data_dir,
            metrics=False,
            sampler_engine=args.sampler_engine,
        )
        print(f"starting the local mesh for {args.base_model} ...", flush=True)
        with LocalMesh(config) as mesh:
            print(f"mesh healthy in {time.monotonic() - started:.1f}s at {mesh.endpoint}")
            with treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key) as service:
                report = math_rl.run(service, recipe)
                show_examples(service, recipe, report["sampler_checkpoint"])
    print()
    math_rl.print_report(report)
    print(f"demo finished in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

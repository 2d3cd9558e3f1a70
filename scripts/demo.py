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
import sys
import tempfile
import time

import treadle
from treadle import types
from treadle_cookbook.recipes import math_rl
from treadle_cookbook.renderers import Renderer, get_renderer
from treadle_cookbook.rl.arithmetic_env import arithmetic_problems
from treadle_runtime.launcher import LocalMesh, UpConfig

EXAMPLES = 4


def answer(sampler: treadle.SamplingClient, renderer: Renderer, question: str) -> str:
    """The greedy answer to `question`."""
    prompt = renderer.build_generation_prompt([{"role": "user", "content": question}])
    params = types.SamplingParams(
        max_tokens=16, temperature=0.0, stop=renderer.get_stop_sequences()
    )
    tokens = sampler.sample(prompt, 1, params).result().sequences[0].tokens
    return str(renderer.parse_response(tokens)[0]["content"]).strip()


def show_examples(service: treadle.ServiceClient, base_model: str, trained_path: str) -> None:
    """A few held-out questions answered by the base model and by the trained adapter."""
    renderer = get_renderer("chatml", service.get_tokenizer(base_model))
    before = service.create_sampling_client(base_model=base_model)
    after = service.create_sampling_client(model_path=trained_path)
    held_out = arithmetic_problems("test", 0, 19)
    print("\nheld-out examples (greedy):")
    for problem in held_out[:: len(held_out) // EXAMPLES][:EXAMPLES]:
        print(
            f"  {f'{problem.a} + {problem.b} = {problem.answer}':<13}"
            f"before: {answer(before, renderer, problem.question)!r:24}  "
            f"after: {answer(after, renderer, problem.question)!r}"
        )


def main() -> int:
    """Start the mesh, run math_rl, print the result, stop the mesh."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--steps", type=int, default=12, help="RL steps")
    parser.add_argument("--log-dir", default="runs/demo", help="metrics, plot, report")
    args = parser.parse_args()
    started = time.monotonic()
    recipe = math_rl.build_parser().parse_args(
        ["--base-model", args.base_model, "--steps", str(args.steps), "--log-dir", args.log_dir]
    )
    with tempfile.TemporaryDirectory(prefix="treadle-demo-") as data_dir:
        config = UpConfig(base_model=args.base_model, port=0, data_dir=data_dir, metrics=False)
        print(f"starting the local mesh for {args.base_model} ...", flush=True)
        with LocalMesh(config) as mesh:
            print(f"mesh healthy in {time.monotonic() - started:.1f}s at {mesh.endpoint}")
            with treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key) as service:
                report = math_rl.run(service, recipe)
                show_examples(service, args.base_model, report["sampler_checkpoint"])
    print()
    math_rl.print_report(report)
    print(f"demo finished in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

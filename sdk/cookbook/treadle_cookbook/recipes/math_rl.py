"""Math RL: teach a model arithmetic with a verifiable reward (tinker-cookbook's math_rl, on
generated problems), and report held-out accuracy before and after.

    python -m treadle_cookbook.recipes.math_rl --local
    python -m treadle_cookbook.recipes.math_rl --base-url localhost:8470 --mode async

Each step samples `--group-size` answers to each of `--groups-per-batch` training problems,
rewards them with ProblemEnv's `format_coef·(format − 1) + correct`, centres the rewards within
each problem's group and trains with the chosen RL loss. Held-out problems (one in five of the
problem space, never trained on) are answered greedily before and after training.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import treadle
from treadle.contract.losses import IMPORTANCE_SAMPLING
from treadle_cookbook.recipes import (
    DEFAULT_BASE_MODEL,
    add_service_args,
    print_footer,
    run_recipe,
    write_report,
)
from treadle_cookbook.renderers import RENDERER_NAMES, RenderError, get_renderer
from treadle_cookbook.rl import AsyncConfig, Config, RLTestSetEvaluator, StreamMinibatchConfig
from treadle_cookbook.rl import train as rl_train
from treadle_cookbook.rl.arithmetic_env import (
    ArithmeticDataset,
    arithmetic_problems,
    held_out_dataset,
)
from treadle_cookbook.rl.train_step import RL_LOSSES

MODES = ("sync", "async", "stream")


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m treadle_cookbook.recipes.math_rl", description=__doc__.split("\n\n")[0]
    )
    add_service_args(parser)
    parser.add_argument("--base-model", default=DEFAULT_BASE_MODEL, help="model to train")
    parser.add_argument("--renderer", default="chatml", choices=RENDERER_NAMES, help="chat format")
    parser.add_argument("--log-dir", default="runs/math_rl", help="metrics, plot, report")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps")
    parser.add_argument("--groups-per-batch", type=int, default=8, help="problems per step")
    parser.add_argument("--group-size", type=int, default=6, help="answers per problem")
    parser.add_argument("--max-tokens", type=int, default=12, help="tokens per answer")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--loss-fn", default=IMPORTANCE_SAMPLING, choices=RL_LOSSES)
    parser.add_argument("--num-substeps", type=int, default=1, help="optimizer steps per batch")
    parser.add_argument("--kl-penalty-coef", type=float, default=0.0, help="KL to the base (0=off)")
    parser.add_argument("--format-coef", type=float, default=0.1)
    parser.add_argument("--mode", default="sync", choices=MODES)
    parser.add_argument("--max-steps-off-policy", type=int, default=1, help="async mode")
    parser.add_argument("--num-minibatches", type=int, default=2, help="stream mode")
    parser.add_argument("--min-operand", type=int, default=0)
    parser.add_argument("--max-operand", type=int, default=19)
    parser.add_argument("--ops", default="+", help="operations, e.g. '+-'")
    parser.add_argument("--eval-limit", type=int, default=0, help="held-out problems (0 = all)")
    parser.add_argument("--eval-every", type=int, default=0, help="held-out eval every N steps")
    parser.add_argument("--seed", type=int, default=0, help="training problems and LoRA init")
    parser.add_argument(
        "--load-checkpoint", default=None, help="start from a state checkpoint's weights"
    )
    return parser


def _config(args: argparse.Namespace) -> Config:
    config = Config(
        log_dir=args.log_dir,
        learning_rate=args.learning_rate,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        loss_fn=args.loss_fn,
        num_substeps=args.num_substeps,
        kl_penalty_coef=args.kl_penalty_coef,
        eval_every=args.eval_every,
    )
    if args.mode == "async":
        config.async_config = AsyncConfig(args.max_steps_off_policy, args.groups_per_batch)
    elif args.mode == "stream":
        config.stream_minibatch_config = StreamMinibatchConfig(
            args.groups_per_batch, args.num_minibatches
        )
    return config


def _operands(args: argparse.Namespace) -> dict[str, Any]:
    return {"min_operand": args.min_operand, "max_operand": args.max_operand, "ops": args.ops}


def check(args: argparse.Namespace) -> None:
    """Refuse bad settings before any mesh or model exists."""
    _config(args).validate()
    arithmetic_problems("test", **_operands(args))


def run(service: treadle.ServiceClient, args: argparse.Namespace) -> dict[str, Any]:
    """The whole job against a connected service; returns the report (also report.json)."""
    started = time.monotonic()
    log_dir = Path(args.log_dir)
    config = _config(args)
    operands = _operands(args)
    if args.load_checkpoint:
        training = service.create_training_client_from_state(args.load_checkpoint)
    else:
        training = service.create_lora_training_client(
            base_model=args.base_model, rank=args.lora_rank, seed=args.seed
        )
    renderer = get_renderer(args.renderer, training.get_tokenizer())
    config.renderer_name = renderer.name
    dataset = ArithmeticDataset(
        renderer,
        args.groups_per_batch,
        args.group_size,
        args.steps,
        seed=args.seed,
        format_coef=args.format_coef,
        **operands,
    )
    test = held_out_dataset(renderer, args.eval_limit or None, **operands)
    evaluator = RLTestSetEvaluator(test, args.max_tokens, name="test")
    print(
        f"math_rl: {len(dataset.problems)} training problems, "
        f"{len(test.get_batch(0))} held-out, {args.steps} steps of "
        f"{args.groups_per_batch}x{args.group_size} answers, mode {args.mode}, "
        f"loss {args.loss_fn}, lr {args.learning_rate:g}",
        flush=True,
    )
    result = asyncio.run(rl_train(config, training, dataset, [evaluator]))
    return write_report(
        log_dir,
        started,
        held_out_problems=len(test.get_batch(0)),
        training_problems=len(dataset.problems),
        steps=result.steps,
        seed=args.seed,
        mode=args.mode,
        loss_fn=args.loss_fn,
        before=result.initial_metrics,
        after=result.metrics,
        state_checkpoint=result.state_path,
        sampler_checkpoint=result.sampler_path,
    )


def print_report(report: dict[str, Any]) -> None:
    """Held-out accuracy before and after, and where the curves are."""
    before, after = report["before"], report["after"]
    print(
        f"held-out accuracy ({report['held_out_problems']} problems, greedy): "
        f"before {before.get('test/correct', float('nan')):.3f}  "
        f"after {after.get('test/correct', float('nan')):.3f}  "
        f"(format {before.get('test/format', float('nan')):.3f} -> "
        f"{after.get('test/format', float('nan')):.3f})"
    )
    print_footer(report, f"trained {report['steps']} steps")


def main(argv: list[str] | None = None) -> int:
    """Run the recipe; the exit code is 2 for bad flags."""
    args = build_parser().parse_args(argv)
    return run_recipe(args, run, print_report, (RenderError,), lambda: check(args))


if __name__ == "__main__":
    sys.exit(main())

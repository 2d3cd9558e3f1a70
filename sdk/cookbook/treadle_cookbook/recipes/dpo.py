"""DPO: train a LoRA adapter on preference pairs with the initial weights as the frozen reference,
and report held-out preference accuracy before and after.

    python -m treadle_cookbook.recipes.dpo --local
    python -m treadle_cookbook.recipes.dpo --base-url localhost:8470 --train-file pairs.jsonl

The shipped pairs (treadle_cookbook/data/preference_*.jsonl, see preference/synthetic.py) prefer
terse, correct answers; held-out preference accuracy is the fraction of test pairs whose chosen
reply the model finds more likely than the rejected one.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import treadle
from treadle_cookbook.data import data_path
from treadle_cookbook.preference import (
    DPOConfig,
    PreferenceDataError,
    PreferenceDataset,
    PreferenceEvaluator,
    load_preference_pairs,
    train_dpo,
)
from treadle_cookbook.recipes import (
    DEFAULT_BASE_MODEL,
    add_service_args,
    print_footer,
    run_recipe,
    write_report,
)
from treadle_cookbook.renderers import RENDERER_NAMES, RenderError, get_renderer


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m treadle_cookbook.recipes.dpo", description=__doc__.split("\n\n")[0]
    )
    add_service_args(parser)
    parser.add_argument("--base-model", default=DEFAULT_BASE_MODEL, help="model to train")
    parser.add_argument("--renderer", default="chatml", choices=RENDERER_NAMES, help="chat format")
    parser.add_argument(
        "--train-file", default=str(data_path("preference_train.jsonl")), help="JSONL pairs"
    )
    parser.add_argument(
        "--test-file", default=str(data_path("preference_test.jsonl")), help="held-out pairs"
    )
    parser.add_argument("--log-dir", default="runs/dpo", help="metrics, plot, report")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--beta", type=float, default=0.1, help="DPO beta")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N steps")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--eval-every", type=int, default=3, help="held-out eval every N steps")
    parser.add_argument("--seed", type=int, default=0, help="pair order and LoRA init")
    parser.add_argument(
        "--load-checkpoint", default=None, help="start (and take the reference) from a checkpoint"
    )
    return parser


def run(service: treadle.ServiceClient, args: argparse.Namespace) -> dict[str, Any]:
    """The whole job against a connected service; returns the report (also report.json)."""
    started = time.monotonic()
    train_pairs, test_pairs = (
        load_preference_pairs(args.train_file),
        load_preference_pairs(args.test_file),
    )
    if args.load_checkpoint:
        training = service.create_training_client_from_state(args.load_checkpoint)
    else:
        training = service.create_lora_training_client(
            base_model=args.base_model, rank=args.lora_rank, seed=args.seed
        )
    renderer = get_renderer(args.renderer, training.get_tokenizer())
    dataset = PreferenceDataset(train_pairs, renderer, args.batch_size, args.max_length, args.seed)
    test = PreferenceDataset(test_pairs, renderer, len(test_pairs), args.max_length)
    config = DPOConfig(
        log_dir=args.log_dir,
        learning_rate=args.learning_rate,
        beta=args.beta,
        num_epochs=args.epochs,
        max_steps=args.max_steps,
        eval_every=args.eval_every,
        renderer_name=renderer.name,
    )
    print(
        f"dpo: {len(train_pairs)} training pairs, {len(test_pairs)} held-out, "
        f"{len(dataset)} steps per epoch of {args.batch_size} pairs, beta {args.beta}, "
        f"lr {args.learning_rate:g}",
        flush=True,
    )
    result = train_dpo(config, training, dataset, [PreferenceEvaluator(test)])
    return write_report(
        args.log_dir,
        started,
        training_pairs=len(train_pairs),
        held_out_pairs=len(test_pairs),
        steps=result.steps,
        seed=args.seed,
        beta=args.beta,
        learning_rate=args.learning_rate,
        before=result.initial_metrics,
        after=result.metrics,
        state_checkpoint=result.state_path,
        sampler_checkpoint=result.sampler_path,
    )


def print_report(report: dict[str, Any]) -> None:
    """Held-out preference accuracy before and after, and where the curves are."""
    print(f"held-out preference accuracy ({report['held_out_pairs']} pairs):")
    for key in sorted(report["after"]):
        if "pref_accuracy" in key or "logprob_margin" in key:
            before = report["before"].get(key, float("nan"))
            print(f"  {key:32s} before {before:8.3f}  after {report['after'][key]:8.3f}")
    print_footer(report, f"trained {report['steps']} steps")


def main(argv: list[str] | None = None) -> int:
    """Run the recipe; the exit code is 2 for bad data or flags."""
    args = build_parser().parse_args(argv)

    def check() -> None:  # bad data fails before a mesh is started
        load_preference_pairs(args.train_file)
        load_preference_pairs(args.test_file)

    return run_recipe(args, run, print_report, (PreferenceDataError, RenderError), check)


if __name__ == "__main__":
    sys.exit(main())

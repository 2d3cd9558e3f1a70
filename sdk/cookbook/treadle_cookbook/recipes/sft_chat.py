"""Chat SFT: fine-tune a LoRA adapter on JSONL conversations, with held-out NLL on a cadence,
periodic checkpoints (resumed automatically from --log-dir), benchmark accuracy before and after,
a progress bar, metrics JSONL and a PNG plot.

    python -m treadle_cookbook.recipes.sft_chat --local --max-steps 40
    python -m treadle_cookbook.recipes.sft_chat --base-url localhost:8470 --train-file my.jsonl

Defaults train SmolLM2-135M-Instruct with the ChatML renderer on the shipped chat set, at the
learning rate of hyperparams.get_lr for the model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from treadle_cookbook.data import data_path
from treadle_cookbook.eval import BenchmarkConfig, BenchmarkEvaluator, NLLEvaluator
from treadle_cookbook.eval.tasks import TaskError
from treadle_cookbook.hyperparams import get_lr
from treadle_cookbook.recipes import DEFAULT_BASE_MODEL, add_service_args, connect
from treadle_cookbook.renderers import RENDERER_NAMES, RenderError, TrainOnWhat, get_renderer
from treadle_cookbook.supervised import (
    SCHEDULES,
    Config,
    DatasetError,
    SupervisedDataset,
    conversations_to_datums,
    last_checkpoint,
    load_conversations,
    train,
)


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m treadle_cookbook.recipes.sft_chat", description=__doc__.split("\n\n")[0]
    )
    add_service_args(parser)
    parser.add_argument("--base-model", default=DEFAULT_BASE_MODEL, help="model to fine-tune")
    parser.add_argument("--renderer", default="chatml", choices=RENDERER_NAMES, help="chat format")
    parser.add_argument(
        "--train-file", default=str(data_path("chat_sft_train.jsonl")), help="JSONL conversations"
    )
    parser.add_argument(
        "--test-file",
        default=str(data_path("chat_sft_test.jsonl")),
        help="held-out JSONL conversations for test/nll ('' for none)",
    )
    parser.add_argument("--log-dir", default="runs/sft_chat", help="metrics, checkpoints, plot")
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="peak LR (default: hyperparams.get_lr)"
    )
    parser.add_argument("--lr-schedule", default="linear", choices=SCHEDULES)
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--lora-rank", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step (at most)")
    parser.add_argument(
        "--max-batch-tokens", type=int, default=1024, help="tokens per step (at most)"
    )
    parser.add_argument("--max-length", type=int, default=256, help="tokens per conversation")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N steps")
    parser.add_argument(
        "--train-on",
        default=TrainOnWhat.ALL_ASSISTANT_MESSAGES.value,
        choices=[t.value for t in TrainOnWhat],
    )
    parser.add_argument("--eval-every", type=int, default=10, help="test/nll every N steps")
    parser.add_argument("--save-every", type=int, default=20, help="checkpoint every N steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--benchmarks",
        default="arithmetic",
        help="comma-separated tasks scored before and after training ('' for none)",
    )
    parser.add_argument("--benchmark-limit", type=int, default=20, help="items per task")
    parser.add_argument("--benchmark-max-tokens", type=int, default=24)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the recipe; the exit code is 2 for bad data or flags."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (DatasetError, RenderError, TaskError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    log_dir = Path(args.log_dir)
    learning_rate = args.learning_rate or get_lr(args.base_model)
    with connect(args, args.base_model) as service:
        tokenizer = service.get_tokenizer(args.base_model)
        renderer = get_renderer(args.renderer, tokenizer)
        train_on = TrainOnWhat(args.train_on)
        datums = conversations_to_datums(
            load_conversations(args.train_file), renderer, args.max_length, train_on
        )
        dataset = SupervisedDataset(datums, args.batch_size, args.max_batch_tokens, args.seed)
        evaluators = []
        if args.test_file:
            test = load_conversations(args.test_file)
            evaluators.append(
                NLLEvaluator(conversations_to_datums(test, renderer, args.max_length, train_on))
            )
        benchmark_config = BenchmarkConfig(max_tokens=args.benchmark_max_tokens, temperature=0.0)
        benchmarks = [
            BenchmarkEvaluator(
                task, renderer, log_dir / "benchmarks", benchmark_config, args.benchmark_limit
            )
            for task in filter(None, (t.strip() for t in args.benchmarks.split(",")))
        ]
        before: dict[str, float] = {}
        if benchmarks and last_checkpoint(log_dir) is None:
            base = service.create_sampling_client(base_model=args.base_model)
            for evaluator in benchmarks:
                before.update(evaluator(base))
        config = Config(
            log_dir=str(log_dir),
            base_model=args.base_model,
            renderer_name=renderer.name,
            learning_rate=learning_rate,
            lr_schedule=args.lr_schedule,
            warmup_steps=args.warmup_steps,
            lora_rank=args.lora_rank,
            num_epochs=args.epochs,
            max_steps=args.max_steps,
            eval_every=args.eval_every,
            save_every=args.save_every,
            seed=args.seed,
        )
        print(
            f"sft_chat: {len(datums)} conversations, {len(dataset)} batches per epoch, "
            f"lr {learning_rate:.3g} ({args.lr_schedule}), renderer {renderer.name}",
            flush=True,
        )
        result = train(service, config, dataset, evaluators, benchmarks)

    report = {"before": before, "after": result.metrics, **_curve(log_dir)}
    (log_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    for key, value in report.items():
        print(f"{key}: {value}")
    print(f"checkpoint: {result.state_path}\nsampler weights: {result.sampler_path}")
    print(f"metrics: {log_dir / 'metrics.jsonl'}\nplot: {log_dir / 'metrics.png'}")
    return 0


def _curve(log_dir: Path) -> dict[str, float]:
    """First and last train/nll and test/nll of the run's metrics."""
    from treadle_cookbook.run_log import read_metrics

    entries = read_metrics(log_dir / "metrics.jsonl")
    out: dict[str, float] = {}
    for key in ("train/nll", "test/nll"):
        values = [e[key] for e in entries if key in e]
        if values:
            out[f"{key} first"] = round(values[0], 4)
            out[f"{key} last"] = round(values[-1], 4)
    return out


if __name__ == "__main__":
    sys.exit(main())

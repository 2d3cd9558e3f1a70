"""Distillation: make a student LoRA adapter behave like a teacher, on-policy (the student's own
samples, the teacher's per-token reverse KL as the only reward) or off-policy (supervised
fine-tuning on the teacher's samples), and report the held-out reverse KL before and after.

    python -m treadle_cookbook.recipes.distill --local
    python -m treadle_cookbook.recipes.distill --local --method off_policy
    python -m treadle_cookbook.recipes.distill --base-url ... --teacher-checkpoint treadle://...

The teacher is, in order of preference: `--teacher-checkpoint` (a sampler checkpoint), or
`--teacher-base-model` (another base model the mesh serves, with the same tokenizer), or by
default an adapter trained here first for `--teacher-sft-steps` steps of supervised learning on
`--teacher-data` (the shipped chat set: a terse house style the base model does not have). The
student starts from the base model, so the measured KL is the gap the teacher's training opened.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import treadle
from treadle_cookbook.data import data_path
from treadle_cookbook.distillation import (
    PromptDataset,
    TeacherKLEvaluator,
    load_prompts,
    sample_teacher_conversations,
    train_on_policy,
)
from treadle_cookbook.hyperparams import get_lr
from treadle_cookbook.recipes import (
    DEFAULT_BASE_MODEL,
    add_service_args,
    print_footer,
    run_recipe,
    write_report,
)
from treadle_cookbook.renderers import (
    RENDERER_NAMES,
    Renderer,
    RenderError,
    TrainOnWhat,
    get_renderer,
)
from treadle_cookbook.rl import Config
from treadle_cookbook.supervised import Config as SFTConfig
from treadle_cookbook.supervised import (
    DatasetError,
    SupervisedDataset,
    conversations_to_datums,
    load_conversations,
)
from treadle_cookbook.supervised import train as sft_train

METHODS = ("on_policy", "off_policy")


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m treadle_cookbook.recipes.distill", description=__doc__.split("\n\n")[0]
    )
    add_service_args(parser)
    parser.add_argument("--base-model", default=DEFAULT_BASE_MODEL, help="the student's base")
    parser.add_argument("--renderer", default="chatml", choices=RENDERER_NAMES, help="chat format")
    parser.add_argument("--method", default="on_policy", choices=METHODS)
    parser.add_argument("--log-dir", default="runs/distill", help="metrics, plot, report")
    teacher = parser.add_argument_group("teacher")
    teacher.add_argument("--teacher-checkpoint", default=None, help="teacher sampler checkpoint")
    teacher.add_argument("--teacher-base-model", default=None, help="a served base model")
    teacher.add_argument("--teacher-sft-steps", type=int, default=12, help="train a teacher")
    teacher.add_argument("--teacher-data", default=str(data_path("chat_sft_train.jsonl")))
    parser.add_argument(
        "--prompts", default=str(data_path("chat_sft_train.jsonl")), help="training prompts"
    )
    parser.add_argument(
        "--test-prompts", default=str(data_path("chat_sft_test.jsonl")), help="held-out prompts"
    )
    parser.add_argument("--prompt-limit", type=int, default=64, help="training prompts used")
    parser.add_argument("--eval-limit", type=int, default=16, help="held-out prompts used")
    parser.add_argument("--eval-samples", type=int, default=2, help="samples per held-out prompt")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per step")
    parser.add_argument("--group-size", type=int, default=2, help="on-policy samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--kl-coef", type=float, default=1.0, help="on-policy reward scale")
    parser.add_argument("--teacher-samples", type=int, default=2, help="off-policy samples/prompt")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def make_teacher(
    service: treadle.ServiceClient, args: argparse.Namespace, renderer: Renderer
) -> tuple[treadle.SamplingClient, str]:
    """The teacher's sampling client and a description of it."""
    if args.teacher_checkpoint:
        client = service.create_sampling_client(model_path=args.teacher_checkpoint)
        return client, f"checkpoint {args.teacher_checkpoint}"
    if args.teacher_base_model:
        client = service.create_sampling_client(base_model=args.teacher_base_model)
        return client, f"base model {args.teacher_base_model}"
    datums = conversations_to_datums(load_conversations(args.teacher_data), renderer, 256)
    config = SFTConfig(
        log_dir=str(Path(args.log_dir) / "teacher"),
        base_model=args.base_model,
        renderer_name=renderer.name,
        learning_rate=get_lr(args.base_model),
        lr_schedule="constant",
        lora_rank=args.lora_rank,
        max_steps=args.teacher_sft_steps,
        eval_every=0,
        save_every=0,
        seed=args.seed + 1,
    )
    print(f"training the teacher: {args.teacher_sft_steps} SFT steps on {args.teacher_data}")
    result = sft_train(service, config, SupervisedDataset(datums, 8, 1024, args.seed))
    client = service.create_sampling_client(model_path=result.sampler_path)
    return client, f"adapter after {args.teacher_sft_steps} SFT steps: {result.sampler_path}"


def run(service: treadle.ServiceClient, args: argparse.Namespace) -> dict[str, Any]:
    """The whole job against a connected service; returns the report (also report.json)."""
    started = time.monotonic()
    log_dir = Path(args.log_dir)
    prompts = load_prompts(args.prompts)[: args.prompt_limit]
    test_prompts = load_prompts(args.test_prompts)
    renderer = get_renderer(args.renderer, service.get_tokenizer(args.base_model))
    teacher, described = make_teacher(service, args, renderer)
    held_out = PromptDataset(test_prompts[: args.eval_limit], renderer, args.eval_limit, 1, 1)
    evaluator = TeacherKLEvaluator(
        held_out, teacher, args.max_tokens, samples=args.eval_samples, seed=args.seed
    )
    print(f"distill ({args.method}): teacher = {described}", flush=True)
    if args.method == "on_policy":
        student = service.create_lora_training_client(
            base_model=args.base_model, rank=args.lora_rank, seed=args.seed
        )
        dataset = PromptDataset(
            prompts, renderer, args.batch_size, args.group_size, args.steps, args.seed
        )
        config = Config(
            log_dir=str(log_dir),
            learning_rate=args.learning_rate,
            max_tokens=args.max_tokens,
            plot_keys=("distill/reverse_kl", "test/reverse_kl", "optim/kl_sample_train_v1"),
            renderer_name=renderer.name,
        )
        result = asyncio.run(
            train_on_policy(config, student, teacher, dataset, [evaluator], args.kl_coef)
        )
        before, after = result.initial_metrics, result.metrics
        checkpoint = result.state_path
    else:
        before = asyncio.run(
            evaluator.evaluate(service.create_sampling_client(base_model=args.base_model))
        )
        conversations = asyncio.run(
            sample_teacher_conversations(
                teacher, renderer, prompts, args.teacher_samples, args.max_tokens, seed=args.seed
            )
        )
        print(f"{len(conversations)} clean teacher answers to {len(prompts)} prompts", flush=True)
        if not conversations:
            raise ValueError(
                f"teacher: no answer ended cleanly within --max-tokens {args.max_tokens}; "
                "raise --max-tokens or use a stronger teacher"
            )
        datums = conversations_to_datums(
            conversations, renderer, 256, TrainOnWhat.LAST_ASSISTANT_MESSAGE
        )
        sft_config = SFTConfig(
            log_dir=str(log_dir),
            base_model=args.base_model,
            renderer_name=renderer.name,
            learning_rate=args.learning_rate,
            lr_schedule="constant",
            lora_rank=args.lora_rank,
            max_steps=args.steps,
            num_epochs=100,
            eval_every=0,
            save_every=0,
            seed=args.seed,
        )
        sft = sft_train(
            service, sft_config, SupervisedDataset(datums, args.batch_size, None, args.seed)
        )
        student_sampler = service.create_sampling_client(model_path=sft.sampler_path)
        after = asyncio.run(evaluator.evaluate(student_sampler))
        checkpoint = sft.state_path
    return write_report(
        log_dir,
        started,
        method=args.method,
        teacher=described,
        training_prompts=len(prompts),
        held_out_prompts=len(held_out.prompts),
        samples_per_prompt=args.eval_samples,
        steps=args.steps,
        seed=args.seed,
        before=before,
        after=after,
        state_checkpoint=checkpoint,
    )


def print_report(report: dict[str, Any]) -> None:
    """Held-out reverse KL before and after, and where the curves are."""
    before = report["before"].get("test/reverse_kl", float("nan"))
    after = report["after"].get("test/reverse_kl", float("nan"))
    print(
        f"held-out reverse KL(student || teacher) per token ({report['held_out_prompts']} "
        f"prompts x {report['samples_per_prompt']} samples): before {before:.4f}  after {after:.4f}"
    )
    print_footer(report, f"{report['method']}: {report['steps']} steps")


def main(argv: list[str] | None = None) -> int:
    """Run the recipe; the exit code is 2 for bad data or flags."""
    args = build_parser().parse_args(argv)

    def check() -> None:  # bad data fails before a mesh is started
        load_prompts(args.prompts)
        load_prompts(args.test_prompts)

    return run_recipe(args, run, print_report, (DatasetError, RenderError), check)


if __name__ == "__main__":
    sys.exit(main())

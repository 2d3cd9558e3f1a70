"""Distillation on the real mesh (tiny-llama). A `parrot` adapter is trained to answer every prompt
"yes yes yes", so it and the base weights are far apart:
- on-policy: the parrot (student) is distilled towards the base weights (teacher) with the
  teacher's per-token reverse KL as the only reward, and its reverse KL to the teacher falls;
- off-policy: a fresh student is fine-tuned on the parrot's (teacher's) samples, and its reverse
  KL to the parrot falls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import treadle
from treadle import types
from treadle_cookbook.distillation import (
    PromptDataset,
    TeacherKLEvaluator,
    incorporate_teacher_kl,
    sample_teacher_conversations,
    train_on_policy,
)
from treadle_cookbook.recipes import distill as distill_recipe
from treadle_cookbook.renderers import TrainOnWhat, datum_from_tokens_weights, get_renderer
from treadle_cookbook.rl import Config, do_group_rollout
from treadle_cookbook.rl.data_processing import assemble_training_data, full_sequence
from treadle_cookbook.supervised import Config as SFTConfig
from treadle_cookbook.supervised import SupervisedDataset, conversations_to_datums
from treadle_cookbook.supervised import train as sft_train
from treadle_runtime.launcher import LocalMesh

from .conftest import TINY

TRAIN = ["Tell me a story.", "What is the weather like?", "Name a colour.", "Say hello."]
HELD_OUT = ["Describe a cat.", "What time is it?"]


def _prompts(questions: list[str]) -> list[list[Any]]:
    return [[{"role": "user", "content": q}] for q in questions]


@pytest.fixture(scope="module")
def session(mesh: LocalMesh) -> Iterator[treadle.ServiceClient]:
    with treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key) as client:
        yield client


@pytest.fixture(scope="module")
def renderer(smol_tokenizer: Any) -> Any:
    return get_renderer("chatml", smol_tokenizer)


@pytest.fixture(scope="module")
def parrot(session: treadle.ServiceClient, renderer: Any) -> dict[str, str]:
    """State and sampler checkpoints of an adapter that answers everything "yes yes yes"."""
    training = session.create_lora_training_client(base_model=TINY, rank=4, seed=1)
    data = []
    for prompt in _prompts(TRAIN + HELD_OUT):
        messages = [*prompt, {"role": "assistant", "content": "yes yes yes"}]
        tokens, weights = renderer.build_supervised_example(
            messages, TrainOnWhat.ALL_ASSISTANT_MESSAGES
        )
        data.append(datum_from_tokens_weights(tokens, weights))
    adam = types.AdamParams(learning_rate=3e-2)
    steps = [(training.forward_backward(data), training.optim_step(adam)) for _ in range(8)]
    losses = [fb.result().metrics["loss:sum"] for fb, opt in steps if opt.result()]
    assert losses[-1] < 0.2 * losses[0]
    return {
        "state": training.save_state("parrot").result().path,
        "sampler": training.save_weights_for_sampler("parrot").result().path,
    }


def _held_out(renderer: Any) -> PromptDataset:
    return PromptDataset(_prompts(HELD_OUT), renderer, batch_size=2, group_size=1, n_batches=1)


def test_teacher_kl_is_the_only_advantage(
    session: treadle.ServiceClient, renderer: Any, parrot: dict[str, str]
) -> None:
    student = session.create_sampling_client(model_path=parrot["sampler"])
    teacher = session.create_sampling_client(base_model=TINY)
    dataset = PromptDataset(_prompts(TRAIN), renderer, batch_size=2, group_size=2, n_batches=1)
    policy_groups = asyncio.run(_rollouts(dataset, student))
    data = assemble_training_data(policy_groups, [np.zeros(2), np.zeros(2)])
    metrics = asyncio.run(incorporate_teacher_kl(data, teacher, kl_coef=0.5))

    datum = data[0]
    teacher_lp = teacher.compute_logprobs(full_sequence(datum)).result()[1:]
    mask = datum.loss_fn_inputs["mask"].to_numpy()
    sampled = datum.loss_fn_inputs["logprobs"].to_numpy()
    expected = -0.5 * (sampled - np.asarray(teacher_lp, dtype=np.float64)) * mask
    assert np.allclose(datum.loss_fn_inputs["advantages"].to_numpy(), expected, atol=1e-4)
    # the parrot's confident "yes" tokens are unlikely under the base weights
    assert metrics["distill/reverse_kl"] > 1.0


async def _rollouts(dataset: PromptDataset, sampling_client: treadle.SamplingClient) -> list[Any]:
    from treadle_cookbook.completers import TreadleTokenCompleter

    policy = TreadleTokenCompleter(sampling_client, max_tokens=6)
    return list(await asyncio.gather(*(do_group_rollout(b, policy) for b in dataset.get_batch(0))))


def test_on_policy_distillation_lowers_the_reverse_kl(
    session: treadle.ServiceClient, renderer: Any, parrot: dict[str, str], tmp_path: Path
) -> None:
    student = session.create_training_client_from_state(parrot["state"])
    teacher = session.create_sampling_client(base_model=TINY)
    dataset = PromptDataset(_prompts(TRAIN), renderer, batch_size=4, group_size=2, n_batches=4)
    evaluator = TeacherKLEvaluator(_held_out(renderer), teacher, max_tokens=6, samples=4)
    config = Config(log_dir=str(tmp_path), learning_rate=3e-2, max_tokens=6)
    result = asyncio.run(train_on_policy(config, student, teacher, dataset, [evaluator]))

    before = result.initial_metrics["test/reverse_kl"]
    after = result.metrics["test/reverse_kl"]
    assert before > 1.0
    assert after < 0.5 * before
    assert (tmp_path / "metrics.png").exists()


def test_off_policy_distillation_fits_the_teachers_samples(
    session: treadle.ServiceClient, renderer: Any, parrot: dict[str, str], tmp_path: Path
) -> None:
    teacher = session.create_sampling_client(model_path=parrot["sampler"])
    conversations = asyncio.run(
        sample_teacher_conversations(teacher, renderer, _prompts(TRAIN), 4, max_tokens=16)
    )
    # only answers that ended with the stop sequence become training conversations
    assert len(conversations) >= 2
    assert all("yes" in c.messages[-1]["content"] for c in conversations)

    evaluator = TeacherKLEvaluator(_held_out(renderer), teacher, max_tokens=6, samples=4)
    base = session.create_sampling_client(base_model=TINY)
    before = asyncio.run(evaluator.evaluate(base))["test/reverse_kl"]
    datums = conversations_to_datums(
        conversations, renderer, 64, TrainOnWhat.LAST_ASSISTANT_MESSAGE
    )
    config = SFTConfig(
        log_dir=str(tmp_path),
        base_model=TINY,
        renderer_name=renderer.name,
        learning_rate=3e-2,
        lora_rank=4,
        num_epochs=12,
        eval_every=0,
        save_every=0,
    )
    result = sft_train(session, config, SupervisedDataset(datums, batch_size=8))
    student = session.create_sampling_client(model_path=result.sampler_path)
    after = asyncio.run(evaluator.evaluate(student))["test/reverse_kl"]
    assert after < 0.5 * before


def test_distill_recipe_refuses_prompts_without_a_user_turn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"messages": [{"role": "system", "content": "Be brief."}]}\n')
    assert distill_recipe.main(["--local", "--prompts", str(bad)]) == 2
    assert f"{bad}:1: messages: no user turn to answer" in capsys.readouterr().err


def test_on_policy_recipe_runs_and_reports(
    mesh: LocalMesh, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    method = "on_policy"
    argv = ["--base-url", mesh.endpoint, "--api-key", mesh.api_key, "--base-model", TINY]
    argv += ["--method", method, "--log-dir", str(tmp_path), "--steps", "1"]
    argv += ["--batch-size", "2", "--max-tokens", "4", "--eval-limit", "2", "--lora-rank", "4"]
    argv += ["--teacher-sft-steps", "1"]
    assert distill_recipe.main(argv) == 0
    out = capsys.readouterr().out
    assert "held-out reverse KL(student || teacher) per token (2 prompts x 2 samples)" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["method"] == method and "adapter after 1 SFT steps" in report["teacher"]
    assert "test/reverse_kl" in report["before"] and "test/reverse_kl" in report["after"]
    assert report["state_checkpoint"].startswith("treadle://")


def test_off_policy_recipe_names_a_teacher_without_clean_answers(
    mesh: LocalMesh, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--base-url", mesh.endpoint, "--api-key", mesh.api_key, "--base-model", TINY]
    argv += ["--method", "off_policy", "--log-dir", str(tmp_path), "--steps", "1"]
    argv += ["--max-tokens", "1", "--prompt-limit", "2", "--teacher-sft-steps", "1"]
    assert distill_recipe.main(argv) == 2
    assert "teacher: no answer ended cleanly within --max-tokens 1" in capsys.readouterr().err

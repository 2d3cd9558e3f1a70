"""Supervised learning: conversation files with errors that name the line, token-packed batches,
LR schedules, and the training loop on the tiny model over a real mesh: held-out NLL on its
cadence, checkpoints with the renderer's name, and a crashed run resuming from its last checkpoint
onto exactly the curve of an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import treadle
from treadle_cookbook.data import data_path
from treadle_cookbook.eval import NLLEvaluator
from treadle_cookbook.recipes import sft_chat
from treadle_cookbook.renderers import get_renderer
from treadle_cookbook.run_log import read_metrics
from treadle_cookbook.supervised import (
    Config,
    DatasetError,
    SupervisedDataset,
    conversations_to_datums,
    load_conversations,
    lr_multiplier,
    read_checkpoints,
    train,
)
from treadle_runtime.launcher import LocalMesh

from .conftest import TINY


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps(
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
)


@pytest.mark.parametrize(
    ("bad_line", "error"),
    [
        ('{"messages": [', "not valid JSON"),
        (
            json.dumps(
                {"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}
            ),
            r"messages\[1\]\.role: unknown role 'bot'",
        ),
        (
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": "a"},
                        {"role": "assistant", "content": ""},
                    ]
                }
            ),
            r"messages\[1\]\.content: empty assistant turn",
        ),
        (json.dumps({"conversation": []}), "expected an object with a 'messages' list"),
    ],
)
def test_bad_dataset_lines_are_named(
    tmp_path: Path, smol_tokenizer: Any, bad_line: str, error: str
) -> None:
    path = _write(tmp_path / "chats.jsonl", [GOOD, "", bad_line, GOOD])
    renderer = get_renderer("chatml", smol_tokenizer)
    with pytest.raises(DatasetError, match=f"chats.jsonl:3: {error}"):
        conversations_to_datums(load_conversations(path), renderer)


def test_batches_are_packed_by_tokens_and_fixed_per_epoch(smol_tokenizer: Any) -> None:
    renderer = get_renderer("chatml", smol_tokenizer)
    conversations = load_conversations(data_path("chat_sft_train.jsonl"))[:60]
    datums = conversations_to_datums(conversations, renderer, max_length=64)
    dataset = SupervisedDataset(datums, batch_size=16, max_batch_tokens=300, seed=7)
    sizes = [sum(d.model_input.length for d in dataset.get_batch(i)) for i in range(len(dataset))]
    assert max(sizes) <= 300 and len(dataset) >= 60 * 40 // 300
    assert sorted(i for batch in dataset.batches for i in batch) == list(range(60))
    first = [list(b) for b in dataset.batches]
    dataset.set_epoch(1)
    assert dataset.batches != first
    dataset.set_epoch(0)
    assert dataset.batches == first


def test_lr_schedules() -> None:
    assert [lr_multiplier("linear", s, 4) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert lr_multiplier("cosine", 0, 10) == 1.0
    assert lr_multiplier("cosine", 5, 10) == pytest.approx(0.5)
    assert lr_multiplier("constant", 9, 10) == 1.0
    assert [lr_multiplier("linear", s, 10, warmup_steps=3) for s in range(3)] == [0.25, 0.5, 0.75]
    with pytest.raises(ValueError, match="lr_schedule: unknown schedule 'step'"):
        lr_multiplier("step", 0, 10)


class _CrashOnCall:
    """An evaluator that fails on its n-th call: a run dying mid-way."""

    def __init__(self, evaluator: NLLEvaluator, crash_on: int) -> None:
        self.evaluator, self.crash_on, self.calls = evaluator, crash_on, 0

    def __call__(self, client: treadle.TrainingClient) -> dict[str, float]:
        self.calls += 1
        if self.calls == self.crash_on:
            raise RuntimeError("simulated crash")
        return self.evaluator(client)


def test_training_evaluates_on_cadence_checkpoints_and_resumes(
    service: treadle.ServiceClient, smol_tokenizer: Any, tmp_path: Path
) -> None:
    renderer = get_renderer("chatml", smol_tokenizer)
    conversations = load_conversations(data_path("chat_sft_train.jsonl"))
    datums = conversations_to_datums(conversations[:24], renderer, max_length=48)
    held_out = NLLEvaluator(conversations_to_datums(conversations[-8:], renderer, max_length=48))

    def config(log_dir: Path) -> Config:
        return Config(
            log_dir=str(log_dir),
            base_model=TINY,
            renderer_name=renderer.name,
            learning_rate=4e-3,
            lora_rank=8,
            num_epochs=2,
            max_steps=8,
            eval_every=3,
            save_every=3,
        )

    def dataset() -> SupervisedDataset:
        return SupervisedDataset(datums, batch_size=4, seed=3)

    reference = train(service, config(tmp_path / "reference"), dataset(), [held_out])
    entries = read_metrics(tmp_path / "reference" / "metrics.jsonl")
    assert [e["step"] for e in entries] == list(range(8))
    assert [e["step"] for e in entries if "test/nll" in e] == [0, 3, 6]
    assert [e["lr"] for e in entries] == pytest.approx([4e-3 * (1 - s / 8) for s in range(8)])
    assert entries[-1]["train/nll"] < entries[0]["train/nll"]
    assert reference.metrics["test/nll"] < entries[0]["test/nll"]
    saved = read_checkpoints(tmp_path / "reference")
    assert [c["step"] for c in saved] == [3, 6, 8]
    assert (tmp_path / "reference" / "metrics.png").stat().st_size > 0

    rest = service.create_rest_client()
    run_id = saved[0]["state_path"].split("/")[2]
    listed = rest.list_checkpoints(run_id).result()
    assert {c.path for c in listed} >= {c["state_path"] for c in saved}
    assert {c.renderer_name for c in listed} == {"chatml"}

    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(service, config(crashed), dataset(), [_CrashOnCall(held_out, crash_on=3)])
    assert [c["step"] for c in read_checkpoints(crashed)] == [3]
    assert max(e["step"] for e in read_metrics(crashed / "metrics.jsonl")) >= 3

    resumed = train(service, config(crashed), dataset(), [held_out])
    continued = read_metrics(crashed / "metrics.jsonl")
    assert [e["step"] for e in continued] == list(range(8))
    for mine, theirs in zip(continued, entries, strict=True):
        assert mine["train/nll"] == pytest.approx(theirs["train/nll"], rel=2e-3)
        assert mine.get("test/nll", 0.0) == pytest.approx(theirs.get("test/nll", 0.0), rel=2e-3)
    assert resumed.metrics["test/nll"] == pytest.approx(reference.metrics["test/nll"], rel=2e-3)


def test_sft_chat_recipe_runs_and_refuses_bad_data(
    mesh: LocalMesh, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--base-url", mesh.endpoint, "--api-key", mesh.api_key, "--base-model", TINY]
    log_dir = tmp_path / "sft"
    code = sft_chat.main(
        [
            *flags,
            "--log-dir",
            str(log_dir),
            "--max-steps",
            "4",
            "--eval-every",
            "2",
            "--lora-rank",
            "8",
            "--max-length",
            "48",
            "--benchmark-limit",
            "3",
            "--benchmark-max-tokens",
            "6",
        ]
    )
    assert code == 0
    report = json.loads((log_dir / "report.json").read_text())
    assert set(report["before"]) == {"arithmetic/accuracy"}
    assert {"arithmetic/accuracy", "test/nll"} <= set(report["after"])
    assert (log_dir / "metrics.png").exists()
    scores = [json.loads(line) for line in (log_dir / "benchmarks" / "scores.jsonl").open()]
    assert [s["config"]["max_tokens"] for s in scores] == [6, 6]

    bad = _write(tmp_path / "bad.jsonl", [GOOD, "not json"])
    code = sft_chat.main([*flags, "--log-dir", str(tmp_path / "bad"), "--train-file", str(bad)])
    assert code == 2
    assert "bad.jsonl:2: not valid JSON" in capsys.readouterr().err

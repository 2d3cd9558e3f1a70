"""Preference pairs and DPO: file errors name the line and field, the loss is DPO's, and a DPO step
on the real mesh (tiny-llama) raises the chosen-vs-rejected margin of its own pair while the
reference stays the initial weights."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch

import treadle
from treadle_cookbook.preference import (
    DPOConfig,
    PreferenceDataError,
    PreferenceDataset,
    PreferenceEvaluator,
    PreferencePair,
    dpo_loss,
    load_preference_pairs,
    train_dpo,
)
from treadle_cookbook.recipes import dpo as dpo_recipe
from treadle_cookbook.renderers import get_renderer
from treadle_runtime.launcher import LocalMesh

from .conftest import TINY


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


GOOD = {"prompt": "What is 2 + 2?", "chosen": "2 + 2 = 4.", "rejected": "2 + 2 = 5."}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", ":2: not valid JSON"),
        ({"prompt": "hi", "rejected": "no"}, ":2: chosen: expected a non-empty string"),
        ({"prompt": "", "chosen": "a", "rejected": "b"}, ":2: prompt: is empty"),
        ({"prompt": 3, "chosen": "a", "rejected": "b"}, ":2: prompt: expected a string"),
        (
            {"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
            | {"chosen": "a", "rejected": "b"},
            ":2: prompt: must end with a user message",
        ),
        (
            {"prompt": [{"role": "robot", "content": "q"}], "chosen": "a", "rejected": "b"},
            ":2: prompt: messages[0].role: unknown role",
        ),
        ({"prompt": "q", "chosen": "same", "rejected": "same"}, ":2: chosen and rejected"),
    ],
)
def test_bad_preference_lines_are_named(tmp_path: Path, line: Any, message: str) -> None:
    path = _write(tmp_path / "pairs.jsonl", [GOOD, line])
    with pytest.raises(PreferenceDataError, match=re.escape(message)):
        load_preference_pairs(path)


def test_pairs_load_with_string_or_message_prompts(tmp_path: Path) -> None:
    conversation = {
        "prompt": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}]
    }
    path = _write(
        tmp_path / "pairs.jsonl", [GOOD, "", conversation | {"chosen": "4", "rejected": "5"}]
    )
    pairs = load_preference_pairs(path)
    assert [len(p.prompt) for p in pairs] == [1, 2]
    assert pairs[1].source.endswith(":3")


def test_dpo_loss_is_logsigmoid_of_the_reference_relative_margin() -> None:
    chosen = torch.tensor(-3.0, requires_grad=True)
    rejected = torch.tensor(-2.0, requires_grad=True)
    loss, metrics = dpo_loss([chosen], [rejected], [-4.0], [-2.5], beta=0.5)
    margin = 0.5 * ((-3.0 + 4.0) - (-2.0 + 2.5))
    assert float(loss.detach()) == pytest.approx(math.log1p(math.exp(-margin)))
    assert metrics["accuracy"] == 1.0 and metrics["margin"] == pytest.approx(margin)
    loss.backward()
    assert chosen.grad is not None and rejected.grad is not None
    assert float(chosen.grad) < 0 < float(rejected.grad)  # descent raises chosen, lowers rejected


def test_a_dpo_step_raises_the_margin_of_its_own_pair(
    service: treadle.ServiceClient, smol_tokenizer: Any, tmp_path: Path
) -> None:
    renderer = get_renderer("chatml", smol_tokenizer)
    pair = PreferencePair(
        [{"role": "user", "content": "Which colour is the sky?"}], "Blue.", "Green, mostly."
    )
    dataset = PreferenceDataset([pair], renderer, batch_size=1)
    evaluator = PreferenceEvaluator(dataset, name="pair")
    training = service.create_lora_training_client(base_model=TINY, rank=4, seed=0)
    before = float(evaluator.margins(training)[0])

    config = DPOConfig(log_dir=str(tmp_path), learning_rate=1e-2, beta=0.5, num_epochs=2)
    result = train_dpo(config, training, dataset, [evaluator])

    after = float(evaluator.margins(training)[0])
    assert after > before + 0.1
    assert result.initial_metrics["pair/logprob_margin"] == pytest.approx(before, abs=1e-3)
    assert result.metrics["pair/logprob_margin"] == pytest.approx(after, abs=1e-3)
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # the first step sees the reference = the initial weights: implicit rewards start at zero
    assert logged[0]["chosen_reward"] == pytest.approx(0.0, abs=1e-3)
    assert logged[0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert logged[1]["dpo_loss"] < logged[0]["dpo_loss"]
    assert (tmp_path / "metrics.png").exists()


def test_dpo_recipe_refuses_a_bad_file_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write(tmp_path / "pairs.jsonl", [GOOD, {"prompt": "q", "chosen": "a"}])
    assert dpo_recipe.main(["--local", "--train-file", str(bad)]) == 2
    assert f"{bad}:2: rejected: expected a non-empty string" in capsys.readouterr().err


def test_dpo_recipe_runs_and_reports(
    mesh: LocalMesh, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs = [GOOD | {"prompt": f"What is {i} + 2?", "kind": "style"} for i in range(4)]
    train, test = _write(tmp_path / "t.jsonl", pairs), _write(tmp_path / "h.jsonl", pairs[:2])
    argv = ["--base-url", mesh.endpoint, "--api-key", mesh.api_key, "--base-model", TINY]
    argv += ["--train-file", str(train), "--test-file", str(test), "--batch-size", "2"]
    argv += ["--log-dir", str(tmp_path / "run"), "--max-steps", "1"]
    assert dpo_recipe.main(argv) == 0
    out = capsys.readouterr().out
    assert "held-out preference accuracy (2 pairs):" in out
    assert "test/pref_accuracy/style" in out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["steps"] == 1 and "test/pref_accuracy" in report["after"]

"""Evaluation: graders, task files with errors that name the line, the shipped tasks being what
their generator writes, and the benchmark runner on a real mesh: results stored by content hash
and reused by a second run, interrupted runs resumed, the exact config recorded with every score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import treadle
from treadle_cookbook.data import DATA_DIR, generate
from treadle_cookbook.eval import (
    BenchmarkConfig,
    BenchmarkEvaluator,
    TaskError,
    extract_choice,
    extract_number,
    grade,
    load_task,
    run_benchmark,
    shipped_tasks,
)
from treadle_cookbook.renderers import get_renderer

from .conftest import TINY


def test_graders() -> None:
    assert extract_number("17 + 25 = 42.") == 42
    assert extract_number("It is -3, I think") == -3
    assert extract_number("1,024") == 1024
    assert extract_number("no idea") is None
    assert extract_choice("B") == "B"
    assert extract_choice("(c) Mars") == "C"
    assert extract_choice("The answer is: D") == "D"
    assert extract_choice("A. Venus") == "A"
    (item,) = [i for i in load_task("arithmetic") if i.id == "arithmetic-000"]
    assert grade(item, f"The result is {item.answer}.")
    assert not grade(item, "The result is 7.")


def test_shipped_tasks_are_what_the_generator_writes() -> None:
    assert shipped_tasks() == ["arithmetic", "multiple_choice"]
    for name, records in generate.generated_files().items():
        assert (DATA_DIR / name).read_text(encoding="utf-8") == generate.render_jsonl(records)
    assert {i.grader for i in load_task("multiple_choice")} == {"choice"}
    assert len(load_task("arithmetic")) == 100


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("{oops", "not valid JSON"),
        (json.dumps({"id": "b", "prompt": "q"}), "'answer' must be a non-empty string"),
        (
            json.dumps({"id": "b", "prompt": "q", "answer": "1", "grader": "regex"}),
            "unknown grader 'regex'",
        ),
        (json.dumps({"id": "a", "prompt": "q", "answer": "1"}), "duplicate id 'a'"),
    ],
)
def test_bad_task_lines_are_named(tmp_path: Path, line: str, error: str) -> None:
    path = tmp_path / "task.jsonl"
    first = json.dumps({"id": "a", "prompt": "What is 1 + 1?", "answer": "2", "grader": "number"})
    path.write_text(f"{first}\n{line}\n")
    with pytest.raises(TaskError, match=f"task.jsonl:2: {error}"):
        load_task(str(path))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_runner_reuses_results_by_content_hash_and_records_config(
    service: treadle.ServiceClient, smol_tokenizer: Any, tmp_path: Path
) -> None:
    sampler = service.create_sampling_client(base_model=TINY)
    renderer = get_renderer("chatml", smol_tokenizer)
    config = BenchmarkConfig(max_tokens=6, temperature=0.0, system_prompt="Answer with a number.")
    results = tmp_path / "results"

    first = run_benchmark(sampler, renderer, "arithmetic", results, config, limit=4)
    assert (first.num_items, first.reused) == (4, 0)
    stored = _lines(results / "arithmetic.jsonl")
    assert len(stored) == 4
    assert {r["id"] for r in stored} == {f"arithmetic-{i:03d}" for i in range(4)}
    assert all(r["config"]["system_prompt"] == "Answer with a number." for r in stored)
    assert all(r["config"]["max_tokens"] == 6 and r["model"] == TINY for r in stored)

    again = run_benchmark(sampler, renderer, "arithmetic", results, config, limit=4)
    assert again.reused == 4 and again.accuracy == first.accuracy
    assert len(_lines(results / "arithmetic.jsonl")) == 4

    # an interrupted run: the last two results never made it to disk
    path = results / "arithmetic.jsonl"
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines()[:2]))
    resumed = run_benchmark(sampler, renderer, "arithmetic", results, config, limit=4)
    assert resumed.reused == 2 and resumed.accuracy == first.accuracy

    # any change of config is a different result: nothing reused
    hotter = BenchmarkConfig(max_tokens=6, temperature=1.0, system_prompt="Answer with a number.")
    changed = run_benchmark(sampler, renderer, "arithmetic", results, hotter, limit=4)
    assert changed.reused == 0

    scores = _lines(results / "scores.jsonl")
    assert [s["reused"] for s in scores] == [0, 4, 2, 0]
    assert [s["config"]["temperature"] for s in scores] == [0.0, 0.0, 0.0, 1.0]
    assert all(s["config"]["system_prompt"] == "Answer with a number." for s in scores)
    assert all(s["renderer"] == "chatml" and s["task"] == "arithmetic" for s in scores)

    evaluator = BenchmarkEvaluator("multiple_choice", renderer, results, config, limit=2)
    metrics = evaluator(sampler)
    assert set(metrics) == {"multiple_choice/accuracy"}
    assert 0.0 <= metrics["multiple_choice/accuracy"] <= 1.0

"""The benchmark runner: sample an answer for every item of a task, grade it, and record each
result beside the exact configuration that produced it.

Key decision: a result is stored under the content hash of everything that decides it (the
weights version, the item's prompt, answer and grader, and the whole BenchmarkConfig: max_tokens,
temperature, top_p, seed, system prompt, renderer), one JSONL line each as soon as it is graded.
A second run with the same inputs reuses those lines and samples only what is missing (an
interrupted run resumes where it stopped); change any input and the items are run again.
Scores go to `scores.jsonl` with the config written beside every number, since max_tokens,
temperature and the system prompt move scores a lot.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import treadle
from treadle import types
from treadle_cookbook.eval.tasks import TaskItem, grade, load_task, task_path
from treadle_cookbook.renderers import Message, Renderer


@dataclass(frozen=True)
class BenchmarkConfig:
    """Everything about how a task is asked; recorded with every score."""

    max_tokens: int = 32  # sampled tokens per answer
    temperature: float = 0.0  # 0 is greedy
    top_p: float = 1.0
    seed: int = 0  # sampling seed (same seed, same answer)
    system_prompt: str | None = None  # a system turn before each question


@dataclass
class BenchmarkResult:
    """A task's score under one configuration."""

    task: str
    model: str
    renderer: str
    config: dict[str, Any]
    accuracy: float
    num_items: int
    num_correct: int
    reused: int  # items taken from earlier runs instead of being sampled again
    results_path: str


def item_key(model: str, renderer: str, config: BenchmarkConfig, item: TaskItem) -> str:
    """The content hash a result is stored under."""
    content = {
        "model": model,
        "renderer": renderer,
        "config": asdict(config),
        "item": {"prompt": item.prompt, "answer": item.answer, "grader": item.grader},
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _read_results(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    results = {}
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the torn last line of an interrupted run
                continue
            results[record["key"]] = record
    return results


def run_benchmark(
    sampling_client: treadle.SamplingClient,
    renderer: Renderer,
    task: str,
    results_dir: str | Path,
    config: BenchmarkConfig | None = None,
    limit: int | None = None,
) -> BenchmarkResult:
    """Score `task` (a shipped task name or a JSONL path) on the sampling client's weights."""
    config = config or BenchmarkConfig()
    items = load_task(task)[:limit]
    name = task_path(task).stem
    model = sampling_client.weights_version
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.jsonl"
    stored = _read_results(path)

    keys = [item_key(model, renderer.name, config, item) for item in items]
    missing = [(item, key) for item, key in zip(items, keys, strict=True) if key not in stored]
    params = types.SamplingParams(
        max_tokens=config.max_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed,
        stop=renderer.get_stop_sequences(),
    )
    futures = [
        sampling_client.sample(renderer.build_generation_prompt(_messages(item, config)), 1, params)
        for item, _ in missing
    ]
    with path.open("a") as file:
        for (item, key), future in zip(missing, futures, strict=True):
            sequence = future.result().sequences[0]
            message, clean = renderer.parse_response(sequence.tokens)
            record = {
                "key": key,
                "id": item.id,
                "prompt": item.prompt,
                "answer": item.answer,
                "response": message["content"],
                "clean": clean,
                "correct": grade(item, message["content"]),
                "model": model,
                "renderer": renderer.name,
                "config": asdict(config),
            }
            file.write(json.dumps(record) + "\n")
            file.flush()
            stored[key] = record

    correct = sum(bool(stored[key]["correct"]) for key in keys)
    result = BenchmarkResult(
        task=name,
        model=model,
        renderer=renderer.name,
        config=asdict(config),
        accuracy=correct / len(items),
        num_items=len(items),
        num_correct=correct,
        reused=len(items) - len(missing),
        results_path=str(path),
    )
    with (results_dir / "scores.jsonl").open("a") as file:
        file.write(json.dumps({**asdict(result), "time": time.time()}) + "\n")
    return result


def _messages(item: TaskItem, config: BenchmarkConfig) -> list[Message]:
    system = [Message(role="system", content=config.system_prompt)] if config.system_prompt else []
    return [*system, Message(role="user", content=item.prompt)]

"""Benchmark tasks as JSONL files, one item a line: `{"id", "prompt", "answer", "grader"}`, and the
graders that score a response against the answer.

Graders: `number` (the last number in the response equals the answer), `choice` (the option letter
the response gives equals the answer), `exact` (equal after trimming and case folding). Shipped
tasks are `arithmetic` and `multiple_choice` (treadle_cookbook/data/tasks/).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from treadle_cookbook.data import DATA_DIR, jsonl_records

TASKS_DIR = DATA_DIR / "tasks"
GRADERS = ("number", "choice", "exact")


class TaskError(ValueError):
    """A task file or item that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class TaskItem:
    """One question of a task."""

    id: str
    prompt: str
    answer: str
    grader: str
    source: str  # file:line


def shipped_tasks() -> list[str]:
    """Names of the tasks shipped with the cookbook."""
    return sorted(p.stem for p in TASKS_DIR.glob("*.jsonl"))


def task_path(task: str) -> Path:
    """A shipped task's file by name, or `task` itself as a path."""
    shipped = TASKS_DIR / f"{task}.jsonl"
    if shipped.exists():
        return shipped
    path = Path(task)
    if not path.is_file():
        raise TaskError(
            f"task: {task!r} is neither a shipped task ({', '.join(shipped_tasks())}) "
            "nor a JSONL file"
        )
    return path


def load_task(task: str) -> list[TaskItem]:
    """The items of a task, checked."""
    path = task_path(task)
    items: list[TaskItem] = []
    seen: set[str] = set()
    for source, record in jsonl_records(path, TaskError):
        if not isinstance(record, dict):
            raise TaskError(f"{source}: expected an object")
        for key in ("id", "prompt", "answer"):
            if not isinstance(record.get(key), str) or not record[key]:
                raise TaskError(f"{source}: '{key}' must be a non-empty string")
        grader = record.get("grader", "exact")
        if grader not in GRADERS:
            raise TaskError(f"{source}: unknown grader {grader!r} (known: {', '.join(GRADERS)})")
        if record["id"] in seen:
            raise TaskError(f"{source}: duplicate id {record['id']!r}")
        seen.add(record["id"])
        items.append(TaskItem(record["id"], record["prompt"], record["answer"], grader, source))
    if not items:
        raise TaskError(f"{path}: no items")
    return items


_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*")
_CHOICE = re.compile(r"(?:answer\s*(?:is)?\s*[:\-]?\s*\(?|^\s*\(?)([A-D])\b", re.IGNORECASE)


def extract_number(response: str) -> float | None:
    """The last number written in the response."""
    found = _NUMBER.findall(response)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def extract_choice(response: str) -> str | None:
    """The option letter a response gives: `B`, `(B)`, `Answer: B`, `B. Mercury`."""
    match = _CHOICE.search(response.strip())
    if match:
        return match.group(1).upper()
    letters = re.findall(r"\b([A-D])\b", response)
    return letters[0].upper() if letters else None


def grade(item: TaskItem, response: str) -> bool:
    """Whether `response` answers `item` correctly."""
    if item.grader == "number":
        value = extract_number(response)
        expected = extract_number(item.answer)
        return value is not None and expected is not None and abs(value - expected) < 1e-9
    if item.grader == "choice":
        return extract_choice(response) == item.answer.strip().upper()
    return response.strip().casefold() == item.answer.strip().casefold()

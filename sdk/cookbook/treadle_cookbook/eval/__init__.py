"""Evaluation: inline evaluators on a training loop's cadence, and a resumable benchmark runner
over JSONL tasks (arithmetic and a multiple-choice set ship with the package)."""

from treadle_cookbook.eval.evaluators import (
    BenchmarkEvaluator,
    NLLEvaluator,
    SamplingClientEvaluator,
    TrainingClientEvaluator,
)
from treadle_cookbook.eval.runner import (
    BenchmarkConfig,
    BenchmarkResult,
    item_key,
    run_benchmark,
)
from treadle_cookbook.eval.tasks import (
    GRADERS,
    TaskError,
    TaskItem,
    extract_choice,
    extract_number,
    grade,
    load_task,
    shipped_tasks,
)

__all__ = [
    "GRADERS",
    "BenchmarkConfig",
    "BenchmarkEvaluator",
    "BenchmarkResult",
    "NLLEvaluator",
    "SamplingClientEvaluator",
    "TaskError",
    "TaskItem",
    "TrainingClientEvaluator",
    "extract_choice",
    "extract_number",
    "grade",
    "item_key",
    "load_task",
    "run_benchmark",
    "shipped_tasks",
]

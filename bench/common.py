"""What the trainer benchmarks share: the machine, side-by-side timing, tables, results files.

Ratios are only ever taken between variants timed in the same run, interleaved round by round
(A then B, B then A, ...), so a burst of load from another process hits both: a ratio is the
median over rounds of the ratio within each round, and each variant's time the median of its
rounds.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from treadle import tensors
from treadle.v1 import common_pb2

RESULTS = Path(__file__).resolve().parent.parent / "results"


def machine() -> dict[str, Any]:
    """The machine a result was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "load_average_at_start": list(os.getloadavg()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def interleaved(
    variants: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds of each variant per round, variants run in turn within each round."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants.items())
    for k in range(rounds):
        for name, fn in order if k % 2 == 0 else order[::-1]:  # alternate who goes first
            sync()
            started = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - started)
    return times


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over rounds of numerator/denominator timed in the same round.

    Load from other processes comes and goes over seconds; a ratio taken within one round,
    where both variants ran back to back, cancels most of it.
    """
    return median([a / b for a, b in zip(numerator, denominator, strict=True)])


def median(values: Sequence[float]) -> float:
    """The median."""
    return float(statistics.median(values))


def sync() -> None:
    """Wait for queued GPU work (timings on a GPU are otherwise meaningless)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""

    def cell(value: object) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write results/<name>.json (with the machine description) and return its path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {"benchmark": name, "machine": machine(), "command": " ".join(sys.argv), **payload}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def next_token_datums(
    count: int, length: int, seed: int, vocab: int = 49152
) -> list[common_pb2.Datum]:
    """`count` random next-token datums of `length` input tokens each (cross-entropy inputs)."""
    rng = np.random.default_rng(seed)
    datums = []
    for _ in range(count):
        tokens = rng.integers(3, vocab, length + 1)
        chunk = common_pb2.ModelInputChunk(
            encoded_text=common_pb2.EncodedTextChunk(tokens=tokens[:-1].tolist())
        )
        datums.append(
            common_pb2.Datum(
                model_input=common_pb2.ModelInput(chunks=[chunk]),
                loss_fn_inputs={"target_tokens": tensors.encode(tokens[1:].astype(np.int64))},
            )
        )
    return datums


class PlainPeftLoop:
    """The self-hosted baseline: one plain PEFT model trained in process, nothing shared.

    A step is what a researcher would write: forward, per-token logprobs of the targets
    (treadle_models.target_logprobs), summed cross-entropy, backward, torch AdamW, zero_grad.
    """

    def __init__(
        self, model: str, rank: int, seed: int, device: str = "cpu", dtype: str = "float32"
    ) -> None:
        from peft import get_peft_model

        from treadle_models import load_model
        from treadle_models.lora import LoraSpec, peft_lora_config

        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        torch.manual_seed(seed)
        base = load_model(model, dtype=torch_dtype, device=device)
        self.model = get_peft_model(base, peft_lora_config(LoraSpec(rank=rank)))
        self.model.eval()  # no dropout anywhere (LoRA dropout is 0 too), as in the trainer
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.adam = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), eps=1e-12)
        self.device = device

    def step(self, input_ids_BT: torch.Tensor, targets_BT: torch.Tensor) -> float:
        """One training step; returns the loss."""
        from treadle_models.logprobs import target_logprobs

        logits = self.model(input_ids=input_ids_BT, use_cache=False).logits
        loss = -target_logprobs(logits, targets_BT).sum()
        loss.backward()
        self.adam.step()
        self.adam.zero_grad(set_to_none=True)
        return float(loss.detach())


def as_tensors(
    datums: Sequence[common_pb2.Datum], device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and targets [B, T] of equal-length next-token datums."""
    ids = [list(d.model_input.chunks[0].encoded_text.tokens) for d in datums]
    targets = [tensors.decode(d.loss_fn_inputs["target_tokens"]).tolist() for d in datums]
    return torch.tensor(ids, device=device), torch.tensor(targets, device=device)

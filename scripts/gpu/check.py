"""GPU check of the trainer and the sampling engines on CUDA in bfloat16.

Run by scripts/gpu/check.sh (which sets PYTHONPATH to the repo's packages); `--cpu` runs the same
steps on the CPU (slowly, with a tiny throughput model) so the script is tested where no GPU is.

1. Consistency: a TrainerEngine on treadle/tiny-llama in bfloat16; two adapters (rank 8 on every
   projection, rank 16 on attention and MLP) train 3 steps in fused waves, are saved as sampler
   files, written as PEFT folders and loaded by each sampling engine installed here: torch
   always, vLLM when `vllm` imports, SGLang when `sglang` does (the engine launches its server);
   4 samples per adapter at temperature 1; the trainer's forward logprobs of the same tokens.
   Reported per engine: the largest |sampler logprob - trainer logprob| over every sampled token
   (bf16 rounding makes it about 1e-2; the float32 CPU tests hold it under 1e-4).
2. Sampler throughput: bench/sampler_batching.py's engines batched (torch, and vLLM with the
   adapters mixed when it is installed), 8 requests on 4 adapters, 128 new tokens each, on
   SmolLM2-135M (or a random model of its shape; tiny-llama with --cpu).
3. Trainer fused speedup from bench/trainer_fused.py when it is there: one fused wave of 8
   tenants versus the tenants one after another, on the throughput model in bfloat16.
Prints one summary line, and writes it with the details to --out (JSON) when given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import sampler_batching  # noqa: E402 (bench/ is put on the path just above)

from treadle import tensors  # noqa: E402
from treadle.v1 import common_pb2  # noqa: E402
from treadle_models import LoraSpec  # noqa: E402
from treadle_sampler.config import SamplerConfig  # noqa: E402
from treadle_sampler.engine import SamplingOptions, make_engine  # noqa: E402
from treadle_sampler.local_adapters import AdapterFolders  # noqa: E402
from treadle_trainer.engine import ForwardResult, TrainerEngine  # noqa: E402
from treadle_trainer.inputs import LossBatch, parse_forward_backward  # noqa: E402
from treadle_trainer.optim import AdamConfig  # noqa: E402

TINY = "treadle/tiny-llama"
PROMPT = [101, 202, 303, 404, 505, 606, 707, 808]
SPECS = {"m0": LoraSpec(rank=8), "m1": LoraSpec(rank=16, train_unembed=False)}


def loss_batch(trainer: TrainerEngine, sequences: list[list[int]], forward_only: bool) -> LossBatch:
    """A cross-entropy batch of next-token datums over `sequences`, checked as the wire's."""
    request = common_pb2.ForwardBackwardRequest(loss_fn="cross_entropy", forward_only=forward_only)
    for tokens in sequences:
        datum = request.data.add()
        datum.model_input.chunks.add().encoded_text.tokens.extend(tokens[:-1])
        datum.loss_fn_inputs["target_tokens"].CopyFrom(tensors.encode(np.array(tokens[1:])))
    return parse_forward_backward(request, trainer.spec.vocab_size, trainer.spec.max_seq_len)


def results(outputs: list[ForwardResult | Exception]) -> list[ForwardResult]:
    for output in outputs:
        if not isinstance(output, ForwardResult):
            raise RuntimeError(f"trainer op failed: {output}")
    return outputs  # type: ignore[return-value]


def installed_engines() -> list[str]:
    """The sampling engines this machine can run: torch, and vLLM and SGLang when installed."""
    return ["torch"] + [name for name in ("vllm", "sglang") if importlib.util.find_spec(name)]


async def consistency(device: str, engine_name: str) -> float:
    """Largest |sampler - trainer| logprob of sampled tokens, two adapters, bfloat16."""
    trainer = TrainerEngine(TINY, device=device, dtype="bfloat16")
    rng = np.random.default_rng(0)
    train = [list(rng.integers(3, 2000, size=33)) for _ in range(4)]
    for seed, (model_id, spec) in enumerate(SPECS.items()):
        trainer.create_adapter(model_id, "gpu-check", spec, seed)
    batch = loss_batch(trainer, train, forward_only=False)
    for _ in range(3):
        results(trainer.forward_backward([(model_id, batch) for model_id in SPECS]))
        for model_id in SPECS:
            trainer.optim_step(model_id, AdamConfig(learning_rate=1e-2))

    config = SamplerConfig(base_model=TINY, device=device, dtype="bfloat16", engine=engine_name)
    engine = make_engine(config)
    folders = AdapterFolders()
    sampled: dict[str, list[tuple[list[int], list[float]]]] = {}
    try:
        for model_id in SPECS:
            await engine.load_adapter(
                model_id, folders.write(model_id, trainer.sampler_files(model_id))
            )
        for model_id in SPECS:
            options = SamplingOptions(max_tokens=32, temperature=1.0, seed=7)
            sampled[model_id] = [
                (c.tokens, c.logprobs) async for _, c in engine.sample(model_id, PROMPT, 4, options)
            ]
    finally:
        await engine.close()
        folders.close()
    ops = [
        (model_id, loss_batch(trainer, [PROMPT + t for t, _ in sampled[model_id]], True))
        for model_id in SPECS
    ]
    worst = 0.0
    for (model_id, _), output in zip(ops, results(trainer.forward_backward(ops)), strict=True):
        for (_, logprobs), trained in zip(sampled[model_id], output.logprobs, strict=True):
            difference = np.abs(np.array(logprobs) - trained[len(PROMPT) - 1 :]).max()
            worst = max(worst, float(difference))
    trainer.close()
    return worst


def fused_speedup(device: str, model: str) -> float | None:
    """bench/trainer_fused.py's speedup of one fused 8-tenant wave, when that bench is there.

    Called as `fused_speedup(device)` if the module defines it, else through its `run(args)`;
    None (and a note on stderr) when it is missing or its interface has changed.
    """
    path = ROOT / "bench" / "trainer_fused.py"
    if not path.exists():
        return None
    try:
        spec = importlib.util.spec_from_file_location("trainer_fused", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if callable(getattr(module, "fused_speedup", None)):
            return float(module.fused_speedup(device))
        args = argparse.Namespace(
            device=device, dtype="bfloat16", model=model, tenants=[8], datums=2, tokens=64,
            rank=8, rounds=10 if device == "cuda" else 3,
        )  # fmt: skip
        with contextlib.redirect_stdout(sys.stderr):  # its table; stdout keeps the one line
            return float(module.run(args)["results"][0]["speedup"])
    except Exception as exc:  # another team's bench: report without it rather than fail
        print(f"trainer fused speedup skipped: {exc!r}", file=sys.stderr)
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (slow)")
    parser.add_argument("--out", default="", help="also write the results to this JSON file")
    args = parser.parse_args()
    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device (use --cpu to run on the CPU)")
    torch.manual_seed(0)
    engines = installed_engines()
    worst = {name: asyncio.run(consistency(device, name)) for name in engines}
    model = sampler_batching.default_model(device) if device == "cuda" else TINY
    rows = sampler_batching.measure(
        model, device, "bfloat16", adapters=4, requests=8, max_tokens=128, rank=16,
        with_hf=False, with_vllm="vllm" in engines,
    )  # fmt: skip
    throughput = {
        row.mode: row.tokens_per_second
        for row in rows
        if row.mode in ("torch_batched", "vllm_lora")
    }
    speedup = fused_speedup(device, model)
    parts = [
        f"GPU check: {sampler_batching.card(device)} bf16",
        "trainer-vs-sampler max|dlogprob| (2 adapters) "
        + ", ".join(f"{name} {value:.3f}" for name, value in worst.items()),
        "sampler 8x4 adapters "
        + ", ".join(f"{mode} {value:.0f} tok/s" for mode, value in throughput.items()),
    ]
    if speedup is not None:
        parts.append(f"trainer fused 8 tenants speedup {speedup:.1f}x")
    line = " | ".join(parts)
    print(line)
    if args.out:
        details = {
            "summary": line,
            "device": sampler_batching.card(device),
            "max_abs_dlogprob": worst,
            "sampler_model": Path(model).name,
            "sampler_tokens_per_second": throughput,
            "trainer_fused_speedup": speedup,
        }
        Path(args.out).write_text(json.dumps(details, indent=2) + "\n")


if __name__ == "__main__":
    main()

